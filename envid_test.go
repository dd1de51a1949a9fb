package mailsec_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// A message sent without DSN options still carries an ENVID and an ORCPT
// per recipient, the ENVID the Receipt records, so that a notification
// that comes back can be matched to the Receipt.
func TestSendSetsEnvelopeIDAndORCPT(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	s, err := mailsec.NewSender(srv.Transport(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Bcc: []string{"bob@example.org"},
		Subject: "x", Text: "x"}
	rec, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.EnvelopeID) < 20 || m.DSN != nil {
		t.Fatalf("Receipt.EnvelopeID %q, Message.DSN %+v", rec.EnvelopeID, m.DSN)
	}
	got := srv.Messages()
	if len(got) != 2 {
		t.Fatalf("%d transactions", len(got))
	}
	// Each transaction has its own ENVID: the message's, a dot and a
	// random part; each recipient's Receipt entry names its own.
	sentWith := map[string]string{}
	for _, g := range got {
		if !strings.HasPrefix(g.EnvelopeID, rec.EnvelopeID+".") || len(g.EnvelopeID) != len(rec.EnvelopeID)+17 {
			t.Errorf("ENVID %q sent, Receipt says %q", g.EnvelopeID, rec.EnvelopeID)
		}
		for _, to := range g.To {
			sentWith[to] = g.EnvelopeID
			if !strings.EqualFold(g.ORCPT[to], "rfc822;"+to) {
				t.Errorf("ORCPT for %s: %q", to, g.ORCPT[to])
			}
		}
		if len(g.Notify) != 0 || g.Return != "" {
			t.Errorf("NOTIFY %v, RET %q asked for by default", g.Notify, g.Return)
		}
	}
	if got[0].EnvelopeID == got[1].EnvelopeID {
		t.Fatalf("two deliveries share the ENVID %q", got[0].EnvelopeID)
	}
	for _, rr := range rec.Recipients {
		if rr.EnvelopeID == "" || rr.EnvelopeID != sentWith[rr.Address] {
			t.Errorf("%s: Receipt ENVID %q, sent with %q", rr.Address, rr.EnvelopeID, sentWith[rr.Address])
		}
	}
	b, _ := json.Marshal(rec)
	if !strings.Contains(string(b), `"envelope_id":"`+rec.EnvelopeID+`"`) {
		t.Fatalf("JSON form: %s", b)
	}

	// Each Send has its own.
	rec2, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if rec2.EnvelopeID == rec.EnvelopeID || !strings.HasPrefix(srv.Messages()[2].EnvelopeID, rec2.EnvelopeID+".") {
		t.Fatalf("second Send: ENVID %q, first %q", rec2.EnvelopeID, rec.EnvelopeID)
	}

	// The application's own ENVID is sent with each delivery's random
	// part appended (xtext on the wire), and its other options are kept.
	m.DSN = &mailsec.DSN{EnvelopeID: "order+4411", Notify: []mailsec.DSNNotify{mailsec.NotifyFailure}}
	rec3, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	g := srv.Messages()[4]
	if rec3.EnvelopeID != "order+4411" || !strings.HasPrefix(g.EnvelopeID, "order+4411.") || g.EnvelopeID != rec3.Recipients[0].EnvelopeID || strings.Join(g.Notify["ann@example.org"], ",") != "FAILURE" {
		t.Fatalf("Receipt %q, sent %+v", rec3.EnvelopeID, g)
	}
	if g.ORCPT["ann@example.org"] != "" {
		t.Fatalf("ORCPT %q added to options that did not ask for it", g.ORCPT["ann@example.org"])
	}
	if len(m.DSN.Notify) != 1 || m.DSN.EnvelopeID != "order+4411" || m.DSN.OriginalRecipient {
		t.Fatalf("Message modified: %+v", m.DSN)
	}
	// Options without an ENVID get a generated one.
	m.DSN = &mailsec.DSN{Return: mailsec.DSNReturnHeaders}
	rec4, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec4.EnvelopeID) < 20 || !strings.HasPrefix(srv.Messages()[6].EnvelopeID, rec4.EnvelopeID+".") || srv.Messages()[6].Return != "HDRS" || m.DSN.EnvelopeID != "" {
		t.Fatalf("Receipt %q, sent %+v", rec4.EnvelopeID, srv.Messages()[6])
	}
}

// An application's ENVID leaves room for each delivery's random part: at
// most MaxEnvelopeID characters, and a longer one is refused with nothing
// sent.
func TestEnvelopeIDLength(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	s, err := mailsec.NewSender(srv.Transport(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Subject: "x", Text: "x",
		DSN: &mailsec.DSN{EnvelopeID: strings.Repeat("e", mailsec.MaxEnvelopeID+1)}}
	rec, err := s.Send(context.Background(), m)
	var ve *mailsec.ValidationError
	if !errors.As(err, &ve) || ve.Field != "DSN.EnvelopeID" || rec != nil || len(srv.Messages()) != 0 {
		t.Fatalf("%d-character ENVID: %v, %+v, %d sent", mailsec.MaxEnvelopeID+1, err, rec, len(srv.Messages()))
	}
	m.DSN.EnvelopeID = strings.Repeat("e", mailsec.MaxEnvelopeID)
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if got := srv.Messages()[0].EnvelopeID; len(got) != 100 || !strings.HasPrefix(got, m.DSN.EnvelopeID+".") {
		t.Fatalf("sent ENVID %q (%d)", got, len(got))
	}
}

// hiddenTransport wraps a Transport and declares nothing about it.
type hiddenTransport struct{ mailsec.Transport }

// A transport that does not declare SharedTransaction (here a wrapper
// that hides the Submission's declaration) is handed one delivery per
// domain, each with its own ENVID, so that no domain's server learns the
// ENVID another domain's recipients were sent with; recipients of one
// domain still share one. A Submission, which declares it, gets one.
func TestEnvelopeIDPerDomain(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	m := &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org", "bob@example.net"},
		Cc: []string{"cat@EXAMPLE.org"}, Subject: "x", Text: "x"}
	for _, tc := range []struct {
		tr           mailsec.Transport
		transactions int
	}{{srv.Transport(), 1}, {hiddenTransport{srv.Transport()}, 2}} {
		s, err := mailsec.NewSender(tc.tr, nil)
		if err != nil {
			t.Fatal(err)
		}
		before := len(srv.Messages())
		rec, err := s.Send(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		got := srv.Messages()[before:]
		if len(got) != tc.transactions {
			t.Fatalf("%T: %d transactions, want %d", tc.tr, len(got), tc.transactions)
		}
		envids := map[string]bool{}
		for _, g := range got {
			envids[g.EnvelopeID] = true
		}
		if len(envids) != tc.transactions {
			t.Fatalf("%T: ENVIDs %v", tc.tr, envids)
		}
		ann, bob, cat := rec.Recipients[0], rec.Recipients[1], rec.Recipients[2]
		if ann.EnvelopeID != cat.EnvelopeID || !envids[ann.EnvelopeID] || !envids[bob.EnvelopeID] ||
			(tc.transactions == 2) != (ann.EnvelopeID != bob.EnvelopeID) || (tc.transactions == 2) != (ann.Delivery != bob.Delivery) {
			t.Fatalf("%T: Receipt %+v", tc.tr, rec.Recipients)
		}
	}
}

// Options.ReturnPath gives each delivery its own MAIL FROM, from its
// ENVID; when it fails, or returns something that is not a path, the
// delivery's recipients fail with a *ConfigError and nothing is sent.
func TestReturnPath(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	m := &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Bcc: []string{"bob@example.org"}, Subject: "x", Text: "x"}
	s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{ReturnPath: func(envid string) (string, error) {
		return "bounces+" + strings.ReplaceAll(envid, ".", "-") + "@example.com", nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range srv.Messages() {
		if g.From != "bounces+"+strings.ReplaceAll(g.EnvelopeID, ".", "-")+"@example.com" {
			t.Errorf("MAIL FROM %q for ENVID %q", g.From, g.EnvelopeID)
		}
	}
	if rec.EnvelopeFrom != "app@example.com" {
		t.Fatalf("Receipt.EnvelopeFrom %q", rec.EnvelopeFrom)
	}

	for name, fn := range map[string]func(string) (string, error){
		"error":     func(string) (string, error) { return "", errors.New("no secret") },
		"empty":     func(string) (string, error) { return "", nil },
		"injection": func(string) (string, error) { return "a@example.com> RCPT TO:<x@example.net", nil },
		"panic":     func(string) (string, error) { panic("boom") },
	} {
		before := len(srv.Messages())
		s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{ReturnPath: fn})
		if err != nil {
			t.Fatal(err)
		}
		rec, err := s.Send(context.Background(), m)
		var ce *mailsec.ConfigError
		if !errors.As(err, &ce) || ce.Field != "Options.ReturnPath" || mailsec.IsTemporary(err) || rec == nil || rec.Recipients[0].Accepted ||
			len(srv.Messages()) != before {
			t.Errorf("%s: %v, %d sent", name, err, len(srv.Messages())-before)
		}
	}
}

// With Options.ReturnPath, every recipient, To and Cc of one domain at
// one smarthost included, gets a delivery of its own (its own ENVID and
// return path), so that the return path each recipient reads names that
// recipient's delivery alone.
func TestReturnPathDeliveryPerRecipient(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{ReturnPath: func(envid string) (string, error) {
		return "bounces+" + strings.ReplaceAll(envid, ".", "-") + "@example.com", nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Send(context.Background(), &mailsec.Message{From: "app@example.com",
		To: []string{"ann@example.org", "bob@example.org"}, Cc: []string{"cat@example.org"}, Subject: "x", Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	got := srv.Messages()
	if len(got) != 3 {
		t.Fatalf("%d transactions, want one per recipient", len(got))
	}
	from := map[string]string{}
	for _, g := range got {
		if len(g.To) != 1 {
			t.Fatalf("a transaction for %v", g.To)
		}
		from[g.To[0]] = g.From
	}
	seen := map[string]bool{}
	for _, r := range rec.Recipients {
		want := "bounces+" + strings.ReplaceAll(r.EnvelopeID, ".", "-") + "@example.com"
		if !r.Accepted || seen[r.EnvelopeID] || from[r.Address] != want {
			t.Errorf("%s: accepted %v, ENVID %q (seen before: %v), MAIL FROM %q", r.Address, r.Accepted, r.EnvelopeID, seen[r.EnvelopeID], from[r.Address])
		}
		seen[r.EnvelopeID] = true
	}
}

// panicky declares SharedTransaction and panics in it.
type panicky struct{ mailsec.Transport }

func (panicky) SharedTransaction() bool { panic("boom") }

// declares declares SharedTransaction as told.
type declares struct {
	mailsec.Transport
	shared bool
}

func (d declares) SharedTransaction() bool { return d.shared }

// SharedTransaction is true only for a Transport that says so; a
// missing method, a nil or typed-nil Transport, or a panic means false:
// deliveries are split by domain.
func TestSharedTransaction(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	var nilSubmission *transport.Submission
	for _, tc := range []struct {
		name string
		tr   mailsec.Transport
		want bool
	}{
		{"submission", srv.Transport(), true},
		{"direct", &transport.Direct{}, false},
		{"wrapper", hiddenTransport{srv.Transport()}, false},
		{"declares true", declares{shared: true}, true},
		{"declares false", declares{shared: false}, false},
		{"panics", panicky{}, false},
		{"nil", nil, false},
		{"typed nil", nilSubmission, false},
	} {
		if got := mailsec.SharedTransaction(tc.tr); got != tc.want {
			t.Errorf("%s: SharedTransaction = %v, want %v", tc.name, got, tc.want)
		}
	}
}
