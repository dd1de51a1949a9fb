// Package mailsec sends transactional email (password resets, receipts,
// lab results, statements) so that nobody between the application and the
// recipient can read it or silently downgrade it.
//
// Start with three things: a [Sender], built once at start-up by
// [NewSender] around a [Transport] from package transport; [Sender.Send],
// called with a [Message] from as many goroutines as the application
// likes; and the [Receipt] Send returns, the record of what happened to
// each recipient.
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
// With nil [Options], as here, every recipient gets the message over TLS
// verified for the server's name, and nothing is encrypted end to end.
//
// NewSender checks the configuration before it returns a Sender: the
// Transport's own (a Submission without an Addr), the Options, and whether
// the Policy fits the Protectors and the notice given. A mistake is a
// [*ConfigError] that names the setting and says what to change, so that
// it stops the application at start-up instead of failing its first Send.
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
// # Transports
//
// A [Transport] performs one SMTP transaction for a [Delivery] and decides
// no policy of its own. Package transport has two: Submission hands every
// message to one smarthost (port 465 with implicit TLS, or mandatory
// STARTTLS), and Direct delivers to each recipient domain's MX hosts
// itself, authenticating them with DANE or MTA-STS. Package mailsectest
// has an in-process TLS SMTP server and a recording Transport for an
// application's own tests. Package dns resolves the names Direct needs,
// with their DNSSEC status; the root package does no DNS of its own.
//
// # Policies and end-to-end protection
//
// A [Policy] gives each recipient a [Plan]: the transport security floor
// (a [Security] requirement) and whether the content must be protected end
// to end. [DefaultPolicy] requires verified TLS and no protection; wrappers
// change that: [RequireProtection], [PreferProtection], [NoticeWhenNoKey],
// [ForDomains], [WithSecurity]. The Protectors in [Options] do the
// protecting: package pgp (PGP/MIME) and package smime (S/MIME).
//
//	p, err := pgp.New(keys, nil) // keys: a *pgp.KeyRing, or a *pgp.WKD
//	...
//	s, err := mailsec.NewSender(t, &mailsec.Options{
//		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
//		Protectors: []mailsec.Protector{p},
//	})
//
// A recipient who must get protected content and has no usable key gets
// nothing, or, when its plan says so, the link-only [Notice] the
// application builds.
//
// # Extending
//
// Three small interfaces are the whole extension surface. A [Transport]
// delivers; with an optional Validate() error method, found by type
// assertion, NewSender checks its configuration. A [Protector] names its
// method and protects content for a set of recipients. A [Policy] plans
// each recipient; with an optional Needs method it declares what its plans
// may ask for ([PolicyNeeds]), and NewSender checks that the Sender can
// carry them out. Package mailsectest has a recording Transport and an
// in-process server for an application's tests.
//
// # Receipts
//
// Send returns a [Receipt] whenever it attempted anything, error or not,
// and hands it to Options.OnReceipt. It names the message (its Message-ID
// and Message.Reference, the application's own name for it), who sent it
// and when; then, for each recipient, whether the server accepted the
// message, in which SMTP transaction, over which connection (a
// [ConnectionState]: host, TLS version, how the certificate was verified),
// with what protection (a [ProtectionInfo]), and what the server replied;
// for a recipient that was not accepted, a [Failure]: whether a retry can
// help, and every server tried with what was seen there. Its JSON form is
// stable: store it as the audit record.
//
// # Sending later
//
// Package outbox queues messages durably and delivers them with retries;
// it is built on two methods any queue can use. [Sender.Prepare] checks a
// message as Send would, without I/O, and fixes its Message-ID and Date,
// so that bad input fails when the message is queued and every attempt
// carries the same identity. [Sender.SendTo] sends it to some of its
// recipients only, with the header written for all of them, so that a
// recipient an earlier attempt reached never gets it twice. A recipient
// whose Receipt entry says Failure.Temporary is worth trying again.
//
// # Errors
//
// Every failure is typed. [*ValidationError] means bad input and is never
// worth retrying; [*ConfigError] means a setting is wrong, and is reported
// when the Sender, a transport or a Protector is built. [*SecurityError]
// means a security requirement could not be met (its Category is one of
// [ErrDowngrade], [ErrCertificate], [ErrHandshake], [ErrRequireTLS],
// [ErrPlaintext], [ErrDomainPolicy]).
// [*ProtectionError] says why content could not be protected for a
// recipient ([ErrNoKey] when no usable key exists). [*SMTPError] carries
// the server's reply. [*SendError] reports per-recipient failures and
// unwraps to a [*RecipientError] for each. [IsTemporary] says whether
// trying again later can help.
package mailsec

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/mailsec/mailsec/internal/typednil"
)

// The package's files, by what a reader looks for: this one has the
// Sender and its Options; message.go the Message; receipt.go the Receipt;
// errors.go every error; send.go the path of one Send, which ends at the
// Transport contract in delivery.go. policy.go and security.go hold what
// a Policy decides; protect.go the Protector contract and the step of a
// Send that applies it, notice.go the notice and the step that sends it;
// allowed.go the check of Options.AllowedSenders; build.go,
// header.go, body.go, attachment.go and address.go turn a Message into
// checked, rendered MIME.

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
	// perDomain: the Sender hands the Transport one delivery per
	// recipient domain, each with its own ENVID; false only for a
	// Transport that declares SharedTransaction.
	perDomain  bool
	returnPath func(envelopeID string) (string, error)
}

// Options configures a Sender. The zero value (or a nil *Options) is the
// safe default: verified TLS for every recipient, no end-to-end protection,
// no logging.
type Options struct {
	// Policy plans every recipient's delivery. Nil means DefaultPolicy:
	// verified TLS, no protection. NewSender refuses a Policy that does
	// not fit the Protectors and Notice given, as far as it declares what
	// its plans may ask for (see PolicyNeeds). A recipient whose plan
	// cannot be made (the Policy returned an error, or panicked) fails and
	// receives nothing; the others are delivered.
	Policy Policy

	// Protectors protect content for recipients whose plan requires or
	// prefers it: a *pgp.Protector (PGP/MIME), an *smime.Protector
	// (S/MIME), or both. A Plan names the methods it allows by each
	// Protector's Method ("pgp", "smime"); a Plan that names none tries
	// them all, in this order. Protectors are used only for recipients
	// whose plan asks for protection: NewSender refuses them with a Policy
	// that never does (wrap it in RequireProtection or PreferProtection),
	// and refuses a Policy that asks for protection with none.
	Protectors []Protector

	// Notice builds the link-only notice sent, when a recipient's plan
	// says NoKeyNotice, instead of content that could not be protected.
	// Nil means no notice can be sent: NewSender refuses a Policy that
	// declares it may send one, and otherwise such recipients fail, as
	// does a recipient whose notice cannot be built (an error, or a
	// panic).
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

	// Now returns the current time for the Date header and the Receipt's
	// Started and Finished. Nil means time.Now.
	Now func() time.Time

	// MessageIDDomain is the right-hand side of generated Message-IDs.
	// Empty means the domain of the From address.
	MessageIDDomain string

	// ReturnPath, when set, gives each delivery a reverse-path (MAIL
	// FROM) of its own, in place of Message.EnvelopeFrom (or the From
	// address): it is called with the delivery's ENVID
	// (RecipientReceipt.EnvelopeID) and returns the address the
	// delivery's bounces go to. bounce.VERP's ReturnPath makes a signed
	// VERP address, bounces+<tag>@domain, that names the delivery, so
	// that a bounce from a server that ignores DSN's ENVID can still be
	// matched, and nobody without the secret can make one that is. The
	// Receipt's EnvelopeFrom stays the message's; each delivery's is
	// ReturnPath of its ENVID. When it fails (or returns an address that
	// is not a valid path) the delivery's recipients fail with a
	// *ConfigError naming Options.ReturnPath, and nothing is sent to
	// them.
	//
	// Every recipient of a delivery reads its return path (the
	// Return-Path field of the copy delivered), so that any of them could
	// mail a bounce about the others to it. With ReturnPath set, each
	// recipient therefore gets a delivery of its own (its own ENVID and
	// return path), so that a return path speaks for one recipient. The
	// cost: one SMTP transaction, and one copy of the content, per
	// recipient, where without it the To and Cc recipients of a domain
	// (or, through a transport.Submission, of every domain) share one.
	ReturnPath func(envelopeID string) (string, error)
}

// NewSender returns a Sender that delivers through t, after checking how
// it was configured: t itself (through its Validate method, when it has
// one), every Option, and whether the Policy fits the Protectors and the
// Notice given (see PolicyNeeds). Each refusal is a *ConfigError that
// names the setting and says what to change, so that a mistake stops the
// application at start-up instead of surfacing at the first Send of the
// kind it affects.
func NewSender(t Transport, o *Options) (*Sender, error) {
	if isNil(t) {
		return nil, badConfig("Transport", typeName(t), "nil; give NewSender a Transport: a *transport.Submission to hand mail to a smarthost, a *transport.Direct to deliver to recipients' MX hosts")
	}
	if err := validateTransport(t); err != nil {
		return nil, err
	}
	if o == nil {
		o = &Options{}
	}
	// A typed nil where a Policy or Protector is expected is a mistake,
	// not a request for the default: the default protects less.
	if o.Policy != nil && isNil(o.Policy) {
		return nil, badConfig("Options.Policy", typeName(o.Policy), "a nil pointer or func; leave the field nil for DefaultPolicy")
	}
	s := &Sender{
		transport:  t,
		policy:     cmp.Or[Policy](o.Policy, DefaultPolicy()),
		notice:     o.Notice,
		onReceipt:  o.OnReceipt,
		logger:     o.Logger,
		now:        o.Now,
		idDomain:   o.MessageIDDomain,
		returnPath: o.ReturnPath,
	}
	s.perDomain = !SharedTransaction(t)
	if s.now == nil {
		s.now = time.Now
	}
	for i, p := range o.Protectors {
		field := "Options.Protectors[" + strconv.Itoa(i) + "]"
		if isNil(p) {
			return nil, badConfig(field, typeName(p), "a nil Protector; leave it out of the list")
		}
		name, err := methodName(p)
		if err != nil {
			return nil, badConfig(field, typeName(p), err.Error())
		}
		s.protectors = append(s.protectors, namedProtector{name: name, p: p})
	}
	for i, a := range o.AllowedSenders {
		as, err := parseAllowedSender(a)
		if err != nil {
			return nil, badConfig("Options.AllowedSenders["+strconv.Itoa(i)+"]", a, err.Error())
		}
		s.allowed = append(s.allowed, as)
	}
	if s.idDomain != "" {
		d, reason := parseDomain(s.idDomain)
		if reason != "" {
			return nil, badConfig("Options.MessageIDDomain", s.idDomain, reason)
		}
		s.idDomain = d
	}
	if err := s.checkPolicy(); err != nil {
		return nil, err
	}
	return s, nil
}

// validateTransport calls t's Validate method, when it has one. An error
// that is not a *ConfigError already becomes one (a *ValidationError gives
// it its field and reason, and no longer matches ErrInvalid: the mistake
// is not a user's); so does a panic.
func validateTransport(t Transport) (err error) {
	v, ok := t.(interface{ Validate() error })
	if !ok {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = badConfig("Transport", typeName(t), fmt.Sprintf("its Validate method panicked: %v", r))
		}
	}()
	err = usableError("the Transport's Validate method", v.Validate())
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*ConfigError](err); ok {
		return err
	}
	if ve, ok := errors.AsType[*ValidationError](err); ok {
		return badConfig(ve.Field, ve.Value, ve.Reason)
	}
	return &ConfigError{Field: "Transport", Value: typeName(t), Reason: "its Validate method refused the configuration", Err: err}
}

// typeName names v's dynamic type for an error, or "" for a nil interface.
func typeName(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprintf("%T", v)
}

// methodName asks a Protector for its method name, turning a panic into
// an error, and refuses a name no Plan or Receipt could tell apart.
func methodName(p Protector) (name string, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("its Method method panicked: %v", v)
		}
	}()
	switch name = p.Method(); name {
	case "":
		return "", errors.New("its Method returned an empty name")
	case MethodNone, MethodNotice:
		return "", fmt.Errorf("its Method returned %q, which Receipts use for content that was not protected", name)
	}
	return name, nil
}

// namedProtector is a Protector with the method name Plans refer to it by.
type namedProtector struct {
	name string
	p    Protector
}

// isNil reports whether v is nil or holds a nil pointer, func, map,
// slice or channel: a typed nil, whose methods would panic.
func isNil(v any) bool { return typednil.Is(v) }
