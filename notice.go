package mailsec

import (
	"context"
	"time"
)

// DefaultNoticeSubject is the Subject of a notice whose Subject is empty.
// The message's own Subject is never used: it may say what the content
// would have.
const DefaultNoticeSubject = "You have a new message"

// Notice is a link-only message sent instead of content that could not be
// protected for a recipient: typically a sentence and a link to the
// application's own HTTPS page where the recipient signs in to read it.
// It carries nothing of the original message but its From, Sender,
// Reply-To, To, Cc, Date and envelope; not its body, attachments, Subject
// or extra header fields, unless set here.
type Notice struct {
	// Subject of the notice; empty means DefaultNoticeSubject.
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

// noticeMessage is the Message that carries n in place of m.
func noticeMessage(m *Message, n *Notice, rcpt string, date time.Time) *Message {
	subject := n.Subject
	if subject == "" {
		subject = DefaultNoticeSubject
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
