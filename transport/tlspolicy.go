package transport

import (
	"crypto/tls"
	"crypto/x509"
	"slices"
	"strings"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/transport/dane"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

// What each mailsec.SecurityLevel requires of a session is decided here,
// by requirement, for submission and for direct delivery alike. The
// result is a tlsPolicy, which config turns into the tls.Config of the
// handshake, and which the session layer checks again once the handshake
// is done (dialConfig.checkHandshake).

// hostPlan is the requirement one session must meet, and how the Receipt
// and TLS reports name it.
type hostPlan struct {
	pol *tlsPolicy
	// policy names the requirement in the Receipt (ConnectionState.Policy
	// under direct delivery): "dane", "mta-sts", "verified", "pinned", ...
	policy string
	// serverName is the name sent as SNI and checked: the MX host, or
	// the TLSA base domain it is a CNAME for. Empty for submission, whose
	// server name is configured.
	serverName string
	tlsa       []string // usable TLSA records, for reports
	// violation is what a session that meets the requirement is reported
	// with instead of a success: the host is not listed in a
	// testing-mode policy. note says the same in the Receipt.
	violation *tlsrpt.Result
	note      string
}

// mxHop is what direct delivery knows when it decides the requirement of
// a session with one MX host: what the DNS says of the host, and the
// domain's route and MTA-STS policy.
type mxHop struct {
	mx            *mxHost
	ds            *domainState
	requireTLS    bool // the message demands REQUIRETLS (RFC 8689)
	tlsRequiredNo bool // the message carries TLS-Required: No (RFC 8689 §5)
	now           func() time.Time
}

// requirement decides what a session at level sec.Level must meet with
// host. hop is nil for submission to the server the application
// configured, which is authenticated by its configured name or a pin: the
// levels that rest on what a recipient domain publishes (DANE, MTA-STS,
// its name) apply to direct delivery only, where hop holds what was
// gathered about the MX host. An error, a *mailsec.SecurityError, means
// no session is opened.
func requirement(sec mailsec.Security, host string, hop *mxHop) (*hostPlan, error) {
	direct := hop != nil
	switch sec.Level {
	case mailsec.Verified, mailsec.Pinned, mailsec.Unverified, mailsec.Plaintext:
	default:
		if !direct {
			return nil, refuse(host, errLevel,
				"the "+sec.Level.String()+" level applies to direct delivery to MX hosts, not to submission", nil)
		}
	}
	// TLS-Required: No (RFC 8689 §5) sets the recipient domain's DANE and
	// MTA-STS policies aside, never TLS itself: the levels that would have
	// applied them require TLS without authentication instead.
	if direct && hop.tlsRequiredNo && usesDomainPolicies(sec.Level) {
		return &hostPlan{pol: &tlsPolicy{mode: tlsUnverified}, policy: "tls-required-no", serverName: host}, nil
	}
	var dn daneRecords
	if direct {
		var err error
		if dn, err = hop.daneRecords(host); err != nil {
			return nil, err
		}
	}
	hp := &hostPlan{serverName: host}
	switch sec.Level {
	case mailsec.Verified:
		switch {
		case !direct:
			hp.pol, hp.policy = &tlsPolicy{mode: tlsWebPKI, label: mailsec.VerifiedWebPKI}, "verified"
		case dn.usable():
			dn.apply(hp, hop.now)
		case hop.ds.enforce:
			// MTA-STS (RFC 8461 §4): a host the policy does not list
			// gets nothing.
			if p := hop.ds.sts.Policy; !p.Matches(host) {
				return nil, refuse(host, errMXNotInPolicy,
					"the domain's MTA-STS policy (enforce) lists "+strings.Join(p.MX, ", "), nil)
			}
			hp.pol, hp.policy = &tlsPolicy{mode: tlsWebPKI, label: mailsec.VerifiedMTASTS}, "mta-sts"
		default:
			hp.pol, hp.policy = &tlsPolicy{mode: tlsWebPKI, label: mailsec.VerifiedWebPKI}, "verified"
			if hop.ds.testing {
				hp.policy = "mta-sts-testing"
				if !hop.ds.sts.Policy.Matches(host) {
					hp.note = "MTA-STS (testing): " + host + " is not listed in the policy; delivered as the testing mode allows"
					// Reported as the outcome of the session, which
					// counts once (RFC 8461 §5: testing mode reports).
					hp.violation = &tlsrpt.Result{Failure: tlsrpt.ValidationFailure,
						FailureReasonCode: "MX host " + host + " is not listed in the MTA-STS policy"}
				}
			}
		}
	case mailsec.DANE:
		switch {
		case dn.usable():
			dn.apply(hp, hop.now)
		case dn.found():
			// The domain asked for DANE: TLS is required, without
			// authentication (RFC 7672 §2.2, RFC 7671 §10.3).
			hp.pol, hp.policy = &tlsPolicy{mode: tlsUnverified}, "dane-unusable"
		default:
			hp.pol, hp.policy = &tlsPolicy{mode: tlsUnverified, optional: true}, "may"
		}
	case mailsec.DANEOnly:
		if !dn.usable() {
			why := "the host has no DNSSEC-authenticated TLSA records"
			if dn.found() {
				why = "the host's TLSA records are all unusable for SMTP"
			}
			return nil, refuse(host, errDANERequired, why, nil)
		}
		dn.apply(hp, hop.now)
	case mailsec.VerifyMX:
		hp.pol, hp.policy = &tlsPolicy{mode: tlsWebPKI, label: mailsec.VerifiedWebPKI}, "verify"
	case mailsec.SecureDomain:
		hp.pol, hp.policy = &tlsPolicy{mode: tlsDomain, names: []string{hop.ds.domain}, now: hop.now}, "secure"
	case mailsec.Pinned:
		hp.pol, hp.policy = &tlsPolicy{mode: tlsPinned, pins: slices.Clone(sec.Pins)}, "pinned"
	case mailsec.Unverified:
		hp.pol, hp.policy = &tlsPolicy{mode: tlsUnverified}, "encrypt"
	case mailsec.Opportunistic:
		hp.pol, hp.policy = &tlsPolicy{mode: tlsUnverified, optional: true}, "may"
	case mailsec.Plaintext:
		hp.pol, hp.policy = &tlsPolicy{mode: tlsNone, loopbackOnly: true}, "plaintext"
	case mailsec.Cleartext:
		hp.pol, hp.policy = &tlsPolicy{mode: tlsNone}, "none"
	default:
		return nil, refuse(host, errLevel, "unknown level "+sec.Level.String(), nil)
	}
	if !direct {
		hp.serverName = ""
		return hp, nil
	}

	// REQUIRETLS (RFC 8689 §4.2.1): only to an MX host that DNSSEC or an
	// enforced MTA-STS policy vouches for, and only over a session that
	// authenticates it (the session checks the server offers REQUIRETLS).
	if hop.requireTLS {
		if !hp.pol.authenticates() {
			return nil, refuse(host, errRequireTLS,
				"the message demands REQUIRETLS and the level for this host ("+hp.policy+") does not authenticate it (5.7.30)", nil)
		}
		vouched := hop.ds.route.authentic || hop.ds.enforce && hop.ds.sts.Policy.Matches(host)
		if !vouched {
			return nil, refuse(host, errRequireTLS,
				"the message demands REQUIRETLS and this MX host is vouched for neither by DNSSEC nor by an MTA-STS policy in enforce mode (5.7.30)", nil)
		}
	}
	return hp, nil
}

// usesDomainPolicies reports whether a level applies the recipient
// domain's DANE and MTA-STS policies, which TLS-Required: No sets aside.
func usesDomainPolicies(l mailsec.SecurityLevel) bool {
	return l == mailsec.Verified || l == mailsec.DANE || l == mailsec.DANEOnly
}

// wantsTLSA reports whether direct delivery of d looks up the TLSA
// records of (secure) MX hosts: when its level may apply DANE.
func wantsTLSA(d *mailsec.Delivery) bool {
	return usesDomainPolicies(d.Security.Level) && !d.TLSRequiredNo
}

// wantsMTASTS reports whether direct delivery of d needs the domain's
// MTA-STS policy: it is the default level's second defence, and decides
// which MX hosts REQUIRETLS may use.
func wantsMTASTS(d *mailsec.Delivery) bool {
	return d.Security.Level == mailsec.Verified && !d.TLSRequiredNo || d.RequireTLS
}

// neverAuthenticates reports whether sessions at a level never
// authenticate the server, so that a message demanding REQUIRETLS is
// refused before any lookup or connection.
func neverAuthenticates(l mailsec.SecurityLevel) bool {
	switch l {
	case mailsec.Unverified, mailsec.Plaintext, mailsec.Opportunistic, mailsec.Cleartext:
		return true
	}
	return false
}

// daneRecords is what DANE makes of an MX host (RFC 7672 §2.2): TLSA
// records count only when the MX and address lookups were authenticated.
type daneRecords struct {
	set   tlsaSet
	names []string // reference identifiers for DANE-TA (RFC 7672 §3.2.2)
}

// daneRecords returns the host's TLSA records as DANE counts them. A
// failed TLSA lookup of a secure host is an error: no connection until the
// records are known, since an attacker may have suppressed them.
func (h *mxHop) daneRecords(host string) (daneRecords, error) {
	if h.mx.tlsaErr != nil {
		e := refuse(host, errTLSALookup,
			"the host's MX and address records are DNSSEC-signed, so its TLSA records must be known before connecting", h.mx.tlsaErr)
		e.Temp = true
		return daneRecords{}, e
	}
	return daneRecords{set: h.mx.tlsa, names: h.mx.tlsa.names(host)}, nil
}

// usable: the host has records DANE can authenticate it with.
func (d daneRecords) usable() bool { return len(d.set.usable) > 0 }

// found: the host has DNSSEC-authenticated TLSA records, usable or not.
func (d daneRecords) found() bool { return len(d.set.records) > 0 }

// apply makes hp require a certificate that matches a usable record,
// checked for the TLSA base domain.
func (d daneRecords) apply(hp *hostPlan, now func() time.Time) {
	hp.pol, hp.policy = &tlsPolicy{mode: tlsDANE, tlsa: d.set.usable, names: d.names, now: now}, "dane"
	hp.serverName = d.set.base
	for _, r := range d.set.usable {
		hp.tlsa = append(hp.tlsa, r.String())
	}
}

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
