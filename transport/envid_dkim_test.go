package transport_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/dkimsign"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
)

// dkimWrap wraps t in a dkimsign.Transport that signs for example.com.
func dkimWrap(t *testing.T, next mailsec.Transport) *dkimsign.Transport {
	t.Helper()
	key, err := dkimsign.GenerateKey("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	sg, err := dkimsign.NewSigner("example.com", "s1", key)
	if err != nil {
		t.Fatal(err)
	}
	dt, err := dkimsign.NewTransport(next, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.com": {sg}}})
	if err != nil {
		t.Fatal(err)
	}
	return dt
}

// Direct wrapped in a DKIM-signing Transport still gets one delivery per
// recipient domain: each domain's MX host receives its own ENVID, and a
// DSN that one domain's MX host writes about the other domain's
// recipient, with the ENVID it received, matches nothing in the Receipt.
func TestDirectWithDKIMGivesEachDomainItsOwnENVID(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	e.res.MX("example.net", dns.MX{Host: "mx1.example.net", Pref: 10})
	org := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{DSN: true})
	netMX := e.mx("mx1.example.net", "192.0.2.20", mailsectest.Config{DSN: true})
	s, err := mailsec.NewSender(dkimWrap(t, e.direct()), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Send(context.Background(), &mailsec.Message{From: "app@example.com",
		To: []string{"nobody@example.org", "mallory@example.net"}, Subject: "x", Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(org.Messages()) != 1 || len(netMX.Messages()) != 1 {
		t.Fatalf("example.org got %d messages, example.net %d; want 1 each", len(org.Messages()), len(netMX.Messages()))
	}
	envOrg, envNet := org.Messages()[0].EnvelopeID, netMX.Messages()[0].EnvelopeID
	if envOrg == "" || envOrg == envNet {
		t.Fatalf("example.org's MX got ENVID %q, example.net's %q: want two different ones", envOrg, envNet)
	}
	if rec.Recipients[0].EnvelopeID != envOrg || rec.Recipients[1].EnvelopeID != envNet {
		t.Fatalf("Receipt ENVIDs %q, %q; the servers got %q, %q", rec.Recipients[0].EnvelopeID, rec.Recipients[1].EnvelopeID, envOrg, envNet)
	}
	raw, err := os.ReadFile("../bounce/testdata/postfix-failed.eml")
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(raw), "Original-Envelope-Id: ms-7f3a9c2e41", "Original-Envelope-Id: "+envNet, 1)
	rep, err := bounce.Parse(strings.NewReader(forged))
	if err != nil {
		t.Fatal(err)
	}
	if rep.EnvelopeID != envNet || rep.Recipients[0].FinalRecipient != "nobody@example.org" {
		t.Fatalf("forged report: ENVID %q, recipient %q", rep.EnvelopeID, rep.Recipients[0].FinalRecipient)
	}
	if m := rep.For(rec); len(m) > 0 {
		t.Errorf("a DSN written by example.net's MX host about %s matched (%s)", m[0].Receipt.Address, m[0].Report.Action)
	}
}

// A Submission wrapped in a DKIM-signing Transport still hands To and Cc
// in two domains to the smarthost in one transaction, with one ENVID.
func TestSubmissionWithDKIMKeepsOneTransaction(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	s, err := mailsec.NewSender(dkimWrap(t, srv.Transport()), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Send(context.Background(), &mailsec.Message{From: "app@example.com",
		To: []string{"ann@example.org"}, Cc: []string{"bob@example.net"}, Subject: "x", Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	got := srv.Messages()
	if len(got) != 1 || len(got[0].To) != 2 {
		t.Fatalf("%d transactions (%+v), want one for both recipients", len(got), got)
	}
	if rec.Recipients[0].EnvelopeID != got[0].EnvelopeID || rec.Recipients[1].EnvelopeID != got[0].EnvelopeID {
		t.Fatalf("Receipt ENVIDs %q, %q; the smarthost got %q", rec.Recipients[0].EnvelopeID, rec.Recipients[1].EnvelopeID, got[0].EnvelopeID)
	}
}
