package mailsec_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
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
	for _, g := range got {
		if g.EnvelopeID != rec.EnvelopeID {
			t.Errorf("ENVID %q sent, Receipt says %q", g.EnvelopeID, rec.EnvelopeID)
		}
		for _, to := range g.To {
			if !strings.EqualFold(g.ORCPT[to], "rfc822;"+to) {
				t.Errorf("ORCPT for %s: %q", to, g.ORCPT[to])
			}
		}
		if len(g.Notify) != 0 || g.Return != "" {
			t.Errorf("NOTIFY %v, RET %q asked for by default", g.Notify, g.Return)
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
	if rec2.EnvelopeID == rec.EnvelopeID || srv.Messages()[2].EnvelopeID != rec2.EnvelopeID {
		t.Fatalf("second Send: ENVID %q, first %q", rec2.EnvelopeID, rec.EnvelopeID)
	}

	// The application's own ENVID is sent as it is (xtext on the wire),
	// and its other options are kept.
	m.DSN = &mailsec.DSN{EnvelopeID: "order+4411", Notify: []mailsec.DSNNotify{mailsec.NotifyFailure}}
	rec3, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	g := srv.Messages()[4]
	if rec3.EnvelopeID != "order+4411" || g.EnvelopeID != "order+4411" || strings.Join(g.Notify["ann@example.org"], ",") != "FAILURE" {
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
	if len(rec4.EnvelopeID) < 20 || srv.Messages()[6].EnvelopeID != rec4.EnvelopeID || srv.Messages()[6].Return != "HDRS" || m.DSN.EnvelopeID != "" {
		t.Fatalf("Receipt %q, sent %+v", rec4.EnvelopeID, srv.Messages()[6])
	}
}
