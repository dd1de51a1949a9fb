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
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/syntax"
)

// CertSource finds the certificates published for a recipient. Lookup
// receives the address in SMTP form (local@domain, A-label domain) and
// returns every candidate; the Protector checks them and picks the newest
// usable one. An address without certificates returns (nil, nil).
// Implementations must be safe for concurrent use.
//
// An application that keeps its users' certificates in its own database
// implements it with a query: store what CheckCertificate accepted
// (CertificateCheck.Chain, DER) under the address, and return those rows
// parsed. CA certificates among the returned ones (an intermediate the
// user uploaded with their certificate) are not candidates: they help
// build the others' chains and add no trust, as every chain must end at
// one of the Protector's roots. The Protector checks what Lookup returns
// at every Send, so a row replaced or deleted is used or dropped by the
// next Send. A failing query should return its error: the recipient is
// then not sent to, and the error is temporary when the cause is
// (mailsec.IsTemporary).
type CertSource interface {
	Lookup(ctx context.Context, addr string) ([]*x509.Certificate, error)
}

// CertStore is an in-memory CertSource indexed by the rfc822Name SANs of
// its certificates. It is safe for concurrent use: Add, Replace and
// Remove may run while Sends look certificates up, and each Lookup sees
// the store before or after a change, never half of one. The zero
// CertStore, like NewCertStore(), holds no certificate yet.
type CertStore struct {
	mu  sync.Mutex // serialises changes; readers load cur
	cur atomic.Pointer[certSnapshot]
}

// certSnapshot is one immutable state of a CertStore.
type certSnapshot struct {
	byAddr map[string][]*x509.Certificate
	all    []*x509.Certificate
	cas    []*x509.Certificate // the CA certificates of all
	inter  *x509.CertPool      // cas as a pool; nil when there are none
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
	s := &CertStore{}
	s.cur.Store(newSnapshot(certs, nil))
	return s
}

// newSnapshot indexes certs (nil ones left out, duplicates kept once).
// When its CA certificates are those of prev, it shares prev's pool: a
// Protector's cached chain checks stay valid while only recipients'
// certificates change.
func newSnapshot(certs []*x509.Certificate, prev *certSnapshot) *certSnapshot {
	sn := &certSnapshot{byAddr: map[string][]*x509.Certificate{}}
	for _, c := range certs {
		if c == nil || slices.ContainsFunc(sn.all, c.Equal) {
			continue
		}
		sn.all = append(sn.all, c)
		if c.BasicConstraintsValid && c.IsCA {
			sn.cas = append(sn.cas, c)
		}
		seen := map[string]bool{}
		for _, e := range c.EmailAddresses {
			k := normAddr(e)
			if seen[k] {
				continue
			}
			seen[k] = true
			sn.byAddr[k] = append(sn.byAddr[k], c)
		}
	}
	switch {
	case len(sn.cas) == 0:
	case prev != nil && slices.EqualFunc(prev.cas, sn.cas, (*x509.Certificate).Equal):
		sn.inter = prev.inter
	default:
		sn.inter = x509.NewCertPool()
		for _, c := range sn.cas {
			sn.inter.AddCert(c)
		}
	}
	return sn
}

func (s *CertStore) snapshot() *certSnapshot {
	if sn := s.cur.Load(); sn != nil {
		return sn
	}
	return &certSnapshot{}
}

// change applies f to a copy of the store's certificates, under the
// store's lock, and publishes the result.
func (s *CertStore) change(f func(all []*x509.Certificate) ([]*x509.Certificate, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.snapshot()
	all, err := f(slices.Clone(prev.all))
	if err != nil {
		return err
	}
	s.cur.Store(newSnapshot(all, prev))
	return nil
}

// Add adds certificates to the store: recipients' certificates, and CA
// certificates that help build their chains (see Intermediates). A
// certificate already held is not added twice; nil ones are left out.
// The next Lookup finds them.
func (s *CertStore) Add(certs ...*x509.Certificate) {
	_ = s.change(func(all []*x509.Certificate) ([]*x509.Certificate, error) {
		return append(all, certs...), nil
	})
}

// Replace removes every certificate naming addr (see Remove) and adds
// certs in one step: a Lookup sees the old certificates or the new ones,
// never none. It is what to call when a user uploads a new certificate
// (after CheckCertificate accepted it). Each of certs that is not a CA
// certificate must name addr in an rfc822Name SAN; otherwise nothing is
// changed and the error is a *CertificateError (Problem WrongAddress).
func (s *CertStore) Replace(addr string, certs ...*x509.Certificate) error {
	for _, c := range certs {
		if c != nil && !(c.BasicConstraintsValid && c.IsCA) && !hasEmail(c, addr) {
			return &CertificateError{Address: addr, Subject: c.Subject.String(), Problem: WrongAddress,
				Reason: "no rfc822Name SAN for this address"}
		}
	}
	return s.change(func(all []*x509.Certificate) ([]*x509.Certificate, error) {
		all = slices.DeleteFunc(all, func(c *x509.Certificate) bool { return hasEmail(c, addr) })
		return append(all, certs...), nil
	})
}

// Remove removes every certificate naming addr in an rfc822Name SAN
// (ASCII case-insensitively) and returns how many it removed. A
// certificate that also names other addresses is gone for them too. CA
// certificates stay.
func (s *CertStore) Remove(addr string) int {
	n := 0
	_ = s.change(func(all []*x509.Certificate) ([]*x509.Certificate, error) {
		before := len(all)
		all = slices.DeleteFunc(all, func(c *x509.Certificate) bool { return hasEmail(c, addr) })
		n = before - len(all)
		return all, nil
	})
	return n
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
	for _, c := range s.snapshot().all {
		pool.AddCert(c)
	}
	return pool, nil
}

// Intermediates returns the CA certificates in the store (those with
// basic constraints saying they are a CA), for building chains from
// recipients' certificates to the roots; nil when there are none. A
// Protector whose Options.Intermediates is nil asks for them at each
// check, so CA certificates added later are used. They add no trust: a
// chain must still end at one of the Protector's roots. The pool returned
// must not be changed.
func (s *CertStore) Intermediates() *x509.CertPool { return s.snapshot().inter }

// Certificates returns every certificate in the store, in the order
// added.
func (s *CertStore) Certificates() []*x509.Certificate {
	return slices.Clone(s.snapshot().all)
}

// Lookup returns the certificates whose rfc822Name SAN equals addr
// (ASCII case-insensitively).
func (s *CertStore) Lookup(ctx context.Context, addr string) ([]*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return slices.Clone(s.snapshot().byAddr[normAddr(addr)]), nil
}

// normAddr folds an address for comparison. Real-world certificates and
// clients (gpgsm, Thunderbird) compare the whole address without regard
// to ASCII case.
func normAddr(a string) string { return syntax.FoldAddress(a) }

// Problem classifies why a certificate cannot be used. A
// *CertificateError matches its Problem with errors.Is:
//
//	if errors.Is(err, smime.Expired) { ... }
type Problem int

// The problems a certificate check finds. Unusable covers what has no
// closer class (a certificate that is not an end-entity one, say).
const (
	Unusable       Problem = iota
	Malformed              // the input is not a certificate (PEM, DER or PKCS#7)
	WrongAddress           // no rfc822Name SAN for the address
	WeakKey                // RSA below 2048 bits
	UnsupportedKey         // not an RSA key (EC keys have no key transport here)
	NotYetValid            // before its NotBefore
	Expired                // after its NotAfter, or a certificate of its chain is
	KeyUsage               // keyUsage or extKeyUsage does not allow e-mail protection
	Untrusted              // no chain to the roots
	Revoked                // its CA revoked it, or a CA certificate of its chain was revoked
	// RevocationUnknown: a revocation Checker is set and could not
	// establish the status (no responder or CRL answered validly). Its
	// error is temporary, a later attempt may get an answer, unless the
	// certificate names no responder and no CRL that can be fetched.
	RevocationUnknown
)

var problemNames = [...]string{
	Unusable:          "unusable certificate",
	Malformed:         "malformed certificate",
	WrongAddress:      "wrong address",
	WeakKey:           "weak key",
	UnsupportedKey:    "unsupported key",
	NotYetValid:       "not yet valid",
	Expired:           "expired",
	KeyUsage:          "key usage",
	Untrusted:         "untrusted chain",
	Revoked:           "revoked",
	RevocationUnknown: "revocation status unavailable",
}

// String names the problem.
func (p Problem) String() string {
	if p < 0 || int(p) >= len(problemNames) {
		return fmt.Sprintf("smime.Problem(%d)", int(p))
	}
	return problemNames[p]
}

// Error lets a Problem be the target of errors.Is. It is String, so
// that fmt prints a Problem by its name.
func (p Problem) Error() string { return p.String() }

// CertificateError says why a certificate cannot be used. It is wrapped in
// a *mailsec.ProtectionError (KeyID = Subject) for recipient certificates,
// and returned as it is by CheckCertificate.
type CertificateError struct {
	Address string  // the recipient or signer address concerned
	Subject string  // the certificate subject, RFC 2253 form
	Problem Problem // the class of Reason, for errors.Is
	Reason  string  // "expired", "not yet valid", "untrusted root"...
	Err     error   // the underlying verification error, if any
}

func (e *CertificateError) Error() string {
	s := "smime: certificate"
	if e.Subject != "" {
		s += " " + e.Subject
	}
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

// Is reports whether target is e's Problem.
func (e *CertificateError) Is(target error) bool {
	p, ok := target.(Problem)
	return ok && p == e.Problem
}

// Temporary reports whether checking again later may give another answer
// for the same certificate: only when the cause says so (a revocation
// responder that could not be reached, say). An expired, weak or
// untrusted certificate stays refused.
func (e *CertificateError) Temporary() bool { return e.Err != nil && mailsec.IsTemporary(e.Err) }

// usage selects which checks a certificate gets.
type usage int

const (
	forEncryption usage = iota
	forSigning
)

// check applies every rule to one certificate, whose SHA-256 fingerprint
// is fp, and returns the first failure, or the earliest NotAfter of the
// verified chain. The chain check runs last because it is the costly one.
// ch holds the certificates that help build the chain.
// Sending and CheckCertificate both come here.
func (p *Protector) check(c *x509.Certificate, fp *[32]byte, addr string, u usage, ch chainPool) (time.Time, *CertificateError) {
	fail := func(pr Problem, reason string, err error) (time.Time, *CertificateError) {
		return time.Time{}, &CertificateError{Address: addr, Subject: c.Subject.String(), Problem: pr, Reason: reason, Err: err}
	}
	if addr != "" && !hasEmail(c, addr) {
		return fail(WrongAddress, "no rfc822Name SAN for this address", nil)
	}
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < 2048 {
			return fail(WeakKey, fmt.Sprintf("weak algorithm: RSA-%d", bits), nil)
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
		if u == forEncryption {
			return fail(UnsupportedKey, "EC keys are not supported (no ECDH)", nil)
		}
		return fail(UnsupportedKey, "only RSA signing keys are supported", nil)
	default:
		return fail(UnsupportedKey, fmt.Sprintf("unsupported public key %s", c.PublicKeyAlgorithm), nil)
	}
	now := p.now()
	if now.Before(c.NotBefore) {
		return fail(NotYetValid, "not yet valid", nil)
	}
	if now.After(c.NotAfter) {
		return fail(Expired, "expired", nil)
	}
	switch u {
	case forEncryption:
		if c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
			return fail(KeyUsage, "keyUsage lacks keyEncipherment", nil)
		}
	case forSigning:
		if c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
			return fail(KeyUsage, "keyUsage lacks digitalSignature", nil)
		}
	}
	// x509.Verify accepts a leaf without extKeyUsage for any usage;
	// RFC 8550 allows that too, but we require the explicit purpose.
	if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageEmailProtection) {
		return fail(KeyUsage, "no emailProtection extKeyUsage", nil)
	}
	_, expires, err := p.verify(c, fp, now, ch)
	if err != nil {
		var ce *CertificateError
		var inv x509.CertificateInvalidError
		var ua x509.UnknownAuthorityError
		switch {
		case errors.As(err, &ce):
			// A verdict of the chain check itself (revocation, say).
			cp := *ce
			cp.Address, cp.Subject = addr, c.Subject.String()
			return time.Time{}, &cp
		case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
			return fail(KeyUsage, "no emailProtection extKeyUsage", err)
		case errors.As(err, &ua):
			return fail(Untrusted, "untrusted root", err)
		case errors.As(err, &inv) && inv.Reason == x509.Expired:
			return fail(Expired, "chain expired", err)
		default:
			return fail(Untrusted, "chain does not verify", err)
		}
	}
	return expires, nil
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
