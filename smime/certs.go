package smime

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/mailsec/mailsec/internal/syntax"
)

// CertSource finds the certificates published for a recipient. Lookup
// receives the address in SMTP form (local@domain, A-label domain) and
// returns every candidate; the Protector checks them and picks the newest
// usable one. An address without certificates returns (nil, nil).
// Implementations must be safe for concurrent use.
type CertSource interface {
	Lookup(ctx context.Context, addr string) ([]*x509.Certificate, error)
}

// CertStore is an in-memory CertSource indexed by the rfc822Name SANs of
// its certificates. It is immutable and safe for concurrent use. The zero
// CertStore, like NewCertStore(), holds no certificate: every Lookup finds
// none.
type CertStore struct {
	byAddr map[string][]*x509.Certificate
	all    []*x509.Certificate
}

// maxPEM bounds the size of a certificate or key file.
const maxPEM = 16 << 20

// ReadCertificates reads PEM "CERTIFICATE" blocks from r. Other block
// types (keys, parameters) are skipped; text between blocks is ignored.
// A block that does not parse, or input without any certificate, is an
// error naming the block's position.
func ReadCertificates(r io.Reader) (*CertStore, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxPEM+1))
	if err != nil {
		return nil, fmt.Errorf("smime: reading certificates: %w", err)
	}
	if len(data) > maxPEM {
		return nil, fmt.Errorf("smime: certificate file larger than %d bytes", maxPEM)
	}
	certs, err := parseCertificates(data)
	if err != nil {
		return nil, err
	}
	return NewCertStore(certs...), nil
}

// NewCertStore returns a CertStore holding the given certificates (nil
// ones are left out). With none, it is an empty store: for an application
// that has no recipients' certificates yet, whose recipients then get
// what their plan says for a recipient without one.
func NewCertStore(certs ...*x509.Certificate) *CertStore {
	s := &CertStore{byAddr: map[string][]*x509.Certificate{}}
	for _, c := range certs {
		if c == nil {
			continue
		}
		s.all = append(s.all, c)
		seen := map[string]bool{}
		for _, e := range c.EmailAddresses {
			k := normAddr(e)
			if seen[k] {
				continue
			}
			seen[k] = true
			s.byAddr[k] = append(s.byAddr[k], c)
		}
	}
	return s
}

func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		n++
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("smime: PEM block %d: corrupt certificate: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(data)) > 0 && bytes.Contains(data, []byte("-----BEGIN")) {
		return nil, fmt.Errorf("smime: PEM block %d: corrupt PEM (no valid block after %d)", n+1, n)
	}
	if len(certs) == 0 {
		return nil, errors.New("smime: no PEM certificate found")
	}
	return certs, nil
}

// LoadCertificates reads a PEM file of recipient certificates (see
// ReadCertificates).
func LoadCertificates(path string) (*CertStore, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("smime: %w", err)
	}
	defer f.Close()
	s, err := ReadCertificates(f)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return s, nil
}

// LoadRoots reads a PEM file of trusted root certificates into a pool.
func LoadRoots(path string) (*x509.CertPool, error) {
	s, err := LoadCertificates(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range s.all {
		pool.AddCert(c)
	}
	return pool, nil
}

// Intermediates returns the CA certificates in the store (those with
// basic constraints saying they are a CA), for building chains from
// recipients' certificates to the roots; nil when there are none. A
// Protector whose Options.Intermediates is nil uses them. They add no
// trust: a chain must still end at one of the Protector's roots.
func (s *CertStore) Intermediates() *x509.CertPool {
	var pool *x509.CertPool
	for _, c := range s.all {
		if c.BasicConstraintsValid && c.IsCA {
			if pool == nil {
				pool = x509.NewCertPool()
			}
			pool.AddCert(c)
		}
	}
	return pool
}

// Certificates returns every certificate in the store, in file order.
func (s *CertStore) Certificates() []*x509.Certificate {
	return append([]*x509.Certificate(nil), s.all...)
}

// Lookup returns the certificates whose rfc822Name SAN equals addr
// (ASCII case-insensitively).
func (s *CertStore) Lookup(ctx context.Context, addr string) ([]*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return append([]*x509.Certificate(nil), s.byAddr[normAddr(addr)]...), nil
}

// normAddr folds an address for comparison. Real-world certificates and
// clients (gpgsm, Thunderbird) compare the whole address without regard
// to ASCII case.
func normAddr(a string) string { return syntax.FoldAddress(a) }

// CertificateError says why a certificate cannot be used. It is wrapped in
// a *mailsec.ProtectionError (KeyID = Subject) for recipient certificates.
type CertificateError struct {
	Address string // the recipient or signer address concerned
	Subject string // the certificate subject, RFC 2253 form
	Reason  string // "expired", "not yet valid", "untrusted root"...
	Err     error  // the underlying verification error, if any
}

func (e *CertificateError) Error() string {
	s := "smime: certificate " + e.Subject
	if e.Address != "" {
		s += " for " + e.Address
	}
	s += ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *CertificateError) Unwrap() error { return e.Err }

// usage selects which checks a certificate gets.
type usage int

const (
	forEncryption usage = iota
	forSigning
)

// check applies every rule to one certificate, whose SHA-256 fingerprint
// is fp, and returns the first failure. The chain check runs last because
// it is the costly one.
func (p *Protector) check(c *x509.Certificate, fp *[32]byte, addr string, u usage) *CertificateError {
	fail := func(reason string, err error) *CertificateError {
		return &CertificateError{Address: addr, Subject: c.Subject.String(), Reason: reason, Err: err}
	}
	if addr != "" && !hasEmail(c, addr) {
		return fail("no rfc822Name SAN for this address", nil)
	}
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < 2048 {
			return fail(fmt.Sprintf("weak algorithm: RSA-%d", bits), nil)
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
		if u == forEncryption {
			return fail("EC keys are not supported (no ECDH)", nil)
		}
		return fail("only RSA signing keys are supported", nil)
	default:
		return fail(fmt.Sprintf("unsupported public key %s", c.PublicKeyAlgorithm), nil)
	}
	now := p.now()
	if now.Before(c.NotBefore) {
		return fail("not yet valid", nil)
	}
	if now.After(c.NotAfter) {
		return fail("expired", nil)
	}
	switch u {
	case forEncryption:
		if c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
			return fail("keyUsage lacks keyEncipherment", nil)
		}
	case forSigning:
		if c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
			return fail("keyUsage lacks digitalSignature", nil)
		}
	}
	// x509.Verify accepts a leaf without extKeyUsage for any usage;
	// RFC 8550 allows that too, but we require the explicit purpose.
	if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageEmailProtection) {
		return fail("no emailProtection extKeyUsage", nil)
	}
	if _, err := p.verify(c, fp, now); err != nil {
		var inv x509.CertificateInvalidError
		var ua x509.UnknownAuthorityError
		switch {
		case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
			return fail("no emailProtection extKeyUsage", err)
		case errors.As(err, &ua):
			return fail("untrusted root", err)
		case errors.As(err, &inv) && inv.Reason == x509.Expired:
			return fail("chain expired", err)
		default:
			return fail("chain does not verify", err)
		}
	}
	return nil
}

func hasEmail(c *x509.Certificate, addr string) bool {
	// The same string folds the same: the common case needs no folding.
	if slices.Contains(c.EmailAddresses, addr) {
		return true
	}
	a := normAddr(addr)
	for _, e := range c.EmailAddresses {
		if normAddr(e) == a {
			return true
		}
	}
	return false
}
