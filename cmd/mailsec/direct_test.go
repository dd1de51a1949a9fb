package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
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
	ns := dnstest.Start(t,
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
		dnstest.Zone{Name: "nullmx.test.", Signed: true, Records: []string{
			"nullmx.test. 300 IN MX 0 .",
		}},
	)
	body := writeFile(t, "body.txt", []byte("CANARY-cli-direct\n"))
	// The MX hosts are on loopback: -allow-private says so.
	send := func(to string) result {
		return runCmd(t, "", nil, "send", "-mx", "-dns", ns.Addr, "-mx-port", port, "-allow-private",
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
		// A DANE mismatch at an MX host is deferred, not bounced: an
		// attack may end, or the records be fixed.
		wantCode(t, r, exitTemp)
		if srv.Transactions() != before {
			t.Fatal("MAIL sent to a host that fails DANE")
		}
		if !strings.Contains(r.stderr, "TLSA") {
			t.Fatalf("stderr does not name the reason: %q", r.stderr)
		}
	})
	t.Run("send -mx explains a null MX", func(t *testing.T) {
		r := runBin(t, "", nil, "send", "-mx", "-dns", ns.Addr, "-mx-port", port, "-allow-private", "-mta-sts-cache", "none",
			"-from", "app@sender.example", "-to", "ann@nullmx.test", "-subject", "hello")
		wantCode(t, r, exitFail)
		if want := "mailsec: ann@nullmx.test: NOT delivered: nullmx.test accepts no mail (null MX, RFC 7505)\n"; !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q", want)
		}
		if strings.Contains(r.stderr, "no MX host took the delivery") {
			t.Errorf("stderr says no MX host took the delivery")
		}
	})
	t.Run("check explains a null MX", func(t *testing.T) {
		r := runBin(t, "", nil, "check", "nullmx.test", "-dns", ns.Addr, "-mx-port", port, "-allow-private")
		wantCode(t, r, exitFail)
		for _, want := range []string{"MX:       none: the domain accepts no mail (null MX, RFC 7505)", "Result:  null-mx (exit status 1)"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("output lacks %q", want)
			}
		}
	})
	t.Run("check -json", func(t *testing.T) {
		r := runBin(t, "", nil, "check", "dane.test", "-dns", ns.Addr, "-mx-port", port, "-allow-private", "-json")
		wantCode(t, r, exitOK)
		var dc transport.DomainCheck
		if err := json.Unmarshal([]byte(r.stdout), &dc); err != nil {
			t.Fatal(err)
		}
		var verdict struct {
			Result checkResult `json:"result"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &verdict); err != nil {
			t.Fatal(err)
		}
		if verdict.Result.Status != "protected" || verdict.Result.ExitStatus != exitOK || len(verdict.Result.Reasons) != 0 {
			t.Errorf("result = %+v, want protected", verdict.Result)
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
		r := runCmd(t, "", nil, "check", "-dns", ns.Addr, "-mx-port", port, "-allow-private", "mismatch.test")
		wantCode(t, r, exitFail)
		for _, want := range []string{"DNSSEC: yes", "STARTTLS:    yes", "matches none of the host's TLSA records", "Verdict: mailsec's default level delivers to no MX host",
			"Result:  undeliverable (exit status 1)"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("output lacks %q", want)
			}
		}
	})
}

// listenPolicyHost listens for HTTPS on port 443 (MTA-STS policies are
// fetched from no other port) of a random loopback address, so that tests
// running at once do not collide. Binding port 443 needs root: without
// it the test is skipped, or fails when CI is set.
func listenPolicyHost(t *testing.T) (net.Listener, netip.Addr) {
	t.Helper()
	var lastErr error
	for range 8 {
		var b [3]byte
		_, _ = rand.Read(b[:])
		ip := netip.AddrFrom4([4]byte{127, 1 + b[0]%250, b[1], 1 + b[2]%250})
		l, err := net.Listen("tcp", netip.AddrPortFrom(ip, 443).String())
		if err == nil {
			t.Cleanup(func() { _ = l.Close() })
			return l, ip
		}
		lastErr = err
		if errors.Is(err, syscall.EACCES) {
			break
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("required in CI: listening on port 443 of loopback: %v", lastErr)
	}
	t.Skipf("cannot listen on port 443 of loopback (needs root): %v", lastErr)
	return nil, netip.Addr{}
}

// TestDirectMTASTSThroughResolver runs `mailsec send -mx` and `mailsec
// check` against an enforce policy that exists only in the view of the
// resolver given with -dns: the policy host's name is in the test zone
// alone, its HTTPS server on loopback has a certificate from the -ca
// file, and the MX hosts are on loopback (-allow-private).
func TestDirectMTASTSThroughResolver(t *testing.T) {
	dnstest.Need(t)
	l, policyIP := listenPolicyHost(t)
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	mxCert, err := ca.Issue(mailsectest.CertOptions{DNSNames: []string{"mx.sts.test", "mx.unlisted.test"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := mailsectest.NewServer(t, mailsectest.Config{Certificate: &mxCert, Hostname: "mx.sts.test"})
	_, port, _ := net.SplitHostPort(srv.Addr)
	stsCert, err := ca.Issue(mailsectest.CertOptions{DNSNames: []string{"mta-sts.sts.test", "mta-sts.unlisted.test"}})
	if err != nil {
		t.Fatal(err)
	}
	var fetches atomic.Int32
	policies := map[string]string{
		"mta-sts.sts.test":      "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n",
		"mta-sts.unlisted.test": "version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n",
	}
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fetches.Add(1)
			p, ok := policies[r.Host]
			if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, p)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{stsCert}},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	go func() { _ = hs.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = hs.Close() })

	zone := func(d string) dnstest.Zone {
		return dnstest.Zone{Name: d + ".", Signed: true, Records: []string{
			d + ". 300 IN MX 10 mx." + d + ".",
			"mx." + d + ". 300 IN A 127.0.0.1",
			"_mta-sts." + d + `. 300 IN TXT "v=STSv1; id=1;"`,
			"mta-sts." + d + ". 300 IN A " + policyIP.String(),
		}}
	}
	ns := dnstest.Start(t, zone("sts.test"), zone("unlisted.test"))
	caPEM := writeFile(t, "ca.pem", ca.CertPEM())
	body := writeFile(t, "body.txt", []byte("CANARY-cli-mta-sts\n"))
	send := func(to string, extra ...string) result {
		args := append([]string{"send", "-mx", "-dns", ns.Addr, "-mx-port", port, "-ca", caPEM,
			"-from", "app@sender.example", "-to", to, "-subject", "hello", "-body", body, "-json"}, extra...)
		return runCmd(t, "", nil, args...)
	}
	received := func(rcpt string) int {
		n := 0
		for _, m := range srv.Messages() {
			if slices.Contains(m.To, rcpt) {
				n++
			}
		}
		return n
	}

	t.Run("refused without -allow-private", func(t *testing.T) {
		before := srv.Transactions()
		r := send("ann@sts.test")
		wantCode(t, r, exitFail)
		if srv.Transactions() != before || received("ann@sts.test") != 0 {
			t.Fatal("delivered to a loopback MX without -allow-private")
		}
		if !strings.Contains(r.stderr, "127.0.0.1") || !strings.Contains(r.stderr, "not a global unicast address") {
			t.Fatalf("stderr does not name the address: %q", r.stderr)
		}
		// The Receipt keeps the MX host and the address refused, a
		// permanent failure (the same DNS answer leads to it again).
		var rec mailsec.Receipt
		if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil {
			t.Fatal(err)
		}
		f := rec.Recipients[0].Failure
		if f == nil || f.Temporary || len(f.Attempts) != 1 || f.Attempts[0].Host != "mx.sts.test" || f.Attempts[0].Addr != "127.0.0.1:"+port ||
			!strings.Contains(f.Attempts[0].Error, "not a global unicast address") {
			t.Fatalf("failure = %+v", f)
		}
	})
	t.Run("enforce policy applied to a listed MX", func(t *testing.T) {
		r := send("ann@sts.test", "-allow-private")
		wantCode(t, r, exitOK)
		var rec mailsec.Receipt
		if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil {
			t.Fatal(err)
		}
		c := rec.Recipients[0].Connection
		if c == nil || c.Verification != mailsec.VerifiedMTASTS || c.Policy != "mta-sts" || c.Host != "mx.sts.test" {
			t.Fatalf("connection = %+v", c)
		}
		if received("ann@sts.test") != 1 || fetches.Load() == 0 {
			t.Fatalf("%d messages for ann, %d policy fetches", received("ann@sts.test"), fetches.Load())
		}
	})
	t.Run("enforce policy refuses an unlisted MX", func(t *testing.T) {
		before := srv.Transactions()
		r := send("bob@unlisted.test", "-allow-private")
		// Deferred, as RFC 8461 §5 wants: the policy may be about to change.
		wantCode(t, r, exitTemp)
		if srv.Transactions() != before || received("bob@unlisted.test") != 0 {
			t.Fatal("MAIL sent to an MX host the enforce policy does not list")
		}
		if !strings.Contains(r.stderr, "MTA-STS") {
			t.Fatalf("stderr does not say why: %q", r.stderr)
		}
		// The Receipt keeps the MX host refused, with the policy that
		// refused it as the resolver's view served it, and says a later
		// attempt may succeed (the policy may be updated).
		var rec mailsec.Receipt
		if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil {
			t.Fatal(err)
		}
		f := rec.Recipients[0].Failure
		want := []string{"version: STSv1", "mode: enforce", "mx: mx.elsewhere.test", "max_age: 86400"}
		if f == nil || !f.Temporary || len(f.Attempts) != 1 || f.Attempts[0].Host != "mx.unlisted.test" || f.Attempts[0].Addr != "" ||
			!slices.Equal(f.Attempts[0].MTASTS, want) {
			t.Fatalf("failure = %+v, want one attempt at mx.unlisted.test refused by %q", f, want)
		}
	})
	t.Run("check reports the policy", func(t *testing.T) {
		r := runCmd(t, "", nil, "check", "sts.test", "-dns", ns.Addr, "-mx-port", port, "-ca", caPEM, "-allow-private", "-json")
		wantCode(t, r, exitOK)
		var dc transport.DomainCheck
		if err := json.Unmarshal([]byte(r.stdout), &dc); err != nil {
			t.Fatal(err)
		}
		if dc.MTASTS == nil || dc.MTASTS.Mode != "enforce" || !slices.Equal(dc.MTASTS.MX, []string{"mx.sts.test"}) || dc.MTASTS.Error != "" {
			t.Fatalf("mta_sts = %+v", dc.MTASTS)
		}
		if len(dc.Hosts) != 1 || dc.Hosts[0].Status != "protected" || !dc.Hosts[0].InPolicy {
			t.Fatalf("hosts = %+v", dc.Hosts)
		}
	})
	t.Run("check refuses an address", func(t *testing.T) {
		r := runCmd(t, "", nil, "check", "ann@sts.test", "-dns", ns.Addr)
		wantCode(t, r, exitUsage)
		if !strings.Contains(r.stderr, "email address, not a domain") {
			t.Fatalf("stderr = %q", r.stderr)
		}
	})
	t.Run("policies kept between runs", func(t *testing.T) {
		// The built binary, as an operator runs it twice: the second run
		// finds the enforce policy in the user's cache directory and
		// fetches nothing.
		cacheHome := t.TempDir()
		environ := map[string]string{"XDG_CACHE_HOME": cacheHome}
		run := func() result {
			return runBin(t, "", environ, "send", "-mx", "-dns", ns.Addr, "-mx-port", port, "-ca", caPEM, "-allow-private",
				"-from", "app@sender.example", "-to", "ann@sts.test", "-subject", "hello", "-body", body)
		}
		before := fetches.Load()
		wantCode(t, run(), exitOK)
		if fetches.Load() == before {
			t.Fatal("the first run fetched no policy")
		}
		dir := filepath.Join(cacheHome, "mailsec", "mta-sts")
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("cache directory mode %04o, want 0700", fi.Mode().Perm())
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		if len(files) != 1 {
			t.Fatalf("cache files %q, want one", files)
		}
		if fi, err := os.Stat(files[0]); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("cache file: %v, mode %04o, want 0600", err, fi.Mode().Perm())
		}
		after := fetches.Load()
		wantCode(t, run(), exitOK)
		if fetches.Load() != after {
			t.Errorf("the second run fetched the policy again: it was not kept")
		}
		// -mta-sts-cache none keeps nothing, and fetches again.
		r := runBin(t, "", environ, "send", "-mx", "-dns", ns.Addr, "-mx-port", port, "-ca", caPEM, "-allow-private", "-mta-sts-cache", "none",
			"-from", "app@sender.example", "-to", "ann@sts.test", "-subject", "hello", "-body", body)
		wantCode(t, r, exitOK)
		if fetches.Load() == after {
			t.Errorf("-mta-sts-cache none used the cache")
		}
	})
}
