package dkimsign_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/dkimsign"
	"github.com/mailsec/mailsec/mailsectest"
)

// A Transport wraps another without hiding how it must be handed
// deliveries: around one that delivers to each domain's servers (a
// RecordingTransport standing for transport.Direct) a Sender still sends
// one delivery per recipient domain, each with its own ENVID, so that a
// DSN one domain's server writes about another domain's recipient, with
// the ENVID it received, matches nothing; around one that hands the
// whole transaction to a smarthost (a RecordingTransport standing for
// transport.Submission) both domains still go in one delivery.
func TestTransportForwardsSharedTransaction(t *testing.T) {
	raw, err := os.ReadFile("../bounce/testdata/postfix-failed.eml")
	if err != nil {
		t.Fatal(err)
	}
	for _, perDomain := range []bool{true, false} {
		rec := &mailsectest.RecordingTransport{PerDomain: perDomain}
		tr, err := dkimsign.NewTransport(rec, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.com": signers(t, "example.com")}})
		if err != nil {
			t.Fatal(err)
		}
		if got := mailsec.SharedTransaction(tr); got == perDomain {
			t.Errorf("PerDomain %v: SharedTransaction = %v", perDomain, got)
		}
		s, err := mailsec.NewSender(tr, nil)
		if err != nil {
			t.Fatal(err)
		}
		receipt, err := s.Send(context.Background(), &mailsec.Message{From: "app@example.com",
			To: []string{"nobody@example.org", "mallory@example.net"}, Subject: "x", Text: "x"})
		if err != nil {
			t.Fatal(err)
		}
		nobody, mallory := receipt.Recipients[0], receipt.Recipients[1]
		ds := rec.Deliveries()
		if !perDomain {
			if len(ds) != 1 || len(ds[0].To) != 2 || nobody.EnvelopeID != mallory.EnvelopeID {
				t.Errorf("shared: %d deliveries, ENVIDs %q and %q; want one delivery for both", len(ds), nobody.EnvelopeID, mallory.EnvelopeID)
			}
			continue
		}
		if len(ds) != 2 || nobody.EnvelopeID == mallory.EnvelopeID {
			t.Fatalf("per domain: %d deliveries, ENVIDs %q and %q; want two with their own", len(ds), nobody.EnvelopeID, mallory.EnvelopeID)
		}
		for _, d := range ds {
			if len(d.To) != 1 || d.DSN == nil || d.DSN.EnvelopeID != map[string]string{"nobody@example.org": nobody.EnvelopeID, "mallory@example.net": mallory.EnvelopeID}[d.To[0]] {
				t.Fatalf("delivery to %v with DSN %+v", d.To, d.DSN)
			}
		}
		// What example.net's server can write with the ENVID it received.
		forged := strings.Replace(string(raw), "Original-Envelope-Id: ms-7f3a9c2e41", "Original-Envelope-Id: "+mallory.EnvelopeID, 1)
		rep, err := bounce.Parse(strings.NewReader(forged))
		if err != nil {
			t.Fatal(err)
		}
		if rep.EnvelopeID != mallory.EnvelopeID || rep.Recipients[0].FinalRecipient != "nobody@example.org" {
			t.Fatalf("forged report: ENVID %q, recipient %q", rep.EnvelopeID, rep.Recipients[0].FinalRecipient)
		}
		if m := rep.For(receipt); len(m) > 0 {
			t.Errorf("a DSN written by example.net's server about %s matched (%s)", m[0].Receipt.Address, m[0].Report.Action)
		}
	}
}
