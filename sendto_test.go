package mailsec_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
)

// SendTo delivers the message Send would write to the recipients named
// only: the same To and Cc fields, Bcc in none, and the others get nothing.
func TestSendToSubset(t *testing.T) {
	s, rt := newRecordingSender(t, nil)
	m := base()
	m.To = []string{"Ann <ann@example.org>", "dora@example.org"}
	m.Cc = []string{"Carl <carl@example.org>"}
	m.Bcc = []string{"hidden@example.net"}
	m.MessageID = "fixed-id@example.com"
	m.Date = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	full, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	all := rt.Deliveries()
	if len(full.Recipients) != 4 || len(all) != 2 {
		t.Fatalf("full send: %d recipients, %d deliveries", len(full.Recipients), len(all))
	}

	s2, rt2 := newRecordingSender(t, nil)
	// As written, in another case for the domain, and as the Receipt has it.
	rec, err := s2.SendTo(context.Background(), m, []string{"Carl <carl@Example.ORG>", "hidden@example.net", "carl@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	got := rt2.Deliveries()
	if len(got) != 2 {
		t.Fatalf("%d deliveries, want 2 (Carl, then the Bcc recipient on its own)", len(got))
	}
	if strings.Join(got[0].To, ",") != "carl@example.org" || strings.Join(got[1].To, ",") != "hidden@example.net" {
		t.Fatalf("deliveries to %v and %v", got[0].To, got[1].To)
	}
	for _, d := range got {
		for _, h := range []string{"To", "Cc", "Message-ID", "Date", "Subject"} {
			if !bytes.Equal(headerOf(d.Data, h), headerOf(all[0].Data, h)) {
				t.Errorf("%s differs from Send's: %q, want %q", h, headerOf(d.Data, h), headerOf(all[0].Data, h))
			}
		}
		if bytes.Contains(d.Data, []byte("hidden@")) {
			t.Fatalf("the Bcc recipient is visible:\n%s", d.Data)
		}
	}
	if len(rec.Recipients) != 2 || rec.Recipients[0].Address != "carl@example.org" || rec.Recipients[1].Kind != mailsec.KindBcc {
		t.Fatalf("receipt recipients: %+v", rec.Recipients)
	}
	if rec.MessageID != "fixed-id@example.com" {
		t.Fatalf("receipt Message-ID %q", rec.MessageID)
	}
}

// A SendTo recipient the message does not have, or none at all, is bad
// input: nothing is sent, to anyone.
func TestSendToRefusesOthers(t *testing.T) {
	s, rt := newRecordingSender(t, nil)
	m := base()
	m.Cc = []string{"carl@example.org"}
	for _, to := range [][]string{nil, {}, {"carl@example.org", "mallory@example.net"}, {"carl@example.org", "bad\r\naddress"}} {
		rec, err := s.SendTo(context.Background(), m, to)
		var ve *mailsec.ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, mailsec.ErrInvalid) || rec != nil {
			t.Fatalf("SendTo(%q): %v, %v; want a ValidationError", to, rec, err)
		}
		if !strings.HasPrefix(ve.Field, "SendTo recipients") {
			t.Errorf("SendTo(%q): field %q", to, ve.Field)
		}
	}
	if n := len(rt.Deliveries()); n != 0 {
		t.Fatalf("%d deliveries after refusals", n)
	}
}

// failingReader fails the test when read: Prepare must not read content.
type failingReader struct{ t *testing.T }

func (r failingReader) Read([]byte) (int, error) {
	r.t.Error("Prepare read an attachment")
	return 0, io.ErrUnexpectedEOF
}

// Prepare fixes the Message-ID and Date once, so that every later send of
// the copy writes the same ones, and refuses what Send refuses, the
// AllowedSenders check included, without reading attachments.
func TestPrepare(t *testing.T) {
	now := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	s, rt := newRecordingSender(t, &mailsec.Options{AllowedSenders: []string{"example.com"}, Now: func() time.Time { return now }})
	m := base()
	m.Attachments = []mailsec.Attachment{{Filename: "a.txt", Content: failingReader{t}}}
	p, err := s.Prepare(m)
	if err != nil {
		t.Fatal(err)
	}
	if m.MessageID != "" || !m.Date.IsZero() {
		t.Fatal("Prepare modified the message it was given")
	}
	if !strings.HasSuffix(p.MessageID, "@example.com") || !p.Date.Equal(now) {
		t.Fatalf("prepared Message-ID %q, Date %v", p.MessageID, p.Date)
	}
	p.Attachments = nil
	later := now.Add(time.Hour)
	s2, _ := newRecordingSender(t, &mailsec.Options{Now: func() time.Time { return later }})
	for _, snd := range []*mailsec.Sender{s, s2, s} {
		rec, err := snd.Send(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if rec.MessageID != p.MessageID {
			t.Fatalf("sent as %q, prepared as %q", rec.MessageID, p.MessageID)
		}
	}
	ds := rt.Deliveries()
	if !bytes.Equal(headerOf(ds[0].Data, "Date"), headerOf(ds[1].Data, "Date")) || !bytes.Contains(headerOf(ds[0].Data, "Date"), []byte("6 May 2031")) && !bytes.Contains(headerOf(ds[0].Data, "Date"), []byte("06 May 2031")) {
		t.Fatalf("Date headers %q and %q", headerOf(ds[0].Data, "Date"), headerOf(ds[1].Data, "Date"))
	}

	given := base()
	given.MessageID, given.Date = "mine@example.com", now.Add(-time.Hour)
	if p, err := s.Prepare(given); err != nil || p.MessageID != "mine@example.com" || !p.Date.Equal(given.Date) {
		t.Fatalf("Prepare changed what the message set: %v, %v", p, err)
	}

	for name, edit := range map[string]func(*mailsec.Message){
		"sender not allowed": func(m *mailsec.Message) { m.From = "ceo@example.net" },
		"header injection":   func(m *mailsec.Message) { m.Subject = "a\r\nBcc: x@example.net" },
		"no recipients":      func(m *mailsec.Message) { m.To = nil },
		"bad Message-ID":     func(m *mailsec.Message) { m.MessageID = "no brackets <>" },
	} {
		m := base()
		edit(m)
		if p, err := s.Prepare(m); err == nil || p != nil || mailsec.IsTemporary(err) {
			t.Errorf("%s: Prepare gave %v, %v", name, p, err)
		}
	}
	if _, err := s.Prepare(&mailsec.Message{From: "ceo@example.net", To: []string{"a@example.org"}}); !errors.Is(err, mailsec.ErrSenderNotAllowed) {
		t.Fatalf("AllowedSenders: %v", err)
	}
	if _, err := s.Prepare(nil); !errors.Is(err, mailsec.ErrInvalid) {
		t.Fatalf("nil message: %v", err)
	}
	if _, err := (*mailsec.Sender)(nil).Prepare(base()); !errors.Is(err, mailsec.ErrInvalid) {
		t.Fatalf("nil Sender: %v", err)
	}
}

// A Date whose year RFC 5322 cannot write (before 1900, after 9999) is
// bad input, refused by Send and Prepare alike, and nothing is sent.
func TestDateYearRange(t *testing.T) {
	for _, d := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1899, 12, 31, 0, 0, 0, 0, time.UTC),
		time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		s, rt := newRecordingSender(t, nil)
		m := base()
		m.Date = d
		_, err := s.Send(context.Background(), m)
		var ve *mailsec.ValidationError
		if !errors.As(err, &ve) || ve.Field != "Date" || mailsec.IsTemporary(err) {
			t.Errorf("Send with Date %v: %v", d, err)
		}
		if _, err := s.Prepare(m); !errors.As(err, &ve) || ve.Field != "Date" {
			t.Errorf("Prepare with Date %v: %v", d, err)
		}
		if n := len(rt.Deliveries()); n != 0 {
			t.Errorf("Date %v: %d deliveries", d, n)
		}
	}
	s, _ := newRecordingSender(t, nil)
	m := base()
	m.Date = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Errorf("Send with a Date in 9999: %v", err)
	}
}
