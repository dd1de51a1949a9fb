package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/transport/dane"
)

// tlsMode is how a session authenticates its server.
type tlsMode int

const (
	// tlsWebPKI: the chain verifies to a trusted root for the session's
	// server name.
	tlsWebPKI tlsMode = iota
	// tlsPinned: the leaf's SPKI hash is one of the pins.
	tlsPinned
	// tlsUnverified: TLS without authentication.
	tlsUnverified
	// tlsNone: no TLS.
	tlsNone
	// tlsDANE: the chain matches a usable TLSA record (RFC 7672).
	tlsDANE
	// tlsDomain: the chain verifies to a trusted root, for the recipient
	// domain or a name below it (Postfix's "secure").
	tlsDomain
)

// tlsPolicy is the requirement one session must meet.
type tlsPolicy struct {
	mode tlsMode
	// optional lets a session go on in plaintext when the server does not
	// offer STARTTLS (direct delivery's "may" and "dane" levels).
	optional bool
	// loopbackOnly refuses tlsNone to a non-loopback peer (submission).
	loopbackOnly bool
	pins         []mailsec.Pin
	tlsa         []dns.TLSA // tlsDANE: usable records
	names        []string   // tlsDANE: reference names; tlsDomain: the domain
	label        mailsec.Verification
	now          func() time.Time
}

// submissionPolicy maps a submission requirement. ok is false for levels
// that only direct delivery honours.
func submissionPolicy(sec mailsec.Security) (p *tlsPolicy, ok bool) {
	switch sec.Level {
	case mailsec.Verified:
		return &tlsPolicy{mode: tlsWebPKI, label: mailsec.VerifiedWebPKI}, true
	case mailsec.Pinned:
		return &tlsPolicy{mode: tlsPinned, pins: slices.Clone(sec.Pins)}, true
	case mailsec.Unverified:
		return &tlsPolicy{mode: tlsUnverified}, true
	case mailsec.Plaintext:
		return &tlsPolicy{mode: tlsNone, loopbackOnly: true}, true
	}
	return nil, false
}

// config derives the client configuration from the application's base
// configuration. The requirement always wins: an InsecureSkipVerify left
// in the base does not weaken a verified session.
func (p *tlsPolicy) config(base *tls.Config, serverName string, match *dane.Match) *tls.Config {
	var cfg *tls.Config
	if base != nil {
		cfg = base.Clone()
	} else {
		cfg = &tls.Config{}
	}
	cfg.ServerName = serverName
	cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS12)
	// The application's own checks (an issuer rule, say) stay in force
	// wherever a certificate is authenticated, after the requirement's.
	appVerify := cfg.VerifyConnection
	then := func(own func(tls.ConnectionState) error) func(tls.ConnectionState) error {
		if appVerify == nil {
			return own
		}
		return func(cs tls.ConnectionState) error {
			if err := own(cs); err != nil {
				return err
			}
			return appVerify(cs)
		}
	}
	switch p.mode {
	case tlsWebPKI:
		cfg.InsecureSkipVerify = false
	case tlsPinned:
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = nil
		pins := p.pins
		cfg.VerifyConnection = then(func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !slices.Contains(pins, mailsec.PinOf(cs.PeerCertificates[0])) {
				return errPinMismatch
			}
			return nil
		})
	case tlsDANE:
		// DANE replaces WebPKI: names, roots and expiry are what the
		// matching record says they are (RFC 7672 §3.1).
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = nil
		cfg.VerifyConnection = then(dane.VerifyConnection(p.tlsa, p.names, p.clock(), func(m dane.Match) { *match = m }))
	case tlsDomain:
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = nil
		roots, domain, now := cfg.RootCAs, p.names[0], p.clock()
		cfg.VerifyConnection = then(func(cs tls.ConnectionState) error {
			return verifyForDomain(cs.PeerCertificates, roots, domain, now())
		})
	default:
		// No authentication asked for: nothing to add checks to.
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = nil
		cfg.VerifyConnection = nil
	}
	return cfg
}

// authenticates reports whether a session under p authenticates its
// server.
func (p *tlsPolicy) authenticates() bool {
	switch p.mode {
	case tlsWebPKI, tlsPinned, tlsDANE, tlsDomain:
		return true
	}
	return false
}

func (p *tlsPolicy) clock() func() time.Time {
	if p.now != nil {
		return p.now
	}
	return time.Now
}

// daneVerification is how a DANE match authenticated the server, for the
// Receipt: a DANE-TA(2) record names the trust anchor of the server's
// chain, a DANE-EE(3) record the server's own key (RFC 7672 §3.1).
func daneVerification(m dane.Match) mailsec.Verification {
	if m.Record.Usage == 2 {
		return mailsec.VerifiedDANETA
	}
	return mailsec.VerifiedDANEEE
}

var errPinMismatch = errors.New("certificate public key matches no pin")

// domainError is a certificate that verifies but is for neither the
// recipient domain nor a name below it.
type domainError struct{ domain string }

func (e *domainError) Error() string {
	return "certificate names neither " + e.domain + " nor a name below it"
}

// verifyForDomain is Postfix's "secure" match with its default
// "nexthop:dot-nexthop": the chain verifies to a trusted root, and the
// leaf has a DNS name equal to the recipient domain or below it (a
// wildcard counts when it stands for names below the domain).
func verifyForDomain(chain []*x509.Certificate, roots *x509.CertPool, domain string, now time.Time) error {
	if len(chain) == 0 {
		return &domainError{domain}
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now}); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: chain, Err: err}
	}
	for _, n := range chain[0].DNSNames {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if n == domain || strings.HasSuffix(n, "."+domain) {
			return nil
		}
	}
	return &domainError{domain}
}
