package mailsec

import (
	"io"
	"strings"
	"time"

	"github.com/mailsec/mailsec/internal/syntax"
)

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

	// ReportType, when set, makes the message a report (RFC 6522):
	// multipart/report with this report-type ("tlsrpt", "delivery-status",
	// "feedback-report"...), Text as its first, human-readable part and
	// the Attachments, in order, as the report's machine-readable parts.
	// A report has Text and at least one attachment, and no HTML or
	// Inline parts.
	ReportType string

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

	// DSN requests delivery status notifications (RFC 3461). Nil asks for
	// nothing and lets the server decide when to notify; the message is
	// still sent, to servers that offer DSN, with a generated ENVID and
	// with ORCPT for every recipient, so that a notification that comes
	// back can be matched to the Receipt (RecipientReceipt.EnvelopeID).
	DSN *DSN

	// Date and MessageID are generated when zero.
	Date      time.Time
	MessageID string // without angle brackets

	// Reference is the application's own name for the message: an order
	// number, a job or outbox ID. It is never sent; it is copied to the
	// Receipt (and the Logger's records), so that OnReceipt, and whoever
	// reads the audit record later, can tell which message it is for. At
	// most 256 octets of text without control characters; nothing secret,
	// since receipts and logs are kept.
	Reference string
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

// RecipientKind says in which field a recipient was named.
type RecipientKind string

// Recipient kinds.
const (
	KindTo  RecipientKind = "to"
	KindCc  RecipientKind = "cc"
	KindBcc RecipientKind = "bcc"
)

// DSN holds delivery status notification options (RFC 3461). They are
// sent only when the server offers DSN.
type DSN struct {
	// Return is what a bounce includes: DSNReturnFull or
	// DSNReturnHeaders. Empty leaves it to the server.
	Return DSNReturn
	// EnvelopeID names the message in notifications (ENVID); 1 to
	// MaxEnvelopeID (83) printable ASCII characters. Empty: Send generates
	// a random one. Either way it is the message's ENVID
	// (Receipt.EnvelopeID), never sent as it is: each delivery (each SMTP
	// transaction: each Receipt Delivery number, each Bcc recipient's
	// delivery) is sent with it, a dot and 16 random characters appended
	// (RecipientReceipt.EnvelopeID), so that a recipient's server, which
	// learns its own delivery's ENVID, cannot use it to forge a
	// notification about the recipients of another delivery. A
	// notification's Original-Envelope-Id is the delivery's: match it to
	// the recipients whose RecipientReceipt.EnvelopeID it equals, and
	// only to them.
	EnvelopeID string
	// Notify is NotifyNever alone, or any of NotifySuccess, NotifyFailure
	// and NotifyDelay, each at most once. Empty leaves it to the server
	// (failures and delays, as a rule).
	Notify []DSNNotify
	// OriginalRecipient adds ORCPT=rfc822;<address> to every recipient.
	// Send sets it when Message.DSN is nil.
	OriginalRecipient bool
}

// DSNReturn is what a bounce includes: the RET parameter (RFC 3461 §4.3).
type DSNReturn string

// DSN return values.
const (
	DSNReturnFull    DSNReturn = "FULL" // the whole message
	DSNReturnHeaders DSNReturn = "HDRS" // its header only
)

// DSNNotify is a condition under which a notification is asked for: a
// value of the NOTIFY parameter (RFC 3461 §4.1).
type DSNNotify string

// DSN notify values.
const (
	NotifyNever   DSNNotify = "NEVER"   // no notification, whatever happens
	NotifySuccess DSNNotify = "SUCCESS" // on delivery
	NotifyFailure DSNNotify = "FAILURE" // on failure
	NotifyDelay   DSNNotify = "DELAY"   // when delivery is delayed
)

func (d *DSN) validate() error {
	if d == nil {
		return nil
	}
	switch d.Return {
	case "", DSNReturnFull, DSNReturnHeaders:
	default:
		return invalid("DSN.Return", string(d.Return), `must be DSNReturnFull ("FULL") or DSNReturnHeaders ("HDRS")`)
	}
	if d.EnvelopeID != "" && (!syntax.IsPrintableASCII(d.EnvelopeID) || len(d.EnvelopeID) > 100) {
		return invalid("DSN.EnvelopeID", d.EnvelopeID, "must be 1 to 100 printable ASCII characters")
	}
	seen := map[DSNNotify]bool{}
	for _, n := range d.Notify {
		switch n {
		case NotifySuccess, NotifyFailure, NotifyDelay, NotifyNever:
		default:
			return invalid("DSN.Notify", string(n), "must be NEVER, SUCCESS, FAILURE or DELAY")
		}
		if seen[n] {
			return invalid("DSN.Notify", string(n), "repeated")
		}
		seen[n] = true
	}
	if seen[NotifyNever] && len(d.Notify) > 1 {
		return invalid("DSN.Notify", d.notify(), "NEVER cannot be combined")
	}
	return nil
}

// notify is the NOTIFY parameter's value: the conditions, comma-separated.
func (d *DSN) notify() string {
	s := make([]string, len(d.Notify))
	for i, n := range d.Notify {
		s[i] = string(n)
	}
	return strings.Join(s, ",")
}
