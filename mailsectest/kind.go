package mailsectest

import (
	"bytes"
	"mime"
	"strings"
	"testing"
)

// Kind says what form a delivered message has, judged by its top-level
// Content-Type: what a test asserts on when a policy decides per recipient.
type Kind string

// Kinds of delivered message.
const (
	// KindPGP is PGP/MIME ciphertext: multipart/encrypted with protocol
	// application/pgp-encrypted.
	KindPGP Kind = "pgp"
	// KindSMIME is S/MIME enveloped data (application/pkcs7-mime).
	KindSMIME Kind = "smime"
	// KindSigned is content signed but not encrypted (multipart/signed).
	KindSigned Kind = "signed"
	// KindPlain is anything else: content readable by every relay. A
	// link-only notice is KindPlain too; tell it apart by its text.
	KindPlain Kind = "plain"
)

// KindOf classifies a raw message.
func KindOf(raw []byte) Kind {
	head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	ct := Message{Data: append(head, "\r\n\r\n"...)}.Header("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return KindPlain
	}
	switch {
	case mt == "multipart/encrypted" && strings.EqualFold(params["protocol"], "application/pgp-encrypted"):
		return KindPGP
	case (mt == "application/pkcs7-mime" || mt == "application/x-pkcs7-mime") && params["smime-type"] != "signed-data":
		return KindSMIME
	case mt == "multipart/signed":
		return KindSigned
	}
	return KindPlain
}

// Kind classifies the message; see KindOf.
func (m Message) Kind() Kind { return KindOf(m.Data) }

// Kind classifies the delivery's message; see KindOf.
func (d Delivery) Kind() Kind { return KindOf(d.Data) }

// MessagesFor returns the messages whose envelope names rcpt.
func (s *Server) MessagesFor(rcpt string) []Message {
	var out []Message
	for _, m := range s.Messages() {
		for _, to := range m.To {
			if strings.EqualFold(to, rcpt) {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

// ExpectReceived fails t unless rcpt received exactly one message, of
// kind k, and returns it. A test of a policy calls it once per recipient:
//
//	mailsectest.ExpectReceived(t, srv, "ann@example.org", mailsectest.KindPGP)
//	notice := mailsectest.ExpectReceived(t, srv, "carl@example.org", mailsectest.KindPlain)
func ExpectReceived(t testing.TB, s *Server, rcpt string, k Kind) Message {
	t.Helper()
	msgs := s.MessagesFor(rcpt)
	if len(msgs) != 1 {
		t.Fatalf("%s received %d messages, want 1", rcpt, len(msgs))
	}
	if got := msgs[0].Kind(); got != k {
		t.Fatalf("%s received a %s message, want %s", rcpt, got, k)
	}
	return msgs[0]
}

// ExpectNothing fails t if rcpt received any message.
func ExpectNothing(t testing.TB, s *Server, rcpt string) {
	t.Helper()
	if msgs := s.MessagesFor(rcpt); len(msgs) != 0 {
		t.Fatalf("%s received %d messages, want none", rcpt, len(msgs))
	}
}
