package postfixtest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	testUser     = "alice"
	testPassword = "correct horse battery staple"
)

// client is a minimal SMTP client for the self-test.
type client struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

// dial connects to addr (over TLS when tlsConf is not nil) and reads the
// 220 greeting. The connection is closed on cleanup.
func dial(t *testing.T, addr string, tlsConf *tls.Config) *client {
	t.Helper()
	var conn net.Conn
	var err error
	d := &net.Dialer{Timeout: 5 * time.Second}
	if tlsConf != nil {
		conn, err = tls.DialWithDialer(d, "tcp", addr, tlsConf)
	} else {
		conn, err = d.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &client{t: t, conn: conn, tp: textproto.NewConn(conn)}
	t.Cleanup(func() { c.conn.Close() })
	c.expect(220)
	return c
}

// cmd sends a command and returns the reply code and text. Reply lines are
// joined with "\n".
func (c *client) cmd(format string, args ...any) (int, string) {
	c.t.Helper()
	if err := c.tp.PrintfLine(format, args...); err != nil {
		c.t.Fatalf("sending %q: %v", fmt.Sprintf(format, args...), err)
	}
	return c.read()
}

// read reads one (possibly multi-line) reply.
func (c *client) read() (int, string) {
	c.t.Helper()
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil && code == 0 {
		c.t.Fatalf("reading reply: %v", err)
	}
	return code, msg
}

// expect reads a reply and fails unless it has the wanted code.
func (c *client) expect(want int) string {
	c.t.Helper()
	code, msg := c.read()
	if code != want {
		c.t.Fatalf("got reply %d %q, want %d", code, msg, want)
	}
	return msg
}

// must sends a command and fails unless the reply has the wanted code.
func (c *client) must(want int, format string, args ...any) string {
	c.t.Helper()
	code, msg := c.cmd(format, args...)
	if code != want {
		c.t.Fatalf("%q: got reply %d %q, want %d", fmt.Sprintf(format, args...), code, msg, want)
	}
	return msg
}

// ehlo returns the EHLO keywords (upper case) and their parameters.
func (c *client) ehlo() map[string]string {
	c.t.Helper()
	msg := c.must(250, "EHLO client.example")
	ext := map[string]string{}
	for _, line := range strings.Split(msg, "\n")[1:] {
		k, v, _ := strings.Cut(line, " ")
		ext[strings.ToUpper(k)] = v
	}
	return ext
}

// startTLS issues STARTTLS and switches the connection to TLS.
func (c *client) startTLS(conf *tls.Config) {
	c.t.Helper()
	c.must(220, "STARTTLS")
	tc := tls.Client(c.conn, conf)
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.tp = textproto.NewConn(tc)
}

// b64 returns s in standard base64.
func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// unb64 decodes standard base64 and fails the test on malformed input.
func unb64(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("bad base64 %q: %v", s, err)
	}
	return string(b)
}

// authPlain returns the final reply code of AUTH PLAIN.
func (c *client) authPlain(user, pass string) int {
	c.t.Helper()
	code, _ := c.cmd("AUTH PLAIN %s", b64("\x00"+user+"\x00"+pass))
	return code
}

// authLogin returns the final reply code of AUTH LOGIN.
func (c *client) authLogin(user, pass string) int {
	c.t.Helper()
	if msg := c.must(334, "AUTH LOGIN"); unb64(c.t, msg) != "Username:" {
		c.t.Fatalf("AUTH LOGIN username prompt %q", unb64(c.t, msg))
	}
	c.must(334, "%s", b64(user))
	code, _ := c.cmd("%s", b64(pass))
	return code
}

// authCRAMMD5 returns the final reply code of AUTH CRAM-MD5 (RFC 2195).
func (c *client) authCRAMMD5(user, pass string) int {
	c.t.Helper()
	challenge := unb64(c.t, c.must(334, "AUTH CRAM-MD5"))
	mac := hmac.New(md5.New, []byte(pass))
	mac.Write([]byte(challenge))
	code, _ := c.cmd("%s", b64(user+" "+hex.EncodeToString(mac.Sum(nil))))
	return code
}

// authSCRAMSHA256 runs SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel
// binding and verifies the server signature.
func (c *client) authSCRAMSHA256(user, pass string) int {
	c.t.Helper()
	nonceBytes := make([]byte, 18)
	rand.Read(nonceBytes)
	cnonce := base64.RawStdEncoding.EncodeToString(nonceBytes)
	gs2 := "n,,"
	clientFirstBare := "n=" + user + ",r=" + cnonce
	code, msg := c.cmd("AUTH SCRAM-SHA-256 %s", b64(gs2+clientFirstBare))
	if code != 334 {
		return code
	}
	serverFirst := unb64(c.t, msg)
	attrs := map[string]string{}
	for _, kv := range strings.Split(serverFirst, ",") {
		k, v, _ := strings.Cut(kv, "=")
		attrs[k] = v
	}
	if !strings.HasPrefix(attrs["r"], cnonce) {
		c.t.Fatalf("SCRAM server nonce %q does not extend client nonce %q", attrs["r"], cnonce)
	}
	salt, err := base64.StdEncoding.DecodeString(attrs["s"])
	if err != nil {
		c.t.Fatalf("SCRAM salt: %v", err)
	}
	iter, err := strconv.Atoi(attrs["i"])
	if err != nil {
		c.t.Fatalf("SCRAM iteration count: %v", err)
	}
	salted, err := pbkdf2.Key(sha256.New, pass, salt, iter, sha256.Size)
	if err != nil {
		c.t.Fatal(err)
	}
	hm := func(key []byte, s string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(s))
		return m.Sum(nil)
	}
	clientKey := hm(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	finalNoProof := "c=" + b64(gs2) + ",r=" + attrs["r"]
	authMessage := clientFirstBare + "," + serverFirst + "," + finalNoProof
	sig := hm(storedKey[:], authMessage)
	proof := make([]byte, len(clientKey))
	for i := range proof {
		proof[i] = clientKey[i] ^ sig[i]
	}
	code, msg = c.cmd("%s", b64(finalNoProof+",p="+base64.StdEncoding.EncodeToString(proof)))
	if code != 334 && code != 235 {
		return code
	}
	if code == 235 {
		c.t.Fatalf("SCRAM: server skipped its server-final-message")
	}
	// The server proves it knows the password too (mutual authentication).
	want := "v=" + base64.StdEncoding.EncodeToString(hm(hm(salted, "Server Key"), authMessage))
	if got := unb64(c.t, msg); got != want {
		c.t.Fatalf("SCRAM server-final-message %q, want %q", got, want)
	}
	code, _ = c.cmd("")
	return code
}

// send runs a mail transaction and fails unless the message is accepted.
func (c *client) send(from, to, body string) {
	c.t.Helper()
	c.must(250, "MAIL FROM:<%s>", from)
	c.must(250, "RCPT TO:<%s>", to)
	c.must(354, "DATA")
	w := c.tp.DotWriter()
	if _, err := w.Write([]byte(body)); err != nil {
		c.t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		c.t.Fatal(err)
	}
	c.expect(250)
}

// startTestInstance starts an instance with a fresh certificate and returns
// it with a TLS client configuration that trusts only that certificate.
func startTestInstance(t *testing.T) (*Instance, *tls.Config) {
	begin := time.Now()
	inst := Start(t, Config{
		Domain:    "example.test",
		Mailboxes: []string{"alice", "bob"},
		Users:     map[string]string{testUser: testPassword, "carol": "other-password"},
	})
	t.Logf("instance in %s started in %v: submission %s, submissions %s",
		inst.Dir, time.Since(begin).Round(time.Millisecond), inst.SubmissionAddr, inst.SubmissionsAddr)
	return inst, &tls.Config{ServerName: inst.Hostname, RootCAs: inst.RootCAs(), MinVersion: tls.VersionTLS12}
}

// TestInstance checks the submission and submissions services of one
// instance: TLS and AUTH policy, all SASL mechanisms, delivery and the
// recipient restrictions.
func TestInstance(t *testing.T) {
	t.Parallel()
	inst, tlsConf := startTestInstance(t)
	if inst.Hostname != "localhost" || inst.Domain != "example.test" {
		t.Fatalf("Hostname %q, Domain %q", inst.Hostname, inst.Domain)
	}

	t.Run("SubmissionBeforeSTARTTLS", func(t *testing.T) {
		c := dial(t, inst.SubmissionAddr, nil)
		ext := c.ehlo()
		if _, ok := ext["STARTTLS"]; !ok {
			t.Errorf("STARTTLS not offered: %v", ext)
		}
		if auth, ok := ext["AUTH"]; ok {
			t.Errorf("AUTH %q offered before STARTTLS", auth)
		}
		if _, ok := ext["SMTPUTF8"]; !ok {
			t.Errorf("SMTPUTF8 not offered: %v", ext)
		}
		if code, msg := c.cmd("MAIL FROM:<%s@%s>", testUser, inst.Domain); code != 530 {
			t.Errorf("MAIL FROM before STARTTLS: %d %q, want 530", code, msg)
		}
		if code, msg := c.cmd("AUTH PLAIN %s", b64("\x00"+testUser+"\x00"+testPassword)); code/100 != 5 {
			t.Errorf("AUTH before STARTTLS: %d %q, want 5xx", code, msg)
		}
		c.must(221, "QUIT")
	})

	t.Run("AuthAndDeliver", func(t *testing.T) {
		c := dial(t, inst.SubmissionAddr, nil)
		c.ehlo()
		c.startTLS(tlsConf)
		ext := c.ehlo()
		mechs := strings.Fields(ext["AUTH"])
		for _, want := range []string{"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"} {
			if !slices.Contains(mechs, want) {
				t.Errorf("AUTH mechanisms %v lack %s", mechs, want)
			}
		}
		if ext["SIZE"] != strconv.Itoa(messageSizeLimit) {
			t.Errorf("SIZE %q, want %d", ext["SIZE"], messageSizeLimit)
		}
		if _, ok := ext["SMTPUTF8"]; !ok {
			t.Errorf("SMTPUTF8 not offered after STARTTLS: %v", ext)
		}
		if code := c.authPlain(testUser, testPassword); code != 235 {
			t.Fatalf("AUTH PLAIN: %d, want 235\n%s", code, inst.Log())
		}
		token := rand.Text()
		body := "From: <alice@example.test>\n" +
			"To: <alice@example.test>\n" +
			"Subject: postfixtest " + token + "\n" +
			"\n" +
			"Hello " + token + ".\n" +
			".a line that starts with a dot\n" +
			"\n" +
			"..two dots, and UTF-8: Grüße\n"
		c.send("alice@example.test", "alice@example.test", body)
		if code, msg := c.cmd("MAIL FROM:<alice@example.test>"); code != 250 {
			t.Fatalf("MAIL FROM: %d %q", code, msg)
		}
		if code, msg := c.cmd("RCPT TO:<nobody@example.test>"); code != 550 {
			t.Errorf("RCPT to unknown mailbox: %d %q, want 550", code, msg)
		}
		if code, msg := c.cmd("RCPT TO:<someone@elsewhere.test>"); code/100 != 5 {
			t.Errorf("RCPT to foreign domain: %d %q, want 5xx", code, msg)
		}
		c.must(250, "RSET")
		c.must(250, "MAIL FROM:<alice@example.test> SMTPUTF8 BODY=8BITMIME")
		c.must(250, "RSET")
		if code, msg := c.cmd("MAIL FROM:<alice@example.test> SIZE=%d", messageSizeLimit+1); code != 552 {
			t.Errorf("MAIL FROM with SIZE above the limit: %d %q, want 552", code, msg)
		}
		c.must(221, "QUIT")

		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		begin := time.Now()
		msgs, err := inst.WaitMessages(ctx, "alice", 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("delivered after %v", time.Since(begin).Round(time.Millisecond))
		if len(msgs) != 1 {
			t.Fatalf("got %d messages, want 1", len(msgs))
		}
		t.Logf("delivered message:\n%s", msgs[0])
		if !bytes.Contains(msgs[0], []byte(body)) {
			t.Errorf("delivered message does not contain the sent message intact:\n%s\nwant:\n%s", msgs[0], body)
		}
		// Postfix must not complete the message (the library under
		// test is responsible for Date and Message-ID).
		header, _, _ := bytes.Cut(msgs[0], []byte("\n\n"))
		for _, line := range strings.Split(string(header), "\n") {
			name, _, _ := strings.Cut(line, ":")
			if strings.EqualFold(name, "Message-ID") || strings.EqualFold(name, "Date") {
				t.Errorf("Postfix added a header: %q", line)
			}
		}
		if bob, err := inst.Messages("bob"); err != nil || len(bob) != 0 {
			t.Errorf("bob's mailbox: %d messages, err %v", len(bob), err)
		}
		if _, err := inst.Messages("nobody"); err == nil {
			t.Errorf("Messages for an unknown mailbox: no error")
		}
	})

	t.Run("OtherMechanisms", func(t *testing.T) {
		for name, auth := range map[string]func(*client, string, string) int{
			"LOGIN":         (*client).authLogin,
			"CRAM-MD5":      (*client).authCRAMMD5,
			"SCRAM-SHA-256": (*client).authSCRAMSHA256,
		} {
			t.Run(name, func(t *testing.T) {
				c := dial(t, inst.SubmissionsAddr, tlsConf)
				c.ehlo()
				if code := auth(c, testUser, testPassword); code != 235 {
					t.Errorf("%s with the right password: %d, want 235\n%s", name, code, tail(inst.Log(), 10))
				}
				c.must(221, "QUIT")
				c = dial(t, inst.SubmissionsAddr, tlsConf)
				c.ehlo()
				if code := auth(c, testUser, "wrong"); code != 535 {
					t.Errorf("%s with a wrong password: %d, want 535", name, code)
				}
			})
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		c := dial(t, inst.SubmissionAddr, nil)
		c.ehlo()
		c.startTLS(tlsConf)
		c.ehlo()
		if code := c.authPlain(testUser, testPassword+"x"); code != 535 {
			t.Errorf("AUTH PLAIN with a wrong password: %d, want 535", code)
		}
		if code := c.authPlain("mallory", testPassword); code != 535 {
			t.Errorf("AUTH PLAIN for an unknown user: %d, want 535", code)
		}
		// Without authentication nothing is accepted.
		c.must(250, "MAIL FROM:<alice@example.test>")
		if code, msg := c.cmd("RCPT TO:<alice@example.test>"); code/100 != 5 {
			t.Errorf("unauthenticated RCPT: %d %q, want 5xx", code, msg)
		}
	})

	t.Run("ImplicitTLS", func(t *testing.T) {
		c := dial(t, inst.SubmissionsAddr, tlsConf)
		state := c.conn.(*tls.Conn).ConnectionState()
		if state.Version < tls.VersionTLS12 {
			t.Errorf("TLS version %x", state.Version)
		}
		ext := c.ehlo()
		if _, ok := ext["STARTTLS"]; ok {
			t.Errorf("STARTTLS offered inside implicit TLS")
		}
		if !slices.Contains(strings.Fields(ext["AUTH"]), "PLAIN") {
			t.Errorf("AUTH PLAIN not offered on implicit TLS: %v", ext)
		}
		if code := c.authPlain("carol", "other-password"); code != 235 {
			t.Errorf("AUTH PLAIN for carol: %d, want 235", code)
		}
		c.must(221, "QUIT")
	})

	t.Run("TLS11Refused", func(t *testing.T) {
		conf := tlsConf.Clone()
		conf.MinVersion, conf.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", inst.SubmissionsAddr, conf)
		if err == nil {
			conn.Close()
			t.Errorf("TLS 1.1 handshake succeeded")
		}
	})

	if !strings.Contains(inst.Log(), "status=sent (delivered to maildir)") {
		t.Errorf("mail log lacks the delivery:\n%s", inst.Log())
	}
}

// TestParallelInstances starts two more instances while TestInstance runs
// and checks that they are independent.
func TestParallelInstances(t *testing.T) {
	t.Parallel()
	a, confA := startTestInstance(t)
	b, _ := startTestInstance(t)
	if a.Dir == b.Dir || a.SubmissionAddr == b.SubmissionAddr || a.SubmissionsAddr == b.SubmissionsAddr {
		t.Fatalf("instances share a directory or port: %+v %+v", a, b)
	}
	c := dial(t, a.SubmissionsAddr, confA)
	c.ehlo()
	if code := c.authPlain(testUser, testPassword); code != 235 {
		t.Fatalf("AUTH PLAIN: %d", code)
	}
	c.send("alice@example.test", "bob@example.test", "Subject: to bob\n\nhi bob\n")
	c.must(221, "QUIT")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := a.WaitMessages(ctx, "bob", 1); err != nil {
		t.Fatal(err)
	}
	if msgs, err := b.Messages("bob"); err != nil || len(msgs) != 0 {
		t.Errorf("other instance has %d messages for bob (err %v)", len(msgs), err)
	}
	for _, inst := range []*Instance{a, b} {
		g := dial(t, inst.SubmissionAddr, nil)
		g.must(221, "QUIT")
	}
}

// TestStopRemovesInstance checks that cleanup stops the instance and removes
// its directory.
func TestStopRemovesInstance(t *testing.T) {
	t.Parallel()
	var dir, addr string
	t.Run("inner", func(t *testing.T) {
		inst, _ := startTestInstance(t)
		dir, addr = inst.Dir, inst.SubmissionAddr
	})
	if dir == "" {
		t.Skip("inner test skipped")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Errorf("%s still accepts connections after cleanup", addr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s still exists after cleanup", dir)
	}
}
