package pgp

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/emersion/go-message/textproto"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/mimeprot"
	"github.com/mailsec/mailsec/internal/typednil"
)

// Method is the name of PGP/MIME protection: what Protector.Method
// returns, the name mailsec.Plan.Methods refers to it by, and what the
// Receipt records.
const Method = "pgp"

// autocryptMax is the largest Autocrypt keydata accepted (Autocrypt
// Level 1 recommends keeping the header under 10 KiB).
const autocryptMax = 10 << 10

// Options configures a Protector. A nil *Options means: encrypt only,
// SEIPDv1 with MDC and AES-256 (AES-128 for a key that does not list
// AES-256), outer Subject "...", gpg 2.2 compatible, a note for keys
// expiring within 30 days.
type Options struct {
	// Signer, when non-nil, signs every message (RFC 3156 §5) before it
	// is encrypted. Its secret key must be decrypted (ReadSigningKey does).
	Signer *openpgp.Entity
	// EncryptToSelf also encrypts to Signer's key, so that the sender can
	// read its own Sent copy.
	EncryptToSelf bool
	// OuterSubject replaces the Subject on the outside; "" means "...".
	// It is checked as any header text (New refuses controls and
	// encoded-word syntax) and encoded when it is not ASCII.
	OuterSubject string
	// Autocrypt adds an Autocrypt (Level 1) header carrying Signer's
	// public key when the From address is one of Signer's user IDs.
	Autocrypt bool
	// AllowSEIPDv2 allows the AEAD-protected SEIPDv2 packet (RFC 9580
	// §5.13.2) when every recipient key advertises support for it (the
	// SEIPDv2 flag of its Features subpacket); its AEAD mode and cipher
	// come from the keys' preferred AEAD ciphersuites, OCB and AES-128
	// when they list none in common. gpg 2.2 cannot read it, so the
	// default is SEIPDv1 with MDC always.
	AllowSEIPDv2 bool
	// AllowV6Keys accepts version 6 (RFC 9580) keys, which gpg 2.2
	// cannot read. The default refuses them.
	AllowV6Keys bool
	// Now returns the time at which keys must be valid; nil means
	// time.Now.
	Now func() time.Time
	// ExpiryWarning is how long before a recipient's key expires Protect
	// notes it in Protected.Keys (and so in the Receipt), and CheckKey
	// warns. Zero means DefaultExpiryWarning (30 days); a negative value
	// turns the notes off.
	ExpiryWarning time.Duration
	// MaxSize bounds a signed message: a signature covers the whole
	// content, so with a Signer the content is held in memory while it
	// is signed, and a larger message fails with ErrTooLarge before any
	// of it is sent. Zero means DefaultMaxSize. Encryption alone streams
	// and has no limit.
	MaxSize int64
}

// DefaultMaxSize is the largest message signed when Options.MaxSize is
// zero.
const DefaultMaxSize = 32 << 20

// ErrTooLarge reports a message to sign that exceeds Options.MaxSize.
var ErrTooLarge = errors.New("pgp: message too large to sign (Options.MaxSize)")

// Protector encrypts (and optionally signs) messages as PGP/MIME. It
// implements mailsec.Protector and is safe for concurrent use.
type Protector struct {
	keys      KeySource
	o         Options
	autocrypt map[string]string // From address -> header value
	pool      writerPool
}

// New returns a Protector that finds recipients' keys in keys: a
// *KeyRing (NewKeyRing() with no arguments is an empty one, for an
// application that has no recipients' keys yet), a *WKD, or a KeySource
// of the application's own. A KeySource with a Validate() error method
// (WKD has one) is checked now. Every refusal is a *mailsec.ConfigError
// that names the setting at fault: keys nil or a nil pointer (a KeyRing
// that failed to load, its error ignored), a Signer without a usable
// secret signing key, an OuterSubject that is not plain header text.
func New(keys KeySource, o *Options) (*Protector, error) {
	if typednil.Is(keys) {
		return nil, configError("pgp.New keys", typeName(keys), "nil: give New a KeySource: a *pgp.KeyRing (pgp.NewKeyRing() holds no key yet), a *pgp.WKD, or your own")
	}
	if v, ok := keys.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			if _, ok := errors.AsType[*mailsec.ConfigError](err); ok {
				return nil, err
			}
			return nil, &mailsec.ConfigError{Field: "pgp.New keys", Value: typeName(keys), Reason: "its Validate method refused the configuration", Err: err}
		}
	}
	p := &Protector{keys: keys}
	if o != nil {
		p.o = *o
	}
	if p.o.Now == nil {
		p.o.Now = time.Now
	}
	if p.o.MaxSize <= 0 {
		p.o.MaxSize = DefaultMaxSize
	}
	if p.o.OuterSubject == "" {
		p.o.OuterSubject = mimeprot.DefaultSubject
	}
	subject, err := mimeprot.OuterSubject(p.o.OuterSubject)
	if err != nil {
		return nil, configError("pgp.Options.OuterSubject", p.o.OuterSubject, err.Error())
	}
	p.o.OuterSubject = subject
	if (p.o.EncryptToSelf || p.o.Autocrypt) && p.o.Signer == nil {
		return nil, configError("pgp.Options.Signer", "", "nil: EncryptToSelf and Autocrypt need a Signer")
	}
	if s := p.o.Signer; s != nil {
		if s.PrimaryKey == nil || s.PrivateKey == nil {
			return nil, configError("pgp.Options.Signer", "", "has no secret key: read it with ReadSigningKey from gpg --export-secret-keys")
		}
		k, ok := s.SigningKey(p.o.Now())
		if !ok || k.PrivateKey == nil || k.PrivateKey.Encrypted {
			return nil, configError("pgp.Options.Signer", keyID(s), "has no usable (decrypted, valid) signing key")
		}
		if p.o.EncryptToSelf {
			if _, ok := s.EncryptionKey(p.o.Now()); !ok {
				return nil, configError("pgp.Options.Signer", keyID(s), "has no valid encryption subkey for EncryptToSelf")
			}
		}
		if p.o.Autocrypt {
			var err error
			if p.autocrypt, err = autocryptHeaders(s, p.o.Now()); err != nil {
				return nil, &mailsec.ConfigError{Field: "pgp.Options.Autocrypt", Reason: "the Signer's key cannot be offered", Err: err}
			}
		}
	}
	return p, nil
}

// configError reports a mistake in a Protector's or a WKD's configuration.
func configError(field, value, reason string) error {
	return &mailsec.ConfigError{Field: field, Value: value, Reason: reason}
}

// typeName names v's dynamic type for an error, or "" for a nil interface.
func typeName(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprintf("%T", v)
}

// Protect encrypts e for every recipient in one ciphertext (see the
// package documentation for the wire format). Every recipient's key is
// found and checked first; if any has no usable key, Protect returns no
// entity and an error that unwraps to one *mailsec.ProtectionError per
// such recipient (inside a *mailsec.RecipientError, as the Sender
// expects), each wrapping a *KeyError or ErrKeyNotFound.
func (p *Protector) Protect(ctx context.Context, e *mailsec.Entity, rcpts []string) (out *mailsec.Protected, err error) {
	defer recoverTo(&err, "protecting")
	if e == nil || e.Body == nil {
		return nil, errors.New("pgp: no entity to protect")
	}
	if len(rcpts) == 0 {
		return nil, errors.New("pgp: no recipients")
	}
	now := p.o.Now()
	var (
		to   []*openpgp.Entity
		encs []*packet.PublicKey
		errs []error
		fprs = make(map[string]string, len(rcpts))
		used = make(map[string]checked, len(rcpts))
		seen = map[string]bool{}
	)
	for _, r := range rcpts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, perr := p.resolve(ctx, r, now)
		if perr != nil {
			errs = append(errs, perr)
			continue
		}
		fprs[r] = c.fpr
		used[r] = c
		if !seen[c.fpr] {
			seen[c.fpr] = true
			to = append(to, c.entity)
			encs = append(encs, c.enc)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if p.o.Signer != nil {
		if err := signerIsAuthor(p.o.Signer, e.Header, now); err != nil {
			return nil, err
		}
	}
	if p.o.EncryptToSelf && !seen[Fingerprint(p.o.Signer)] {
		k, ok := p.o.Signer.EncryptionKey(now)
		if !ok {
			return nil, fmt.Errorf("pgp: Options.Signer key %s has no valid encryption subkey for EncryptToSelf", keyID(p.o.Signer))
		}
		to = append(to, p.o.Signer)
		encs = append(encs, k.PublicKey)
	}

	cfg := &packet.Config{
		DefaultHash:            crypto.SHA256,
		DefaultCompressionAlgo: packet.CompressionNone,
		Time:                   func() time.Time { return now },
	}
	cs := chooseSuite(to, p.o.AllowSEIPDv2)
	if cs.aead {
		cfg.AEADConfig = &packet.AEADConfig{DefaultMode: cs.suite.Mode}
	}
	uses := make(map[string]mailsec.KeyUse, len(used))
	for r, c := range used {
		ku := mailsec.KeyUse{Expires: c.expires, Cipher: cs.String()}
		if n := expiryWarning(c.expires, now, p.o.ExpiryWarning); n != "" {
			ku.Notes = append(ku.Notes, n)
		}
		if n := preferenceNote(c.entity); n != "" {
			ku.Notes = append(ku.Notes, n)
		}
		uses[r] = ku
	}

	ih, ib := mimeprot.Inner(e.Header, e.Body)
	var inner io.WriterTo = entity{ih, ib}
	if p.o.Signer != nil {
		inner = &signed{inner: inner, signer: p.o.Signer, now: now, max: p.o.MaxSize}
	}
	h := mimeprot.Outer(e.Header, p.o.OuterSubject)
	boundary := mimeprot.NewBoundary("=_pgp")
	h.Set("MIME-Version", "1.0")
	// The boundary holds only characters that need no escaping inside
	// quotes; this is what mime.FormatMediaType writes, without the map.
	h.Set("Content-Type", `multipart/encrypted; boundary="`+boundary+`"; protocol="application/pgp-encrypted"`)
	if p.autocrypt != nil {
		if from, err := mail.ParseAddress(e.Header.Get("From")); err == nil {
			if v, ok := p.autocrypt[foldAddr(from.Address)]; ok {
				h.Set("Autocrypt", v)
			}
		}
	}
	return &mailsec.Protected{
		Entity:       &mailsec.Entity{Header: h, Body: &encrypted{boundary: boundary, to: encs, suite: cs, cfg: cfg, inner: inner, pool: &p.pool}},
		Signed:       p.o.Signer != nil,
		Fingerprints: fprs,
		Keys:         uses,
	}, nil
}

// Method returns "pgp", the name mailsec.Plan.Methods refers to this
// Protector by.
func (p *Protector) Method() string { return Method }

// resolve finds and checks the key for one recipient.
func (p *Protector) resolve(ctx context.Context, addr string, now time.Time) (checked, error) {
	perr := func(keyID, reason string, err error) error {
		return &mailsec.RecipientError{Recipient: addr,
			Err: &mailsec.ProtectionError{Recipient: addr, Method: Method, KeyID: keyID, Reason: reason, Err: err}}
	}
	es, err := p.keys.Lookup(ctx, addr)
	if err != nil || len(es) == 0 {
		if err == nil || errors.Is(err, ErrKeyNotFound) {
			return checked{}, perr("", "no key found", ErrKeyNotFound)
		}
		if ctx.Err() != nil {
			return checked{}, ctx.Err()
		}
		// Not "no key": the key source could not answer. Reported as
		// temporary, so that the Sender never treats the recipient as
		// keyless (and sends in clear under a preferring policy).
		return checked{}, perr("", "key lookup failed", lookupError{err})
	}
	var best *KeyError
	bestDepth := -1
	for _, e := range es {
		c, d, kerr := check(e, addr, now, p.o.AllowV6Keys)
		if kerr == nil {
			return c, nil
		}
		if d > bestDepth {
			best, bestDepth = kerr, d
		}
	}
	best.wrapped = true
	return checked{}, perr(best.KeyID, best.Reason, best)
}

// lookupError is a key source's failure to answer; a later try may
// succeed.
type lookupError struct{ err error }

func (e lookupError) Error() string   { return e.err.Error() }
func (e lookupError) Unwrap() error   { return e.err }
func (e lookupError) Temporary() bool { return true }

// entity writes a header and a body.
type entity struct {
	h    textproto.Header
	body io.WriterTo
}

func (e entity) WriteTo(w io.Writer) (int64, error) {
	if err := textproto.WriteHeader(w, e.h); err != nil {
		return 0, err
	}
	return e.body.WriteTo(w)
}

// encrypted writes the multipart/encrypted body of RFC 3156 §4,
// encrypting inner afresh on every call while it streams.
type encrypted struct {
	boundary string
	to       []*packet.PublicKey // the recipients' encryption keys
	suite    contentSuite
	cfg      *packet.Config
	inner    io.WriterTo
	pool     *writerPool
}

// writeHead adds the text of the multipart/encrypted body before the
// armored data: both parts' headers, the version part and the armor
// header line.
func (b *encrypted) writeHead(aw *armorWriter) {
	aw.text("--")
	aw.text(b.boundary)
	aw.text("\r\n" +
		"Content-Type: application/pgp-encrypted\r\n" +
		"Content-Description: PGP/MIME version identification\r\n" +
		"\r\n" +
		"Version: 1\r\n" +
		"\r\n--")
	aw.text(b.boundary)
	aw.text("\r\n" +
		"Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n" +
		"Content-Description: OpenPGP encrypted message\r\n" +
		"Content-Disposition: inline; filename=\"encrypted.asc\"\r\n" +
		"\r\n" +
		"-----BEGIN PGP MESSAGE-----\r\n" +
		"\r\n")
}

func (b *encrypted) WriteTo(w io.Writer) (n int64, err error) {
	defer recoverTo(&err, "encrypting")
	ws := b.pool.get()
	defer b.pool.put(ws)
	cw := &mimeprot.Counter{W: w}
	// The armor is written here rather than by the OpenPGP library's
	// armor package: CRLF line endings directly, and the output gathered
	// into large writes together with the MIME text around it.
	aw := &ws.armor
	aw.reset(cw)
	b.writeHead(aw)
	pt, err := encryptTo(aw, b.to, b.suite, b.cfg)
	if err != nil {
		return cw.N, fmt.Errorf("pgp: encrypting: %w", err)
	}
	// The MIME writers of inner write small pieces; gather them into
	// chunks for pt (see chunkSize).
	in := &ws.chunk
	in.reset(pt)
	if _, err := b.inner.WriteTo(in); err != nil {
		return cw.N, err
	}
	if err := in.Flush(); err != nil {
		return cw.N, err
	}
	if err := pt.Close(); err != nil {
		return cw.N, err
	}
	err = aw.finish("-----END PGP MESSAGE-----\r\n\r\n--", b.boundary, "--\r\n")
	return cw.N, err
}

// signed writes a multipart/signed entity (RFC 3156 §5) around inner. The
// signature covers the canonical form of inner, so inner is buffered.
type signed struct {
	inner  io.WriterTo
	signer *openpgp.Entity
	now    time.Time
	max    int64 // the most content it holds; more fails with ErrTooLarge
}

// limitWriter passes on at most n bytes, then fails with ErrTooLarge.
type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, ErrTooLarge
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}

func (s *signed) WriteTo(w io.Writer) (int64, error) {
	var buf bytes.Buffer
	if _, err := s.inner.WriteTo(&limitWriter{w: &buf, n: s.max}); err != nil {
		return 0, err
	}
	part, err := canonical(buf.Bytes())
	if err != nil {
		return 0, err
	}
	var sig bytes.Buffer
	cfg := &packet.Config{DefaultHash: crypto.SHA256, Time: func() time.Time { return s.now }}
	if err := openpgp.DetachSign(&sig, s.signer, bytes.NewReader(part), cfg); err != nil {
		return 0, fmt.Errorf("pgp: signing with key %s: %w", keyID(s.signer), err)
	}
	micalg, err := micalgOf(sig.Bytes())
	if err != nil {
		return 0, err
	}
	var asc bytes.Buffer
	aw, err := armor.Encode(&crlf{w: &asc}, "PGP SIGNATURE", nil)
	if err != nil {
		return 0, err
	}
	if _, err := aw.Write(sig.Bytes()); err != nil {
		return 0, err
	}
	if err := aw.Close(); err != nil {
		return 0, err
	}
	boundary := mimeprot.NewBoundary("=_pgp")
	var h textproto.Header
	h.Set("Content-Type", mime.FormatMediaType("multipart/signed", map[string]string{
		"micalg": micalg, "protocol": "application/pgp-signature", "boundary": boundary}))
	var out bytes.Buffer
	if err := textproto.WriteHeader(&out, h); err != nil {
		return 0, err
	}
	out.WriteString("--" + boundary + "\r\n")
	out.Write(part)
	out.WriteString("\r\n--" + boundary + "\r\n")
	out.WriteString("Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n")
	out.WriteString("Content-Description: OpenPGP digital signature\r\n")
	out.WriteString("Content-Disposition: attachment; filename=\"signature.asc\"\r\n\r\n")
	out.Write(asc.Bytes())
	out.WriteString("\r\n--" + boundary + "--\r\n")
	return out.WriteTo(w)
}

// micalgOf reads the hash algorithm from a signature packet (RFC 3156 §5).
func micalgOf(sig []byte) (string, error) {
	pk, err := packet.Read(bytes.NewReader(sig))
	if err != nil {
		return "", fmt.Errorf("pgp: reading own signature: %w", err)
	}
	s, ok := pk.(*packet.Signature)
	if !ok {
		return "", errors.New("pgp: signer produced no signature packet")
	}
	switch s.Hash {
	case crypto.SHA256:
		return "pgp-sha256", nil
	case crypto.SHA384:
		return "pgp-sha384", nil
	case crypto.SHA512:
		return "pgp-sha512", nil
	case crypto.SHA224:
		return "pgp-sha224", nil
	case crypto.SHA3_256:
		return "pgp-sha3-256", nil
	case crypto.SHA3_512:
		return "pgp-sha3-512", nil
	}
	return "", fmt.Errorf("pgp: signature uses unsupported hash %v", s.Hash)
}

// signerIsAuthor checks that the signing key has a valid user ID for the
// message's author, the From address or else the Sender address: a
// signature whose key names somebody else is one receiving clients flag,
// or a way to sign in another person's name.
func signerIsAuthor(s *openpgp.Entity, h textproto.Header, now time.Time) error {
	authors, err := mimeprot.Authors(h)
	if err != nil {
		return fmt.Errorf("pgp: signer: %w", err)
	}
	for _, a := range authors {
		want := foldAddr(a)
		for _, id := range s.Identities {
			if id.UserId != nil && id.SelfSignature != nil && !id.Revoked(now) && !id.SelfSignature.SigExpired(now) &&
				foldAddr(id.UserId.Email) == want {
				return nil
			}
		}
	}
	return &KeyError{Address: strings.Join(authors, ", "), KeyID: keyID(s), Fingerprint: Fingerprint(s), Code: KeySignerNotAuthor,
		Reason: "the signing key has no valid user ID for the From or Sender address"}
}

// autocryptHeaders builds the Autocrypt header value for each of s's
// valid user IDs: keydata holds only the primary key, that user ID, its
// self-signature, one encryption subkey and its binding signature.
func autocryptHeaders(s *openpgp.Entity, now time.Time) (map[string]string, error) {
	k, ok := s.EncryptionKey(now)
	if !ok || k.PublicKey == s.PrimaryKey {
		return nil, fmt.Errorf("pgp: Autocrypt: key %s has no valid encryption subkey", keyID(s))
	}
	out := map[string]string{}
	for _, id := range s.Identities {
		if id.UserId == nil || id.SelfSignature == nil || id.Revoked(now) || id.UserId.Email == "" {
			continue
		}
		addr := foldAddr(id.UserId.Email)
		var kd bytes.Buffer
		for _, f := range []func(io.Writer) error{s.PrimaryKey.Serialize, id.UserId.Serialize,
			id.SelfSignature.Serialize, k.PublicKey.Serialize, k.SelfSignature.Serialize} {
			if err := f(&kd); err != nil {
				return nil, fmt.Errorf("pgp: Autocrypt: %w", err)
			}
		}
		if kd.Len() > autocryptMax {
			return nil, fmt.Errorf("pgp: Autocrypt: keydata of key %s is %d bytes, over the 10 KiB limit", keyID(s), kd.Len())
		}
		b64 := base64.StdEncoding.EncodeToString(kd.Bytes())
		var v strings.Builder
		v.WriteString("addr=" + addr + "; prefer-encrypt=mutual; keydata=")
		for len(b64) > 0 {
			n := min(len(b64), 72)
			v.WriteString(" " + b64[:n])
			b64 = b64[n:]
		}
		out[addr] = v.String()
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pgp: Autocrypt: key %s has no valid user ID with an address", keyID(s))
	}
	return out, nil
}

// crlf turns the LF line endings of the armor writer into CRLF.
type crlf struct{ w io.Writer }

func (c *crlf) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			m, err := c.w.Write(p)
			return n + m, err
		}
		if i > 0 {
			m, err := c.w.Write(p[:i])
			n += m
			if err != nil {
				return n, err
			}
		}
		if _, err := c.w.Write([]byte("\r\n")); err != nil {
			return n, err
		}
		n++
		p = p[i+1:]
	}
	return n, nil
}
