package main

import (
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/dnstest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// TestDirectAgainstSignedZone runs `mailsec send -mx` and `mailsec check`
// with a real validating resolver (Unbound) over locally signed zones.
// Every MX host is 127.0.0.1; -mx-port points at the test's SMTP server.
func TestDirectAgainstSignedZone(t *testing.T) {
	dnstest.Need(t)
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	// A certificate nobody's roots trust: only DANE can vouch for it.
	leaf, err := ca.Issue(mailsectest.CertOptions{DNSNames: []string{"mx.dane.test", "mx.mismatch.test"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := mailsectest.NewServer(t, mailsectest.Config{Certificate: &leaf, Hostname: "mx.dane.test"})
	_, port, _ := net.SplitHostPort(srv.Addr)
	good, err := dnstest.TLSA("_25._tcp.mx.dane.test.", 3, 1, 1, leaf.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.Issue(mailsectest.CertOptions{DNSNames: []string{"mx.mismatch.test"}})
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := dnstest.TLSA("_25._tcp.mx.mismatch.test.", 3, 1, 1, other.Leaf)
	dns := dnstest.Start(t,
		dnstest.Zone{Name: "dane.test.", Signed: true, Records: []string{
			"dane.test. 300 IN MX 10 mx.dane.test.",
			"mx.dane.test. 300 IN A 127.0.0.1",
			good,
			`_smtp._tls.dane.test. 300 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@dane.test"`,
		}},
		dnstest.Zone{Name: "mismatch.test.", Signed: true, Records: []string{
			"mismatch.test. 300 IN MX 10 mx.mismatch.test.",
			"mx.mismatch.test. 300 IN A 127.0.0.1",
			bad,
		}},
	)
	body := writeFile(t, "body.txt", []byte("CANARY-cli-direct\n"))
	send := func(to string) result {
		return runCmd(t, "", nil, "send", "-mx", "-dns", dns.Addr, "-mx-port", port,
			"-from", "app@sender.example", "-to", to, "-subject", "hello", "-body", body, "-json")
	}

	t.Run("send -mx over DANE", func(t *testing.T) {
		r := send("ann@dane.test")
		wantCode(t, r, exitOK)
		var rec mailsec.Receipt
		if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil {
			t.Fatal(err)
		}
		c := rec.Recipients[0].Connection
		if c == nil || c.Verification != mailsec.VerifiedDANEEE || c.Host != "mx.dane.test" || c.Policy != "dane" {
			t.Fatalf("connection = %+v", c)
		}
		if !strings.Contains(r.stderr, "dane-ee") {
			t.Fatalf("progress line does not say how the host was authenticated: %q", r.stderr)
		}
		if len(srv.Messages()) != 1 {
			t.Fatalf("%d messages", len(srv.Messages()))
		}
	})
	t.Run("send -mx refuses a TLSA mismatch", func(t *testing.T) {
		before := srv.Transactions()
		r := send("ann@mismatch.test")
		wantCode(t, r, exitFail)
		if srv.Transactions() != before {
			t.Fatal("MAIL sent to a host that fails DANE")
		}
		if !strings.Contains(r.stderr, "TLSA") {
			t.Fatalf("stderr does not name the reason: %q", r.stderr)
		}
	})
	t.Run("check -json", func(t *testing.T) {
		r := runCmd(t, "", nil, "check", "dane.test", "-dns", dns.Addr, "-mx-port", port, "-json")
		wantCode(t, r, exitOK)
		var dc transport.DomainCheck
		if err := json.Unmarshal([]byte(r.stdout), &dc); err != nil {
			t.Fatal(err)
		}
		if !dc.MXAuthentic || len(dc.Hosts) != 1 || len(dc.TLSRPT) != 1 {
			t.Fatalf("check = %+v", dc)
		}
		h := dc.Hosts[0]
		if h.Status != "protected" || h.DANEMatch == "" || !h.StartTLS || h.TLSVersion == "" || h.CertValid {
			t.Fatalf("host = %+v", h)
		}
	})
	t.Run("check in words", func(t *testing.T) {
		r := runCmd(t, "", nil, "check", "-dns", dns.Addr, "-mx-port", port, "mismatch.test")
		wantCode(t, r, exitOK)
		for _, want := range []string{"DNSSEC: yes", "STARTTLS:    yes", "matches none of the host's TLSA records", "Verdict: mailsec's default level delivers to no MX host"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("output lacks %q", want)
			}
		}
	})
}
