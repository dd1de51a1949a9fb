package transport_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdg-go/scram"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/transport"
)

// Secrets in errors, logs and Receipts (DESIGN.md, invariant 7): every
// way an AUTH exchange can fail is driven through the public API (a
// Submission under a Sender, both with loggers) against a scripted server,
// and no form of a credential may appear in the error (%v and %+v), in any
// log record or in the Receipt's JSON. The servers echo what the client
// sent them, in every encoding they can, wherever a reply can carry text.

const (
	leakUser     = "alice"
	leakPassword = "Pw-7f3a9c2e-not-for-logs"
	leakToken    = "ya29.Tok-5d1e88b0-not-for-logs"
)

// auth exchanges the client may run, by mechanism.
var leakMechanisms = []string{transport.MechSCRAMSHA256PLUS, transport.MechSCRAMSHA256, transport.MechCRAMMD5, transport.MechPlain, transport.MechLogin, transport.MechXOAUTH2}

// authScript runs the server's side of one AUTH exchange on a fake. It
// records every response the client sends.
type authScript struct {
	mu   sync.Mutex
	sent []string // the client's responses, base64 as sent, and decoded
}

func (a *authScript) record(line string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sent = append(a.sent, line)
	if dec, err := base64.StdEncoding.DecodeString(line); err == nil {
		a.sent = append(a.sent, string(dec))
	}
}

func (a *authScript) responses() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.sent...)
}

// echo is everything the client sent, and the credentials, in the forms a
// server might quote them: raw, base64 (padded and not), hex, quoted.
func (a *authScript) echo() string {
	var parts []string
	for _, s := range append(a.responses(), leakPassword, leakToken) {
		parts = append(parts, s, `"`+s+`"`, base64.StdEncoding.EncodeToString([]byte(s)),
			base64.RawStdEncoding.EncodeToString([]byte(s)), hex.EncodeToString([]byte(s)))
	}
	return strings.ReplaceAll(strings.Join(parts, " "), "\x00", "^@")
}

// exchange answers an AUTH command line as a server for mech would, up to
// (not including) its final reply, and reports whether the client got that
// far. The SCRAM side ends after the client's final message.
func (a *authScript) exchange(c *fakeConn) bool {
	f := strings.Fields(c.line)
	if len(f) < 2 {
		return false
	}
	mech := strings.ToUpper(f[1])
	var ir string
	if len(f) > 2 {
		ir = f[2]
		a.record(ir)
	}
	next := func(challenge string) (string, bool) {
		c.w("334 " + base64.StdEncoding.EncodeToString([]byte(challenge)) + "\r\n")
		l, err := c.readLine()
		if err != nil {
			return "", false
		}
		a.record(l)
		return l, true
	}
	switch mech {
	case transport.MechPlain:
		return ir != ""
	case transport.MechXOAUTH2:
		_, ok := next(`{"status":"401","schemes":"bearer"}`)
		return ok
	case transport.MechLogin:
		if _, ok := next("Username:"); !ok {
			return false
		}
		_, ok := next("Password:")
		return ok
	case transport.MechCRAMMD5:
		_, ok := next("<1896.697170952@fake.example>")
		return ok
	case transport.MechSCRAMSHA256, transport.MechSCRAMSHA256PLUS:
		srv, err := scramServer()
		if err != nil {
			return false
		}
		conv := srv.NewConversation()
		if mech == transport.MechSCRAMSHA256PLUS {
			cs := c.tlsState()
			cb, err := scram.NewTLSExporterBinding(&cs)
			if err != nil {
				return false
			}
			conv = srv.NewConversationWithChannelBinding(cb)
		}
		first, err := base64.StdEncoding.DecodeString(ir)
		if err != nil {
			return false
		}
		serverFirst, err := conv.Step(string(first))
		if err != nil {
			return false
		}
		_, ok := next(serverFirst)
		return ok
	}
	return false
}

func scramServer() (*scram.Server, error) {
	return scram.SHA256.NewServer(func(name string) (scram.StoredCredentials, error) {
		c, err := scram.SHA256.NewClient(name, leakPassword, "")
		if err != nil {
			return scram.StoredCredentials{}, err
		}
		return c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: "0123456789abcdef", Iters: 4096})
	})
}

// leakCase is one way AUTH fails.
type leakCase struct {
	name string
	mech string // the one mechanism offered and allowed; "" for the case's own setup
	// setup changes the fake's options and the transport before the send.
	setup func(o *fakeOpts, tr *transport.Submission, s *authScript)
	// final answers the exchange once the client's responses are in
	// (nil: the case's hook does everything).
	final func(c *fakeConn, s *authScript)
	// security is the requirement (zero: Verified).
	security mailsec.Security
	// network reports a failure that is not an AuthError.
	network bool
	// want is what the error must say: the path the case is about.
	want string
}

func leakCases() []leakCase {
	var cases []leakCase
	add := func(name, want string, final func(c *fakeConn, s *authScript), network bool) {
		for _, m := range leakMechanisms {
			cases = append(cases, leakCase{name: name + "/" + m, mech: m, final: final, network: network, want: want})
		}
	}
	add("rejection", "credentials invalid: 535 5.7.8", func(c *fakeConn, s *authScript) {
		c.w("535 5.7.8 Authentication credentials invalid\r\n")
	}, false)
	add("echo in a 5xx", "credentials invalid: 535 5.7.8", func(c *fakeConn, s *authScript) {
		c.w("535 5.7.8 AUTH failed for " + s.echo() + "\r\n")
	}, false)
	add("echo in a multi-line 5xx", "could not parse the exchange: 500 5.5.2", func(c *fakeConn, s *authScript) {
		for _, part := range strings.Fields(s.echo()) {
			c.w("500-5.5.2 Error: bad syntax: " + part + "\r\n")
		}
		c.w("500 5.5.2 " + leakPassword + "\r\n")
	}, false)
	add("echo in a 4xx", "temporary authentication failure: 454 4.7.0", func(c *fakeConn, s *authScript) {
		c.w("454 4.7.0 Temporary authentication failure; you sent " + s.echo() + "\r\n")
	}, false)
	add("echo in a challenge", "", func(c *fakeConn, s *authScript) {
		c.w("334 " + base64.StdEncoding.EncodeToString([]byte("you sent: "+s.echo())) + "\r\n")
		if l, err := c.readLine(); err == nil {
			s.record(l)
		}
		c.w("535 5.7.8 " + s.echo() + "\r\n")
	}, false)
	add("echo in a challenge that is not base64", "not base64", func(c *fakeConn, s *authScript) {
		c.w("334 " + s.echo() + "\r\n")
		if l, err := c.readLine(); err == nil {
			s.record(l)
		}
		c.w("535 5.7.8 " + s.echo() + "\r\n")
	}, false)
	add("network failure mid-AUTH", "AUTH: unexpected EOF", func(c *fakeConn, s *authScript) {
		c.w("535 5.7.8 " + s.echo()) // no line end: the connection drops first
		c.hangup()
	}, true)
	add("malformed reply", "malformed SMTP reply", func(c *fakeConn, s *authScript) {
		c.w("5x5 " + s.echo() + "\r\n")
	}, true)
	add("second reply", "no command asked for", func(c *fakeConn, s *authScript) {
		c.w("535 5.7.8 rejected\r\n535 5.7.8 " + s.echo() + "\r\n")
	}, true)

	// SCRAM: the server does not prove it knows the password, or says why
	// not in its own words (which xdg-go/scram quotes in its error).
	scramFinal := func(serverFinal func(s *authScript) string) func(c *fakeConn, s *authScript) {
		return func(c *fakeConn, s *authScript) {
			c.w("334 " + base64.StdEncoding.EncodeToString([]byte(serverFinal(s))) + "\r\n")
			if l, err := c.readLine(); err == nil {
				s.record(l)
			}
			c.w("235 2.7.0 " + s.echo() + "\r\n")
		}
	}
	for _, m := range []string{transport.MechSCRAMSHA256, transport.MechSCRAMSHA256PLUS} {
		cases = append(cases,
			leakCase{name: "SCRAM server signature wrong/" + m, mech: m, want: "SCRAM messages did not verify", final: scramFinal(func(*authScript) string {
				return "v=" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
			})},
			leakCase{name: "SCRAM server error echoes/" + m, mech: m, want: "SCRAM messages did not verify", final: scramFinal(func(s *authScript) string {
				return "e=" + leakPassword + " " + base64.StdEncoding.EncodeToString([]byte(leakPassword))
			})},
			leakCase{name: "SCRAM success without a server signature/" + m, mech: m, want: "did not prove", final: func(c *fakeConn, s *authScript) {
				c.w("235 2.7.0 " + s.echo() + "\r\n")
			}},
		)
	}

	// Before any exchange.
	cases = append(cases,
		leakCase{name: "no acceptable mechanism", want: "no acceptable mechanism: the server offers LOGIN and 4 unknown", setup: func(o *fakeOpts, tr *transport.Submission, s *authScript) {
			// The server's list echoes credentials a client once sent it.
			plain := base64.StdEncoding.EncodeToString([]byte("\x00" + leakUser + "\x00" + leakPassword))
			o.postTLSExt = []string{"AUTH LOGIN " + plain + " " + leakPassword + " " + base64.RawStdEncoding.EncodeToString([]byte(leakPassword)) + " " + leakToken}
			tr.Auth.Mechanisms = []string{transport.MechSCRAMSHA256}
		}},
		leakCase{name: "session not verified", want: "not verified", security: mailsec.Security{Level: mailsec.Unverified}, setup: func(o *fakeOpts, tr *transport.Submission, s *authScript) {
			o.postTLSExt = []string{"AUTH PLAIN LOGIN"}
		}},
		leakCase{name: "malformed token", want: "malformed token", setup: func(o *fakeOpts, tr *transport.Submission, s *authScript) {
			o.postTLSExt = []string{"AUTH XOAUTH2"}
			tr.Auth.Token = func(context.Context) (string, error) { return leakToken + "\r\nMAIL FROM:<x@example.com>", nil }
		}},
		leakCase{name: "token source error", want: "token source failed: refresh failed", setup: func(o *fakeOpts, tr *transport.Submission, s *authScript) {
			o.postTLSExt = []string{"AUTH XOAUTH2"}
			tr.Auth.Token = func(context.Context) (string, error) { return leakToken, errors.New("refresh failed") }
		}},
		leakCase{name: "no AUTH after TLS", want: "AUTH only before TLS", setup: func(o *fakeOpts, tr *transport.Submission, s *authScript) {
			o.preTLSExt = []string{"STARTTLS", "AUTH PLAIN " + leakPassword}
			o.postTLSExt = []string{"8BITMIME"}
		}},
		leakCase{name: "password SASLprep refuses", want: "SASLprep", setup: func(o *fakeOpts, tr *transport.Submission, s *authScript) {
			o.postTLSExt = []string{"AUTH SCRAM-SHA-256"}
			tr.Auth.Password = leakPassword + "\u0007"
			tr.Auth.Mechanisms = []string{transport.MechSCRAMSHA256}
		}},
	)
	return cases
}

func TestAuthFailuresRevealNoSecret(t *testing.T) {
	for _, tc := range leakCases() {
		t.Run(tc.name, func(t *testing.T) {
			script := &authScript{}
			o := fakeOpts{preTLSExt: []string{"STARTTLS"}}
			if tc.mech != "" {
				o.postTLSExt = []string{"AUTH " + tc.mech}
			}
			final := tc.final
			o.hook = func(verb string, c *fakeConn) bool {
				if verb != "AUTH" || final == nil {
					return false
				}
				if script.exchange(c) {
					final(c, script)
				}
				return true
			}
			auth := &transport.Auth{Username: leakUser, Password: leakPassword}
			if tc.mech != "" {
				auth.Mechanisms = []string{tc.mech}
			}
			if tc.mech == transport.MechXOAUTH2 {
				auth.Password = leakPassword // ignored with a Token, but must not leak either
				auth.Token = func(context.Context) (string, error) { return leakToken, nil }
			}
			tr := &transport.Submission{Auth: auth}
			if tc.setup != nil {
				tc.setup(&o, tr, script)
			}
			f := newFake(t, o)
			base := fakeTransport(f, transport.StartTLS)
			base.Auth = tr.Auth
			out := sendCapturing(t, base, tc.security)

			if out.err == nil {
				t.Fatal("delivered")
			}
			var ae *mailsec.AuthError
			var ne *mailsec.NetworkError
			if tc.network {
				if !errors.As(out.err, &ne) {
					t.Fatalf("error %v is not a NetworkError", out.err)
				}
			} else if !errors.As(out.err, &ae) || !errors.Is(out.err, mailsec.ErrAuth) {
				t.Fatalf("error %v is not an AuthError", out.err)
			}
			if !strings.Contains(out.err.Error(), tc.want) {
				t.Fatalf("error %v does not say %q: not the path this case is about", out.err, tc.want)
			}
			if f.transactions() != 0 {
				t.Fatal("MAIL sent after a failed AUTH")
			}
			forms := secretForms(script.responses())
			for name, text := range out.texts() {
				for _, form := range forms {
					// Case aside: a server's list of mechanisms, say, is
					// upper-cased on the way.
					if strings.Contains(strings.ToLower(text), strings.ToLower(form)) {
						t.Errorf("%s reveals %q:\n%s", name, form, text)
					}
				}
			}
		})
	}
}

// TestAuthReplyCodesKept: what an AUTH failure keeps of the server's
// reply is its codes, which say what to do.
func TestAuthReplyCodesKept(t *testing.T) {
	for _, tc := range []struct {
		reply     string
		code      int
		ec        mailsec.EnhancedCode
		temporary bool
		reason    string
	}{
		{"535 5.7.8 Authentication credentials invalid", 535, mailsec.EnhancedCode{5, 7, 8}, false, "credentials invalid"},
		{"454 4.7.0 Temporary authentication failure", 454, mailsec.EnhancedCode{4, 7, 0}, true, "temporary"},
		{"534 5.7.9 Authentication mechanism is too weak", 534, mailsec.EnhancedCode{5, 7, 9}, false, "too weak"},
	} {
		script := &authScript{}
		f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, postTLSExt: []string{"AUTH PLAIN"}, hook: func(verb string, c *fakeConn) bool {
			if verb != "AUTH" {
				return false
			}
			if script.exchange(c) {
				c.w(tc.reply + "\r\n")
			}
			return true
		}})
		tr := fakeTransport(f, transport.StartTLS)
		d, _ := canaryDelivery(t)
		_, err := deliver(t, tr, d)
		var ae *mailsec.AuthError
		var se *mailsec.SMTPError
		if !errors.As(err, &ae) || !errors.As(err, &se) || se.Code != tc.code || se.EnhancedCode != tc.ec || se.Message != "" ||
			mailsec.IsTemporary(err) != tc.temporary || !strings.Contains(ae.Reason, tc.reason) || ae.Mechanism != transport.MechPlain {
			t.Errorf("%s: error %v", tc.reply, err)
		}
	}
}

// secretForms lists what must not appear: the credentials raw, in base64
// (padded, unpadded, and as part of the PLAIN, LOGIN and XOAUTH2
// responses), in hex, and every response the client sent, as sent and
// decoded.
func secretForms(sent []string) []string {
	forms := []string{leakPassword, leakToken}
	for _, s := range []string{
		leakPassword,
		leakToken,
		"\x00" + leakUser + "\x00" + leakPassword,                        // PLAIN
		"user=" + leakUser + "\x01auth=Bearer " + leakToken + "\x01\x01", // XOAUTH2
	} {
		forms = append(forms, base64.StdEncoding.EncodeToString([]byte(s)),
			strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(s)), "="), hex.EncodeToString([]byte(s)))
	}
	for _, s := range sent {
		if len(s) >= 8 { // an empty response or a user name is no secret
			forms = append(forms, s)
		}
	}
	return forms
}

// captured is everything a Send leaves behind for people to read.
type captured struct {
	err          error
	receipt      []byte
	senderLog    bytes.Buffer
	transportLog bytes.Buffer
}

func (c *captured) texts() map[string]string {
	return map[string]string{
		"error (%v)":    fmt.Sprintf("%v", c.err),
		"error (%+v)":   fmt.Sprintf("%+v", c.err),
		"Sender log":    c.senderLog.String(),
		"transport log": c.transportLog.String(),
		"Receipt":       string(c.receipt),
	}
}

// sendCapturing sends one message through a Sender over tr, with debug
// loggers on both, and captures the error, the logs and the Receipt.
func sendCapturing(t *testing.T, tr *transport.Submission, sec mailsec.Security) *captured {
	t.Helper()
	c := &captured{}
	debug := &slog.HandlerOptions{Level: slog.LevelDebug}
	tr.Logger = slog.New(slog.NewJSONHandler(&c.transportLog, debug))
	t.Cleanup(func() { tr.Close() })
	policy := mailsec.DefaultPolicy()
	if sec.Level != 0 || len(sec.Pins) > 0 {
		policy = mailsec.WithSecurity(policy, sec)
	}
	s, err := mailsec.NewSender(tr, &mailsec.Options{Policy: policy, Logger: slog.New(slog.NewJSONHandler(&c.senderLog, debug))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b [6]byte
	_, _ = rand.Read(b[:])
	rec, err := s.Send(ctx, &mailsec.Message{From: "app@example.com", To: []string{"rcpt@example.org"},
		Subject: "auth " + hex.EncodeToString(b[:]), Text: "body"})
	c.err = err
	if c.receipt, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	return c
}

// The CRAM-MD5 response the client sends is an HMAC of the challenge; the
// script's challenge is fixed, so the test can tell it is the password's.
func TestCRAMResponseIsThePasswords(t *testing.T) {
	m := hmac.New(md5.New, []byte(leakPassword))
	m.Write([]byte("<1896.697170952@fake.example>"))
	want := leakUser + " " + hex.EncodeToString(m.Sum(nil))
	script := &authScript{}
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, postTLSExt: []string{"AUTH CRAM-MD5"}, hook: func(verb string, c *fakeConn) bool {
		if verb != "AUTH" {
			return false
		}
		if script.exchange(c) {
			c.w("535 5.7.8 no\r\n")
		}
		return true
	}})
	tr := fakeTransport(f, transport.StartTLS)
	tr.Auth = &transport.Auth{Username: leakUser, Password: leakPassword}
	d, _ := canaryDelivery(t)
	_, _ = deliver(t, tr, d)
	if got := script.responses(); len(got) != 2 || got[1] != want {
		t.Fatalf("responses %q, want the decoded %q among them", got, want)
	}
}
