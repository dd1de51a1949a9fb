package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
)

type result struct {
	code           int
	stdout, stderr string
}

// runCmd runs the command line with the given standard input and
// environment.
func runCmd(t *testing.T, stdin string, environ map[string]string, args ...string) result {
	t.Helper()
	return runCtx(t, t.Context(), stdin, environ, args...)
}

func runCtx(t *testing.T, ctx context.Context, stdin string, environ map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string { return environ[k] }
	code := run(ctx, args, strings.NewReader(stdin), &stdout, &stderr, getenv)
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	t.Logf("mailsec %s\nexit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// received waits until the server's connections have ended and returns
// everything clients sent it, decrypted.
func received(t *testing.T, srv *mailsectest.Server) []byte {
	t.Helper()
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	return srv.Received()
}

// caFile writes the server's CA certificate for -ca.
func caFile(t *testing.T, srv *mailsectest.Server) string {
	return writeFile(t, "ca.pem", srv.CA.CertPEM())
}

// progressLines returns the per-recipient lines on standard error.
func progressLines(stderr string) []string {
	var out []string
	for line := range strings.Lines(stderr) {
		if strings.Contains(line, ": accepted") || strings.Contains(line, ": NOT delivered: ") {
			out = append(out, strings.TrimSuffix(line, "\n"))
		}
	}
	return out
}

func wantCode(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit status %d, want %d\nstderr:\n%s", r.code, code, r.stderr)
	}
}

// part is one leaf of a parsed message.
type part struct {
	mediaType string
	filename  string
	body      []byte
}

func parse(t *testing.T, data []byte) (message.Header, []part) {
	t.Helper()
	e, err := message.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parsing the message: %v", err)
	}
	header := e.Header
	var parts []part
	err = e.Walk(func(_ []int, p *message.Entity, err error) error {
		if err != nil {
			return err
		}
		mt, _, err := p.Header.ContentType()
		if err != nil {
			return err
		}
		if strings.HasPrefix(mt, "multipart/") {
			return nil
		}
		_, dp, _ := p.Header.ContentDisposition()
		b, err := io.ReadAll(p.Body)
		if err != nil {
			return err
		}
		parts = append(parts, part{mediaType: mt, filename: dp["filename"], body: b})
		return nil
	})
	if err != nil {
		t.Fatalf("walking the message: %v", err)
	}
	return header, parts
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// messageTo returns the one accepted message whose envelope is exactly rcpts.
func messageTo(t *testing.T, srv *mailsectest.Server, rcpts ...string) mailsectest.Message {
	t.Helper()
	for _, m := range srv.Messages() {
		if slices.Equal(m.To, rcpts) {
			return m
		}
	}
	t.Fatalf("no message for %v; have %v", rcpts, srv.Messages())
	return mailsectest.Message{}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSendFull(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   mailsectest.Config
		flags []string
		stdin bool // body from standard input
	}{
		{"starttls", mailsectest.Config{}, nil, false},
		{"starttls-explicit", mailsectest.Config{}, []string{"-tls", "starttls"}, true},
		{"implicit", mailsectest.Config{ImplicitTLS: true}, []string{"-tls", "implicit"}, false},
		{"implicit-stdin", mailsectest.Config{ImplicitTLS: true}, []string{"-tls", "implicit"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := mailsectest.NewServer(t, tc.cfg)
			text := "Hello Ann,\n\nthis is a test from " + tc.name + ".\n"
			html := "<p>Hello <b>Ann</b></p>\n"
			bin := randomBytes(t, 10000)
			notes := []byte("line one\nline two\n")
			bodyArg, stdin := writeFile(t, "body.txt", []byte(text)), ""
			if tc.stdin {
				bodyArg, stdin = "-", text
			}
			args := append([]string{"send",
				"-server", srv.Addr, "-ca", caFile(t, srv),
				"-from", "Mailsec Test <noreply@example.com>",
				"-to", "ann@example.org, Dan Example <dan@example.org>",
				"-cc", "carl@example.org",
				"-bcc", "bob@example.org,eve@example.org",
				"-subject", "Test message",
				"-body", bodyArg,
				"-html", writeFile(t, "page.html", []byte(html)),
				"-attach", writeFile(t, "data.bin", bin),
				"-attach", writeFile(t, "notes.txt", notes),
			}, tc.flags...)
			r := runCmd(t, stdin, nil, args...)
			wantCode(t, r, 0)
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
			lines := progressLines(r.stderr)
			if len(lines) != 5 {
				t.Fatalf("%d progress lines, want 5:\n%s", len(lines), r.stderr)
			}
			for i, rcpt := range []string{"ann@example.org", "dan@example.org", "carl@example.org", "bob@example.org", "eve@example.org"} {
				want := "mailsec: " + rcpt + ": accepted by 127.0.0.1 (TLS 1.3, webpki)"
				if !strings.HasPrefix(lines[i], want) {
					t.Errorf("progress line %d = %q, want prefix %q", i, lines[i], want)
				}
			}

			if n := len(srv.Messages()); n != 3 {
				t.Fatalf("%d messages, want 3 (To and Cc together, each Bcc alone)", n)
			}
			shared := messageTo(t, srv, "ann@example.org", "dan@example.org", "carl@example.org")
			bob := messageTo(t, srv, "bob@example.org")
			eve := messageTo(t, srv, "eve@example.org")
			for _, m := range []mailsectest.Message{shared, bob, eve} {
				if m.From != "noreply@example.com" {
					t.Errorf("MAIL FROM %q", m.From)
				}
				if m.TLS == nil || m.TLS.Version != tls.VersionTLS13 {
					t.Errorf("message to %v not over TLS 1.3", m.To)
				}
				for _, hidden := range []string{"bob@example.org", "eve@example.org"} {
					if bytes.Contains(m.Data, []byte(hidden)) {
						t.Errorf("Bcc recipient %s appears in the message to %v", hidden, m.To)
					}
				}
				if m.Header("Bcc") != "" {
					t.Errorf("message to %v has a Bcc header", m.To)
				}
				if !bytes.Equal(m.Data, shared.Data) {
					t.Errorf("message to %v differs from the message to To and Cc", m.To)
				}

				h, parts := parse(t, m.Data)
				if s, _ := h.Text("Subject"); s != "Test message" {
					t.Errorf("Subject %q", s)
				}
				if to := h.Get("To"); !strings.Contains(to, "ann@example.org") || !strings.Contains(to, "dan@example.org") {
					t.Errorf("To header %q", to)
				}
				if cc := h.Get("Cc"); !strings.Contains(cc, "carl@example.org") {
					t.Errorf("Cc header %q", cc)
				}
				want := []part{
					{"text/plain", "", []byte(crlf(text))},
					{"text/html", "", []byte(crlf(html))},
					{"application/octet-stream", "data.bin", bin},
					{"text/plain", "notes.txt", notes},
				}
				if len(parts) != len(want) {
					t.Fatalf("%d parts, want %d", len(parts), len(want))
				}
				for i, p := range parts {
					w := want[i]
					if p.mediaType != w.mediaType || p.filename != w.filename {
						t.Errorf("part %d is %s %q, want %s %q", i, p.mediaType, p.filename, w.mediaType, w.filename)
					}
					got := p.body
					if w.filename == "" {
						// Text bodies are sent with CRLF line endings.
						got = []byte(crlf(strings.ReplaceAll(string(got), "\r\n", "\n")))
					}
					if !bytes.Equal(got, w.body) {
						t.Errorf("part %d (%s %q): content differs: got %d bytes %q, want %d bytes",
							i, p.mediaType, p.filename, len(got), truncate(got), len(w.body))
					}
				}
			}
		})
	}
}

func truncate(b []byte) []byte {
	if len(b) > 60 {
		return b[:60]
	}
	return b
}

func TestSendJSON(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	r := runCmd(t, "", nil, "send", "-server", srv.Addr, "-ca", caFile(t, srv),
		"-from", "noreply@example.com", "-to", "ann@example.org", "-cc", "carl@example.org",
		"-bcc", "bob@example.org", "-subject", "JSON", "-body", "-", "-json")
	wantCode(t, r, 0)

	var rec mailsec.Receipt
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		t.Fatalf("stdout is not a receipt: %v", err)
	}
	if dec.More() {
		t.Errorf("more than one JSON value on stdout")
	}
	if len(rec.Recipients) != 3 {
		t.Fatalf("%d recipients in the receipt, want 3", len(rec.Recipients))
	}
	kinds := map[string]mailsec.RecipientKind{
		"ann@example.org": mailsec.KindTo, "carl@example.org": mailsec.KindCc, "bob@example.org": mailsec.KindBcc,
	}
	for _, rr := range rec.Recipients {
		if !rr.Accepted {
			t.Errorf("%s not accepted", rr.Address)
		}
		if rr.Kind != kinds[rr.Address] {
			t.Errorf("%s: kind %q, want %q", rr.Address, rr.Kind, kinds[rr.Address])
		}
		if rr.Connection == nil || rr.Connection.Verification != mailsec.VerifiedWebPKI {
			t.Errorf("%s: connection %+v, want verification webpki", rr.Address, rr.Connection)
		} else if rr.Connection.TLSVersion != "TLS 1.3" {
			t.Errorf("%s: TLS version %q", rr.Address, rr.Connection.TLSVersion)
		}
	}
	msgs := srv.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	if got := msgs[0].Header("Message-ID"); got != "<"+rec.MessageID+">" {
		t.Errorf("Message-ID header %q, receipt says %q", got, rec.MessageID)
	}
	// The generic form as well: what a script reading the output sees.
	var generic map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &generic); err != nil {
		t.Fatal(err)
	}
	first := generic["recipients"].([]any)[0].(map[string]any)
	if v := first["connection"].(map[string]any)["verification"]; v != "webpki" {
		t.Errorf("connection.verification = %v", v)
	}
	if first["accepted"] != true {
		t.Errorf("accepted = %v", first["accepted"])
	}
}

func TestSendAuth(t *testing.T) {
	t.Parallel()
	const password = "s3cret-Pa55-w0rd"
	srv := mailsectest.NewServer(t, mailsectest.Config{Users: map[string]string{"alice": password}})
	ca := caFile(t, srv)
	send := func(env map[string]string, extra ...string) result {
		t.Helper()
		args := append([]string{"send", "-server", srv.Addr, "-ca", ca,
			"-from", "alice@example.com", "-to", "ann@example.org", "-subject", "auth",
			"-body", "-", "-json"}, extra...)
		r := runCmd(t, "hello\n", env, args...)
		for _, out := range []string{r.stdout, r.stderr} {
			if strings.Contains(out, password) || strings.Contains(out, "wrong-"+password) {
				t.Errorf("a password appears in the output:\n%s", out)
			}
		}
		return r
	}

	t.Run("right password", func(t *testing.T) {
		r := send(map[string]string{passwordEnv: password}, "-user", "alice")
		wantCode(t, r, 0)
		msgs := srv.Messages()
		if len(msgs) != 1 || msgs[0].User != "alice" {
			t.Fatalf("messages %v, want one from user alice", msgs)
		}
		var rec mailsec.Receipt
		if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil {
			t.Fatal(err)
		}
		if c := rec.Recipients[0].Connection; c == nil || c.SASLMechanism == "" {
			t.Errorf("receipt records no SASL mechanism: %+v", c)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		before := len(srv.Messages())
		r := send(map[string]string{passwordEnv: "wrong-" + password}, "-user", "alice")
		wantCode(t, r, 1)
		if !strings.Contains(r.stderr, "authentication") {
			t.Errorf("stderr does not mention authentication:\n%s", r.stderr)
		}
		if lines := progressLines(r.stderr); len(lines) != 1 || !strings.Contains(lines[0], "ann@example.org: NOT delivered: ") {
			t.Errorf("progress lines %q", lines)
		}
		if n := len(srv.Messages()); n != before {
			t.Errorf("a message was accepted")
		}
	})
	t.Run("no password", func(t *testing.T) {
		r := send(nil, "-user", "alice")
		wantCode(t, r, 2)
		if !strings.Contains(r.stderr, passwordEnv) {
			t.Errorf("stderr does not name %s:\n%s", passwordEnv, r.stderr)
		}
	})
	t.Run("no user", func(t *testing.T) {
		// The password alone does not authenticate, and the server wants AUTH.
		r := send(map[string]string{passwordEnv: password})
		wantCode(t, r, 1)
	})
}

func TestSendRecipientRefused(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{RcptReply: map[string]*mailsec.Reply{
		"bad@example.org": {Code: 550, EnhancedCode: mailsec.EnhancedCode{5, 1, 1}, Text: "no such user"},
	}})
	r := runCmd(t, "", nil, "send", "-server", srv.Addr, "-ca", caFile(t, srv),
		"-from", "noreply@example.com", "-to", "ann@example.org,bad@example.org", "-cc", "carl@example.org",
		"-subject", "partial")
	wantCode(t, r, 1)
	if r.stdout != "" {
		t.Errorf("stdout = %q", r.stdout)
	}
	lines := progressLines(r.stderr)
	if len(lines) != 3 {
		t.Fatalf("%d progress lines, want 3", len(lines))
	}
	if !strings.HasPrefix(lines[0], "mailsec: ann@example.org: accepted by ") ||
		!strings.HasPrefix(lines[2], "mailsec: carl@example.org: accepted by ") {
		t.Errorf("accepted lines %q", lines)
	}
	if !strings.HasPrefix(lines[1], "mailsec: bad@example.org: NOT delivered: ") || !strings.Contains(lines[1], "550 5.1.1 no such user") {
		t.Errorf("refused line %q", lines[1])
	}
	if !strings.Contains(r.stderr, "1 of 3 recipients not delivered") {
		t.Errorf("stderr lacks the error returned by Send:\n%s", r.stderr)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || !slices.Equal(msgs[0].To, []string{"ann@example.org", "carl@example.org"}) {
		t.Errorf("messages %v, want one to ann and carl", msgs)
	}
}

func TestSendInsecureServer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cfg   mailsectest.Config
		noCA  bool
		extra []string
		want  string
	}{
		{"STARTTLS withheld", mailsectest.Config{WithholdStartTLS: true}, false, nil, "STARTTLS"},
		{"untrusted certificate", mailsectest.Config{}, true, nil, "certificate"},
		{"untrusted certificate implicit", mailsectest.Config{ImplicitTLS: true}, true, []string{"-tls", "implicit"}, "certificate"},
		{"plaintext on implicit port", mailsectest.Config{}, false, []string{"-tls", "implicit"}, "TLS"},
		{"REQUIRETLS not offered", mailsectest.Config{}, false, []string{"-requiretls"}, "REQUIRETLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := mailsectest.NewServer(t, tc.cfg)
			args := []string{"send", "-server", srv.Addr, "-from", "noreply@example.com",
				"-to", "ann@example.org", "-bcc", "bob@example.org", "-subject", "canary",
				"-body", "-"}
			if !tc.noCA {
				args = append(args, "-ca", caFile(t, srv))
			}
			const canary = "CANARY-7f3a9 must never cross the wire"
			r := runCmd(t, canary, nil, append(args, tc.extra...)...)
			wantCode(t, r, 1)
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr does not mention %q:\n%s", tc.want, r.stderr)
			}
			if len(progressLines(r.stderr)) != 2 {
				t.Errorf("want a progress line for each recipient")
			}
			if strings.Contains(r.stderr, ": accepted") {
				t.Errorf("a recipient reported accepted")
			}
			if n := srv.Transactions(); n != 0 {
				t.Errorf("%d MAIL commands reached the server", n)
			}
			if n := len(srv.Messages()); n != 0 {
				t.Errorf("%d messages delivered", n)
			}
			if bytes.Contains(received(t, srv), []byte("CANARY")) {
				t.Errorf("the body reached the server")
			}
		})
	}
}

func TestSendRequireTLS(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{RequireTLS: true})
	r := runCmd(t, "", nil, "send", "-server", srv.Addr, "-ca", caFile(t, srv),
		"-from", "noreply@example.com", "-to", "ann@example.org", "-subject", "rt", "-requiretls")
	wantCode(t, r, 0)
	msgs := srv.Messages()
	if len(msgs) != 1 || !msgs[0].RequireTLS {
		t.Fatalf("messages %v, want one sent with REQUIRETLS", msgs)
	}
}

// A message the library refuses before any I/O is exit 1, not a usage error.
func TestSendInvalidMessage(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ca := caFile(t, srv)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"bad from", []string{"-from", "not an address", "-to", "ann@example.org", "-subject", "x"}},
		{"bad to", []string{"-from", "noreply@example.com", "-to", "ann@@example.org", "-subject", "x"}},
		{"subject injection", []string{"-from", "noreply@example.com", "-to", "ann@example.org", "-subject", "x\r\nBcc: eve@example.org"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCmd(t, "", nil, append([]string{"send", "-server", srv.Addr, "-ca", ca}, tc.args...)...)
			wantCode(t, r, 1)
			if !strings.Contains(r.stderr, "mailsec: invalid ") {
				t.Errorf("stderr lacks the validation error:\n%s", r.stderr)
			}
			if strings.Contains(r.stderr, "\r") {
				t.Errorf("stderr echoes a raw CR")
			}
		})
	}
	if n := srv.Connections(); n != 0 {
		t.Errorf("%d connections for invalid messages", n)
	}
}

func TestSendCancelled(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r := runCtx(t, ctx, "", nil, "send", "-server", srv.Addr, "-ca", caFile(t, srv),
		"-from", "noreply@example.com", "-to", "ann@example.org", "-subject", "x")
	wantCode(t, r, 1)
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("%d messages delivered", n)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ca := caFile(t, srv)
	noCert := writeFile(t, "nocert.pem", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	missing := filepath.Join(t.TempDir(), "missing")
	base := func(extra ...string) []string {
		return append([]string{"send", "-server", srv.Addr, "-ca", ca, "-from", "noreply@example.com",
			"-to", "ann@example.org", "-subject", "x"}, extra...)
	}
	without := func(flag string) []string {
		args := base()
		i := slices.Index(args, flag)
		return slices.Delete(args, i, i+2)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // in stderr
	}{
		{"no command", nil, nil, "no command"},
		{"unknown command", []string{"frobnicate"}, nil, `unknown command "frobnicate"`},
		{"check without domain", []string{"check"}, nil, "a domain is required"},
		{"check two domains", []string{"check", "a.example", "b.example"}, nil, "unexpected argument"},
		{"check bad port", []string{"check", "a.example", "-mx-port", "70000"}, nil, "-mx-port"},
		{"check ca missing", []string{"check", "a.example", "-ca", missing}, nil, "-ca"},
		{"server and mx", base("-mx"), nil, "exclude each other"},
		{"dns without mx", base("-dns", "127.0.0.1:53"), nil, "go with -mx"},
		{"level without mx", base("-level", "may"), nil, "go with -mx"},
		{"mx with user", append(without("-server"), "-mx", "-user", "alice"), map[string]string{passwordEnv: "x"}, "not -mx"},
		{"mx bad level", append(without("-server"), "-mx", "-level", "pinned"), nil, "-level"},
		{"mx bad level name", append(without("-server"), "-mx", "-level", "sometimes"), nil, "-level"},
		{"flag before command", []string{"-server", srv.Addr, "send"}, nil, "flags go after the command"},
		{"help unknown", []string{"help", "frobnicate"}, nil, "unknown command"},
		{"unknown flag", base("-password", "hunter2"), nil, "-password"},
		{"stray argument", base("extra"), nil, "unexpected argument"},
		{"missing to", without("-to"), nil, "recipient"},
		{"missing server", without("-server"), nil, "-server or -mx"},
		{"missing from", without("-from"), nil, "-from"},
		{"server without port", append(without("-server"), "-server", "localhost"), nil, "HOST:PORT"},
		{"bad tls", base("-tls", "ssl"), nil, "-tls"},
		{"tls auto", base("-tls", "auto"), nil, "-tls"},
		{"user without password", base("-user", "alice"), nil, passwordEnv},
		{"user with empty password", base("-user", "alice"), map[string]string{passwordEnv: ""}, passwordEnv},
		{"ca missing", base("-ca", missing), nil, "-ca"},
		{"ca without certificate", base("-ca", noCert), nil, "no PEM certificate"},
		{"empty to item", base("-to", "ann@example.org,,bob@example.org"), nil, "empty address"},
		{"trailing comma", base("-to", "ann@example.org, "), nil, "empty address"},
		{"empty cc", base("-cc", ""), nil, "empty address"},
		{"empty bcc item", base("-bcc", " ,bob@example.org"), nil, "empty address"},
		{"body missing", base("-body", missing), nil, "-body"},
		{"html missing", base("-html", missing), nil, "-html"},
		{"html stdin", base("-html", "-"), nil, "-html"},
		{"attach missing", base("-attach", missing), nil, "-attach"},
		{"attach directory", base("-attach", t.TempDir()), nil, "directory"},
		{"zero timeout", base("-timeout", "0s"), nil, "-timeout"},
		{"bad timeout", base("-timeout", "soon"), nil, "-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCmd(t, "", tc.env, tc.args...)
			wantCode(t, r, 2)
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr does not mention %q:\n%s", tc.want, r.stderr)
			}
			if !strings.Contains(r.stderr, "usage: mailsec") && !strings.Contains(r.stderr, "run 'mailsec") {
				t.Errorf("stderr says nothing of where the usage is")
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q", r.stdout)
			}
			if strings.Contains(r.stderr, "hunter2") {
				t.Errorf("stderr echoes a password given as a flag")
			}
		})
	}
	if n := srv.Connections(); n != 0 {
		t.Errorf("%d connections after usage errors", n)
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		r := runCmd(t, "", nil, args...)
		wantCode(t, r, 0)
		for _, want := range []string{"usage: mailsec <command>", "send ", "check ", "version ", "Examples:"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("mailsec %s: stdout lacks %q", strings.Join(args, " "), want)
			}
		}
	}
	for _, args := range [][]string{{"help", "send"}, {"send", "-h"}, {"send", "-help"}} {
		r := runCmd(t, "", nil, args...)
		wantCode(t, r, 0)
		for _, want := range []string{"usage: mailsec send", "-server HOST:PORT", "-attach FILE", passwordEnv, "Exit status"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("mailsec %s: stdout lacks %q", strings.Join(args, " "), want)
			}
		}
		if r.stderr != "" {
			t.Errorf("mailsec %s: stderr = %q", strings.Join(args, " "), r.stderr)
		}
	}
}

func TestSplitAddrs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"a@example.org", []string{"a@example.org"}},
		{" a@example.org ,b@example.org", []string{"a@example.org", "b@example.org"}},
		{`"Doe, Jane" <jane@example.org>, b@example.org`, []string{`"Doe, Jane" <jane@example.org>`, "b@example.org"}},
		{`"a \", b" <a@example.org>,c@example.org`, []string{`"a \", b" <a@example.org>`, "c@example.org"}},
		{"", nil},
		{"a@example.org,", nil},
		{" , ", nil},
	} {
		got, err := splitAddrs(tc.in)
		if tc.want == nil {
			if err == nil {
				t.Errorf("splitAddrs(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("splitAddrs(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestProgressLinePrintable(t *testing.T) {
	line := progressLine(mailsec.RecipientReceipt{
		Address: "ann@example.org",
		Err:     &mailsec.RecipientError{Recipient: "ann@example.org", Err: &mailsec.SMTPError{Host: "h", Command: "RCPT", Code: 550, Message: "no\x1b[2Jsuch\x07user"}},
	})
	want := "mailsec: ann@example.org: NOT delivered: h: RCPT: 550 no?[2Jsuch?user"
	if line != want {
		t.Errorf("progressLine = %q, want %q", line, want)
	}
}

func TestProgressLineAccepted(t *testing.T) {
	for _, tc := range []struct {
		rr   mailsec.RecipientReceipt
		want string
	}{
		{mailsec.RecipientReceipt{Address: "ann@example.org", Accepted: true, QueueID: "4ABC",
			Connection: &mailsec.ConnectionState{Host: "localhost", TLSVersion: "TLS 1.3", Verification: mailsec.VerifiedWebPKI}},
			"mailsec: ann@example.org: accepted by localhost (TLS 1.3, webpki) queue id 4ABC"},
		{mailsec.RecipientReceipt{Address: "bob@example.org", Accepted: true,
			Connection: &mailsec.ConnectionState{Host: "smtp.example.com", TLSVersion: "TLS 1.2", Verification: mailsec.VerifiedPin}},
			"mailsec: bob@example.org: accepted by smtp.example.com (TLS 1.2, pinned-spki)"},
		{mailsec.RecipientReceipt{Address: "dev@example.org", Accepted: true,
			Connection: &mailsec.ConnectionState{Host: "127.0.0.1", Verification: mailsec.NoTLS}},
			"mailsec: dev@example.org: accepted by 127.0.0.1 (no TLS, none)"},
	} {
		if got := progressLine(tc.rr); got != tc.want {
			t.Errorf("progressLine = %q, want %q", got, tc.want)
		}
	}
}
