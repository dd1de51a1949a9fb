package bounce_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/mailsectest"
)

// A report matches a Receipt's recipient only under the ENVID of the
// delivery that carried that recipient: the server of a Bcc recipient,
// which sees its own delivery's ENVID, cannot report on the To recipient.
func TestReportFor(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	s, err := mailsec.NewSender(srv.Transport(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Send(context.Background(), &mailsec.Message{From: "app@example.com", To: []string{"nobody@example.org"},
		Bcc: []string{"mallory@example.net"}, Subject: "x", Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("testdata/postfix-failed.eml")
	if err != nil {
		t.Fatal(err)
	}
	parse := func(envid string) *bounce.Report {
		t.Helper()
		rep, err := bounce.Parse(strings.NewReader(strings.Replace(string(raw), "Original-Envelope-Id: ms-7f3a9c2e41", "Original-Envelope-Id: "+envid, 1)))
		if err != nil || rep.Recipients[0].FinalRecipient != "nobody@example.org" {
			t.Fatalf("%+v, %v", rep, err)
		}
		return rep
	}
	nobody, mallory := rec.Recipients[0], rec.Recipients[1]
	if nobody.EnvelopeID == "" || nobody.EnvelopeID == mallory.EnvelopeID {
		t.Fatalf("ENVIDs %q and %q", nobody.EnvelopeID, mallory.EnvelopeID)
	}
	for _, forged := range []string{mallory.EnvelopeID, rec.EnvelopeID, nobody.EnvelopeID + "x", ""} {
		if m := parse(forged).For(rec); m != nil {
			t.Errorf("a report under ENVID %q matched: %+v", forged, m)
		}
	}
	m := parse(nobody.EnvelopeID).For(rec)
	if len(m) != 1 || m[0].Receipt.Address != "nobody@example.org" || !m[0].Report.Failed() {
		t.Fatalf("the real report: %+v", m)
	}
}
