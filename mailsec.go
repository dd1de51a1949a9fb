// Package mailsec sends transactional email so that nobody between the
// application and the recipient can read it or silently downgrade it.
//
// An application builds one [Sender] at start-up, with a [Transport] that
// knows how to reach mail servers, and calls [Sender.Send] from as many
// goroutines as it likes:
//
//	t := &transport.Submission{Addr: "smtp.example.com:465", Auth: &transport.Auth{...}}
//	s, err := mailsec.NewSender(t, nil)
//	...
//	receipt, err := s.Send(ctx, &mailsec.Message{
//		From:    "App <noreply@example.com>",
//		To:      []string{"ann@example.org"},
//		Subject: "Your password reset link",
//		Text:    "...",
//	})
//
// # What it guarantees
//
// Every message is validated before any I/O: addresses, header values and
// header names that could inject a line break, a second recipient or a second
// message are refused with a [*ValidationError] naming the field.
//
// By default a message leaves the process only over TLS 1.2 or later with a
// certificate verified for the configured server name. A server that does
// not offer STARTTLS, refuses it, injects bytes before the handshake or
// presents a certificate that does not verify gets nothing: not the envelope,
// not the credentials, not a byte of the body. Weaker transport security
// (an unverified certificate, or plaintext to a loopback development server)
// happens only when a [Policy] asks for it, and the [Receipt] records it.
//
// Recipients whose plan requires end-to-end protection get the message only
// in the form a [Protector] produced for them (PGP/MIME or S/MIME); when no
// usable key exists for one of them, that recipient gets nothing and the
// error says why.
//
// # Pieces
//
//   - [Message]: what to send, built from strings and streamed attachments.
//   - [Sender]: validates, plans per recipient, groups recipients into
//     deliveries, protects content and hands each delivery to a Transport.
//   - [Transport]: performs one SMTP transaction; package transport has the
//     implementations (submission to a smarthost over implicit TLS or
//     mandatory STARTTLS).
//   - [Policy]: decides per recipient the transport security floor and
//     whether protection is required.
//   - [Protector]: turns a MIME entity into its protected form; packages pgp
//     and smime implement it.
//   - [Receipt]: the per-recipient audit record of what happened.
//
// Package mailsectest has an in-process TLS SMTP server and a recording
// Transport for tests. Package dns resolves the names direct delivery to
// MX hosts needs (transport.Direct), with their DNSSEC status; the root
// package does no DNS of its own.
//
// # Errors
//
// Every failure is typed. [*ValidationError] means bad input and is never
// worth retrying. [*SecurityError] means a security requirement could not be
// met (match the category with [ErrDowngrade], [ErrCertificate],
// [ErrHandshake], [ErrRequireTLS], [ErrPlaintext]). [*SMTPError] carries the
// server's reply. [*SendError] reports per-recipient failures and unwraps to a
// [*RecipientError] for each. [IsTemporary] says whether trying again later
// can help.
package mailsec

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailsec/mailsec/internal/typednil"
)

// Sender sends messages through a Transport according to a Policy. It is
// safe for concurrent use by multiple goroutines and should be built once
// and reused.
type Sender struct {
	transport  Transport
	policy     Policy
	protectors []namedProtector
	notice     NoticeFunc
	onReceipt  func(context.Context, *Receipt)
	allowed    []allowedSender
	logger     *slog.Logger
	now        func() time.Time
	idDomain   string
}

// Options configures a Sender. The zero value (or a nil *Options) is the
// safe default: verified TLS for every recipient, no end-to-end protection,
// no logging.
type Options struct {
	// Policy plans every recipient's delivery. Nil means DefaultPolicy:
	// verified TLS, no protection. A recipient whose plan cannot be made
	// (the Policy returned an error, or panicked) fails and receives
	// nothing; the others are delivered.
	Policy Policy

	// Protector protects content for recipients whose plan requires or
	// prefers it. Nil (with no Protectors either) means none is available:
	// recipients whose plan requires protection fail with ErrNoKey and
	// receive nothing.
	Protector Protector

	// Protectors are further Protectors, after Protector, for Senders
	// that offer more than one method (PGP/MIME and S/MIME). A Plan names
	// the methods it allows by the name each Protector reports through a
	// Method() string method (pgp.Protector: "pgp", smime.Protector:
	// "smime"); a Plan with no Methods tries them all in this order.
	Protectors []Protector

	// Notice builds the link-only notice sent, when a recipient's plan
	// says NoKeyNotice, instead of content that could not be protected.
	// Nil means no notice can be sent: such recipients fail, as does a
	// recipient whose notice cannot be built (an error, or a panic).
	Notice NoticeFunc

	// AllowedSenders limits the From, Sender and envelope-from addresses
	// a message may use, so that an application that lets users type
	// addresses cannot be turned into a relay for spoofed mail. Each entry
	// is an address ("noreply@example.com"), a domain ("example.com"), or
	// ".example.com" for every domain below example.com. Empty allows any
	// sender. A message outside the list fails with ErrSenderNotAllowed
	// before any I/O.
	AllowedSenders []string

	// OnReceipt is called with the Receipt of every Send that attempted
	// anything, successful or not, before Send returns: a place to store
	// the audit record. It must be safe for concurrent use. A panic in it
	// is recovered and logged (on Logger, or slog's default logger when
	// Logger is nil) and changes nothing of what Send returns: the
	// messages have gone out by then.
	OnReceipt func(context.Context, *Receipt)

	// Logger receives one record per delivery (recipients, host, TLS
	// version, outcome). Nil means no logging. Records never contain
	// message content, credentials or keys.
	Logger *slog.Logger

	// Now returns the current time for the Date header. Nil means time.Now.
	Now func() time.Time

	// MessageIDDomain is the right-hand side of generated Message-IDs.
	// Empty means the domain of the From address.
	MessageIDDomain string
}

// NewSender returns a Sender that delivers through t.
func NewSender(t Transport, o *Options) (*Sender, error) {
	if t == nil {
		return nil, errors.New("mailsec: NewSender needs a Transport")
	}
	if isNil(t) {
		return nil, invalid("Transport", fmt.Sprintf("%T", t), "a nil pointer or func; NewSender needs a Transport")
	}
	if o == nil {
		o = &Options{}
	}
	// A typed nil where a Policy or Protector is expected is a mistake,
	// not a request for the default: the default protects less.
	if o.Policy != nil && isNil(o.Policy) {
		return nil, invalid("Options.Policy", fmt.Sprintf("%T", o.Policy), "a nil pointer or func; leave the field nil for DefaultPolicy")
	}
	s := &Sender{
		transport: t,
		policy:    cmp.Or[Policy](o.Policy, DefaultPolicy()),
		notice:    o.Notice,
		onReceipt: o.OnReceipt,
		logger:    o.Logger,
		now:       o.Now,
		idDomain:  o.MessageIDDomain,
	}
	if s.now == nil {
		s.now = time.Now
	}
	for i, p := range append([]Protector{o.Protector}, o.Protectors...) {
		if p == nil {
			continue
		}
		field := "Options.Protector"
		if i > 0 {
			field = "Options.Protectors[" + strconv.Itoa(i-1) + "]"
		}
		if isNil(p) {
			return nil, invalid(field, fmt.Sprintf("%T", p), "a nil pointer or func")
		}
		np := namedProtector{p: p}
		if m, ok := p.(interface{ Method() string }); ok {
			name, err := methodName(m)
			if err != nil {
				return nil, invalid(field, fmt.Sprintf("%T", p), err.Error())
			}
			np.name = name
		}
		s.protectors = append(s.protectors, np)
	}
	for i, a := range o.AllowedSenders {
		as, err := parseAllowedSender(a)
		if err != nil {
			return nil, invalid("AllowedSenders["+strconv.Itoa(i)+"]", a, err.Error())
		}
		s.allowed = append(s.allowed, as)
	}
	if s.idDomain != "" {
		m, reason := parseAddrSpec("x@" + s.idDomain)
		if reason != "" {
			return nil, invalid("MessageIDDomain", s.idDomain, reason)
		}
		s.idDomain = m.aDomain
	}
	return s, nil
}

// methodName asks a Protector for its method name, turning a panic into
// an error.
func methodName(m interface{ Method() string }) (name string, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("its Method method panicked: %v", v)
		}
	}()
	return m.Method(), nil
}

// isNil reports whether v is nil or holds a nil pointer, func, map,
// slice or channel: a typed nil, whose methods would panic.
func isNil(v any) bool { return typednil.Is(v) }

// Message is an email to send. Addresses are written as an application
// usually has them: "ann@example.org" or "Ann Example <ann@example.org>".
// Domains may be internationalised (they are sent as IDNA A-labels);
// local parts may be non-ASCII only if the server offers SMTPUTF8.
//
// A Message is read, never modified, by Send. One whose attachments are
// io.Readers must not be sent by two goroutines at once.
type Message struct {
	From    string   // the author; required
	Sender  string   // the Sender header, when it differs from From
	ReplyTo []string // Reply-To
	To      []string
	Cc      []string
	// Bcc recipients never appear in any header; each gets a delivery of
	// its own.
	Bcc     []string
	Subject string

	// Text and HTML are the bodies. With both, the message is
	// multipart/alternative. Line endings may be LF, CRLF or CR; they are
	// sent as CRLF.
	Text string
	HTML string

	// Attachments are sent with Content-Disposition: attachment, Inline
	// parts (images referenced from HTML as "cid:...") with inline, inside
	// multipart/related.
	Attachments []Attachment
	Inline      []Attachment

	// Headers are extra header fields (List-Unsubscribe, In-Reply-To,
	// X-Entity-Ref-ID...). Fields the builder owns (From, To, Cc, Bcc,
	// Subject, Date, Message-ID, MIME-Version, Content-*, ...) are refused,
	// and so are those only the mail system writes: Resent-*, Received,
	// Return-Path, Authentication-Results, ARC-*, Received-SPF and
	// DKIM-Signature.
	Headers []Header

	// EnvelopeFrom is the SMTP reverse-path (MAIL FROM), where bounces go.
	// Empty means the From address.
	EnvelopeFrom string

	// RequireTLS asks for REQUIRETLS (RFC 8689): every hop must relay the
	// message over verified TLS or bounce it. It fails unless the server
	// offers REQUIRETLS over a verified TLS session.
	RequireTLS bool

	// TLSRequiredNo adds "TLS-Required: No" (RFC 8689 §5): the message
	// asks that the recipient domain's TLS policies (DANE, MTA-STS) not
	// stop its delivery, for mail about a broken TLS setup itself. Direct
	// delivery still requires TLS for it, without authentication; relays
	// may deliver it in the clear. Cannot be combined with RequireTLS.
	TLSRequiredNo bool

	// DSN requests delivery status notifications (RFC 3461). Nil requests
	// none and lets the server decide.
	DSN *DSN

	// Date and MessageID are generated when zero.
	Date      time.Time
	MessageID string // without angle brackets
}

// Header is one extra header field.
type Header struct {
	Name  string
	Value string
}

// Attachment is a file attached to a message, streamed from Content.
type Attachment struct {
	// Filename is offered to the recipient; it may be non-ASCII.
	Filename string
	// ContentType such as "application/pdf". Empty means one derived from
	// the Filename extension, or application/octet-stream.
	ContentType string
	// ContentID identifies an inline part ("logo" is referenced from HTML
	// as "cid:logo"). Required for Inline parts.
	ContentID string
	// Content is read when the message is written, in base64 chunks, never
	// whole. When a message needs more than one delivery (Bcc recipients,
	// recipients with different plans), Content must also be an io.Seeker
	// (an *os.File, *bytes.Reader or *strings.Reader is), so that it can be
	// read again from its starting offset.
	Content io.Reader
}

// DSN holds delivery status notification options (RFC 3461). They are
// sent only when the server offers DSN.
type DSN struct {
	// Return is "FULL" or "HDRS": what a bounce includes. Empty: server's choice.
	Return string
	// EnvelopeID is echoed in notifications (ENVID); printable ASCII.
	EnvelopeID string
	// Notify is "NEVER" or any of "SUCCESS", "FAILURE", "DELAY".
	Notify []string
	// OriginalRecipient adds ORCPT=rfc822;<address> to every recipient.
	OriginalRecipient bool
}

// Receipt is the record of one Send: per recipient, what was delivered,
// how, and what the server said. Its JSON form is stable; see the README.
type Receipt struct {
	MessageID  string             `json:"message_id"`
	Recipients []RecipientReceipt `json:"recipients"`
}

// RecipientReceipt is the outcome for one recipient.
type RecipientReceipt struct {
	Address  string        `json:"address"`
	Kind     RecipientKind `json:"kind"`
	Accepted bool          `json:"accepted"`
	// Delivery numbers the SMTP transaction (MAIL FROM to the end of
	// DATA) that carried, or tried to carry, this recipient; recipients
	// with the same number shared one. Numbers start at 1 in each
	// Receipt; 0 means none did: the recipient failed before any session
	// (policy, protection, DNS, connection), or its session ended before
	// MAIL FROM (a security requirement or a missing extension).
	Delivery int `json:"delivery"`
	// Plan is what the Policy decided for the recipient.
	Plan Plan `json:"plan"`
	// RequireTLS is set when the message was sent with REQUIRETLS.
	RequireTLS bool `json:"requiretls,omitempty"`
	// TLSRequiredNo is set when the message carried "TLS-Required: No".
	TLSRequiredNo bool `json:"tls_required_no,omitempty"`
	// Reply is the server's reply: to RCPT when the recipient was refused,
	// to the end of DATA otherwise.
	Reply   *Reply `json:"reply,omitempty"`
	QueueID string `json:"queue_id,omitempty"`
	// Connection describes the session's transport security.
	Connection *ConnectionState `json:"connection,omitempty"`
	// Protection is set when the content was protected for the recipient.
	Protection *ProtectionInfo `json:"protection,omitempty"`
	// Err is why the recipient was not accepted; its text is the "error"
	// member of the JSON form.
	Err error `json:"-"`
}

// MarshalJSON adds the error text to the JSON form.
func (r RecipientReceipt) MarshalJSON() ([]byte, error) {
	type plain RecipientReceipt
	v := struct {
		plain
		Error string `json:"error,omitempty"`
	}{plain: plain(r)}
	if r.Err != nil {
		v.Error = r.Err.Error()
	}
	return json.Marshal(v)
}

// UnmarshalJSON reads the JSON form back; the "error" member becomes an
// error with that text (its type is not preserved).
func (r *RecipientReceipt) UnmarshalJSON(b []byte) error {
	type plain RecipientReceipt
	var v struct {
		plain
		Error string `json:"error"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = RecipientReceipt(v.plain)
	if v.Error != "" {
		r.Err = errors.New(v.Error)
	}
	return nil
}

// Failed returns the receipts of recipients that were not accepted.
func (r *Receipt) Failed() []RecipientReceipt {
	if r == nil {
		return nil
	}
	var out []RecipientReceipt
	for _, rr := range r.Recipients {
		if !rr.Accepted {
			out = append(out, rr)
		}
	}
	return out
}

// RecipientKind says in which field a recipient was named.
type RecipientKind string

// Recipient kinds.
const (
	KindTo  RecipientKind = "to"
	KindCc  RecipientKind = "cc"
	KindBcc RecipientKind = "bcc"
)

// Reply is an SMTP server reply.
type Reply struct {
	Code         int          `json:"code"`
	EnhancedCode EnhancedCode `json:"enhanced_code,omitzero"`
	Text         string       `json:"text"`
}

func (r *Reply) String() string {
	if r == nil {
		return ""
	}
	s := strconv.Itoa(r.Code)
	if r.EnhancedCode != (EnhancedCode{}) {
		s += " " + r.EnhancedCode.String()
	}
	if r.Text != "" {
		s += " " + r.Text
	}
	return s
}

// EnhancedCode is an RFC 3463 status code such as 5.7.1.
type EnhancedCode [3]int

func (c EnhancedCode) String() string {
	if c == (EnhancedCode{}) {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
}

// MarshalText writes the dotted form.
func (c EnhancedCode) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads the dotted form.
func (c *EnhancedCode) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*c = EnhancedCode{}
		return nil
	}
	v, ok := ParseEnhancedCode(string(b))
	if !ok {
		return fmt.Errorf("mailsec: malformed enhanced status code %q", b)
	}
	*c = v
	return nil
}

// ParseEnhancedCode parses "class.subject.detail" (RFC 3463).
func ParseEnhancedCode(s string) (EnhancedCode, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return EnhancedCode{}, false
	}
	var c EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 || len(p) > 3 {
			return EnhancedCode{}, false
		}
		c[i] = n
	}
	if c[0] != 2 && c[0] != 4 && c[0] != 5 {
		return EnhancedCode{}, false
	}
	return c, true
}

// ConnectionState describes the SMTP session a delivery used.
type ConnectionState struct {
	// Host is the server name the certificate was checked against.
	Host string `json:"host"`
	// Addr is the remote network address.
	Addr        string `json:"addr,omitempty"`
	TLSVersion  string `json:"tls_version,omitempty"`  // "TLS 1.3"; empty without TLS
	CipherSuite string `json:"cipher_suite,omitempty"` // IANA name
	// Verification says how the server's certificate was authenticated.
	Verification Verification `json:"verification"`
	// PeerPin is the SHA-256 of the server certificate's public key.
	PeerPin Pin `json:"peer_spki_sha256,omitzero"`
	// SASLMechanism names the SMTP AUTH mechanism used, if any.
	SASLMechanism string `json:"sasl_mechanism,omitempty"`
	// Reused is set when the session had carried earlier messages.
	Reused bool `json:"reused"`

	// The fields below are set by direct delivery to MX hosts.

	// Domain is the recipient domain whose MX host this session reached.
	Domain string `json:"domain,omitempty"`
	// Policy names what set the session's requirement: "dane" (usable
	// TLSA records), "mta-sts" (an enforce policy), "mta-sts-testing",
	// or the security level ("verified", "may", "encrypt"...).
	Policy string `json:"policy,omitempty"`
	// TLSA is the DANE record that matched, as in a zone file.
	TLSA string `json:"tlsa,omitempty"`
	// Notes record every fallback taken on the way: MX hosts skipped and
	// why, MTA-STS testing-mode violations, a missing STARTTLS under an
	// opportunistic level, policies set aside by "TLS-Required: No".
	Notes []string `json:"notes,omitempty"`
}

// Verification says how a server's identity was established.
type Verification string

// Verification results.
const (
	// VerifiedWebPKI: the chain verified to a trusted root, for the host name.
	VerifiedWebPKI Verification = "webpki"
	// VerifiedPin: the certificate's key matched a configured SPKI pin.
	VerifiedPin Verification = "pinned-spki"
	// NotVerified: TLS without certificate verification (explicit opt-in).
	NotVerified Verification = "unverified"
	// NoTLS: no TLS at all (explicit opt-in: loopback only for
	// submission; a per-domain level for direct delivery).
	NoTLS Verification = "none"
	// VerifiedDANEEE: the certificate's key or whole certificate matched
	// a DNSSEC-authenticated DANE-EE(3) TLSA record (RFC 7672 §3.1.1).
	VerifiedDANEEE Verification = "dane-ee"
	// VerifiedDANETA: the chain led to a trust anchor named by a
	// DNSSEC-authenticated DANE-TA(2) TLSA record, and the certificate was
	// valid for the MX host (RFC 7672 §3.1.2).
	VerifiedDANETA Verification = "dane-ta"
	// VerifiedMTASTS: the chain verified to a trusted root for an MX host
	// name that the domain's MTA-STS policy in enforce mode lists
	// (RFC 8461 §4).
	VerifiedMTASTS Verification = "mta-sts"
)

// ProtectionInfo records what a recipient's plan led to when it asked for
// protection: the method and key used, or why the content was not
// protected and what was sent instead.
type ProtectionInfo struct {
	// Method is the Protector's method ("pgp", "smime"), MethodNotice
	// when the link-only notice was sent instead of the content, or
	// MethodNone when the content went unprotected (ProtectionPreferred
	// without a usable key).
	Method string `json:"method"`
	// Fingerprint is that of the recipient's key or certificate.
	Fingerprint string `json:"fingerprint,omitempty"`
	Signed      bool   `json:"signed,omitempty"`
	// Reason says why the content was not protected (no key, expired,
	// revoked...), for MethodNotice and MethodNone.
	Reason string `json:"reason,omitempty"`
	// NoticeMessageID is the Message-ID of the notice sent instead.
	NoticeMessageID string `json:"notice_message_id,omitempty"`
}

// Methods recorded in ProtectionInfo besides the Protectors' own.
const (
	// MethodNotice: the link-only notice was sent instead of the content.
	MethodNotice = "notice"
	// MethodNone: protection was preferred, no usable key existed, and
	// the content was sent unprotected over the plan's transport security.
	MethodNone = "none"
)

// Send validates m, plans each recipient with the Sender's Policy, and
// delivers. Nothing is sent when m is invalid. Each recipient is handled on
// its own: when some fail (refused by the server, no usable key, security
// requirement not met) the others are still delivered, and the error is a
// *SendError that unwraps to one *RecipientError per failed recipient. The
// Receipt is returned whenever anything was attempted, error or not.
func (s *Sender) Send(ctx context.Context, m *Message) (*Receipt, error) {
	if s == nil || s.transport == nil {
		return nil, invalid("Sender", "", "not made by NewSender")
	}
	if ctx == nil {
		return nil, invalid("Context", "", "nil context")
	}
	if m == nil {
		return nil, invalid("Message", "", "nil message")
	}
	msg, err := s.prepare(m)
	if err != nil {
		return nil, err
	}
	rec := &Receipt{MessageID: msg.messageID}
	for _, r := range msg.rcpts {
		rec.Recipients = append(rec.Recipients, RecipientReceipt{Address: r.Address, Kind: r.Kind})
	}
	fail := func(i int, err error) {
		rec.Recipients[i].Err = &RecipientError{Recipient: rec.Recipients[i].Address, Err: err}
	}

	groups := make([]*group, 0, len(msg.rcpts))
	byKey := map[string]*group{}
	for i, r := range msg.rcpts {
		plan, err := s.plan(ctx, m, r.Recipient)
		if err == nil {
			err = plan.validate()
		}
		if err != nil {
			fail(i, fmt.Errorf("policy: %w", err))
			continue
		}
		rec.Recipients[i].Plan = plan
		key := plan.key()
		if g := byKey[key]; g != nil && r.Kind != KindBcc {
			g.idx = append(g.idx, i)
			continue
		}
		g := &group{plan: plan, idx: []int{i}}
		groups = append(groups, g)
		if r.Kind != KindBcc {
			byKey[key] = g
		}
	}
	// Deliveries that carry the content (notices do not): one per plain
	// group, and for a protected group one per method that may serve
	// part of it, plus the unprotected rest under ProtectionPreferred.
	carrying := 0
	for _, g := range groups {
		switch g.plan.Protection {
		case ProtectionNone:
			carrying++
		case ProtectionRequired:
			carrying += min(len(g.idx), len(s.protectorsFor(g.plan)))
		case ProtectionPreferred:
			carrying += min(len(g.idx), len(s.protectorsFor(g.plan))+1)
		}
	}
	if carrying > 1 {
		if err := msg.checkReplayable(carrying); err != nil {
			return nil, err
		}
	}

	seq := 0
	for _, g := range groups {
		if err := ctx.Err(); err != nil {
			for _, i := range g.idx {
				fail(i, err)
			}
			continue
		}
		s.deliver(ctx, m, msg, g, &seq, rec)
	}
	s.receipt(ctx, msg, rec)

	var failed []*RecipientError
	for _, r := range rec.Recipients {
		if r.Err != nil {
			var re *RecipientError
			if !errors.As(r.Err, &re) {
				re = &RecipientError{Recipient: r.Address, Err: r.Err}
			}
			failed = append(failed, re)
		}
	}
	if len(failed) > 0 {
		return rec, &SendError{Failed: failed, Total: len(rec.Recipients)}
	}
	return rec, nil
}

// plan asks the Policy for r's plan. A panic in it becomes an error, so
// that the recipient fails (receiving nothing) and the others go on.
func (s *Sender) plan(ctx context.Context, m *Message, r Recipient) (p Plan, err error) {
	defer func() {
		if v := recover(); v != nil {
			p, err = Plan{}, fmt.Errorf("mailsec: Policy panicked: %v", v)
		}
	}()
	p, err = s.policy.Plan(ctx, m, r)
	return p, usableError("Policy", err)
}

// buildNotice asks the NoticeFunc for r's notice, turning a panic in it
// into an error: the recipient then fails and receives nothing.
func (s *Sender) buildNotice(ctx context.Context, m *Message, r Recipient) (n *Notice, err error) {
	defer func() {
		if v := recover(); v != nil {
			n, err = nil, fmt.Errorf("mailsec: Options.Notice panicked: %v", v)
		}
	}()
	n, err = s.notice(ctx, m, r)
	return n, usableError("Options.Notice", err)
}

// receipt hands rec to OnReceipt. The messages have gone out by now, so a
// panic in it changes nothing of Send's outcome (an error would invite a
// retry, and so a second copy): it is recovered and logged, on the
// Logger or, without one, on slog's default logger, never silently.
func (s *Sender) receipt(ctx context.Context, msg *prepared, rec *Receipt) {
	if s.onReceipt == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			l := cmp.Or(s.logger, slog.Default())
			l.LogAttrs(ctx, slog.LevelError, "mailsec: Options.OnReceipt panicked",
				slog.String("message_id", msg.messageID), slog.String("panic", fmt.Sprint(v)))
		}
	}()
	s.onReceipt(ctx, rec)
}

// group is a set of recipients that share one delivery.
type group struct {
	plan Plan
	idx  []int // indexes into the prepared recipients
}

// deliver carries out one group's plan, filling in rec: a plain delivery;
// or one protected delivery per method that has keys for some of the
// group, then, for those left without a usable key, a plain delivery
// (ProtectionPreferred), a notice each (NoKeyNotice), or nothing.
func (s *Sender) deliver(ctx context.Context, m *Message, msg *prepared, g *group, seq *int, rec *Receipt) {
	if g.plan.Protection == ProtectionNone {
		s.transmit(ctx, msg, g.plan, g.idx, msg.content(), nil, seq, rec)
		return
	}
	remaining := g.idx
	why := map[int]error{}
	// hard marks recipients who must not fall back to unprotected content
	// or a notice: the failure was not "this recipient has no usable key"
	// (a Protector that failed as a whole, a key lookup that failed for
	// now, a plan naming no method the Sender has).
	hard := map[int]bool{}
	protectors := s.protectorsFor(g.plan)
	if len(g.plan.Methods) > 0 && len(protectors) == 0 {
		for _, i := range remaining {
			why[i] = &ProtectionError{Recipient: rec.Recipients[i].Address, fault: true,
				Reason: "the Sender has no Protector for the plan's methods " + strings.Join(g.plan.Methods, ", ")}
			hard[i] = true
		}
	}
	for _, np := range protectors {
		if len(remaining) == 0 {
			break
		}
		prot, failed := s.protect(ctx, msg, np.p, addressesOf(rec, remaining))
		var done, left []int
		for _, i := range remaining {
			if err := failed[rec.Recipients[i].Address]; err != nil || prot == nil {
				if err != nil {
					why[i] = joinReasons(why[i], err)
					hard[i] = hard[i] || !errors.Is(err, ErrNoKey) || IsTemporary(err)
				}
				left = append(left, i)
				continue
			}
			done = append(done, i)
		}
		if prot != nil && len(done) > 0 {
			info := map[int]*ProtectionInfo{}
			for _, i := range done {
				info[i] = &ProtectionInfo{Method: prot.Method, Fingerprint: prot.Fingerprints[rec.Recipients[i].Address], Signed: prot.Signed}
			}
			s.transmit(ctx, msg, g.plan, done, recovering{w: prot.Entity, what: "Protector"}, info, seq, rec)
		}
		remaining = left
	}
	for _, i := range remaining {
		if why[i] == nil {
			why[i] = &ProtectionError{Recipient: rec.Recipients[i].Address, Reason: "the Sender has no Protector"}
		}
	}
	// Those whose failure was not about their key fail, whatever the plan.
	var failed, soft []int
	for _, i := range remaining {
		if hard[i] {
			failed = append(failed, i)
		} else {
			soft = append(soft, i)
		}
	}
	for _, i := range failed {
		rec.Recipients[i].Err = &RecipientError{Recipient: rec.Recipients[i].Address, Err: why[i]}
	}
	if len(failed) > 0 {
		s.log(ctx, msg, addressesOf(rec, failed), nil, nil, errors.Join(mapValues(why, failed)...))
	}
	remaining = soft
	if len(remaining) == 0 {
		return
	}

	switch {
	case g.plan.Protection == ProtectionPreferred:
		info := map[int]*ProtectionInfo{}
		for _, i := range remaining {
			info[i] = &ProtectionInfo{Method: MethodNone, Reason: reasonText(why[i])}
		}
		s.transmit(ctx, msg, g.plan, remaining, msg.content(), info, seq, rec)
	case g.plan.NoKey == NoKeyNotice:
		for _, i := range remaining {
			s.sendNotice(ctx, m, msg, g.plan, i, why[i], seq, rec)
		}
	default:
		for _, i := range remaining {
			rec.Recipients[i].Err = &RecipientError{Recipient: rec.Recipients[i].Address, Err: why[i]}
		}
		s.log(ctx, msg, addressesOf(rec, remaining), nil, nil, errors.Join(mapValues(why, remaining)...))
	}
}

// sendNotice sends recipient i the link-only notice instead of the content
// it could not get protected.
func (s *Sender) sendNotice(ctx context.Context, m *Message, msg *prepared, plan Plan, i int, why error, seq *int, rec *Receipt) {
	r := &rec.Recipients[i]
	fail := func(err error) {
		r.Err = &RecipientError{Recipient: r.Address, Err: &ProtectionError{Recipient: r.Address, Reason: "no usable key, and the notice failed", Err: err}}
		s.log(ctx, msg, []string{r.Address}, nil, nil, r.Err)
	}
	if s.notice == nil {
		fail(errors.Join(why, errors.New("the plan asks for a notice but the Sender has no Options.Notice")))
		return
	}
	n, err := s.buildNotice(ctx, m, msg.rcpts[i].Recipient)
	if err != nil {
		fail(err)
		return
	}
	if n == nil {
		fail(errors.New("Options.Notice returned no notice"))
		return
	}
	if n.Text == "" && n.HTML == "" {
		fail(errors.New("Options.Notice returned a notice without Text or HTML"))
		return
	}
	nm, err := s.prepare(noticeMessage(m, n, r.Address, msg.date))
	if err != nil {
		fail(err)
		return
	}
	info := map[int]*ProtectionInfo{i: {Method: MethodNotice, Reason: reasonText(why), NoticeMessageID: nm.messageID}}
	s.transmitTo(ctx, nm, plan, []int{i}, []preparedRcpt{msg.rcpts[i]}, nm.content(), info, seq, rec)
}

// transmit hands one delivery to the Transport and records the outcome
// for the recipients idx.
func (s *Sender) transmit(ctx context.Context, msg *prepared, plan Plan, idx []int, content io.WriterTo, info map[int]*ProtectionInfo, seq *int, rec *Receipt) {
	rcpts := make([]preparedRcpt, len(idx))
	for j, i := range idx {
		rcpts[j] = msg.rcpts[i]
	}
	s.transmitTo(ctx, msg, plan, idx, rcpts, content, info, seq, rec)
}

func (s *Sender) transmitTo(ctx context.Context, msg *prepared, plan Plan, idx []int, prcpts []preparedRcpt, content io.WriterTo, info map[int]*ProtectionInfo, seq *int, rec *Receipt) {
	rcpts := make([]string, len(prcpts))
	d := &Delivery{
		From:          msg.envelopeFrom,
		Security:      plan.Security,
		RequireTLS:    msg.requireTLS,
		TLSRequiredNo: msg.tlsOptional,
		DSN:           msg.dsn,
		Content:       content,
		SMTPUTF8:      msg.utf8 || msg.envUTF8,
	}
	for j, r := range prcpts {
		rcpts[j] = r.Address
		d.SMTPUTF8 = d.SMTPUTF8 || r.utf8
	}
	d.To = rcpts
	d.EightBit = d.SMTPUTF8

	res, err := s.deliverRecovering(ctx, d)
	err = usableError("Transport", err)
	if res == nil {
		res = &DeliveryResult{}
	}
	queueID := ""
	if res.Reply != nil {
		queueID = QueueID(res.Reply.Text)
	}
	// Each SMTP transaction the transport reports gets the next delivery
	// number: recipients whose results share a session (the same
	// ConnectionState) share it; accepted recipients of a transport that
	// reports no session share one for this call.
	numbers := map[*ConnectionState]int{}
	number := func(c *ConnectionState) int {
		n, ok := numbers[c]
		if !ok {
			*seq++
			n = *seq
			numbers[c] = n
		}
		return n
	}
	for j, i := range idx {
		rr := &rec.Recipients[i]
		rr.Delivery = 0
		rr.Connection = res.Connection
		rr.RequireTLS = msg.requireTLS
		rr.TLSRequiredNo = msg.tlsOptional
		rr.Protection = info[i]
		var r *RecipientResult
		if j < len(res.Recipients) {
			r = &res.Recipients[j]
			if r.Connection != nil {
				rr.Connection = r.Connection
			}
		}
		var rerr error
		switch {
		case r != nil && r.Accepted && err == nil:
			rr.Accepted = true
			rr.Reply = res.Reply
			rr.QueueID = queueID
			if r.Reply != nil {
				rr.Reply = r.Reply
				rr.QueueID = QueueID(r.Reply.Text)
			}
		case r != nil && r.Err != nil:
			rr.Reply = r.Reply
			rerr = usableError("Transport", r.Err)
		case err != nil:
			rr.Reply = res.Reply
			rerr = err
		default:
			rerr = errors.New("mailsec: transport reported no result for this recipient")
		}
		if rerr != nil {
			var re *RecipientError
			if !errors.As(rerr, &re) || re.Recipient != rr.Address {
				rerr = &RecipientError{Recipient: rr.Address, Err: rerr}
			}
			rr.Err = rerr
		}
		if inTransaction(rr, r) {
			rr.Delivery = number(rr.Connection)
		}
	}
	var prot []*ProtectionInfo
	for _, i := range idx {
		prot = append(prot, info[i])
	}
	s.log(ctx, msg, rcpts, prot, res, err)
}

// inTransaction reports whether an SMTP transaction carried, or tried to
// carry, the recipient rr (whose result from the transport is r): it was
// accepted, its RCPT was answered, or its session got as far as MAIL FROM.
// A session that ended before MAIL FROM fails with a *SecurityError or
// *ExtensionError (whose contracts say so), an *AuthError or a
// *ValidationError, or, when it was never established, reports no
// ConnectionState.
func inTransaction(rr *RecipientReceipt, r *RecipientResult) bool {
	switch {
	case rr.Accepted, r != nil && r.Reply != nil:
		return true
	case rr.Connection == nil:
		return false
	}
	var se *SecurityError
	var ee *ExtensionError
	var ve *ValidationError
	var ae *AuthError
	return !errors.As(rr.Err, &se) && !errors.As(rr.Err, &ee) && !errors.As(rr.Err, &ve) && !errors.As(rr.Err, &ae)
}

// namedProtector is a Protector with the method name Plans refer to it by.
type namedProtector struct {
	name string
	p    Protector
}

// protectorsFor returns the Sender's Protectors a plan allows, in the
// plan's order of preference.
func (s *Sender) protectorsFor(plan Plan) []namedProtector {
	if len(plan.Methods) == 0 {
		return s.protectors
	}
	var out []namedProtector
	for _, m := range plan.Methods {
		for _, np := range s.protectors {
			if np.name == m {
				out = append(out, np)
			}
		}
	}
	return out
}

func addressesOf(rec *Receipt, idx []int) []string {
	out := make([]string, len(idx))
	for j, i := range idx {
		out[j] = rec.Recipients[i].Address
	}
	return out
}

func mapValues(m map[int]error, idx []int) []error {
	out := make([]error, 0, len(idx))
	for _, i := range idx {
		out = append(out, m[i])
	}
	return out
}

// reasons is why each allowed method could not protect a recipient's
// content.
type reasons []error

func (r reasons) Error() string {
	s := make([]string, len(r))
	for i, e := range r {
		s[i] = strings.TrimPrefix(e.Error(), "mailsec: ")
	}
	return "mailsec: " + strings.Join(s, "; ")
}

func (r reasons) Unwrap() []error { return r }

func joinReasons(prev, err error) error {
	if prev == nil {
		return err
	}
	if r, ok := prev.(reasons); ok {
		return append(r, err)
	}
	return reasons{prev, err}
}

// reasonText is why a recipient's content was not protected, for the
// Receipt: the error's text without the package prefix.
func reasonText(err error) string {
	if err == nil {
		return ""
	}
	return strings.TrimPrefix(err.Error(), "mailsec: ")
}

// protect asks p for content for rcpts. Recipients it cannot serve are
// returned with their errors, and the others are protected again without
// them, so a missing key for one never exposes another.
func (s *Sender) protect(ctx context.Context, msg *prepared, p Protector, rcpts []string) (*Protected, map[string]error) {
	failed := map[string]error{}
	e, err := msg.entity()
	if err != nil {
		for _, r := range rcpts {
			failed[r] = &ProtectionError{Recipient: r, Reason: "internal: header does not parse", Err: err, fault: true}
		}
		return nil, failed
	}
	remaining := slices.Clone(rcpts)
	for len(remaining) > 0 {
		prot, err := protectOnce(ctx, p, e, remaining)
		if err == nil {
			return prot, failed
		}
		per := recipientErrors(err)
		progress := false
		for _, re := range per {
			if i := slices.Index(remaining, re.Recipient); i >= 0 {
				failed[re.Recipient] = re
				remaining = slices.Delete(remaining, i, i+1)
				progress = true
			}
		}
		if !progress {
			// An error that names no recipient applies to all of them.
			for _, r := range remaining {
				failed[r] = &ProtectionError{Recipient: r, Reason: "protection failed", Err: err, fault: true}
			}
			return nil, failed
		}
	}
	return nil, failed
}

// protectOnce calls the Protector and turns a panic inside it (a crypto
// library fed a malformed key, say) into an error instead of a crash.
func protectOnce(ctx context.Context, pr Protector, e *Entity, rcpts []string) (p *Protected, err error) {
	defer func() {
		if v := recover(); v != nil {
			p, err = nil, fmt.Errorf("mailsec: Protector panicked: %v", v)
		}
	}()
	p, err = pr.Protect(ctx, e, rcpts)
	err = usableError("Protector", err)
	if err == nil && (p == nil || p.Entity == nil) {
		err = errors.New("mailsec: Protector returned no entity")
	}
	return p, err
}

// deliverRecovering hands d to the Transport, turning a panic in it (a
// bug in the transport, or in a Dialer or Resolver it calls) into an
// error: the delivery's recipients fail, the message's other deliveries
// go on, and the application is not taken down. Whether any of it
// reached the server is unknown; the error is not temporary.
func (s *Sender) deliverRecovering(ctx context.Context, d *Delivery) (res *DeliveryResult, err error) {
	defer func() {
		if v := recover(); v != nil {
			res, err = nil, fmt.Errorf("mailsec: Transport panicked: %v", v)
		}
	}()
	return s.transport.Deliver(ctx, d)
}

// usableError returns err, or, when err cannot be used as an error, an
// error that says so, naming who returned it. Unusable is a typed nil (a
// nil *ProtectionError returned as an error: its methods dereference it)
// and an error whose methods panic when the Sender, or the application
// after it, prints or classifies it, as one holding a typed nil does.
func usableError(who string, err error) (out error) {
	if err == nil {
		return nil
	}
	if isNil(err) {
		return fmt.Errorf("mailsec: %s returned a nil %T as its error", who, err)
	}
	defer func() {
		if v := recover(); v != nil {
			out = fmt.Errorf("mailsec: %s returned an error (%T) whose methods panic, a nil value inside it perhaps: %v", who, err, v)
		}
	}()
	_ = err.Error()
	_ = IsTemporary(err)
	_ = errors.Is(err, ErrNoKey)
	for _, re := range recipientErrors(err) {
		_ = re.Recipient
	}
	return err
}

// recovering turns a panic while a message is written (in a Protector's
// output, a crypto library fed something it did not expect; in an
// attachment reader) into an error: the transport abandons the delivery
// before the end of DATA, and the application goes on.
type recovering struct {
	w    io.WriterTo
	what string // who panicked, for the error
}

func (r recovering) WriteTo(w io.Writer) (n int64, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("mailsec: %s panicked while the message was written: %v", r.what, v)
		}
	}()
	return r.w.WriteTo(w)
}

// log writes one record per delivery (or per group of recipients that got
// none). prot holds each recipient's protection, nil entries for none.
func (s *Sender) log(ctx context.Context, msg *prepared, rcpts []string, prot []*ProtectionInfo, res *DeliveryResult, err error) {
	if s.logger == nil {
		return
	}
	attrs := []slog.Attr{
		slog.String("message_id", msg.messageID),
		slog.Any("recipients", rcpts),
	}
	if p := firstNonNil(prot); p != nil {
		// One delivery has one method; fingerprints differ per recipient.
		attrs = append(attrs, slog.String("protection", p.Method))
		var fps []string
		for _, pi := range prot {
			if pi != nil && pi.Fingerprint != "" {
				fps = append(fps, pi.Fingerprint)
			}
		}
		if len(fps) > 0 {
			attrs = append(attrs, slog.Any("fingerprints", fps))
		}
		if p.Reason != "" {
			attrs = append(attrs, slog.String("unprotected_because", p.Reason))
		}
	}
	if res != nil && res.Connection != nil {
		c := res.Connection
		attrs = append(attrs, slog.String("host", c.Host), slog.String("tls", c.TLSVersion),
			slog.String("cipher", c.CipherSuite), slog.String("verification", string(c.Verification)),
			slog.Bool("reused", c.Reused))
		if c.Policy != "" {
			attrs = append(attrs, slog.String("domain", c.Domain), slog.String("policy", c.Policy))
		}
		if len(c.Notes) > 0 {
			attrs = append(attrs, slog.Any("notes", c.Notes))
		}
	}
	if res != nil && res.Reply != nil {
		attrs = append(attrs, slog.String("reply", res.Reply.String()))
	}
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	s.logger.LogAttrs(ctx, level, "mailsec delivery", attrs...)
}

func firstNonNil(ps []*ProtectionInfo) *ProtectionInfo {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

// QueueID extracts the queue identifier from a reply to the end of DATA,
// in the forms Postfix ("queued as 4ZxY"), Exim ("id=1abc-..."), and others
// ("Ok: queued as <id>", "Ok <id>") use. It returns "" when there is none.
func QueueID(text string) string {
	fields := strings.Fields(text)
	for i, f := range fields {
		if strings.EqualFold(f, "as") && i > 0 && strings.EqualFold(fields[i-1], "queued") && i+1 < len(fields) {
			return strings.Trim(fields[i+1], "<>.,;()")
		}
		if v, ok := strings.CutPrefix(f, "id="); ok && v != "" {
			return strings.Trim(v, "<>.,;()")
		}
	}
	return ""
}

func newMessageID(domain string) string {
	var b [20]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])) + "@" + domain
}

// Errors.

// Error categories, for errors.Is.
var (
	// ErrInvalid: the message or an option is malformed (a *ValidationError).
	ErrInvalid = errors.New("mailsec: invalid input")
	// ErrDowngrade: the server did not let TLS start cleanly: STARTTLS not
	// offered, refused, or preceded by injected bytes; plaintext on an
	// implicit-TLS port.
	ErrDowngrade = errors.New("mailsec: TLS downgrade refused")
	// ErrCertificate: the server's certificate did not verify (untrusted,
	// expired, wrong name, pin mismatch).
	ErrCertificate = errors.New("mailsec: server certificate not accepted")
	// ErrHandshake: the TLS handshake failed for another reason (no common
	// protocol version of 1.2 or later, no common cipher, broken peer).
	ErrHandshake = errors.New("mailsec: TLS handshake failed")
	// ErrRequireTLS: REQUIRETLS was asked for and cannot be honoured.
	ErrRequireTLS = errors.New("mailsec: REQUIRETLS cannot be honoured")
	// ErrPlaintext: a plaintext session was asked for where it is not
	// allowed (a non-loopback peer, or with credentials).
	ErrPlaintext = errors.New("mailsec: plaintext session not allowed")
	// ErrDomainPolicy: the route a delivery would take is refused by a
	// TLS policy: the recipient domain's (an MX host its MTA-STS policy
	// does not list; no usable DANE records where they are required; a
	// TLSA lookup that failed) or the requirement's (a level the transport
	// cannot honour).
	ErrDomainPolicy = errors.New("mailsec: refused by the TLS policy for the destination")
	// ErrAuth: SMTP authentication failed or could not be attempted safely.
	ErrAuth = errors.New("mailsec: SMTP authentication failed")
	// ErrUnsupported: the server lacks an extension the message needs
	// (SMTPUTF8, 8BITMIME).
	ErrUnsupported = errors.New("mailsec: server lacks a required extension")
	// ErrNoKey: protection is required and no usable key or certificate
	// exists for the recipient.
	ErrNoKey = errors.New("mailsec: no usable key for recipient")
	// ErrContent: writing the message failed midway (an attachment reader
	// or a Protector returned an error); the transaction was abandoned
	// before the end of DATA, so nothing was delivered.
	ErrContent = errors.New("mailsec: message content could not be written")
)

// IsTemporary reports whether err is worth retrying later unchanged, as
// the first error in its chain with a Temporary method says (a *SendError
// is temporary when every failure is). Temporary are 4xx replies, network
// failures and timeouts, key lookups that failed for now, and security
// failures that are themselves temporary (a 454 reply to STARTTLS, a TLSA
// lookup that failed for now). Direct delivery (transport.Direct) also
// reports a TLS or policy failure with a recipient's MX host as temporary
// (its DomainError): such mail is deferred, not bounced, because the
// failure may be an attack that ends or a policy about to be updated
// (RFC 8461 §5, RFC 7672 §2.2). Validation errors, permanent replies,
// missing keys, REQUIRETLS failures and the other security failures of a
// session with a server the application configured are not temporary:
// they need a change before a retry can succeed.
func IsTemporary(err error) bool {
	var t interface{ Temporary() bool }
	if errors.As(err, &t) {
		return t.Temporary()
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// ValidationError reports input refused before any I/O.
type ValidationError struct {
	Field  string // "To[1]", "Subject", "Headers[0].Name", "EHLO name"...
	Value  string // the offending value, possibly truncated
	Reason string
}

func (e *ValidationError) Error() string {
	v := e.Value
	if len(v) > 80 {
		v = v[:80] + "..."
	}
	if v == "" {
		return fmt.Sprintf("mailsec: invalid %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("mailsec: invalid %s %q: %s", e.Field, v, e.Reason)
}

// Is matches ErrInvalid.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Temporary is false: the same input will fail again.
func (e *ValidationError) Temporary() bool { return false }

func invalid(field, value, reason string) *ValidationError {
	return &ValidationError{Field: field, Value: value, Reason: reason}
}

// Invalid returns a *ValidationError; transports and protectors use it to
// report bad input in the same form as the Sender.
func Invalid(field, value, reason string) error { return invalid(field, value, reason) }

// SecurityFailure names the security rule a session broke.
type SecurityFailure string

// Security failures. Each belongs to one category sentinel.
const (
	FailStartTLSMissing   SecurityFailure = "STARTTLS not offered"                               // ErrDowngrade
	FailStartTLSRefused   SecurityFailure = "STARTTLS refused"                                   // ErrDowngrade
	FailInjection         SecurityFailure = "bytes injected before the TLS handshake"            // ErrDowngrade
	FailNotTLS            SecurityFailure = "server does not speak TLS on the implicit-TLS port" // ErrDowngrade
	FailCertificate       SecurityFailure = "certificate verification failed"                    // ErrCertificate
	FailPinMismatch       SecurityFailure = "certificate key matches no pin"                     // ErrCertificate
	FailHandshake         SecurityFailure = "TLS handshake failed"                               // ErrHandshake
	FailRequireTLS        SecurityFailure = "REQUIRETLS not offered after verified TLS"          // ErrRequireTLS
	FailPlaintextNotLocal SecurityFailure = "plaintext to a non-loopback server"                 // ErrPlaintext
	FailPlaintextAuth     SecurityFailure = "credentials over a plaintext session"               // ErrPlaintext
	FailDANE              SecurityFailure = "certificate matches no usable TLSA record"          // ErrCertificate
	FailDANERequired      SecurityFailure = "no usable DANE TLSA records"                        // ErrDomainPolicy
	FailMXNotInPolicy     SecurityFailure = "MX host not listed in the MTA-STS policy"           // ErrDomainPolicy
	FailTLSALookup        SecurityFailure = "TLSA lookup failed"                                 // ErrDomainPolicy
	FailLevel             SecurityFailure = "security level not supported by this transport"     // ErrDomainPolicy
)

func (f SecurityFailure) category() error {
	switch f {
	case FailStartTLSMissing, FailStartTLSRefused, FailInjection, FailNotTLS:
		return ErrDowngrade
	case FailCertificate, FailPinMismatch, FailDANE:
		return ErrCertificate
	case FailDANERequired, FailMXNotInPolicy, FailTLSALookup, FailLevel:
		return ErrDomainPolicy
	case FailRequireTLS:
		return ErrRequireTLS
	case FailPlaintextNotLocal, FailPlaintextAuth:
		return ErrPlaintext
	}
	return ErrHandshake
}

// SecurityError reports that a session could not meet its security
// requirement. The session was ended before MAIL FROM: nothing of the
// message, and no credentials, were sent.
type SecurityError struct {
	Host    string
	Failure SecurityFailure
	Detail  string // what was seen, e.g. the server's reply or the x509 error
	Err     error  // underlying error, if any
	// Temp marks a failure that is itself temporary: the server said so
	// (a 454 reply to STARTTLS), or a lookup it depends on failed for now.
	Temp bool
}

func (e *SecurityError) Error() string {
	s := "mailsec: " + e.Host + ": " + string(e.Failure)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is matches the failure's category (ErrDowngrade, ErrCertificate, ...).
func (e *SecurityError) Is(target error) bool { return target == e.Failure.category() }

func (e *SecurityError) Unwrap() error { return e.Err }

// Temporary reports Temp. Other security failures need a configuration
// change (or the end of an attack) before a retry can succeed; a transport
// may still report them as temporary through an error that wraps this one:
// transport.Direct defers a TLS or policy failure with a recipient's MX
// host (see IsTemporary).
func (e *SecurityError) Temporary() bool { return e.Temp }

// SMTPError is an error reply from the server.
type SMTPError struct {
	Host         string
	Command      string // "greeting", "EHLO", "AUTH", "MAIL", "RCPT", "DATA", "RSET"...
	Code         int
	EnhancedCode EnhancedCode
	Message      string
}

func (e *SMTPError) Error() string {
	s := fmt.Sprintf("mailsec: %s: %s: %d", e.Host, e.Command, e.Code)
	if e.EnhancedCode != (EnhancedCode{}) {
		s += " " + e.EnhancedCode.String()
	}
	return s + " " + e.Message
}

// Temporary reports a 4xx reply.
func (e *SMTPError) Temporary() bool { return e.Code/100 == 4 }

// Reply returns the error as a Reply.
func (e *SMTPError) Reply() *Reply {
	return &Reply{Code: e.Code, EnhancedCode: e.EnhancedCode, Text: e.Message}
}

// AuthError reports an SMTP AUTH failure. Credentials are never part of it.
type AuthError struct {
	Host      string
	Mechanism string // the mechanism tried, if any
	Reason    string
	Err       error // the server's reply (*SMTPError) or the mechanism's error
}

func (e *AuthError) Error() string {
	s := "mailsec: " + e.Host + ": authentication"
	if e.Mechanism != "" {
		s += " (" + e.Mechanism + ")"
	}
	s += ": " + e.Reason
	var se *SMTPError
	switch {
	case errors.As(e.Err, &se):
		s += ": " + se.Reply().String()
	case e.Err != nil:
		s += ": " + e.Err.Error()
	}
	return s
}

// Is matches ErrAuth.
func (e *AuthError) Is(target error) bool { return target == ErrAuth }

func (e *AuthError) Unwrap() error { return e.Err }

// Temporary reports a 4xx reply to AUTH.
func (e *AuthError) Temporary() bool {
	var se *SMTPError
	return errors.As(e.Err, &se) && se.Temporary()
}

// ExtensionError reports that the server lacks an extension the delivery
// needs. Nothing was sent.
type ExtensionError struct {
	Host      string
	Extension string // "SMTPUTF8", "8BITMIME"
	Reason    string
}

func (e *ExtensionError) Error() string {
	return "mailsec: " + e.Host + ": server does not offer " + e.Extension + ": " + e.Reason
}

// Is matches ErrUnsupported.
func (e *ExtensionError) Is(target error) bool { return target == ErrUnsupported }

// Temporary is false.
func (e *ExtensionError) Temporary() bool { return false }

// NetworkError reports a failure to connect to or talk with a server, a
// timeout or a cancelled context among them. It is temporary.
type NetworkError struct {
	Host string
	Op   string // "dial", "greeting", "MAIL", "DATA"...
	Err  error
}

func (e *NetworkError) Error() string {
	s := "mailsec: " + e.Host + ": " + e.Op
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *NetworkError) Unwrap() error { return e.Err }

// Temporary is true unless the context was cancelled (as opposed to timing out).
func (e *NetworkError) Temporary() bool { return !errors.Is(e.Err, context.Canceled) }

// ProtectionError reports that content could not be protected for a
// recipient; it matches ErrNoKey when no usable key exists.
type ProtectionError struct {
	Recipient string
	Method    string // "pgp", "smime", or empty
	KeyID     string // key ID or certificate subject concerned, if any
	Reason    string // "expired", "revoked", "no encryption subkey"...
	Err       error

	// fault marks a failure that is not about the recipient's key: the
	// Protector failed without naming whom it could not serve, or the
	// plan names no method the Sender has. Such a recipient never falls
	// back to unprotected content or a notice.
	fault bool
}

func (e *ProtectionError) Error() string {
	s := "mailsec: " + e.Recipient + ": "
	if e.Method != "" {
		s += e.Method + ": "
	}
	if e.KeyID != "" {
		s += "key " + e.KeyID + ": "
	}
	s += e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is matches ErrNoKey, unless the failure was not about the recipient's
// key (the Protector failed as a whole).
func (e *ProtectionError) Is(target error) bool { return target == ErrNoKey && !e.fault }

func (e *ProtectionError) Unwrap() error { return e.Err }

// Temporary reports whether the cause is temporary (a key lookup that
// timed out, say): a later Send may find the key.
func (e *ProtectionError) Temporary() bool { return e.Err != nil && IsTemporary(e.Err) }

// RecipientError ties an error to one recipient.
type RecipientError struct {
	Recipient string
	Err       error
}

func (e *RecipientError) Error() string {
	if e.Err == nil {
		return "<" + e.Recipient + ">: not delivered"
	}
	msg := e.Err.Error()
	if strings.Contains(msg, e.Recipient) {
		return msg
	}
	return "<" + e.Recipient + ">: " + msg
}

func (e *RecipientError) Unwrap() error { return e.Err }

// Temporary delegates to the wrapped error.
func (e *RecipientError) Temporary() bool { return IsTemporary(e.Err) }

// SendError reports the recipients of a Send that were not delivered.
type SendError struct {
	Failed []*RecipientError
	Total  int // recipients in the message
}

func (e *SendError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mailsec: %d of %d recipients not delivered", len(e.Failed), e.Total)
	for i, f := range e.Failed {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Failed)-3)
			break
		}
		b.WriteString("; ")
		b.WriteString(f.Error())
	}
	return b.String()
}

// Unwrap returns the per-recipient errors.
func (e *SendError) Unwrap() []error {
	out := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		out[i] = f
	}
	return out
}

// Temporary reports whether every failure is temporary.
func (e *SendError) Temporary() bool {
	for _, f := range e.Failed {
		if !f.Temporary() {
			return false
		}
	}
	return len(e.Failed) > 0
}

// Partial reports whether some recipients were delivered.
func (e *SendError) Partial() bool { return len(e.Failed) < e.Total }

// recipientErrors collects every *RecipientError in err's tree.
func recipientErrors(err error) []*RecipientError {
	var out []*RecipientError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case *RecipientError:
			out = append(out, e)
			return
		case *ProtectionError:
			if e.Recipient != "" {
				out = append(out, &RecipientError{Recipient: e.Recipient, Err: e})
				return
			}
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			if e := u.Unwrap(); e != nil {
				walk(e)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}
