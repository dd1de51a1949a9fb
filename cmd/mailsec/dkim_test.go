package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	mdns "github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/dnstest"
	"github.com/mailsec/mailsec/mailsectest"
)

// keygen runs mailsec dkim keygen and returns the key file and the zone
// line it printed.
func keygen(t *testing.T, domain, selector, algo string) (string, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), selector+".pem")
	r := runCmd(t, "", nil, "dkim", "keygen", "-domain", domain, "-selector", selector, "-algo", algo, "-out", out)
	wantCode(t, r, exitOK)
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(out)
	if b, _ := pem.Decode(data); b == nil || b.Type != "PRIVATE KEY" {
		t.Fatalf("key file is not a PEM PRIVATE KEY:\n%s", data)
	}
	line := strings.TrimSuffix(r.stdout, "\n")
	if strings.Contains(line, "\n") || !strings.HasPrefix(line, selector+"._domainkey."+domain+". IN TXT \"v=DKIM1; k="+algo+"; p=") {
		t.Fatalf("keygen printed %q, want one zone-file line", r.stdout)
	}
	// Never overwritten.
	r = runCmd(t, "", nil, "dkim", "keygen", "-domain", domain, "-selector", selector, "-out", out)
	wantCode(t, r, exitUsage)
	if again, _ := os.ReadFile(out); !bytes.Equal(again, data) {
		t.Fatal("keygen overwrote an existing key")
	}
	return out, line
}

// The whole path: keys made with keygen, their records published in a
// signed test zone, mail sent with send -dkim verified by go-msgauth with
// the keys looked up in that zone, and check -dkim-selector reading the
// records.
func TestDKIMKeygenSendCheck(t *testing.T) {
	dnstest.Need(t)
	rsaKey, rsaLine := keygen(t, "dkim.test", "r1", "rsa")
	edKey, edLine := keygen(t, "dkim.test", "e1", "ed25519")
	srv := mailsectest.NewServer(t, mailsectest.Config{Hostname: "mx.dkim.test"})
	_, port, _ := net.SplitHostPort(srv.Addr)
	ns := dnstest.Start(t, dnstest.Zone{Name: "dkim.test.", Signed: true, Records: []string{
		"dkim.test. 300 IN MX 10 mx.dkim.test.",
		"mx.dkim.test. 300 IN A 127.0.0.1",
		rsaLine, edLine,
		`revoked._domainkey.dkim.test. 300 IN TXT "v=DKIM1; k=rsa; p="`,
	}})

	body := writeFile(t, "body.txt", []byte("Signed body.\n"))
	r := runCmd(t, "", nil, "send", "-server", srv.Addr, "-ca", caFile(t, srv),
		"-dkim", "dkim.test:r1:"+rsaKey, "-dkim", "dkim.test:e1:"+edKey,
		"-from", "app@dkim.test", "-to", "ann@example.org", "-subject", "signed", "-body", body)
	wantCode(t, r, exitOK)
	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	resolver := &mdns.Client{Servers: []string{ns.Addr}}
	lookupTXT := func(name string) ([]string, error) {
		ans, err := resolver.LookupTXT(context.Background(), name)
		return ans.Records, err
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msgs[0].Data), &dkim.VerifyOptions{LookupTXT: lookupTXT})
	if err != nil || len(vs) != 2 {
		t.Fatalf("verify: %v, %d signatures", err, len(vs))
	}
	for _, v := range vs {
		if v.Err != nil || v.Domain != "dkim.test" {
			t.Fatalf("verification %+v", v)
		}
	}

	// A From domain without a key: refused, nothing sent.
	before := srv.Transactions()
	r = runCmd(t, "", nil, "send", "-server", srv.Addr, "-ca", caFile(t, srv),
		"-dkim", "dkim.test:r1:"+rsaKey,
		"-from", "app@other.test", "-to", "ann@example.org", "-subject", "unsigned", "-body", body)
	wantCode(t, r, exitFail)
	if srv.Transactions() != before || !strings.Contains(r.stderr, "other.test") {
		t.Fatalf("a message from a domain without a key: %d transactions (before %d), stderr %q", srv.Transactions(), before, r.stderr)
	}
	// A weak or unreadable key is a usage error.
	r = runCmd(t, "", nil, "send", "-server", srv.Addr, "-dkim", "dkim.test:r1:"+body,
		"-from", "app@dkim.test", "-to", "ann@example.org", "-subject", "x", "-body", body)
	wantCode(t, r, exitUsage)

	check := func(selector string) result {
		return runCmd(t, "", nil, "check", "dkim.test", "-dns", ns.Addr, "-mx-port", port, "-allow-private", "-dkim-selector", selector)
	}
	for sel, want := range map[string]string{
		"r1":      "DKIM:     r1._domainkey.dkim.test: published, well-formed, rsa 2048 bits, DNSSEC: yes",
		"e1":      "DKIM:     e1._domainkey.dkim.test: published, well-formed, ed25519 256 bits, DNSSEC: yes",
		"revoked": "DKIM:     revoked._domainkey.dkim.test: published, NOT usable: p= is empty: the key is revoked",
		"none":    "DKIM:     none._domainkey.dkim.test: no record published",
	} {
		r := check(sel)
		// The MX host's certificate is not valid for its name, so the
		// path is not protected whatever the DKIM record says.
		wantCode(t, r, exitFail)
		if !strings.Contains(r.stdout, want+"\n") {
			t.Errorf("check -dkim-selector %s: output lacks %q", sel, want)
		}
	}
}
