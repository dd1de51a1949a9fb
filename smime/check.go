package smime

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/smallstep/pkcs7"
)

// maxUpload bounds the certificate data CheckCertificate reads.
const maxUpload = 1 << 20

// maxPKCS7 bounds a PKCS#7 certificate bundle: a few certificates, and
// the parser has no nesting limit of its own.
const maxPKCS7 = 64 << 10

// CertificateCheck describes a certificate that CheckCertificate accepted.
type CertificateCheck struct {
	// Address is the address it was checked for.
	Address string
	// Certificate is the recipient's (end-entity) certificate.
	Certificate *x509.Certificate
	// Chain is Certificate followed by the CA certificates that came with
	// it: what to keep in a CertStore (Replace) or in a database behind a
	// CertSource, so that sending builds the same chain.
	Chain []*x509.Certificate
	// Fingerprint is the hex SHA-256 of the certificate's DER, as Receipts
	// record it (mailsec.ProtectionInfo.Fingerprint).
	Fingerprint string
	// Expires is the earliest NotAfter of the chain to the roots: from
	// then on, sending to Address refuses this certificate.
	Expires time.Time
	// Notes are warnings that do not refuse the certificate, the ones a
	// Receipt would carry: "certificate expires in 12 days (2026-12-14)"
	// within Options.ExpiryWarning.
	Notes []string
}

// CheckCertificate checks a certificate a user uploads for addr (the
// address in SMTP form, local@domain) as Protect would check it for that
// recipient now: the same rules, roots, intermediates, clock and options,
// through the same code, so that a certificate accepted here is one Send
// encrypts to, and one refused here is one Send refuses. data is the
// certificate in PEM ("CERTIFICATE" or "PKCS7" blocks), DER, or a DER
// PKCS#7 certificate bundle (.p7c, .p7b), possibly with the CA
// certificates of its chain; it must hold exactly one end-entity
// certificate.
//
// A refusal is a *CertificateError whose Problem says why (errors.Is(err,
// smime.Expired), WrongAddress, Untrusted, WeakKey, UnsupportedKey,
// KeyUsage, NotYetValid, Malformed, Revoked, RevocationUnknown, Unusable)
// and whose Error() names the certificate and the address. A certificate
// that expires within Options.ExpiryWarning is accepted, with a note.
func (p *Protector) CheckCertificate(ctx context.Context, data []byte, addr string) (*CertificateCheck, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if at := strings.LastIndexByte(addr, '@'); at <= 0 || at == len(addr)-1 || strings.ContainsAny(addr, " <>\r\n") {
		// An empty address would skip the address rule.
		return nil, &CertificateError{Address: addr, Problem: WrongAddress,
			Reason: fmt.Sprintf("%q is not an address (local@domain)", addr)}
	}
	certs, err := parseUpload(data)
	if err != nil {
		return nil, &CertificateError{Address: addr, Problem: Malformed, Reason: err.Error()}
	}
	var leaf *x509.Certificate
	var cas []*x509.Certificate
	for _, c := range certs {
		if c.BasicConstraintsValid && c.IsCA {
			cas = append(cas, c)
			continue
		}
		if leaf != nil && !leaf.Equal(c) {
			return nil, &CertificateError{Address: addr, Problem: Unusable,
				Reason: fmt.Sprintf("more than one end-entity certificate (%s and %s): upload one", leaf.Subject, c.Subject)}
		}
		leaf = c
	}
	if leaf == nil {
		return nil, &CertificateError{Address: addr, Problem: Unusable,
			Reason: "only CA certificates, no end-entity certificate"}
	}
	c, fp, expires, notes, ce := p.chooseFrom(ctx, addr, certs)
	if ce != nil {
		return nil, ce
	}
	chk := &CertificateCheck{
		Address:     addr,
		Certificate: c,
		Chain:       append([]*x509.Certificate{c}, cas...),
		Fingerprint: hex.EncodeToString(fp[:]),
		Expires:     expires,
	}
	if n := p.expiryNote(expires); n != "" {
		chk.Notes = []string{n}
	}
	chk.Notes = append(chk.Notes, notes...)
	return chk, nil
}

// parseUpload reads the certificates of PEM, DER or DER PKCS#7 data.
func parseUpload(data []byte) ([]*x509.Certificate, error) {
	if len(data) > maxUpload {
		return nil, fmt.Errorf("larger than %d bytes", maxUpload)
	}
	if bytes.Contains(data, []byte("-----BEGIN ")) {
		var certs []*x509.Certificate
		n := 0
		for {
			var b *pem.Block
			b, data = pem.Decode(data)
			if b == nil {
				break
			}
			n++
			var cs []*x509.Certificate
			var err error
			switch b.Type {
			case "CERTIFICATE":
				var c *x509.Certificate
				c, err = x509.ParseCertificate(b.Bytes)
				cs = []*x509.Certificate{c}
			case "PKCS7", "CMS":
				cs, err = parsePKCS7(b.Bytes)
			default:
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("PEM block %d (%s): %w", n, b.Type, err)
			}
			certs = append(certs, cs...)
		}
		if len(certs) == 0 {
			return nil, fmt.Errorf("no certificate in %d PEM blocks", n)
		}
		return certs, nil
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("empty")
	}
	if certs, err := x509.ParseCertificates(data); err == nil && len(certs) > 0 {
		return certs, nil
	} else if certs, err2 := parsePKCS7(data); err2 == nil {
		return certs, nil
	} else {
		return nil, fmt.Errorf("neither PEM, nor DER certificates (%v), nor PKCS#7 (%v)", err, err2)
	}
}

// parsePKCS7 returns the certificates of a PKCS#7 SignedData (a
// certificates-only bundle, or a signature).
func parsePKCS7(der []byte) (certs []*x509.Certificate, err error) {
	if len(der) > maxPKCS7 {
		return nil, fmt.Errorf("PKCS#7 larger than %d bytes", maxPKCS7)
	}
	defer func() {
		if v := recover(); v != nil {
			certs, err = nil, fmt.Errorf("corrupt PKCS#7: %v", v)
		}
	}()
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return nil, err
	}
	if len(p7.Certificates) == 0 {
		return nil, fmt.Errorf("PKCS#7 without certificates")
	}
	return p7.Certificates, nil
}
