package mailsec_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
)

// The Receipt answers what an auditor asks first: which message (the
// application's Reference beside the Message-ID), who sent it (the From
// address and the envelope sender) and when (the attempt's start and
// end). The Reference is never sent, and no content is in the record.
func TestReceiptSaysWhichWhoAndWhen(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	var mu sync.Mutex
	var times []time.Time
	clock := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		clock = clock.Add(time.Second)
		times = append(times, clock)
		return clock
	}
	var logs bytes.Buffer
	var handed *mailsec.Receipt
	s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{
		Now:       now,
		Logger:    slog.New(slog.NewJSONHandler(&logs, nil)),
		OnReceipt: func(_ context.Context, r *mailsec.Receipt) { handed = r },
	})
	if err != nil {
		t.Fatal(err)
	}
	const ref = "order-4411-REFCANARY"
	m := base()
	m.From = "Shop Sales <sales@example.com>"
	m.EnvelopeFrom = "bounces+4411@example.com"
	m.Subject = "SUBJECT-CANARY-77"
	m.Text = "BODY-CANARY-78"
	m.Reference = ref
	rec, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if handed != rec {
		t.Fatal("OnReceipt was not handed the Receipt Send returned")
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		MessageID    string    `json:"message_id"`
		Reference    string    `json:"reference"`
		From         string    `json:"from"`
		EnvelopeFrom string    `json:"envelope_from"`
		Started      time.Time `json:"started"`
		Finished     time.Time `json:"finished"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if v.MessageID == "" || v.Reference != ref || v.From != "sales@example.com" || v.EnvelopeFrom != "bounces+4411@example.com" {
		t.Fatalf("JSON: %s", b)
	}
	mu.Lock()
	first, last := times[0], times[len(times)-1]
	mu.Unlock()
	if !v.Started.Equal(first) || !v.Finished.Equal(last) || !v.Finished.After(v.Started) {
		t.Fatalf("started %v, finished %v; want the first (%v) and last (%v) reading of the Sender's clock", v.Started, v.Finished, first, last)
	}
	for _, content := range []string{m.Subject, m.Text, "Shop Sales"} {
		if strings.Contains(string(b), content) {
			t.Fatalf("receipt contains %q: %s", content, b)
		}
	}
	if msgs := srv.Messages(); len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	if bytes.Contains(srv.Received(), []byte("REFCANARY")) {
		t.Fatal("the Reference was sent")
	}
	if !strings.Contains(logs.String(), `"reference":"`+ref+`"`) {
		t.Fatalf("the log record does not name the Reference:\n%s", logs.String())
	}
	var back mailsec.Receipt
	if err := json.Unmarshal(b, &back); err != nil || back.Reference != ref || back.From != rec.From ||
		back.EnvelopeFrom != rec.EnvelopeFrom || !back.Started.Equal(rec.Started) || !back.Finished.Equal(rec.Finished) {
		t.Fatalf("round trip: %v %+v", err, back)
	}
}

// A Reference is written into Receipts and log records as it is, so it
// must be text that needs no cleaning; anything else is refused before
// any I/O.
func TestReferenceChecked(t *testing.T) {
	for _, ref := range []string{
		"order\n1", "order\r\nX-Injected: 1", "order\t1", "\x1b[2Jpwned", "order\x00", "abc\u2028def", "abc\u202edef",
		"bad\xffutf8", strings.Repeat("r", 257),
	} {
		s, rt := newRecordingSender(t, nil)
		m := base()
		m.Reference = ref
		rec, err := s.Send(context.Background(), m)
		var ve *mailsec.ValidationError
		if !errors.As(err, &ve) || ve.Field != "Reference" || rec != nil || len(rt.Deliveries()) != 0 {
			t.Errorf("%q: err = %v, receipt %v, %d deliveries; want a ValidationError for Reference before any delivery", ref, err, rec, len(rt.Deliveries()))
		}
	}
	for _, ref := range []string{"", "order-4411", "Bestellung Nr. 4411 für Müller", strings.Repeat("r", 256)} {
		s, _ := newRecordingSender(t, nil)
		m := base()
		m.Reference = ref
		rec, err := s.Send(context.Background(), m)
		if err != nil || rec.Reference != ref {
			t.Errorf("%q: err = %v, reference %q", ref, err, rec.Reference)
		}
	}
}

// Every recipient that was not accepted has a failure member that says
// whether a retry can help, beside its error, and none that was has one.
// A recipient of a transport that names the session it tried (and no
// attempts of its own) keeps that session as its one attempt; one that
// failed before any transport (no usable key) has no attempts.
func TestReceiptFailureMember(t *testing.T) {
	session := &mailsec.ConnectionState{Host: "smtp.example.com", Addr: "192.0.2.25:587", PeerPin: mailsec.Pin{7}}
	tr := transportFunc(func(_ context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
		res := &mailsec.DeliveryResult{Connection: session, Recipients: make([]mailsec.RecipientResult, len(d.To))}
		for i, to := range d.To {
			res.Recipients[i].Address = to
			switch to {
			case "later@example.org":
				res.Recipients[i].Err = &mailsec.SMTPError{Host: "smtp.example.com", Command: "RCPT", Code: 451, Message: "try later"}
				res.Recipients[i].Reply = &mailsec.Reply{Code: 451, Text: "try later"}
			case "gone@example.org":
				res.Recipients[i].Err = &mailsec.SMTPError{Host: "smtp.example.com", Command: "RCPT", Code: 550, Message: "no such user"}
				res.Recipients[i].Reply = &mailsec.Reply{Code: 550, Text: "no such user"}
			default:
				res.Recipients[i].Accepted = true
			}
		}
		return res, nil
	})
	policy := mailsec.PolicyFunc(func(ctx context.Context, m *mailsec.Message, r mailsec.Recipient) (mailsec.Plan, error) {
		p := mailsec.Plan{}
		if r.Address == "secret@example.org" {
			p.Protection = mailsec.ProtectionRequired
		}
		return p, nil
	})
	s, err := mailsec.NewSender(tr, &mailsec.Options{Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	m := base()
	m.To = []string{"ann@example.org", "later@example.org", "gone@example.org", "secret@example.org"}
	rec, err := s.Send(context.Background(), m)
	if err == nil {
		t.Fatal("no error")
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Recipients []struct {
			Address string `json:"address"`
			Failure *struct {
				Temporary *bool `json:"temporary"`
				Attempts  []struct {
					Host    string `json:"host"`
					Addr    string `json:"addr"`
					Error   string `json:"error"`
					PeerPin string `json:"peer_spki_sha256"`
				} `json:"attempts"`
			} `json:"failure"`
		} `json:"recipients"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for i, r := range v.Recipients {
		got[r.Address] = i
	}
	if f := v.Recipients[got["ann@example.org"]].Failure; f != nil {
		t.Fatalf("an accepted recipient has a failure member: %s", b)
	}
	for _, c := range []struct {
		addr      string
		temporary bool
		attempt   string // what the one attempt's error says; "" for none
	}{
		{"later@example.org", true, "451 try later"},
		{"gone@example.org", false, "550 no such user"},
		{"secret@example.org", false, ""},
	} {
		f := v.Recipients[got[c.addr]].Failure
		if f == nil || f.Temporary == nil || *f.Temporary != c.temporary {
			t.Fatalf("%s: failure %+v, want temporary %v: %s", c.addr, f, c.temporary, b)
		}
		switch {
		case c.attempt == "" && len(f.Attempts) != 0:
			t.Errorf("%s: attempts %+v, want none", c.addr, f.Attempts)
		case c.attempt != "" && (len(f.Attempts) != 1 || f.Attempts[0].Host != "smtp.example.com" || f.Attempts[0].Addr != "192.0.2.25:587" ||
			f.Attempts[0].PeerPin != session.PeerPin.String() || !strings.Contains(f.Attempts[0].Error, c.attempt)):
			t.Errorf("%s: attempts %+v, want the session, ending in %q", c.addr, f.Attempts, c.attempt)
		}
	}
}

type transportFunc func(context.Context, *mailsec.Delivery) (*mailsec.DeliveryResult, error)

func (f transportFunc) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	return f(ctx, d)
}
