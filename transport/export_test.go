package transport

import (
	"context"
	"crypto/tls"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
)

// Hooks for transport_test: they reach one layer of a check with the
// layer in front of it taken away.

// DialWith establishes a session as t would for a delivery under pol,
// without the checks Deliver makes before dialling, after alter (if set)
// has changed the TLS configuration the policy produced. It returns the
// session's state and closes it.
func DialWith(t *Submission, pol *tlsPolicy, alter func(*tls.Config)) (mailsec.ConnectionState, error) {
	if err := t.init(); err != nil {
		return mailsec.ConnectionState{}, err
	}
	dc := *t.dc
	dc.alterTLS = alter
	s, err := dc.dial(context.Background(), pol, "", nil)
	if err != nil {
		return mailsec.ConnectionState{}, err
	}
	defer s.close(true)
	return s.state, nil
}

// SubmissionPolicy is the policy a Submission uses for sec.
func SubmissionPolicy(sec mailsec.Security) *tlsPolicy {
	hp, err := requirement(sec, "", nil)
	if err != nil {
		return nil
	}
	return hp.pol
}

// DANEPolicy requires a certificate that matches one of the TLSA records.
func DANEPolicy(tlsa []dns.TLSA, names ...string) *tlsPolicy {
	return &tlsPolicy{mode: tlsDANE, tlsa: tlsa, names: names}
}

// DomainPolicy requires a chain valid for domain or a name below it.
func DomainPolicy(domain string) *tlsPolicy {
	return &tlsPolicy{mode: tlsDomain, names: []string{domain}}
}

// SetDataBlockTimeout shortens the time each write of a message's content
// is given, for the sessions t establishes from now on.
func SetDataBlockTimeout(t *Submission, d time.Duration) {
	if err := t.init(); err != nil {
		panic(err)
	}
	t.dc.dataBlock = d
}

// The reasons a session is refused for, so that a test can assert the
// one it expects beside the category.
var (
	FailStartTLSMissing   = errNoStartTLS
	FailStartTLSRefused   = errStartTLSRefused
	FailInjection         = errInjected
	FailNotTLS            = errNotTLS
	FailCertificate       = errCertificate
	FailPinMismatch       = errPinMismatch
	FailDANE              = errDANEMismatch
	FailHandshake         = errHandshake
	FailRequireTLS        = errRequireTLS
	FailPlaintextNotLocal = errPlaintextNotLocal
	FailPlaintextAuth     = errPlaintextAuth
)
