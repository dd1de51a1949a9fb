package transport_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/dnstest"
	"github.com/mailsec/mailsec/internal/postfixtest"
	"github.com/mailsec/mailsec/transport"
)

// TestDirectToPostfixOverDANE delivers with Direct to a real Postfix as
// the MX host of a DNSSEC-signed domain, authenticated by a DANE-EE record
// for Postfix's self-signed certificate, with every lookup answered by a
// validating Unbound; the message is read back from Postfix's Maildir.
func TestDirectToPostfixOverDANE(t *testing.T) {
	dnstest.Need(t)
	pf := postfixtest.Start(t, postfixtest.Config{Hostname: "mx.pf.test", Domain: "pf.test", Mailboxes: []string{"ann"}})
	block, _ := pem.Decode(pf.CertPEM)
	if block == nil {
		t.Fatal("no certificate from Postfix")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	rr, err := dnstest.TLSA("_25._tcp.mx.pf.test.", 3, 1, 1, cert)
	if err != nil {
		t.Fatal(err)
	}
	ns := dnstest.Start(t, dnstest.Zone{Name: "pf.test.", Signed: true, Records: []string{
		"pf.test. 300 IN MX 10 mx.pf.test.",
		"mx.pf.test. 300 IN A 127.0.0.1",
		rr,
	}})
	_, port, _ := net.SplitHostPort(pf.SMTPAddr)
	p, _ := strconv.Atoi(port)
	// Postfix listens on loopback, which direct delivery refuses unless
	// allowed.
	tr := &transport.Direct{Resolver: &dns.Client{Servers: []string{ns.Addr}}, Port: p, LocalName: "sender.test", AllowPrivate: true}
	s, err := mailsec.NewSender(tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec, err := s.Send(ctx, &mailsec.Message{
		From:    "app@sender.test",
		To:      []string{"ann@pf.test"},
		Subject: "over DANE",
		Text:    "CANARY-postfix-dane\n",
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, pf.Log())
	}
	c := rec.Recipients[0].Connection
	if c.Verification != mailsec.VerifiedDANEEE || c.Host != "mx.pf.test" || rec.Recipients[0].QueueID == "" {
		t.Fatalf("receipt = %+v", rec.Recipients[0])
	}
	msgs := pf.Wait(t, "ann", 1)
	if !strings.Contains(string(msgs[0]), "CANARY-postfix-dane") || !strings.Contains(string(msgs[0]), rec.Recipients[0].QueueID) {
		t.Fatalf("Maildir message:\n%s", msgs[0])
	}
}
