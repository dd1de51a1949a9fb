package transport_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/postfixtest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// TestPostfix submits to a real Postfix (started for the test, with its
// own CA, Cyrus sasldb users and Maildir delivery) on its STARTTLS-required
// submission port and its implicit-TLS port, with every mechanism, and
// reads the messages back from the Maildirs.
func TestPostfix(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Config{
		Domain:    "example.test",
		Mailboxes: []string{"ann", "bob", "carol"},
		Users:     map[string]string{"alice": password},
	})
	newTransport := func(addr string, mode transport.Mode, auth *transport.Auth) *transport.Submission {
		tr := &transport.Submission{Addr: addr, Mode: mode, ServerName: "localhost",
			TLSConfig: &tls.Config{RootCAs: pf.RootCAs()}, LocalName: "client.test", Auth: auth}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	ports := []struct {
		name string
		addr string
		mode transport.Mode
	}{
		{"submission-starttls", pf.SubmissionAddr, transport.StartTLS},
		{"submissions-implicit", pf.SubmissionsAddr, transport.ImplicitTLS},
	}
	mechs := []string{transport.MechPlain, transport.MechLogin, transport.MechCRAMMD5, transport.MechSCRAMSHA256}

	want := 0
	for _, p := range ports {
		for _, mech := range mechs {
			t.Run(p.name+"/"+mech, func(t *testing.T) {
				tr := newTransport(p.addr, p.mode, &transport.Auth{Username: "alice", Password: password, Mechanisms: []string{mech}})
				s, err := mailsec.NewSender(tr, nil)
				if err != nil {
					t.Fatal(err)
				}
				attachment := bytes.Repeat([]byte{0, 1, 2, 0xfe, 0xff, '\r', '\n', '.'}, 4096)
				subject := fmt.Sprintf("Befund %s %s – Grüße", p.name, mech)
				text := "Line one\n.\nA line with a dot above it.\r\nÜmlauts and a long line: " + strings.Repeat("x", 1200)
				rec, err := s.Send(context.Background(), &mailsec.Message{
					From:        "App <app@example.test>",
					To:          []string{"Ann <ann@example.test>"},
					Cc:          []string{"bob@example.test"},
					Bcc:         []string{"carol@example.test"},
					Subject:     subject,
					Text:        text,
					Attachments: []mailsec.Attachment{{Filename: "data.bin", Content: bytes.NewReader(attachment)}},
				})
				if err != nil {
					t.Fatalf("%v\n%s", err, pf.Log())
				}
				want++
				for _, r := range rec.Recipients {
					c := r.Connection
					if !r.Accepted || c.Verification != mailsec.VerifiedWebPKI || c.SASLMechanism != mech || r.QueueID == "" ||
						!strings.HasPrefix(c.TLSVersion, "TLS 1.") {
						t.Fatalf("receipt %+v %+v", r, c)
					}
				}
				for _, box := range []string{"ann", "bob", "carol"} {
					msgs := pf.Wait(t, box, want)
					raw := msgs[len(msgs)-1]
					checkDelivered(t, raw, subject, text, attachment)
					if bytes.Contains(raw, []byte("carol")) && box != "carol" {
						t.Fatalf("Bcc recipient visible in %s's copy", box)
					}
					// The queue id in the receipt is the one Postfix wrote in
					// its Received header, and that header records TLS and
					// the authenticated submission.
					qid := rec.Recipients[0].QueueID
					if box == "carol" {
						qid = rec.Recipients[2].QueueID
					}
					if !bytes.Contains(raw, []byte("id "+qid)) || !bytes.Contains(raw, []byte("ESMTPSA")) {
						t.Fatalf("%s: Received header does not match queue id %s:\n%s", box, qid, headerBlock(raw))
					}
				}
			})
		}
	}

	t.Run("wrong password", func(t *testing.T) {
		for _, p := range ports {
			tr := newTransport(p.addr, p.mode, &transport.Auth{Username: "alice", Password: "not-the-password"})
			s, _ := mailsec.NewSender(tr, nil)
			_, err := s.Send(context.Background(), &mailsec.Message{From: "app@example.test", To: []string{"ann@example.test"},
				Subject: "must not arrive", Text: "x"})
			var ae *mailsec.AuthError
			if !errors.As(err, &ae) || !errors.Is(err, mailsec.ErrAuth) {
				t.Fatalf("%s: error %v", p.name, err)
			}
		}
		// Give Postfix time to deliver anything it might have accepted.
		time.Sleep(time.Second)
		msgs, err := pf.Messages("ann")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if bytes.Contains(m, []byte("must not arrive")) {
				t.Fatal("delivered with a wrong password")
			}
		}
	})

	t.Run("no credentials", func(t *testing.T) {
		tr := newTransport(pf.SubmissionAddr, transport.StartTLS, nil)
		s, _ := mailsec.NewSender(tr, nil)
		_, err := s.Send(context.Background(), &mailsec.Message{From: "app@example.test", To: []string{"ann@example.test"},
			Subject: "x", Text: "x"})
		var se *mailsec.SMTPError
		if !errors.As(err, &se) || se.Code/100 != 5 {
			t.Fatalf("Postfix accepted mail without authentication: %v", err)
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		other, _ := mailsectest.NewCA()
		tr := newTransport(pf.SubmissionAddr, transport.StartTLS, &transport.Auth{Username: "alice", Password: password})
		tr.TLSConfig = other.TLSConfig()
		s, _ := mailsec.NewSender(tr, nil)
		_, err := s.Send(context.Background(), &mailsec.Message{From: "app@example.test", To: []string{"ann@example.test"},
			Subject: "x", Text: "x"})
		if !errors.Is(err, mailsec.ErrCertificate) {
			t.Fatalf("error %v", err)
		}
	})
}

// checkDelivered parses a message read from a Maildir and compares its
// subject, text and attachment with what was sent.
func checkDelivered(t *testing.T, raw []byte, subject, text string, attachment []byte) {
	t.Helper()
	// Maildir files hold LF line endings; restore the wire form.
	raw = bytes.ReplaceAll(bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
	r, err := mail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Header.Subject(); got != subject {
		t.Fatalf("subject %q, want %q", got, subject)
	}
	wantText := strings.NewReplacer("\r\n", "\r\n", "\n", "\r\n").Replace(text)
	var gotText, gotAttachment []byte
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p.Body)
		switch p.Header.(type) {
		case *mail.InlineHeader:
			gotText = b
		case *mail.AttachmentHeader:
			gotAttachment = b
		}
	}
	if string(gotText) != wantText {
		t.Fatalf("text differs:\n%q\n%q", gotText, wantText)
	}
	if !bytes.Equal(gotAttachment, attachment) {
		t.Fatal("attachment differs")
	}
}

func headerBlock(raw []byte) []byte {
	h, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	if len(h) == len(raw) {
		h, _, _ = bytes.Cut(raw, []byte("\n\n"))
	}
	return h
}
