package mailsec

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// defaultNoticeSubject is the Subject of a notice whose Subject is empty.
// The message's own Subject is never used: it may say what the content
// would have.
const defaultNoticeSubject = "You have a new message"

// Notice is a link-only message sent instead of content that could not be
// protected for a recipient: typically a sentence and a link to the
// application's own HTTPS page where the recipient signs in to read it.
// It carries nothing of the original message but its From, Sender,
// Reply-To, To, Cc, Date and envelope; not its body, attachments, Subject
// or extra header fields, unless set here.
type Notice struct {
	// Subject of the notice; empty means "You have a new message" (never
	// the message's own Subject, which may say what the content would
	// have).
	Subject string
	// Text and HTML are the notice's bodies; at least one is needed.
	Text string
	HTML string
	// Headers are extra header fields for the notice.
	Headers []Header
}

// NoticeFunc builds the notice for one recipient of m. It must be safe for
// concurrent use. An error fails that recipient.
type NoticeFunc func(ctx context.Context, m *Message, r Recipient) (*Notice, error)

// How a Send sends a notice, for a recipient whose content a plan with
// NoKeyNotice could not get protected (protect.go).

// notice sends r the link-only notice instead of the content it could not
// get protected.
func (sd *sending) notice(ctx context.Context, plan Plan, r *recipient) {
	fail := func(err error) {
		r.fail(&ProtectionError{Recipient: r.Address, Reason: "no usable key, and the notice failed", Err: err})
		sd.log(ctx, sd.msg, []*recipient{r}, nil, r.receipt.Err)
	}
	if sd.s.notice == nil {
		fail(errors.Join(r.why, errors.New("the plan asks for a notice but the Sender has no Options.Notice")))
		return
	}
	n, err := sd.s.buildNotice(ctx, sd.m, r.Recipient)
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
	nm, err := sd.s.prepare(noticeMessage(sd.m, n, r.Address, sd.msg.date))
	if err != nil {
		fail(err)
		return
	}
	r.receipt.Protection = &ProtectionInfo{Method: MethodNotice, Reason: reasonText(r.why), NoticeMessageID: nm.messageID}
	sd.deliver(ctx, nm, plan, []*recipient{r}, nm.content())
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

// noticeMessage is the Message that carries n in place of m.
func noticeMessage(m *Message, n *Notice, rcpt string, date time.Time) *Message {
	subject := n.Subject
	if subject == "" {
		subject = defaultNoticeSubject
	}
	return &Message{
		From:          m.From,
		Sender:        m.Sender,
		ReplyTo:       m.ReplyTo,
		To:            m.To,
		Cc:            m.Cc,
		Bcc:           []string{rcpt}, // so that a Bcc-only message's notice has a recipient; never in a header
		Subject:       subject,
		Text:          n.Text,
		HTML:          n.HTML,
		Headers:       n.Headers,
		EnvelopeFrom:  m.EnvelopeFrom,
		RequireTLS:    m.RequireTLS,
		TLSRequiredNo: m.TLSRequiredNo,
		DSN:           m.DSN,
		Date:          date,
	}
}
