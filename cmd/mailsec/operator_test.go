package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
)

// The tests in this file run the built binary through what an operator
// meets in the first hour: usage errors, hints, the development server
// path, exit statuses a script can trust.

// wantUsageError checks a usage error as the operator sees it: exit
// status 2, nothing on standard output, and on standard error one line
// that says what is wrong and one that says where the help is.
func wantUsageError(t *testing.T, r result, cmd string, want ...string) {
	t.Helper()
	wantCode(t, r, exitUsage)
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing", r.stdout)
	}
	l := lines(r.stderr)
	if len(l) != 2 {
		t.Fatalf("%d lines on stderr, want 2 (the error, and where the help is):\n%s", len(l), r.stderr)
	}
	if !strings.HasPrefix(l[0], "mailsec "+cmd+": ") {
		t.Errorf("first line %q does not start with %q", l[0], "mailsec "+cmd+": ")
	}
	for _, w := range want {
		if !strings.Contains(l[0], w) {
			t.Errorf("error line %q lacks %q", l[0], w)
		}
	}
	if l[1] != "run 'mailsec "+cmd+" -h' for usage" {
		t.Errorf("second line %q", l[1])
	}
}

func TestBinUsageErrorsAreBrief(t *testing.T) {
	t.Parallel()
	base := []string{"send", "-server", "127.0.0.1:587", "-from", "app@example.com", "-to", "ann@example.org"}
	with := func(extra ...string) []string { return append(slices.Clone(base), extra...) }
	for _, tc := range []struct {
		name string
		args []string
		cmd  string
		want []string
		not  []string
	}{
		{"password flag", with("-password", "hunter2"), "send", []string{"-password", passwordEnv}, []string{"hunter2", "flag provided but not defined"}},
		{"server without port", []string{"send", "-server", "localhost", "-from", "a@example.com", "-to", "b@example.org"}, "send",
			[]string{"-server localhost", "port", "localhost:587"}, []string{"Submission", "Addr"}},
		{"server with a bad port", []string{"send", "-server", "localhost:smtps-ish", "-from", "a@example.com", "-to", "b@example.org"}, "send",
			[]string{"-server localhost:smtps-ish"}, []string{"Submission"}},
		{"bad tls", with("-tls", "ssl"), "send", []string{"-tls", "none"}, nil},
		{"missing from", []string{"send", "-server", "127.0.0.1:587", "-to", "b@example.org"}, "send", []string{"-from"}, nil},
		{"stray argument", with("extra"), "send", []string{`"extra"`}, nil},
		{"check without domain", []string{"check"}, "check", []string{"domain"}, nil},
		{"queue list without db", []string{"queue", "list"}, "queue list", []string{outboxKeyEnv}, nil},
		{"version with an argument", []string{"version", "now"}, "version", []string{`"now"`}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runBin(t, "", nil, tc.args...)
			wantUsageError(t, r, tc.cmd, tc.want...)
			for _, n := range tc.not {
				if strings.Contains(r.stderr, n) {
					t.Errorf("stderr says %q:\n%s", n, r.stderr)
				}
			}
		})
	}
	t.Run("unknown command", func(t *testing.T) {
		t.Parallel()
		r := runBin(t, "", nil, "sned")
		wantCode(t, r, exitUsage)
		if l := lines(r.stderr); len(l) != 2 || l[0] != `mailsec: unknown command "sned"` || l[1] != "run 'mailsec -h' for the commands" {
			t.Errorf("stderr:\n%s", r.stderr)
		}
	})
}

// -subject may be left out: the message then has an empty subject.
func TestBinSubjectOptional(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	r := runBin(t, "hi\n", nil, "send", "-server", srv.Addr, "-ca", caFile(t, srv),
		"-from", "app@example.com", "-to", "ann@example.org", "-body", "-")
	wantCode(t, r, exitOK)
	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	if s := msgs[0].Header("Subject"); s != "" {
		t.Errorf("Subject %q, want empty", s)
	}
	r = runBin(t, "", nil, "send", "-h")
	for l := range strings.Lines(r.stdout) {
		if strings.Contains(l, "-subject") && strings.Contains(l, "required") {
			t.Errorf("help marks -subject required: %q", l)
		}
	}
}

// Each failure is printed once, every failure is listed (no "and N
// more"), and the summary only counts them.
func TestBinFailuresPrintedOnce(t *testing.T) {
	t.Parallel()
	bad := []string{"b1@example.org", "b2@example.org", "b3@example.org", "b4@example.org", "b5@example.org"}
	replies := map[string]*mailsec.Reply{}
	for _, b := range bad {
		replies[b] = &mailsec.Reply{Code: 550, EnhancedCode: mailsec.EnhancedCode{5, 1, 1}, Text: "no such user " + b}
	}
	srv := mailsectest.NewServer(t, mailsectest.Config{RcptReply: replies})
	r := runBin(t, "", nil, "send", "-server", srv.Addr, "-ca", caFile(t, srv),
		"-from", "app@example.com", "-to", "ann@example.org,"+strings.Join(bad, ","))
	wantCode(t, r, exitFail)
	for _, b := range bad {
		if n := strings.Count(r.stderr, "no such user "+b); n != 1 {
			t.Errorf("the failure for %s is printed %d times", b, n)
		}
	}
	if strings.Contains(r.stderr, "more") {
		t.Errorf("a summary is cut short:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, "mailsec: 5 of 6 recipients not delivered\n") {
		t.Errorf("no summary:\n%s", r.stderr)
	}
}

// A certificate from a CA the machine does not trust: the hint names -ca.
func TestBinUntrustedCertificateHint(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	r := runBin(t, "", nil, "send", "-server", srv.Addr, "-from", "app@example.com", "-to", "ann@example.org,bob@example.org")
	wantCode(t, r, exitFail)
	if n := strings.Count(r.stderr, "hint: "); n != 1 || !strings.Contains(r.stderr, "-ca FILE") {
		t.Errorf("want one hint naming -ca FILE:\n%s", r.stderr)
	}
	if srv.Transactions() != 0 {
		t.Error("MAIL reached a server whose certificate did not verify")
	}
	// With the right -ca, no hint and delivered.
	r = runBin(t, "", nil, "send", "-server", srv.Addr, "-ca", caFile(t, srv), "-from", "app@example.com", "-to", "ann@example.org")
	wantCode(t, r, exitOK)
	if strings.Contains(r.stderr, "hint") {
		t.Errorf("a hint on success:\n%s", r.stderr)
	}
}

// tlsFirst listens on loopback and, on each connection, sends a TLS alert
// record at once and waits, as a TLS server on an implicit-TLS port that
// does not wait for the client would.
func tlsFirst(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write([]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46})
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, _ = c.Read(make([]byte, 1))
			}()
		}
	}()
	return l.Addr().String()
}

// The wrong TLS mode, both ways: a hint that names the other -tls, and
// for STARTTLS against a TLS port, at once.
func TestBinTLSModeHints(t *testing.T) {
	t.Parallel()
	t.Run("starttls against implicit TLS", func(t *testing.T) {
		t.Parallel()
		addr := tlsFirst(t)
		start := time.Now()
		r := runBin(t, "", nil, "send", "-server", addr, "-tls", "starttls", "-timeout", "50s",
			"-from", "app@example.com", "-to", "ann@example.org")
		if took := time.Since(start); took > 15*time.Second {
			t.Errorf("took %v", took)
		}
		wantCode(t, r, exitFail)
		if strings.Count(r.stderr, "try -tls implicit") != 1 {
			t.Errorf("want one hint to try -tls implicit:\n%s", r.stderr)
		}
	})
	t.Run("implicit against STARTTLS", func(t *testing.T) {
		t.Parallel()
		srv := mailsectest.NewServer(t, mailsectest.Config{})
		r := runBin(t, "", nil, "send", "-server", srv.Addr, "-tls", "implicit", "-ca", caFile(t, srv),
			"-from", "app@example.com", "-to", "ann@example.org")
		wantCode(t, r, exitFail)
		if strings.Count(r.stderr, "try -tls starttls") != 1 {
			t.Errorf("want one hint to try -tls starttls:\n%s", r.stderr)
		}
	})
}

// -tls none: to a development server on loopback only, never with
// credentials, with a warning, and recorded in the receipt.
func TestBinTLSNone(t *testing.T) {
	t.Parallel()
	// A server that offers no STARTTLS stands for Mailpit or MailHog.
	srv := mailsectest.NewServer(t, mailsectest.Config{WithholdStartTLS: true})
	_, port, _ := net.SplitHostPort(srv.Addr)
	t.Run("delivered with a warning", func(t *testing.T) {
		for _, server := range []string{srv.Addr, "localhost:" + port} {
			before := len(srv.Messages())
			r := runBin(t, "dev body\n", nil, "send", "-server", server, "-tls", "none", "-json",
				"-from", "app@example.com", "-to", "ann@example.org", "-subject", "dev", "-body", "-")
			wantCode(t, r, exitOK)
			if n := strings.Count(r.stderr, "warning: -tls none"); n != 1 {
				t.Errorf("%d warnings on stderr, want 1:\n%s", n, r.stderr)
			}
			if len(srv.Messages()) != before+1 {
				t.Fatalf("not delivered")
			}
			var rec mailsec.Receipt
			if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil {
				t.Fatal(err)
			}
			rr := rec.Recipients[0]
			if rr.Plan.Security.Level != mailsec.Plaintext {
				t.Errorf("receipt level %v, want plaintext", rr.Plan.Security.Level)
			}
			if rr.Connection == nil || rr.Connection.Verification != mailsec.NoTLS {
				t.Errorf("receipt connection %+v, want verification none", rr.Connection)
			}
			if !strings.Contains(r.stderr, "(no TLS, none)") {
				t.Errorf("progress line does not say no TLS:\n%s", r.stderr)
			}
		}
	})
	t.Run("refused", func(t *testing.T) {
		before := srv.Connections()
		for _, tc := range []struct {
			args []string
			env  map[string]string
			want string
		}{
			{[]string{"-server", "192.0.2.1:" + port}, nil, "loopback"},
			{[]string{"-server", "mail.example.com:" + port}, nil, "loopback"},
			{[]string{"-server", srv.Addr, "-user", "app"}, map[string]string{passwordEnv: "hunter2"}, "-user"},
			{[]string{"-server", srv.Addr, "-requiretls"}, nil, "-requiretls"},
			{[]string{"-server", srv.Addr, "-ca", caFile(t, srv)}, nil, "-ca"},
		} {
			args := append([]string{"send", "-tls", "none", "-from", "app@example.com", "-to", "ann@example.org"}, tc.args...)
			r := runBin(t, "", tc.env, args...)
			wantUsageError(t, r, "send", tc.want)
			if strings.Contains(r.stderr, "hunter2") {
				t.Error("the password is printed")
			}
		}
		if srv.Connections() != before {
			t.Error("a refused -tls none connected")
		}
	})
}

// Exit statuses of send: 75 when every failure is temporary, 1 when any
// is permanent.
func TestBinSendExitStatus(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{RcptReply: map[string]*mailsec.Reply{
		"busy@example.org": {Code: 451, EnhancedCode: mailsec.EnhancedCode{4, 3, 0}, Text: "try again later"},
		"full@example.org": {Code: 452, EnhancedCode: mailsec.EnhancedCode{4, 2, 2}, Text: "mailbox full"},
		"gone@example.org": {Code: 550, EnhancedCode: mailsec.EnhancedCode{5, 1, 1}, Text: "no such user"},
	}})
	ca := caFile(t, srv)
	for _, tc := range []struct {
		to   string
		want int
	}{
		{"ann@example.org", exitOK},
		{"busy@example.org,full@example.org,ann@example.org", exitTemp},
		{"busy@example.org,gone@example.org", exitFail},
		{"gone@example.org", exitFail},
	} {
		r := runBin(t, "", nil, "send", "-server", srv.Addr, "-ca", ca, "-from", "app@example.com", "-to", tc.to)
		if r.code != tc.want {
			t.Errorf("-to %s: exit status %d, want %d\n%s", tc.to, r.code, tc.want, r.stderr)
		}
	}
	// Nothing listens: a connection refused is temporary.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	r := runBin(t, "", nil, "send", "-server", closed, "-from", "app@example.com", "-to", "ann@example.org")
	wantCode(t, r, exitTemp)
}

func TestBinVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := runBin(t, "", nil, args...)
		wantCode(t, r, exitOK)
		l := lines(r.stdout)
		if len(l) != 1 || !strings.HasPrefix(l[0], "mailsec github.com/mailsec/mailsec ") ||
			!strings.Contains(l[0], "built with "+runtime.Version()) {
			t.Errorf("mailsec %s: %q", args[0], r.stdout)
		}
	}
}

// -h: a synopsis first, examples, then the flags grouped by purpose, and
// no flag left out of a group.
func TestBinHelpGrouped(t *testing.T) {
	t.Parallel()
	r := runBin(t, "", nil, "-h")
	wantCode(t, r, exitOK)
	if !strings.HasPrefix(r.stdout, "usage: mailsec <command>") || !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "version") {
		t.Errorf("mailsec -h:\n%s", r.stdout)
	}
	if n := len(lines(r.stdout)); n > 40 {
		t.Errorf("mailsec -h is %d lines long", n)
	}
	for _, tc := range []struct {
		args     []string
		headings []string
		flags    []string
	}{
		{[]string{"send", "-h"}, []string{"Examples:", "Server (submission", "Direct delivery", "Message:", "Protection", "Output and limits:", "Exit status:"},
			[]string{"-server HOST:PORT", "-mta-sts-cache DIR", "-subject TEXT", "-outer-subject TEXT"}},
		{[]string{"help", "check"}, []string{"Examples:", "Network and trust:", "What to check:", "Output and limits:", "Exit status:"},
			[]string{"-mx-port PORT", "-dkim-selector SELECTOR"}},
		{[]string{"queue", "-h"}, []string{"Examples:", "Server (submission", "Direct delivery", "Protection", "Exit status:"},
			[]string{"-tls implicit|starttls|none", "-mta-sts-cache DIR"}},
		{[]string{"dkim", "-h"}, []string{"Example:", "Exit status:"}, nil},
		{[]string{"bounce", "-h"}, []string{"Examples:", "Exit status"}, nil},
		{[]string{"version", "-h"}, []string{"Example:", "Exit status:"}, nil},
	} {
		r := runBin(t, "", nil, tc.args...)
		wantCode(t, r, exitOK)
		name := tc.args[0]
		if name == "help" {
			name = tc.args[1]
		}
		if !strings.HasPrefix(r.stdout, "usage: mailsec "+name) {
			t.Errorf("%v does not start with the synopsis", tc.args)
		}
		at := 0
		for _, h := range tc.headings {
			i := strings.Index(r.stdout[at:], h)
			if i < 0 {
				t.Errorf("%v: %q missing or out of order", tc.args, h)
				continue
			}
			at += i
		}
		for _, f := range tc.flags {
			if !strings.Contains(r.stdout, f) {
				t.Errorf("%v lacks %q", tc.args, f)
			}
		}
		if strings.Contains(r.stdout, "Other flags") {
			t.Errorf("%v: a flag in no group", tc.args)
		}
	}
	r = runBin(t, "", nil, "check", "-h")
	if syn, _, _ := strings.Cut(r.stdout, "\n\n"); !strings.Contains(syn, "-mx-port PORT") || !strings.Contains(syn, "-ca FILE") {
		t.Errorf("check's synopsis lacks -mx-port or -ca:\n%s", syn)
	}
}

// A DKIM key file others may read draws a warning, as ssh gives.
func TestBinDKIMKeyModeWarning(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ca := caFile(t, srv)
	key := filepath.Join(t.TempDir(), "k.pem")
	wantCode(t, runBin(t, "", nil, "dkim", "keygen", "-domain", "example.com", "-selector", "s1", "-algo", "ed25519", "-out", key), exitOK)
	send := func() result {
		return runBin(t, "", nil, "send", "-server", srv.Addr, "-ca", ca, "-dkim", "example.com:s1:"+key,
			"-from", "app@example.com", "-to", "ann@example.org")
	}
	r := send()
	wantCode(t, r, exitOK)
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("a warning for a 0600 key:\n%s", r.stderr)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	r = send()
	wantCode(t, r, exitOK)
	if n := strings.Count(r.stderr, "warning: the DKIM key "+key); n != 1 || !strings.Contains(r.stderr, "0644") || !strings.Contains(r.stderr, "chmod 600") {
		t.Errorf("want one warning naming the key, its mode and chmod 600:\n%s", r.stderr)
	}
}

// check exits 3, not 0, when the resolver does not answer, and reports no
// record it did not see.
func TestBinCheckResolverDown(t *testing.T) {
	t.Parallel()
	// A UDP and TCP port on loopback where nothing answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	for _, asJSON := range []bool{false, true} {
		args := []string{"check", "example.org", "-dns", dead, "-timeout", "20s"}
		if asJSON {
			args = append(args, "-json")
		}
		r := runBin(t, "", nil, args...)
		wantCode(t, r, exitCheck)
		if strings.Contains(r.stdout, "record found") || strings.Contains(r.stdout, "Verdict: no route") && !strings.Contains(r.stdout, "incomplete") {
			t.Errorf("reports what it did not see:\n%s", r.stdout)
		}
		if !strings.Contains(r.stderr, "could not check") {
			t.Errorf("stderr does not say the check could not run:\n%s", r.stderr)
		}
		if asJSON {
			var out struct {
				MTASTSRecord string      `json:"mta_sts_record"`
				Result       checkResult `json:"result"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
				t.Fatal(err)
			}
			if out.Result.Status != "incomplete" || out.Result.ExitStatus != exitCheck || len(out.Result.Reasons) == 0 {
				t.Errorf("result = %+v", out.Result)
			}
			if out.MTASTSRecord == "seen" {
				t.Errorf("mta_sts_record = seen")
			}
		} else if !strings.Contains(r.stdout, "Result:  incomplete (exit status 3)") {
			t.Errorf("no result line:\n%s", r.stdout)
		}
	}
}
