package smime

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"

	"github.com/mailsec/mailsec/smime/revocation"
)

// checkRevocation establishes, when the Protector has a revocation
// Checker, that neither c (for addr, with SHA-256 fingerprint fp) nor a
// CA certificate of its chain below the root has been revoked. It returns
// what was established, as notes for the Receipt, or the refusal: a
// revoked certificate always (permanent), a status that could not be
// established unless RevocationSoftFail (temporary when a source may
// answer later; not when c names no responder and no CRL, or only ones
// that are not fetched). CA certificates that name no responder and no
// CRL are passed over without a note: many CAs publish nothing for their
// intermediates, and the recipient certificate is checked regardless.
func (p *Protector) checkRevocation(ctx context.Context, c *x509.Certificate, fp *[32]byte, addr string, ch chainPool) ([]string, *CertificateError) {
	if p.rev == nil {
		return nil, nil
	}
	fail := func(pr Problem, reason string, err error) *CertificateError {
		return &CertificateError{Address: addr, Subject: c.Subject.String(), Problem: pr, Reason: reason, Err: err}
	}
	chains, _, err := p.verify(c, fp, p.now(), ch)
	if err != nil || len(chains) == 0 || len(chains[0]) == 0 {
		return nil, fail(Untrusted, "chain does not verify", err)
	}
	chain := chains[0]
	var notes []string
	for i := 0; i+1 < len(chain); i++ {
		cert, issuer := chain[i], chain[i+1]
		what := "certificate"
		if i > 0 {
			what = "CA certificate " + cert.Subject.String()
		}
		st, err := p.rev.Check(ctx, cert, issuer)
		var unknown string // why the status cannot be established
		switch {
		case err == nil && st.Source == revocation.SourceNone && i > 0:
			continue
		case err == nil && st.Source == revocation.SourceNone:
			// Nothing to ask: the status cannot be established, now or
			// later.
			err = &revocation.UnavailableError{Subject: st.Subject, Serial: st.Serial}
			unknown = "it names no OCSP responder and no CRL distribution point"
		case err != nil:
			unknown = err.Error()
		}
		switch {
		case err == nil:
			notes = append(notes, strings.Replace(st.String(), "certificate", what, 1))
		case errors.Is(err, revocation.ErrRevoked):
			if i > 0 {
				return nil, fail(Revoked, "issuing CA certificate revoked", err)
			}
			return nil, fail(Revoked, "revoked", err)
		case p.revSoft && ctx.Err() == nil:
			notes = append(notes, "revocation of "+what+" not checked: "+unknown+"; sent because RevocationSoftFail")
		default:
			return nil, fail(RevocationUnknown, "revocation status unavailable", err)
		}
	}
	return notes, nil
}
