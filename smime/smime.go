package smime

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/smallstep/pkcs7"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/mimeprot"
	"github.com/mailsec/mailsec/internal/syntax"
	"github.com/mailsec/mailsec/internal/typednil"
	"github.com/mailsec/mailsec/smime/revocation"
)

// Method is the name of S/MIME protection: what Protector.Method returns,
// the name mailsec.Plan.Methods refers to it by, and what Receipts and
// errors record.
const Method = "smime"

// DefaultMaxSize is the largest inner entity (the protected message with
// all its attachments, before encryption) that Protect signs when
// Options.MaxSize is zero.
const DefaultMaxSize = 32 << 20

// ErrTooLarge is returned (wrapped, while the message is written) when the
// content to sign exceeds Options.MaxSize. Nothing is delivered then.
var ErrTooLarge = errors.New("smime: message larger than the S/MIME size limit")

// Options configures a Protector. A nil *Options means the zero value.
type Options struct {
	// Roots are the trust anchors that recipient (and signer)
	// certificates must chain to. Nil means the system roots.
	Roots *x509.CertPool
	// Intermediates are intermediate CA certificates that help build
	// chains from recipient certificates to Roots; they are not trusted by
	// themselves.
	Intermediates *x509.CertPool

	// Signer, when set, signs the content (multipart/signed, detached
	// SHA-256) before it is encrypted.
	Signer *Signer

	// OuterSubject replaces the Subject on the outside of the message;
	// the real one travels inside. Empty means "...". It is checked as any
	// header text (New refuses controls and encoded-word syntax) and
	// encoded when it is not ASCII.
	OuterSubject string

	// MaxSize bounds the inner entity in bytes when signing. Zero means
	// DefaultMaxSize. A signed message is held in memory while it is
	// signed; one above MaxSize fails with ErrTooLarge instead of
	// exhausting memory. Encryption alone streams and has no limit.
	MaxSize int64

	// Now returns the time certificates are checked against. Nil means
	// time.Now.
	Now func() time.Time

	// Algorithms is what every recipient's mail reader decrypts beyond
	// AES-256-CBC and RSA PKCS #1 v1.5. The zero value keeps to those,
	// which gpgsm 2.2 and Outlook read.
	Algorithms Algorithms
	// Readers, when set, decides per recipient instead of Algorithms.
	// A message gets AES-256-GCM only when every one of its recipients
	// allows it; RSA-OAEP is chosen per recipient.
	Readers ReaderAlgorithms
	// ExpiryWarning is how long before a recipient's certificate (or a
	// certificate of its chain) expires that Protect notes it in the
	// recipient's Receipt and CheckCertificate warns of it. Zero means
	// DefaultExpiryWarning; a negative value turns the note off.
	ExpiryWarning time.Duration
	// Revocation, when set, checks by OCSP and CRLs that no recipient
	// certificate, nor a CA certificate between it and the roots, has
	// been revoked before content is encrypted to it (see package
	// smime/revocation). A revoked certificate is refused. Nil checks
	// nothing.
	Revocation *revocation.Checker
	// RevocationSoftFail encrypts to a certificate whose revocation
	// status could not be established (responder unreachable, no valid
	// answer, or no responder and no CRL named that can be fetched),
	// noting it in the Receipt. By default such a recipient is refused,
	// with a temporary error when a later retry may succeed.
	RevocationSoftFail bool
}

// DefaultExpiryWarning is the Options.ExpiryWarning used when it is zero.
const DefaultExpiryWarning = 30 * 24 * time.Hour

// Protector encrypts (and optionally signs) messages as S/MIME for
// recipients whose certificates a CertSource provides. It implements
// mailsec.Protector and is safe for concurrent use.
type Protector struct {
	certs CertSource
	roots *x509.CertPool
	// inter is Options.Intermediates; when nil, interSrc (the CertSource,
	// when it has CA certificates to lend) is asked at each check, so
	// that a CertStore changed at run time lends its current ones.
	inter    *x509.CertPool
	interSrc interface{ Intermediates() *x509.CertPool }
	signer   *Signer
	// signerInter adds the signer's own chain to inter.
	signerInter *x509.CertPool
	subject     string
	maxSize     int64
	nowFunc     func() time.Time
	algorithms  Algorithms
	readers     ReaderAlgorithms
	warn        time.Duration // Options.ExpiryWarning; negative: none
	verified    sync.Map      // verifyKey → verifyResult
	rev         *revocation.Checker
	revSoft     bool
}

// verifyKey caches a chain verification per certificate, intermediates
// and minute. extra is zero, or a digest of the CA certificates that came
// with the certificate (a CertSource that returns a chain).
type verifyKey struct {
	fp     [32]byte
	minute int64
	inter  *x509.CertPool
	extra  [32]byte
}

// chainPool is the pool of intermediates a check builds chains with:
// base (Options.Intermediates, the CertSource's, or the signer's), or
// pool, base plus the CA certificates that came with the certificate,
// whose digest is extra.
type chainPool struct {
	pool, base *x509.CertPool
	extra      [32]byte
}

type verifyResult struct {
	chains  [][]*x509.Certificate
	expires time.Time
	err     error
}

// New returns a Protector that finds recipient certificates in certs: a
// *CertStore (NewCertStore() with no arguments is an empty one, for an
// application that has no recipients' certificates yet) or a CertSource of
// the application's own. Every refusal is a *mailsec.ConfigError that
// names the setting at fault: certs nil or a nil pointer (a CertStore that
// failed to load, its error ignored), no Roots and no system roots, a
// Signer whose certificate cannot sign (unwrapping to its
// *CertificateError), an OuterSubject that is not plain header text.
func New(certs CertSource, o *Options) (*Protector, error) {
	if typednil.Is(certs) {
		name := ""
		if certs != nil {
			name = fmt.Sprintf("%T", certs)
		}
		return nil, &mailsec.ConfigError{Field: "smime.New certs", Value: name,
			Reason: "nil: give New a CertSource: a *smime.CertStore (smime.NewCertStore() holds no certificate yet) or your own"}
	}
	if o == nil {
		o = &Options{}
	}
	p := &Protector{
		certs:   certs,
		roots:   o.Roots,
		inter:   o.Intermediates,
		signer:  o.Signer,
		subject: o.OuterSubject,
		maxSize: o.MaxSize,
		nowFunc: o.Now,
		warn:    o.ExpiryWarning,
		rev:     o.Revocation,
		revSoft: o.RevocationSoftFail,

		algorithms: o.Algorithms,
		readers:    o.Readers,
	}
	if p.warn == 0 {
		p.warn = DefaultExpiryWarning
	}
	if p.inter == nil {
		// A source that carries the CA certificates between its
		// recipients' certificates and the roots (a CertStore read from a
		// file with them) lends them for building chains. They add no
		// trust: every chain must still end at one of the roots.
		if is, ok := certs.(interface{ Intermediates() *x509.CertPool }); ok {
			p.interSrc = is
		}
	}
	if p.roots == nil {
		roots, err := x509.SystemCertPool()
		if err != nil {
			return nil, &mailsec.ConfigError{Field: "smime.Options.Roots", Reason: "nil, and the system has no roots to use instead: load the CA certificates with LoadRoots", Err: err}
		}
		p.roots = roots
	}
	if p.subject == "" {
		p.subject = mimeprot.DefaultSubject
	}
	subject, err := mimeprot.OuterSubject(p.subject)
	if err != nil {
		return nil, &mailsec.ConfigError{Field: "smime.Options.OuterSubject", Value: p.subject, Reason: err.Error()}
	}
	p.subject = subject
	if p.maxSize <= 0 {
		p.maxSize = DefaultMaxSize
	}
	if p.signer != nil {
		p.signerInter = x509.NewCertPool()
		if inter := p.intermediates(); inter != nil {
			p.signerInter = inter.Clone()
		}
		for _, c := range p.signer.chain[1:] {
			p.signerInter.AddCert(c)
		}
		if err := p.checkSigner(); err != nil {
			return nil, &mailsec.ConfigError{Field: "smime.Options.Signer", Reason: "cannot sign", Err: err}
		}
	}
	return p, nil
}

// Method returns "smime", the name mailsec.Plan.Methods refers to this
// Protector by.
func (p *Protector) Method() string { return Method }

func (p *Protector) now() time.Time {
	if p.nowFunc != nil {
		return p.nowFunc()
	}
	return time.Now()
}

// intermediates returns the pool that helps build recipients' chains:
// Options.Intermediates, or the CertSource's current CA certificates.
func (p *Protector) intermediates() *x509.CertPool {
	if p.inter != nil || p.interSrc == nil {
		return p.inter
	}
	return p.interSrc.Intermediates()
}

// verify checks the chain of c, whose SHA-256 fingerprint is fp, to the
// roots for emailProtection at now, with ch to build it, and returns the earliest NotAfter of the chain it built.
// Results are cached per certificate and minute: a Protector is used for
// many sends to the same recipients, and the chain check costs more than
// encrypting a small message.
func (p *Protector) verify(c *x509.Certificate, fp *[32]byte, now time.Time, ch chainPool) ([][]*x509.Certificate, time.Time, error) {
	k := verifyKey{fp: *fp, minute: now.Unix() / 60, inter: ch.base, extra: ch.extra}
	if v, ok := p.verified.Load(k); ok {
		r := v.(verifyResult)
		return r.chains, r.expires, r.err
	}
	chains, err := c.Verify(x509.VerifyOptions{
		Roots:         p.roots,
		Intermediates: ch.pool,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	})
	var expires time.Time
	if err == nil {
		expires = chainExpiry(chains)
	}
	p.verified.Range(func(key, _ any) bool {
		// Drop entries of past minutes so the cache stays small.
		if key.(verifyKey).minute < k.minute-1 {
			p.verified.Delete(key)
		}
		return true
	})
	p.verified.Store(k, verifyResult{chains, expires, err})
	return chains, expires, err
}

// chainExpiry returns when the longest-lived of chains stops verifying:
// the latest, over the chains, of the earliest NotAfter in each.
func chainExpiry(chains [][]*x509.Certificate) time.Time {
	var best time.Time
	for _, ch := range chains {
		var end time.Time
		for _, c := range ch {
			if end.IsZero() || c.NotAfter.Before(end) {
				end = c.NotAfter
			}
		}
		if end.After(best) {
			best = end
		}
	}
	return best
}

// expiryNote returns the note for a certificate whose chain expires at
// expires, when that is within the warning window, or "".
func (p *Protector) expiryNote(expires time.Time) string {
	if p.warn < 0 || expires.IsZero() {
		return ""
	}
	left := expires.Sub(p.now())
	if left > p.warn {
		return ""
	}
	days := int(left / (24 * time.Hour))
	var in string
	switch days {
	case 0:
		in = "within a day"
	case 1:
		in = "in 1 day"
	default:
		in = fmt.Sprintf("in %d days", days)
	}
	return fmt.Sprintf("certificate expires %s (%s)", in, expires.UTC().Format(time.DateOnly))
}

func (p *Protector) checkSigner() error {
	leaf := p.signer.chain[0]
	if len(leaf.EmailAddresses) == 0 {
		return &CertificateError{Subject: leaf.Subject.String(), Problem: WrongAddress, Reason: "signer certificate has no rfc822Name SAN"}
	}
	fp := sha256.Sum256(leaf.Raw)
	if _, ce := p.check(leaf, &fp, "", forSigning, chainPool{pool: p.signerInter, base: p.signerInter}); ce != nil {
		return ce
	}
	return nil
}

// signerIsAuthor checks that the signing certificate names the message's
// author: an rfc822Name equal to the From address, or to the Sender
// address when there is one (RFC 8550 §3). A signature by a certificate for
// another address is one every receiving client flags, or worse, a way to
// sign as somebody else.
func (p *Protector) signerIsAuthor(h textproto.Header) error {
	leaf := p.signer.chain[0]
	authors, err := mimeprot.Authors(h)
	if err != nil {
		return err
	}
	for _, a := range authors {
		for _, e := range leaf.EmailAddresses {
			if normAddr(e) == normAddr(a) {
				return nil
			}
		}
	}
	return &CertificateError{Address: strings.Join(authors, ", "), Subject: leaf.Subject.String(), Problem: WrongAddress,
		Reason: "signer certificate is for " + strings.Join(leaf.EmailAddresses, ", ") + ", not the From or Sender address"}
}

// Protect checks every recipient's certificate and returns the S/MIME
// form of e: application/pkcs7-mime enveloped-data (AES-256-CBC, RSA
// PKCS#1 v1.5 key transport), or authEnveloped-data (AES-256-GCM) when
// every recipient allows it, holding the protected-headers entity,
// signed first when a Signer is set. When some recipients have no usable
// certificate it returns no entity and an error that unwraps (Unwrap()
// []error) to one *mailsec.RecipientError per such recipient, which wraps a
// *mailsec.ProtectionError (matching mailsec.ErrNoKey), which wraps a
// *CertificateError when a certificate was found but refused.
func (p *Protector) Protect(ctx context.Context, e *mailsec.Entity, rcpts []string) (*mailsec.Protected, error) {
	if e == nil || e.Body == nil {
		return nil, errors.New("smime: nil entity")
	}
	if len(rcpts) == 0 {
		return nil, errors.New("smime: no recipients")
	}
	// The protected content must be 7-bit; header fields that are not
	// (an SMTPUTF8 address) would only be found while the message is sent.
	for f := e.Header.Fields(); f.Next(); {
		if !syntax.IsASCII(f.Value()) {
			return nil, fmt.Errorf("smime: header field %s is not 7-bit (an internationalised address?); S/MIME content must be 7-bit", f.Key())
		}
	}
	var errs []error
	picked := make([]*x509.Certificate, 0, len(rcpts))
	fps := make(map[string]string, len(rcpts))
	keys := make(map[string]mailsec.KeyUse, len(rcpts))
	for _, r := range rcpts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, sum, expires, notes, err := p.choose(ctx, r)
		if err != nil {
			errs = append(errs, &mailsec.RecipientError{Recipient: r, Err: err})
			continue
		}
		fps[r] = hex.EncodeToString(sum[:])
		ku := mailsec.KeyUse{Expires: expires}
		if n := p.expiryNote(expires); n != "" {
			ku.Notes = []string{n}
		}
		ku.Notes = append(ku.Notes, notes...)
		keys[r] = ku
		picked = append(picked, c)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if p.signer != nil {
		if err := p.checkSigner(); err != nil {
			return nil, fmt.Errorf("smime: signer: %w", err)
		}
		if err := p.signerIsAuthor(e.Header); err != nil {
			return nil, fmt.Errorf("smime: signer: %w", err)
		}
	}
	h := mimeprot.Outer(e.Header, p.subject)
	if !h.Has("MIME-Version") {
		h.Set("MIME-Version", "1.0")
	}
	// Outer left no Content-* field. These are added as written, so that
	// they are not formatted again each time the message is written
	// (RFC 8551 section 3.3).
	seal := p.sealingFor(ctx, rcpts, picked)
	ct := fieldContentType
	if seal.gcm {
		ct = fieldContentTypeAuth
	}
	raw := []byte(ct + fieldDisposition + fieldEncoding)
	a, b := len(ct), len(ct)+len(fieldDisposition)
	h.AddRaw(raw[:a:a])
	h.AddRaw(raw[a:b:b])
	h.AddRaw(raw[b:])
	inner, err := mimeprot.Rendered(e.Header, e.Body)
	if err != nil {
		return nil, fmt.Errorf("smime: %w", err)
	}
	for r, ku := range keys {
		ku.Cipher = seal.cipherName()
		keys[r] = ku
	}
	body := &envelope{p: p, inner: inner, seal: seal}
	return &mailsec.Protected{
		Entity:       &mailsec.Entity{Header: h, Body: body},
		Signed:       p.signer != nil,
		Fingerprints: fps,
		Keys:         keys,
	}, nil
}

// The content fields of the S/MIME entity, as textproto would format them.
const (
	fieldContentType = "Content-Type: application/pkcs7-mime; smime-type=enveloped-data;\r\n name=\"smime.p7m\"\r\n"
	// RFC 8551 section 3.2.2: AuthEnvelopedData.
	fieldContentTypeAuth = "Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data;\r\n name=\"smime.p7m\"\r\n"
	fieldDisposition     = "Content-Disposition: attachment; filename=\"smime.p7m\"\r\n"
	fieldEncoding        = "Content-Transfer-Encoding: base64\r\n"
)

// choose returns the newest usable certificate for addr, its SHA-256
// fingerprint, when its chain expires and notes for the Receipt (its
// revocation status), or a *mailsec.ProtectionError saying why there is
// none.
func (p *Protector) choose(ctx context.Context, addr string) (*x509.Certificate, [32]byte, time.Time, []string, error) {
	cands, err := p.certs.Lookup(ctx, addr)
	if err != nil {
		return nil, [32]byte{}, time.Time{}, nil, &mailsec.ProtectionError{Recipient: addr, Method: Method, Reason: "certificate lookup failed", Err: err}
	}
	c, fp, expires, notes, ce := p.chooseFrom(ctx, addr, cands)
	if ce != nil {
		return nil, [32]byte{}, time.Time{}, nil, &mailsec.ProtectionError{Recipient: addr, Method: Method, KeyID: ce.Subject, Reason: ce.Reason, Err: ce}
	}
	if c == nil {
		return nil, [32]byte{}, time.Time{}, nil, &mailsec.ProtectionError{Recipient: addr, Method: Method, Reason: "no certificate for this address"}
	}
	return c, fp, expires, notes, nil
}

// chooseFrom checks the candidates a CertSource returned for addr and
// returns the newest usable one, or the refusal of the newest when none
// is usable (nil and nil when there is no candidate). CA certificates
// among them are not candidates: they help build the others' chains, and
// add no trust.
func (p *Protector) chooseFrom(ctx context.Context, addr string, cands []*x509.Certificate) (*x509.Certificate, [32]byte, time.Time, []string, *CertificateError) {
	var leaves, cas []*x509.Certificate
	for _, c := range cands {
		switch {
		case c == nil:
		case c.BasicConstraintsValid && c.IsCA:
			cas = append(cas, c)
		default:
			leaves = append(leaves, c)
		}
	}
	base := p.intermediates()
	ch := chainPool{pool: base, base: base}
	if len(cas) > 0 {
		if base != nil {
			ch.pool = base.Clone()
		} else {
			ch.pool = x509.NewCertPool()
		}
		h := sha256.New()
		for _, c := range cas {
			ch.pool.AddCert(c)
			h.Write(c.Raw)
		}
		h.Sum(ch.extra[:0])
	}
	if len(leaves) > 1 {
		// Sorted in a copy: the slice may be the source's own.
		leaves = slices.Clone(leaves)
		slices.SortStableFunc(leaves, func(a, b *x509.Certificate) int { return b.NotBefore.Compare(a.NotBefore) })
	}
	var first *CertificateError
	for _, c := range leaves {
		fp := sha256.Sum256(c.Raw)
		expires, ce := p.check(c, &fp, addr, forEncryption, ch)
		var notes []string
		if ce == nil {
			notes, ce = p.checkRevocation(ctx, c, &fp, addr, ch)
		}
		if ce == nil {
			return c, fp, expires, notes, nil
		}
		if first == nil {
			first = ce
		}
	}
	return nil, [32]byte{}, time.Time{}, nil, first
}

// envelope writes the base64 body of the application/pkcs7-mime entity.
// Each WriteTo builds and encrypts the content afresh (with a new content
// key), so a retried delivery can write it again.
type envelope struct {
	p     *Protector
	inner io.WriterTo // the protected-headers entity, header included
	seal  sealing
}

func (v *envelope) WriteTo(w io.Writer) (int64, error) {
	if v.p.signer != nil {
		return v.writeSigned(w)
	}
	cw, err := newCMSWriter(w, v.seal, true)
	if err != nil {
		return 0, err
	}
	defer cw.release()
	if _, err := v.inner.WriteTo(cw); err != nil {
		return cw.lw.n, err
	}
	return cw.close()
}

// writeSigned buffers the canonical protected-headers entity (up to
// MaxSize), signs it, and streams the multipart/signed entity into the
// EnvelopedData.
func (v *envelope) writeSigned(w io.Writer) (int64, error) {
	lb := limitBufferPool.Get().(*limitBuffer)
	defer func() {
		clear(lb.Bytes())
		lb.Reset()
		if lb.Cap() <= maxPooled {
			limitBufferPool.Put(lb)
		}
	}()
	lb.max = v.p.maxSize
	if _, err := v.inner.WriteTo(lb); err != nil {
		return 0, err
	}
	inner, err := canonical(lb.Bytes())
	if err != nil {
		return 0, err
	}
	defer clear(inner)
	sig, err := v.p.signer.sign(inner)
	if err != nil {
		return 0, err
	}
	cw, err := newCMSWriter(w, v.seal, false)
	if err != nil {
		return 0, err
	}
	defer cw.release()
	if err := writeSigned(cw, inner, sig); err != nil {
		return cw.lw.n, err
	}
	return cw.close()
}

// limitBufferPool holds buffers for signing; those that grew beyond
// maxPooled are left to the garbage collector.
var limitBufferPool = sync.Pool{New: func() any { return new(limitBuffer) }}

const maxPooled = 1 << 20

// limitBuffer is a bytes.Buffer that refuses to grow past max.
type limitBuffer struct {
	bytes.Buffer
	max int64
}

func (b *limitBuffer) Write(p []byte) (int, error) {
	if int64(b.Len())+int64(len(p)) > b.max {
		return 0, fmt.Errorf("%w (%d bytes)", ErrTooLarge, b.max)
	}
	return b.Buffer.Write(p)
}

// canonical converts line endings to CRLF (RFC 8551 section 3.1.1) and
// refuses 8-bit or NUL octets: the message builder emits 7-bit content
// transfer encodings, and signing anything else would give a signature
// that breaks on the way.
func canonical(b []byte) ([]byte, error) {
	if i := not7bit(b); i >= 0 {
		return nil, fmt.Errorf("smime: content has 8-bit or NUL octets at offset %d; only 7-bit content can be protected", i)
	}
	crlf := bytes.Count(b, []byte("\r\n"))
	if bytes.Count(b, []byte("\n")) == crlf && bytes.Count(b, []byte("\r")) == crlf {
		return b, nil
	}
	out := make([]byte, 0, len(b)+len(b)/32)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '\r' && i+1 < len(b) && b[i+1] == '\n':
			out = append(out, '\r', '\n')
			i++
		case c == '\r' || c == '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out, nil
}

// not7bit returns the offset of the first NUL or 8-bit octet in b, or -1.
// It tests eight octets at a time.
func not7bit(b []byte) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(b); i += 8 {
		v := binary.LittleEndian.Uint64(b[i:])
		if v&hi != 0 || (v-lo)&^v&hi != 0 {
			break
		}
	}
	for ; i < len(b); i++ {
		if b[i] == 0 || b[i] >= 0x80 {
			return i
		}
	}
	return -1
}

// sign returns a detached SHA-256 SignedData over inner.
func (s *Signer) sign(inner []byte) (sig []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			sig, err = nil, fmt.Errorf("smime: signing failed: %v", v)
		}
	}()
	sd, err := pkcs7.NewSignedData(inner)
	if err != nil {
		return nil, fmt.Errorf("smime: signing failed: %w", err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSignerChain(s.chain[0], s.key, s.chain[1:], pkcs7.SignerInfoConfig{}); err != nil {
		return nil, fmt.Errorf("smime: signing failed: %w", err)
	}
	sd.Detach()
	sig, err = sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("smime: signing failed: %w", err)
	}
	return sig, nil
}

// writeSigned writes inner and its signature as multipart/signed
// (RFC 8551 section 3.5).
func writeSigned(w io.Writer, inner, sig []byte) error {
	var rb [16]byte
	if _, err := rand.Read(rb[:]); err != nil {
		return err
	}
	boundary := "=_s" + hex.EncodeToString(rb[:])
	ct := mime.FormatMediaType("multipart/signed", map[string]string{
		"protocol": "application/pkcs7-signature", "micalg": "sha-256", "boundary": boundary})
	if _, err := io.WriteString(w, "MIME-Version: 1.0\r\nContent-Type: "+ct+"\r\n\r\n"+
		"This is a cryptographically signed message in MIME format.\r\n\r\n"+
		"--"+boundary+"\r\n"); err != nil {
		return err
	}
	if _, err := w.Write(inner); err != nil {
		return err
	}
	if _, err := io.WriteString(w, "\r\n--"+boundary+"\r\n"+
		"Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n"+
		"Content-Transfer-Encoding: base64\r\n"+
		"Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n"); err != nil {
		return err
	}
	if _, err := writeBase64(w, sig); err != nil {
		return err
	}
	_, err := io.WriteString(w, "--"+boundary+"--\r\n")
	return err
}
