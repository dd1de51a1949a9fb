package bounce_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/mailsectest"
)

// The return path is the MAIL FROM, which the final delivery agent
// writes into every recipient's copy as Return-Path: mallory (To) reads
// hers and mails a DSN without an ENVID about nobody (Cc, the same
// domain, behind the same smarthost) to it. With Options.ReturnPath each
// recipient has a delivery and a return path of its own, so hers speaks
// for her alone and the forged report about nobody matches nothing.
func TestVERPCoRecipientCannotReportOnAnother(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	v := &bounce.VERP{Local: "bounces", Domain: "example.com", Secret: []byte(strings.Repeat("k", 32))}
	s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{ReturnPath: v.ReturnPath})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Send(context.Background(), &mailsec.Message{From: "app@example.com",
		To: []string{"mallory@example.org"}, Cc: []string{"nobody@example.org"}, Subject: "x", Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d transactions, want one per recipient", len(msgs))
	}
	paths := map[string]string{} // recipient: the Return-Path of her copy
	for _, m := range msgs {
		if len(m.To) != 1 {
			t.Fatalf("a transaction for %v, want one recipient each", m.To)
		}
		paths[m.To[0]] = m.From
	}
	if paths["mallory@example.org"] == paths["nobody@example.org"] {
		t.Fatalf("both recipients read Return-Path %s", paths["nobody@example.org"])
	}
	raw, err := os.ReadFile("testdata/postfix-failed.eml")
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(strings.Replace(string(raw), "Original-Envelope-Id: ms-7f3a9c2e41\n", "", 1), "Original-Envelope-Id: ms-7f3a9c2e41\r\n", "", 1)
	rep, err := bounce.Parse(strings.NewReader(forged))
	if err != nil {
		t.Fatal(err)
	}
	if rep.EnvelopeID != "" || rep.Recipients[0].FinalRecipient != "nobody@example.org" {
		t.Fatalf("report: ENVID %q, recipient %q", rep.EnvelopeID, rep.Recipients[0].FinalRecipient)
	}
	m, err := rep.ForReturnPath(v, paths["mallory@example.org"], rec)
	if err != nil || len(m) > 0 {
		t.Errorf("mallory's forged report about nobody: %d matches, error %v; want none, no error", len(m), err)
	}
	// The same report, bounced to nobody's own return path, is hers.
	m, err = rep.ForReturnPath(v, paths["nobody@example.org"], rec)
	if err != nil || len(m) != 1 || m[0].Receipt.Address != "nobody@example.org" {
		t.Errorf("nobody's own report: %+v, %v", m, err)
	}
}

// A return path whose delivery carried several recipients (a Receipt
// from a Sender without per-recipient deliveries, or one altered)
// speaks for none of them: any of them could have written the report.
func TestForReturnPathRefusesSharedDelivery(t *testing.T) {
	v := &bounce.VERP{Local: "bounces", Domain: "example.com", Secret: []byte(strings.Repeat("k", 32))}
	envid := "ms-7f3a9c2e41.a1b2c3d4e5f6g7h8"
	path, err := v.ReturnPath(envid)
	if err != nil {
		t.Fatal(err)
	}
	rec := &mailsec.Receipt{EnvelopeID: "ms-7f3a9c2e41", Recipients: []mailsec.RecipientReceipt{
		{Address: "mallory@example.org", Delivery: 1, EnvelopeID: envid},
		{Address: "nobody@example.org", Delivery: 1, EnvelopeID: envid},
	}}
	raw, err := os.ReadFile("testdata/postfix-failed.eml")
	if err != nil {
		t.Fatal(err)
	}
	for _, envidLine := range []bool{false, true} {
		text := string(raw)
		if envidLine {
			text = strings.Replace(text, "Original-Envelope-Id: ms-7f3a9c2e41", "Original-Envelope-Id: "+envid, 1)
		} else {
			text = strings.Replace(strings.Replace(text, "Original-Envelope-Id: ms-7f3a9c2e41\n", "", 1), "Original-Envelope-Id: ms-7f3a9c2e41\r\n", "", 1)
		}
		rep, err := bounce.Parse(strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		m, err := rep.ForReturnPath(v, path, rec)
		if len(m) > 0 {
			t.Errorf("ENVID line %v: matched %s", envidLine, m[0].Receipt.Address)
		}
		var ve *bounce.VERPError
		if !errors.As(err, &ve) || !errors.Is(err, bounce.ErrForged) {
			t.Errorf("ENVID line %v: error %v, want a *VERPError matching ErrForged", envidLine, err)
		}
	}
}
