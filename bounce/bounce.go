// Package bounce reads delivery status notifications (DSNs, RFC 3464):
// the bounces and delay warnings that mail servers send back to a
// message's envelope sender, hours after the message was accepted,
// when a later hop could not deliver it.
//
// Parse takes one message as it arrived (a `multipart/report;
// report-type=delivery-status` entity, RFC 6522, or its international
// form with a `message/global-delivery-status` part, RFC 6533) and
// returns a Report: the envelope ID the message was sent with (ENVID),
// the original message's Message-ID, and per recipient the action
// (failed, delayed, delivered, relayed, expanded), the RFC 3463 status
// code, the remote server and its diagnostic. Recipient.Explain says
// what the status code means in one sentence and whether a retry can
// help, in the vocabulary the mailsec Receipt uses for refusals during
// Send (mailsec.EnhancedCode.Explain).
//
// # Hostile input
//
// A bounce arrives from the internet: anyone can send one, and anything
// may be in it. Parse reads at most Limits.MaxSize octets, bounds every
// header block and the status part, descends at most Limits.MaxDepth
// multipart levels, never panics, and reports what it refuses with an
// *Error matching ErrNotDSN, ErrMalformed or ErrTooLarge. Every string in
// a Report is cleaned of control characters. A Report says only what its
// sender claims: match it to a message you sent (Report.For matches it
// to a mailsec.Receipt by the ENVID of each recipient's delivery; a
// signed return address, see VERP, names the delivery too) before acting
// on it.
//
// # Formats
//
// Parse reads DSNs as RFC 3464 defines them, as Postfix, Exim, Sendmail,
// Microsoft Exchange and Outlook.com, and Gmail send them (testdata holds
// an example of each, with its source). Bounces that are not DSNs, such
// as qmail's plain-text format (QSBMF), are refused with ErrNotDSN: their
// free text carries no reliable status code.
package bounce

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/syntax"
)

// Action is what the reporting server did with a recipient (RFC 3464
// §2.3.3).
type Action string

// The actions of RFC 3464 §2.3.3.
const (
	// ActionFailed: the message could not be delivered and the reporting
	// server has stopped trying.
	ActionFailed Action = "failed"
	// ActionDelayed: not delivered yet; the reporting server keeps trying
	// (a delay warning).
	ActionDelayed Action = "delayed"
	// ActionDelivered: delivered to the recipient's mailbox.
	ActionDelivered Action = "delivered"
	// ActionRelayed: passed on to a server that sends no DSNs.
	ActionRelayed Action = "relayed"
	// ActionExpanded: delivered to an alias or list that forwarded it to
	// other addresses.
	ActionExpanded Action = "expanded"
)

// Report is one delivery status notification.
type Report struct {
	// Global is set when the status part was message/global-delivery-status
	// (RFC 6533): addresses and texts may hold UTF-8.
	Global bool `json:"global,omitempty"`
	// ReportingMTA is the server that wrote the report (its name, without
	// the "dns;" type).
	ReportingMTA string `json:"reporting_mta,omitempty"`
	// EnvelopeID is the Original-Envelope-Id: the ENVID the message was
	// sent with (RFC 3461), as the reporting server wrote it.
	EnvelopeID string `json:"envelope_id,omitempty"`
	// ReceivedFromMTA is the server the reporting server received the
	// message from, when it says.
	ReceivedFromMTA string `json:"received_from_mta,omitempty"`
	// ArrivalDate is when the reporting server received the message, in
	// UTC; zero
	// when not given or not readable.
	ArrivalDate time.Time `json:"arrival_date,omitzero"`
	// MessageID is the Message-ID of the original message, without angle
	// brackets, from the returned message or its header
	// (message/rfc822, text/rfc822-headers and their RFC 6532 and RFC 6533
	// forms); empty when the report did not return it.
	MessageID string `json:"message_id,omitempty"`
	// Recipients has one entry per recipient the report is about, in
	// order; never empty.
	Recipients []Recipient `json:"recipients"`
}

// Recipient is the report on one recipient (RFC 3464 §2.3).
type Recipient struct {
	// FinalRecipient is the address the reporting server tried to deliver
	// to (the Final-Recipient, without its "rfc822;" type).
	FinalRecipient string `json:"final_recipient"`
	// OriginalRecipient is the address as the sender gave it (the
	// Original-Recipient, from the ORCPT parameter), when the report
	// carries it.
	OriginalRecipient string `json:"original_recipient,omitempty"`
	Action            Action `json:"action"`
	// Status is the RFC 3463 status code.
	Status mailsec.EnhancedCode `json:"status"`
	// RemoteMTA is the server that gave the diagnostic, when there was one.
	RemoteMTA string `json:"remote_mta,omitempty"`
	// DiagnosticType is the kind of DiagnosticCode, usually "smtp".
	DiagnosticType string `json:"diagnostic_type,omitempty"`
	// DiagnosticCode is what the remote server said (for "smtp", its reply:
	// "550 5.1.1 <x@example.org>: Recipient address rejected").
	DiagnosticCode string `json:"diagnostic_code,omitempty"`
	// LastAttempt is when the reporting server last tried; zero when not
	// given or not readable.
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	// WillRetryUntil is, for a delayed recipient, until when the reporting
	// server keeps trying; zero when not given or not readable.
	WillRetryUntil time.Time `json:"will_retry_until,omitzero"`
}

// Code returns the status code that says most about the recipient:
// Status, unless it is an unspecific X.0.0 and the remote server's SMTP
// reply in DiagnosticCode carries a more specific enhanced code of the
// same class. Exim, for one, reports "Status: 5.0.0" beside a diagnostic
// "552 5.2.2 Mailbox full".
func (r *Recipient) Code() mailsec.EnhancedCode {
	if r.Status[1] != 0 || r.Status[2] != 0 || r.DiagnosticType != "smtp" {
		return r.Status
	}
	if c, ok := replyCode(r.DiagnosticCode); ok && c[0] == r.Status[0] {
		return c
	}
	return r.Status
}

// replyCode finds the enhanced code of an SMTP reply ("550 5.2.2 text",
// "550-5.2.2 text").
func replyCode(reply string) (mailsec.EnhancedCode, bool) {
	if len(reply) < 5 || (reply[3] != ' ' && reply[3] != '-') {
		return mailsec.EnhancedCode{}, false
	}
	for _, c := range reply[:3] {
		if c < '0' || c > '9' {
			return mailsec.EnhancedCode{}, false
		}
	}
	return mailsec.ParseEnhancedCode(firstWord(reply[4:]))
}

// Explain says in one sentence what the recipient's status (Code) means,
// and whether sending again later can help (mailsec.EnhancedCode.Explain).
// For a recipient that was delivered, relayed or expanded, Retry is false
// whatever the code: nothing failed.
func (r *Recipient) Explain() mailsec.Explanation {
	x := r.Code().Explain()
	switch r.Action {
	case ActionDelivered, ActionRelayed, ActionExpanded:
		x.Retry = false
	}
	return x
}

// Failed reports whether the message did not reach the recipient and the
// reporting server has stopped trying.
func (r *Recipient) Failed() bool { return r.Action == ActionFailed }

// Temporary reports whether the recipient's failure may pass: a delay
// (the reporting server is still trying), or a failure with a transient
// (class 4) status, such as a server that stayed unreachable until the
// message expired (4.4.7), after which sending again may succeed.
func (r *Recipient) Temporary() bool {
	return r.Action == ActionDelayed || (r.Action == ActionFailed && r.Status[0] == 4)
}

// Errors that an *Error from Parse matches.
var (
	// ErrNotDSN: the message is not a delivery status notification (not
	// a multipart/report of report-type delivery-status): an ordinary
	// message, another kind of report, or a non-standard bounce.
	ErrNotDSN = errors.New("bounce: not a delivery status notification")
	// ErrMalformed: the message claims to be a DSN but breaks its format
	// (RFC 3464, RFC 6522) or MIME where the report's content lies.
	ErrMalformed = errors.New("bounce: malformed delivery status notification")
	// ErrTooLarge: the message exceeds one of the Limits.
	ErrTooLarge = errors.New("bounce: report exceeds a limit")
)

// Error reports a message that Parse refused. It matches (errors.Is) its
// Kind, one of ErrNotDSN, ErrMalformed and ErrTooLarge, and is never
// temporary: the same bytes are refused again.
type Error struct {
	// Kind is ErrNotDSN, ErrMalformed or ErrTooLarge.
	Kind error
	// Part says where: "message header", "part 2 (message/delivery-status)",
	// "recipient block 3".
	Part string
	// Field is the header field at fault, if any ("Status",
	// "Content-Type").
	Field string
	// Reason says what is wrong.
	Reason string
	// Err is the underlying error, if any.
	Err error
}

func (e *Error) Error() string {
	s := "bounce: "
	switch e.Kind {
	case ErrNotDSN:
		s += "not a delivery status notification"
	case ErrTooLarge:
		s += "too large"
	default:
		s += "malformed delivery status notification"
	}
	if e.Part != "" {
		s += ": " + e.Part
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Err != nil {
		s += ": " + syntax.PeerText(e.Err.Error())
	}
	return s
}

// Is matches Kind.
func (e *Error) Is(target error) bool { return target != nil && target == e.Kind }

func (e *Error) Unwrap() error { return e.Err }

// Temporary is false: the same input is refused again.
func (e *Error) Temporary() bool { return false }

// Limits bound what Parse reads. A zero field means its default.
type Limits struct {
	// MaxSize bounds the whole message, in octets (default 64 MiB). Parse
	// reads the message to its end, so that a pipe is drained, and refuses
	// a longer one.
	MaxSize int64
	// MaxDepth bounds how deeply multipart entities may nest around and
	// within the report (default 8).
	MaxDepth int
	// MaxParts bounds the parts of one multipart entity (default 100).
	MaxParts int
	// MaxHeaderBytes bounds each header block: the message's, each part's,
	// each block of the status part (default 128 KiB). A part's header
	// includes the preamble before it.
	MaxHeaderBytes int
	// MaxHeaderFields bounds the fields of each header block (default 1000).
	MaxHeaderFields int
	// MaxStatusBytes bounds the delivery-status part (default 4 MiB).
	MaxStatusBytes int
	// MaxRecipients bounds the recipients of one report (default 10000).
	MaxRecipients int
}

func (l Limits) orDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if l.MaxSize <= 0 {
		l.MaxSize = 64 << 20
	}
	def(&l.MaxDepth, 8)
	def(&l.MaxParts, 100)
	def(&l.MaxHeaderBytes, 128<<10)
	def(&l.MaxHeaderFields, 1000)
	def(&l.MaxStatusBytes, 4<<20)
	def(&l.MaxRecipients, 10000)
	return l
}

// Parser parses DSNs within its Limits. The zero Parser uses the default
// limits; a Parser is safe for concurrent use.
type Parser struct {
	Limits Limits
}

// Parse parses a DSN with the default limits: (&Parser{}).Parse(r).
func Parse(r io.Reader) (*Report, error) {
	var p Parser
	return p.Parse(r)
}

// Parse reads one message from r, a DSN as it arrived (header and body,
// CRLF or LF line endings), and returns its Report. It refuses what is not
// a DSN, is malformed or exceeds the Limits with an *Error, and returns an
// error from r other than io.EOF wrapped as it is.
func (p *Parser) Parse(r io.Reader) (rep *Report, err error) {
	st := &state{lim: p.Limits.orDefaults()}
	st.g = &gate{r: r, max: st.lim.MaxSize, budget: -1}
	defer func() {
		// A parser bug must not take the application down with it: refuse
		// the message instead.
		if v := recover(); v != nil {
			rep, err = nil, &Error{Kind: ErrMalformed, Reason: "unreadable", Err: panicError{v}}
		}
	}()
	rep, err = st.parse()
	if err != nil {
		return nil, st.classify(err)
	}
	return rep, nil
}

// state is one call to Parse.
type state struct {
	lim Limits
	g   *gate
	rep Report
	// status and returned are set once the parts they name were read.
	status, returned bool
}

// panicError is a panic that Parse recovered from.
type panicError struct{ v any }

func (e panicError) Error() string { return fmt.Sprintf("internal error: %v", e.v) }

// errDone ends the walk once the report was read.
var errDone = errors.New("done")

// ioError is an error from the reader Parse was given.
type ioError struct{ err error }

func (e *ioError) Error() string { return "bounce: reading the message: " + e.err.Error() }
func (e *ioError) Unwrap() error { return e.err }

// classify turns an error on the way into what Parse returns: what the
// gate saw first (the reader's error, a limit reached) wins over whatever
// a MIME reader made of it.
func (st *state) classify(err error) error {
	switch {
	case st.g.err != nil:
		return &ioError{st.g.err}
	case st.g.over:
		return &Error{Kind: ErrTooLarge, Reason: "longer than " + strconv.FormatInt(st.lim.MaxSize, 10) + " octets"}
	case st.g.budgetHit != "":
		return &Error{Kind: ErrTooLarge, Part: st.g.budgetHit, Reason: "header longer than " + strconv.Itoa(st.lim.MaxHeaderBytes) + " octets"}
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Kind: ErrMalformed, Err: err}
}

func (st *state) parse() (*Report, error) {
	br := bufio.NewReaderSize(st.g, 4096)
	h, err := st.readHeader(br, "message header")
	if err != nil {
		return nil, err
	}
	if err := st.entity(h, br, "message", 0); err != nil && err != errDone {
		return nil, err
	}
	if !st.status {
		return nil, &Error{Kind: ErrNotDSN, Reason: "no multipart/report of report-type delivery-status in it"}
	}
	// Read to the end: the input must be within MaxSize as a whole, and a
	// pipe is drained.
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, err
	}
	rep := st.rep
	return &rep, nil
}

// readHeader reads one header block from br under the header limits.
func (st *state) readHeader(br *bufio.Reader, where string) (textproto.Header, error) {
	// The budget leaves room for what br reads ahead; checkHeader holds
	// the header itself to the limit.
	st.g.limit(st.lim.MaxHeaderBytes+2*4096, where)
	h, err := textproto.ReadHeader(br)
	st.g.unlimit()
	if err != nil {
		return h, &Error{Kind: ErrMalformed, Part: where, Err: err}
	}
	return h, st.checkHeader(h, where)
}

// checkHeader applies the header limits to a block that was read.
func (st *state) checkHeader(h textproto.Header, where string) error {
	n, size := 0, 0
	for f := h.Fields(); f.Next(); n++ {
		size += len(f.Key()) + len(f.Value()) + 4
	}
	switch {
	case n > st.lim.MaxHeaderFields:
		return &Error{Kind: ErrTooLarge, Part: where, Reason: strconv.Itoa(n) + " header fields, more than " + strconv.Itoa(st.lim.MaxHeaderFields)}
	case size > st.lim.MaxHeaderBytes:
		return &Error{Kind: ErrTooLarge, Part: where, Reason: "header longer than " + strconv.Itoa(st.lim.MaxHeaderBytes) + " octets"}
	}
	return nil
}

// contentType returns the media type of h, lower case, and its
// parameters; text/plain when there is none (RFC 2045 §5.2).
func contentType(h textproto.Header, where string) (string, map[string]string, error) {
	v := h.Get("Content-Type")
	if strings.TrimSpace(v) == "" {
		return "text/plain", nil, nil
	}
	t, params, err := mime.ParseMediaType(v)
	if err != nil {
		return "", nil, &Error{Kind: ErrMalformed, Part: where, Field: "Content-Type", Reason: fmt.Sprintf("%q", syntax.PeerText(v)), Err: err}
	}
	return strings.ToLower(t), params, nil
}

// entity looks for the report in one entity: the message or one of the
// parts of a multipart around the report.
func (st *state) entity(h textproto.Header, body io.Reader, where string, depth int) error {
	t, params, err := contentType(h, where)
	if err != nil {
		if depth == 0 {
			// A message whose type cannot be read is not a DSN to us.
			err.(*Error).Kind = ErrNotDSN
		}
		return err
	}
	switch {
	case t == "multipart/report":
		rt := strings.ToLower(params["report-type"])
		if rt != "delivery-status" && rt != "global-delivery-status" {
			if depth == 0 {
				return &Error{Kind: ErrNotDSN, Part: where, Field: "Content-Type", Reason: fmt.Sprintf("a report of type %q, not delivery-status", syntax.PeerText(rt))}
			}
			return nil
		}
		return st.report(body, params["boundary"], where, depth+1)
	case strings.HasPrefix(t, "multipart/"):
		return st.multipart(body, params["boundary"], where, depth+1, func(ph textproto.Header, part io.Reader, pwhere string) error {
			return st.entity(ph, part, pwhere, depth+1)
		})
	}
	if depth == 0 {
		reason := "a " + syntax.PeerText(t) + " message"
		if t == "text/plain" && qmail(body) {
			reason = "a qmail bounce (QSBMF, plain text without a machine-readable status)"
		}
		return &Error{Kind: ErrNotDSN, Part: where, Reason: reason}
	}
	return nil
}

// qmail reports whether a plain-text body starts the way qmail-send's
// bounces do ("Hi. This is the qmail-send program at ...", QSBMF).
func qmail(body io.Reader) bool {
	b := make([]byte, 64)
	n, _ := io.ReadFull(body, b)
	return bytes.HasPrefix(bytes.TrimLeft(b[:n], "\r\n \t"), []byte("Hi. This is the qmail-send program"))
}

// multipart calls fn on each part of a multipart body, within the depth
// and part limits.
func (st *state) multipart(body io.Reader, boundary, where string, depth int, fn func(textproto.Header, io.Reader, string) error) error {
	if depth > st.lim.MaxDepth {
		return &Error{Kind: ErrTooLarge, Part: where, Reason: "multipart nested more than " + strconv.Itoa(st.lim.MaxDepth) + " levels deep"}
	}
	if boundary == "" || len(boundary) > 70 {
		return &Error{Kind: ErrMalformed, Part: where, Field: "Content-Type", Reason: "a multipart boundary must be 1 to 70 characters (RFC 2046 §5.1.1)"}
	}
	mr := textproto.NewMultipartReader(body, boundary)
	for i := 1; ; i++ {
		pwhere := where + " part " + strconv.Itoa(i)
		if i > st.lim.MaxParts {
			return &Error{Kind: ErrTooLarge, Part: where, Reason: "more than " + strconv.Itoa(st.lim.MaxParts) + " parts"}
		}
		// The part's header and the boundary line (and before the first,
		// the preamble) are read under the header limit, with room for
		// what the buffered readers of each level read ahead.
		st.g.limit(st.lim.MaxHeaderBytes+4096*(depth+2), pwhere+" header")
		part, err := mr.NextPart()
		st.g.unlimit()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &Error{Kind: ErrMalformed, Part: pwhere, Err: err}
		}
		if err := st.checkHeader(part.Header, pwhere+" header"); err != nil {
			return err
		}
		if err := fn(part.Header, part, pwhere); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, part); err != nil {
			return &Error{Kind: ErrMalformed, Part: pwhere, Err: err}
		}
	}
}

// report reads the parts of a multipart/report of report-type
// delivery-status (RFC 6522 §3): the human-readable part, the status
// part, the original message or its header.
func (st *state) report(body io.Reader, boundary, where string, depth int) error {
	err := st.multipart(body, boundary, where, depth, func(h textproto.Header, part io.Reader, pwhere string) error {
		t, _, err := contentType(h, pwhere)
		if err != nil {
			return err
		}
		pwhere += " (" + t + ")"
		switch t {
		case "message/delivery-status", "message/global-delivery-status":
			if st.status {
				return nil
			}
			r, err := decoded(h, part, pwhere)
			if err != nil {
				return err
			}
			st.rep.Global = t == "message/global-delivery-status"
			st.status = true
			return st.deliveryStatus(r, pwhere)
		case "message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers":
			if st.returned {
				return nil
			}
			st.returned = true
			r, err := decoded(h, part, pwhere)
			if err != nil {
				return err
			}
			st.returnedHeader(r)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !st.status {
		return &Error{Kind: ErrMalformed, Part: where, Reason: "a report of type delivery-status without a message/delivery-status part"}
	}
	return errDone
}

// decoded undoes a part's Content-Transfer-Encoding.
func decoded(h textproto.Header, part io.Reader, where string) (io.Reader, error) {
	switch cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))); cte {
	case "", "7bit", "8bit", "binary":
		return part, nil
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, &base64Clean{r: part}), nil
	case "quoted-printable":
		return quotedprintable.NewReader(part), nil
	default:
		return nil, &Error{Kind: ErrMalformed, Part: where, Field: "Content-Transfer-Encoding", Reason: fmt.Sprintf("unknown encoding %q", syntax.PeerText(cte))}
	}
}

// base64Clean drops the line breaks and spaces of a base64 body, which
// encoding/base64 would stop at only for CR and LF.
type base64Clean struct{ r io.Reader }

func (b *base64Clean) Read(p []byte) (int, error) {
	for {
		n, err := b.r.Read(p)
		j := 0
		for _, c := range p[:n] {
			if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
				p[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

// returnedHeader takes the Message-ID from the header of the returned
// message. The header is read on a best-effort basis: a truncated or
// malformed one (MTAs cut returned messages short) yields what could be
// read before the fault.
func (st *state) returnedHeader(r io.Reader) {
	br := bufio.NewReader(io.LimitReader(r, int64(st.lim.MaxHeaderBytes)))
	h, _ := textproto.ReadHeader(br)
	n := 0
	for f := h.Fields(); f.Next(); n++ {
		if n >= st.lim.MaxHeaderFields {
			return
		}
		if strings.EqualFold(f.Key(), "Message-Id") {
			st.rep.MessageID = messageID(f.Value())
			return
		}
	}
}

// messageID returns the msg-id in v without its angle brackets.
func messageID(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			v = v[i+1 : i+j]
		}
	}
	return clean(strings.TrimSpace(v))
}

// clean makes a value from the report safe to show and store.
func clean(s string) string { return syntax.PeerText(strings.TrimSpace(s)) }
