package dkimsign

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/smtpdata"
	"github.com/mailsec/mailsec/internal/syntax"
	"github.com/mailsec/mailsec/internal/typednil"
)

// OverSigned are the header fields every signature over-signs: each is
// named in h= once more than the message has it (RFC 6376 §5.4.2, and §8.15
// on why), so that a field of that name added later, a second From or
// Subject, breaks the signature instead of being shown beside a valid one.
// A field the message lacks is named once, so it cannot be added either.
var OverSigned = []string{
	"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To",
	"MIME-Version", "Content-Type",
}

// AlsoSigned are header fields signed as they occur (each named in h= as
// many times as the message has it) when present: they matter to a reader
// or a mail client, but a later hop may legitimately add one.
var AlsoSigned = []string{
	"Sender", "In-Reply-To", "References", "Content-Transfer-Encoding",
	"List-Id", "List-Unsubscribe", "List-Unsubscribe-Post", "Autocrypt",
}

// DefaultSpoolMemory is how much of a delivery's content a Transport keeps
// in memory, by default, before it spools the rest to a sealed file.
const DefaultSpoolMemory = 1 << 20

// maxHeader bounds the header of a message: it is held in memory whole.
const maxHeader = 1 << 20

// Options configures a Transport.
type Options struct {
	// Domains maps a From domain (the domain of the address in the From
	// header field) to the Signers that sign its mail, each adding its own
	// DKIM-Signature field: give an RSA and an Ed25519 Signer so that
	// receivers that ignore Ed25519 (RFC 8463) still find a signature they
	// verify. Keys are domain names, matched exactly, in any case; a
	// subdomain needs its own entry. Each Signer's domain must be the From
	// domain or a parent of it (relaxed alignment, which DMARC asks for,
	// RFC 7489 §3.1.1), unless AllowUnaligned is set.
	Domains map[string][]*Signer
	// AllowUnaligned lets a Signer sign for a From domain it does not
	// align with: an email provider's domain signing its customers' mail.
	// DMARC does not count such a signature.
	AllowUnaligned bool
	// SendUnsigned makes the Transport send, unsigned, a message whose
	// From domain has no entry in Domains. By default such a message is
	// refused with a *DomainError (errors.Is ErrNoSigner) and nothing of
	// it is sent.
	SendUnsigned bool
	// Expiry, when positive, sets each signature's x= tag to this long
	// after signing (RFC 6376 §3.5): receivers treat the signature as
	// invalid afterwards. Zero means no expiry.
	Expiry time.Duration
	// SpoolDir is where content larger than SpoolMemory is spooled,
	// sealed; "" means os.TempDir().
	SpoolDir string
	// SpoolMemory is how many bytes of a delivery's content are kept in
	// memory before it is spooled to a file; 0 means DefaultSpoolMemory.
	SpoolMemory int
	// Logger, when set, records each message sent unsigned (its From
	// domain and Message-ID). Nil logs nothing.
	Logger *slog.Logger
}

// Transport signs each delivery's content with DKIM and hands it on to
// another Transport. It is safe for concurrent use.
type Transport struct {
	next     mailsec.Transport
	domains  map[string][]*Signer
	unsigned bool
	expiry   time.Duration
	spoolDir string
	spoolMem int
	logger   *slog.Logger
}

// NewTransport returns a Transport that signs what it hands to next. It
// checks o: a Domains key that is not a domain name, an entry without
// Signers or with a nil one, and a Signer whose domain does not align
// with its From domain (an *AlignmentError, unless o.AllowUnaligned) are
// each a *mailsec.ConfigError.
func NewTransport(next mailsec.Transport, o *Options) (*Transport, error) {
	if typednil.Is(next) {
		return nil, configError("dkimsign.NewTransport next", "", "nil; wrap the Transport that delivers (a *transport.Submission, a *transport.Direct)")
	}
	if o == nil {
		o = &Options{}
	}
	if o.SpoolMemory < 0 {
		return nil, configError("Options.SpoolMemory", fmt.Sprint(o.SpoolMemory), "negative")
	}
	t := &Transport{
		next: next, domains: map[string][]*Signer{}, unsigned: o.SendUnsigned,
		expiry: o.Expiry, spoolDir: o.SpoolDir, spoolMem: o.SpoolMemory, logger: o.Logger,
	}
	if t.spoolMem == 0 {
		t.spoolMem = DefaultSpoolMemory
	}
	for from, signers := range o.Domains {
		field := "Options.Domains[" + from + "]"
		d, err := normalDomain(from)
		if err != nil {
			return nil, configError(field, from, err.Error())
		}
		if len(signers) == 0 {
			return nil, configError(field, "", "no Signers; leave the domain out to send its mail unsigned or refuse it")
		}
		if _, dup := t.domains[d]; dup {
			return nil, configError(field, from, "the same domain as another key, in another case or form")
		}
		for _, s := range signers {
			if s == nil {
				return nil, configError(field, "", "a nil Signer")
			}
			if !o.AllowUnaligned && !aligned(d, s.domain) {
				ae := &AlignmentError{FromDomain: d, SigningDomain: s.domain}
				return nil, &mailsec.ConfigError{Field: field, Value: s.domain, Reason: "the signing domain does not align", Err: ae}
			}
		}
		t.domains[d] = append([]*Signer(nil), signers...)
	}
	return t, nil
}

// aligned reports whether the signing domain d is the From domain from or
// a parent of it.
func aligned(from, d string) bool {
	return from == d || strings.HasSuffix(from, "."+d)
}

func configError(field, value, reason string) *mailsec.ConfigError {
	return &mailsec.ConfigError{Field: field, Value: value, Reason: reason}
}

// Validate checks the wrapped Transport's configuration, when it has a
// Validate method (mailsec.NewSender calls it).
func (t *Transport) Validate() error {
	if v, ok := t.next.(interface{ Validate() error }); ok {
		return v.Validate()
	}
	return nil
}

// SharedTransaction forwards the wrapped Transport's declaration that it
// hands every delivery to one hop in one transaction (see
// mailsec.Transport): true only when the wrapped one says so, so that a
// mailsec.Sender splits deliveries by recipient domain, each with its own
// ENVID, for a wrapped transport.Direct as it does for a bare one.
func (t *Transport) SharedTransaction() bool { return mailsec.SharedTransaction(t.next) }

// Close closes the wrapped Transport, when it has a Close method.
func (t *Transport) Close() error {
	if c, ok := t.next.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

// Deliver signs d's content and hands it on. The content is written once,
// normalised as SMTP DATA will carry it (CRLF line endings, a final
// CRLF), hashed by every Signer of its From domain and spooled; the
// wrapped Transport then receives the DKIM-Signature fields followed by
// the spooled content, which it may write as often as it needs.
//
// A message whose From domain has no Signer fails with a *DomainError
// (unless Options.SendUnsigned), as does one without exactly one From
// field naming one domain; content that cannot be written fails with an
// error that matches mailsec.ErrContent. In every such case nothing is
// handed to the wrapped Transport.
func (t *Transport) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	sp := newSpool(t.spoolDir, t.spoolMem)
	defer sp.Close()
	st := &stage{ctx: ctx, t: t, spool: sp}
	err := st.write(d.Content)
	if err != nil {
		st.abort()
		var de *DomainError
		switch {
		case errors.As(err, &de):
			return nil, de
		case ctx.Err() != nil:
			return nil, fmt.Errorf("dkimsign: %w", ctx.Err())
		}
		return nil, fmt.Errorf("%w: dkimsign: %w", mailsec.ErrContent, err)
	}
	out := *d
	out.Content = &signed{fields: st.fields, body: sp}
	if st.fields == "" && t.logger != nil {
		t.logger.LogAttrs(ctx, slog.LevelInfo, "dkimsign: sent unsigned",
			slog.String("from_domain", st.fromDomain), slog.String("message_id", st.messageID))
	}
	return t.next.Deliver(ctx, &out)
}

// signed is a delivery's signed content: the DKIM-Signature fields, then
// the content as spooled.
type signed struct {
	fields string
	body   *spool
}

func (s *signed) WriteTo(w io.Writer) (int64, error) {
	n, err := io.WriteString(w, s.fields)
	if err != nil {
		return int64(n), err
	}
	m, err := s.body.WriteTo(w)
	return int64(n) + m, err
}

// stage is the one pass over a delivery's content: the header is held
// until it is complete, the From domain read from it and its Signers
// started; from then on every byte goes to the spool and to the Signers.
type stage struct {
	ctx   context.Context
	t     *Transport
	spool *spool

	header     []byte // the header, until its end is seen
	started    bool   // the header was read, the Signers started
	signers    []*dkim.Signer
	last       [2]byte // the last two bytes written
	written    int64
	fields     string // the DKIM-Signature fields, once signed
	fromDomain string
	messageID  string
}

// write runs content through the stage.
func (st *stage) write(content io.WriterTo) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("the content's writer panicked: %v", v)
		}
	}()
	cw := smtpdata.NewWriter(st)
	if _, err := content.WriteTo(cw); err != nil {
		return err
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if st.written > 0 && st.last != [2]byte{'\r', '\n'} {
		// The DATA writer ends the last line; the signature must cover
		// the content as it will arrive.
		if _, err := st.Write([]byte("\r\n")); err != nil {
			return err
		}
	}
	if !st.started {
		if err := st.start(); err != nil {
			return err
		}
	}
	if err := st.spool.finish(); err != nil {
		return err
	}
	var fields strings.Builder
	for _, s := range st.signers {
		if err := s.Close(); err != nil {
			st.signers = nil
			return fmt.Errorf("signing: %w", err)
		}
		fields.WriteString(s.Signature())
	}
	st.signers = nil
	st.fields = fields.String()
	return nil
}

// abort stops the Signers still running.
func (st *stage) abort() {
	for _, s := range st.signers {
		_ = s.Close()
	}
	st.signers = nil
}

// Write implements io.Writer.
func (st *stage) Write(p []byte) (int, error) {
	if err := st.ctx.Err(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) >= 2 {
		st.last = [2]byte{p[len(p)-2], p[len(p)-1]}
	} else {
		st.last = [2]byte{st.last[1], p[0]}
	}
	st.written += int64(len(p))
	if !st.started {
		from := len(st.header)
		st.header = append(st.header, p...)
		// The header ends at the first empty line.
		i := bytes.Index(st.header[max(0, from-3):], []byte("\r\n\r\n"))
		if i < 0 {
			if len(st.header) > maxHeader {
				return 0, fmt.Errorf("header longer than %d bytes", maxHeader)
			}
			return len(p), nil
		}
		if err := st.start(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if _, err := st.spool.Write(p); err != nil {
		return 0, err
	}
	for _, s := range st.signers {
		if _, err := s.Write(p); err != nil {
			return 0, fmt.Errorf("signing: %w", err)
		}
	}
	return len(p), nil
}

// start reads the From domain from the header held so far, starts the
// domain's Signers and passes them, and the spool, what was held.
func (st *stage) start() error {
	st.started = true
	held := st.header
	st.header = nil
	if name, ok := spacedFieldName(held); ok {
		// "From : x" is a From field to DKIM (relaxed canonicalisation)
		// and to mail readers, but not to net/mail: it would escape the
		// one-From rule and the over-signing counts.
		return &DomainError{Reason: fmt.Sprintf("the header field %q has white space before its colon (obsolete syntax, RFC 5322 §4.5.3)", name)}
	}
	msg, err := mail.ReadMessage(bufio.NewReader(io.MultiReader(bytes.NewReader(held), strings.NewReader("\r\n"))))
	if err != nil {
		return &DomainError{Reason: "the header does not parse", Err: err}
	}
	st.messageID = msg.Header.Get("Message-Id")
	domain, err := fromDomain(msg.Header)
	if err != nil {
		return err
	}
	st.fromDomain = domain
	signers, ok := st.t.domains[domain]
	if !ok && !st.t.unsigned {
		return &DomainError{Domain: domain, Reason: "no DKIM signer for this domain; nothing was sent (give it Signers, or set Options.SendUnsigned)", Err: ErrNoSigner}
	}
	keys := headerKeys(msg.Header)
	var expires time.Time
	if st.t.expiry > 0 {
		expires = time.Now().Add(st.t.expiry)
	}
	for _, s := range signers {
		ds, err := dkim.NewSigner(&dkim.SignOptions{
			Domain: s.domain, Selector: s.selector, Signer: s.key,
			Hash:                   0, // SHA-256, the only hash go-msgauth signs with
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             keys,
			Expiration:             expires,
		})
		if err != nil {
			return fmt.Errorf("signing for %s: %w", s.RecordName(), err)
		}
		st.signers = append(st.signers, ds)
	}
	if _, err := st.spool.Write(held); err != nil {
		return err
	}
	for _, s := range st.signers {
		if _, err := s.Write(held); err != nil {
			return fmt.Errorf("signing: %w", err)
		}
	}
	return nil
}

// spacedFieldName returns the name of the first field of the header in
// held (up to its first empty line) whose name is followed by white space
// before the colon.
func spacedFieldName(held []byte) (string, bool) {
	for line := range bytes.Lines(held) {
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return "", false
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name, _, ok := bytes.Cut(line, []byte(":"))
		if ok && len(name) > 0 && bytes.ContainsAny(name, " \t") {
			return strings.TrimSpace(syntax.PeerText(string(name))), true
		}
	}
	return "", false
}

// fromDomain returns the one domain of the From field's addresses, in
// lower case A-labels.
func fromDomain(h mail.Header) (string, error) {
	froms := h["From"]
	if len(froms) != 1 {
		return "", &DomainError{Reason: fmt.Sprintf("the header has %d From fields; DKIM needs exactly one", len(froms))}
	}
	addrs, err := mail.ParseAddressList(froms[0])
	if err != nil || len(addrs) == 0 {
		return "", &DomainError{Reason: "the From field does not parse", Err: err}
	}
	domain := ""
	for _, a := range addrs {
		at := strings.LastIndexByte(a.Address, '@')
		d, err := normalDomain(a.Address[at+1:])
		if at < 0 || err != nil {
			return "", &DomainError{Reason: fmt.Sprintf("the From address %q has no domain", a.Address)}
		}
		if domain != "" && d != domain {
			return "", &DomainError{Domain: domain, Reason: fmt.Sprintf("the From field also names %q; one domain must sign", d)}
		}
		domain = d
	}
	return domain, nil
}

// headerKeys returns the h= list for a header: each OverSigned field once
// more than present, each AlsoSigned field as often as present.
func headerKeys(h mail.Header) []string {
	var keys []string
	for _, k := range OverSigned {
		for range len(h[textproto.CanonicalMIMEHeaderKey(k)]) + 1 {
			keys = append(keys, k)
		}
	}
	for _, k := range AlsoSigned {
		for range len(h[textproto.CanonicalMIMEHeaderKey(k)]) {
			keys = append(keys, k)
		}
	}
	return keys
}
