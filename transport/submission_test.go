package transport_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/leaktest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

var users = map[string]string{"alice": password}

func TestAuthMechanisms(t *testing.T) {
	for _, mech := range []string{transport.MechSCRAMSHA256, transport.MechCRAMMD5, transport.MechPlain, transport.MechLogin} {
		for _, implicit := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/implicit=%v", mech, implicit), func(t *testing.T) {
				srv := mailsectest.NewServer(t, mailsectest.Config{ImplicitTLS: implicit, Users: users, Mechanisms: []string{mech}})
				tr := srv.Transport()
				tr.Auth = &transport.Auth{Username: "alice", Password: password}
				d, _ := canaryDelivery(t)
				res, err := deliver(t, tr, d)
				if err != nil {
					t.Fatal(err)
				}
				if res.Connection.SASLMechanism != mech {
					t.Fatalf("used %q", res.Connection.SASLMechanism)
				}
				if m := srv.Messages(); len(m) != 1 || m[0].User != "alice" {
					t.Fatalf("messages: %v", m)
				}
				tr.Close()
				// Nothing of the password before TLS; after it, what the
				// server read (decrypted) carries it only where the
				// mechanism sends it: PLAIN and LOGIN in base64, SCRAM and
				// CRAM-MD5 not at all.
				ts := srvTranscripts(t, srv)
				if len(ts) != 1 || !ts[0].TLS {
					t.Fatalf("transcripts: %+v", ts)
				}
				forms := [][]byte{[]byte(password), []byte(base64.StdEncoding.EncodeToString([]byte(password))),
					[]byte(base64.StdEncoding.EncodeToString([]byte("\x00alice\x00" + password)))}
				sendsIt := mech == transport.MechPlain || mech == transport.MechLogin
				found := false
				for i, form := range forms {
					if bytes.Contains(ts[0].Received[:ts[0].ReceivedBeforeTLS], form) {
						t.Fatalf("password form %d sent before TLS", i)
					}
					if bytes.Contains(ts[0].Received[ts[0].ReceivedBeforeTLS:], form) {
						if !sendsIt {
							t.Fatalf("%s sent password form %d", mech, i)
						}
						found = true
					}
				}
				if sendsIt && !found {
					t.Fatalf("%s: the password is not in what the server read; the transcript is not what the client sent", mech)
				}

				// A wrong password fails with an auth error and delivers nothing.
				tr = srv.Transport()
				tr.Auth = &transport.Auth{Username: "alice", Password: "wrong"}
				d, _ = canaryDelivery(t)
				_, err = deliver(t, tr, d)
				var ae *mailsec.AuthError
				if !errors.As(err, &ae) || !errors.Is(err, mailsec.ErrAuth) || ae.Mechanism != mech {
					t.Fatalf("error %v", err)
				}
				if strings.Contains(err.Error(), "wrong") {
					t.Fatal("error reveals the password")
				}
				if len(srv.Messages()) != 1 {
					t.Fatal("delivered with a wrong password")
				}
			})
		}
	}
}

func TestAuthPicksStrongestOffered(t *testing.T) {
	for offered, want := range map[string]string{
		"PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256": transport.MechSCRAMSHA256,
		"PLAIN LOGIN CRAM-MD5":               transport.MechCRAMMD5,
		"LOGIN PLAIN":                        transport.MechPlain,
		"LOGIN":                              transport.MechLogin,
	} {
		srv := mailsectest.NewServer(t, mailsectest.Config{Users: users, Mechanisms: strings.Fields(offered)})
		tr := srv.Transport()
		tr.Auth = &transport.Auth{Username: "alice", Password: password}
		d, _ := canaryDelivery(t)
		res, err := deliver(t, tr, d)
		if err != nil {
			t.Fatal(err)
		}
		if res.Connection.SASLMechanism != want {
			t.Errorf("offered %s: used %s, want %s", offered, res.Connection.SASLMechanism, want)
		}
	}
}

// Over an unverified session (an explicit opt-in) the peer may be an
// attacker: no mechanism runs, SCRAM included (its exchange gives the peer
// material for an offline dictionary attack).
func TestNoAuthOverUnverifiedSession(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{Users: users})
	tr := srv.Transport()
	tr.TLSConfig = nil
	tr.Auth = &transport.Auth{Username: "alice", Password: password}
	d, _ := canaryDelivery(t)
	d.Security = mailsec.Security{Level: mailsec.Unverified}
	_, err := deliver(t, tr, d)
	if !errors.Is(err, mailsec.ErrAuth) || !strings.Contains(err.Error(), "not verified") {
		t.Fatalf("error %v", err)
	}
	if srv.Transactions() != 0 {
		t.Fatal("sent MAIL without authenticating")
	}
}

// A server that says 235 to SCRAM without proving it knows the password
// (a fake one, in front of the real) is refused.
func TestSCRAMNeedsServerProof(t *testing.T) {
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, postTLSExt: []string{"AUTH SCRAM-SHA-256 PLAIN"}})
	tr := fakeTransport(f, transport.StartTLS)
	d, canary := canaryDelivery(t)
	_, err := deliver(t, tr, d)
	var ae *mailsec.AuthError
	if !errors.As(err, &ae) || !strings.Contains(ae.Reason, "did not prove") {
		t.Fatalf("error %v", err)
	}
	assertNothingSent(t, f.plainBytes(), canary)
}

func TestAuthNoAcceptableMechanism(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{Users: users, Mechanisms: []string{"LOGIN"}})
	tr := srv.Transport()
	tr.Auth = &transport.Auth{Username: "alice", Password: password, Mechanisms: []string{transport.MechSCRAMSHA256}}
	d, _ := canaryDelivery(t)
	_, err := deliver(t, tr, d)
	var ae *mailsec.AuthError
	if !errors.As(err, &ae) || !strings.Contains(ae.Reason, "no acceptable mechanism") {
		t.Fatalf("error %v", err)
	}
	if srv.Transactions() != 0 {
		t.Fatal("sent MAIL without authenticating")
	}
}

func TestAuthXOAUTH2(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{Tokens: map[string]string{"alice@example.com": "ya29.token"}})
	for token, ok := range map[string]bool{"ya29.token": true, "expired": false} {
		tr := srv.Transport()
		tr.Auth = &transport.Auth{Username: "alice@example.com", Token: func(context.Context) (string, error) { return token, nil }}
		d, _ := canaryDelivery(t)
		res, err := deliver(t, tr, d)
		if ok {
			if err != nil || res.Connection.SASLMechanism != transport.MechXOAUTH2 {
				t.Fatalf("token %q: %v %+v", token, err, res)
			}
			continue
		}
		if !errors.Is(err, mailsec.ErrAuth) {
			t.Fatalf("token %q: error %v", token, err)
		}
	}
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d messages", n)
	}
	// A failing token source is an auth error, before any credential is sent.
	tr := srv.Transport()
	tr.Auth = &transport.Auth{Username: "alice@example.com", Token: func(context.Context) (string, error) { return "", errors.New("refresh failed") }}
	d, _ := canaryDelivery(t)
	if _, err := deliver(t, tr, d); !errors.Is(err, mailsec.ErrAuth) {
		t.Fatalf("error %v", err)
	}
}

func TestAuthNeverPrinted(t *testing.T) {
	a := &transport.Auth{Username: "alice", Password: password}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "auth", a, "value", *a)
	if strings.Contains(logged.String(), password) {
		t.Errorf("password logged: %s", logged.String())
	}
	for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%+v", a), fmt.Sprintf("%#v", a), fmt.Sprintf("%v", *a)} {
		if strings.Contains(s, password) {
			t.Errorf("password printed: %s", s)
		}
	}
}

// Each configuration mistake is a *mailsec.ConfigError naming the field,
// from Validate, from Deliver and from NewSender, never one that reads as
// bad input (ErrInvalid).
func TestInvalidConfiguration(t *testing.T) {
	d, _ := canaryDelivery(t)
	for name, tr := range map[string]*transport.Submission{
		"no addr":   {},
		"addr":      {Addr: "no-port"},
		"ehlo":      {Addr: "127.0.0.1:1", LocalName: "bad name\r\nMAIL FROM:<x@y>"},
		"ehlo2":     {Addr: "127.0.0.1:1", LocalName: "[300.1.1.1]"},
		"mode":      {Addr: "127.0.0.1:1", Mode: 9},
		"user":      {Addr: "127.0.0.1:1", Auth: &transport.Auth{Username: "a\r\nb", Password: "x"}},
		"password":  {Addr: "127.0.0.1:1", Auth: &transport.Auth{Username: "a"}},
		"mechanism": {Addr: "127.0.0.1:1", Auth: &transport.Auth{Username: "a", Password: "x", Mechanisms: []string{"DIGEST-MD5"}}},
		"conns":     {Addr: "127.0.0.1:1", MaxConns: -1},
		"messages":  {Addr: "127.0.0.1:1", MaxMessagesPerConn: -8},
		"idle":      {Addr: "127.0.0.1:1", IdleTimeout: -time.Second},
		"probe":     {Addr: "127.0.0.1:1", HealthCheckAfter: -time.Second},
		"dial":      {Addr: "127.0.0.1:1", DialTimeout: -time.Second},
	} {
		var ce *mailsec.ConfigError
		err := tr.Validate()
		if !errors.As(err, &ce) || errors.Is(err, mailsec.ErrInvalid) {
			t.Errorf("%s: Validate: error %v is not a configuration error", name, err)
			continue
		}
		field := ce.Field
		if _, err := tr.Deliver(context.Background(), d); !errors.As(err, &ce) || ce.Field != field {
			t.Errorf("%s: Deliver: error %v, want the ConfigError for %s", name, err, field)
		}
		if _, err := mailsec.NewSender(tr, nil); !errors.As(err, &ce) || ce.Field != field {
			t.Errorf("%s: NewSender: error %v, want the ConfigError for %s", name, err, field)
		}
	}
}

func TestEnvelopeInjectionRefused(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := srv.Transport()
	defer tr.Close()
	for _, d := range []*mailsec.Delivery{
		{From: "a@example.com>\r\nRCPT TO:<victim@example.org", To: []string{"b@example.org"}},
		{From: "a@example.com", To: []string{"b@example.org> NOTIFY=NEVER"}},
		{From: "a@example.com", To: []string{"b@example.org\r\nDATA"}},
		{From: "a@example.com", To: []string{"b@exa\x00mple.org"}},
		{From: "a@example.com", To: []string{"<b@example.org>"}},
		{From: "a@example.com", To: []string{"b@example.org"}, DSN: &mailsec.DSN{EnvelopeID: "x\r\nRSET"}},
		{From: "a@example.com", To: []string{"b@example.org"}, DSN: &mailsec.DSN{Notify: []mailsec.DSNNotify{mailsec.NotifyNever, mailsec.NotifySuccess}}},
		{From: "a@example.com", To: []string{"b@example.org"}, DSN: &mailsec.DSN{Return: "ALL"}},
		{From: "jöhn@example.com", To: []string{"b@example.org"}},
		{From: "a@example.com", To: nil},
	} {
		d.Content = content("Subject: x\r\n\r\nx\r\n")
		if _, err := tr.Deliver(context.Background(), d); !errors.Is(err, mailsec.ErrInvalid) {
			t.Errorf("%+v: error %v", d, err)
		}
	}
	if srv.Connections() != 0 {
		t.Fatal("connected for an invalid envelope")
	}
}

func TestDSNAndUTF8(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true, SMTPUTF8: true})
	tr := srv.Transport()
	d := &mailsec.Delivery{
		From: "app@example.com", To: []string{"ann@example.org", "bob@example.org"},
		DSN:     &mailsec.DSN{Return: mailsec.DSNReturnHeaders, EnvelopeID: "env+1=2", Notify: []mailsec.DSNNotify{mailsec.NotifyFailure, mailsec.NotifyDelay}, OriginalRecipient: true},
		Content: content("Subject: x\r\n\r\nx\r\n"),
	}
	if _, err := deliver(t, tr, d); err != nil {
		t.Fatal(err)
	}
	m := srv.Messages()[0]
	if m.Return != "HDRS" || m.EnvelopeID != "env+1=2" || strings.Join(m.Notify["bob@example.org"], ",") != "FAILURE,DELAY" ||
		!strings.EqualFold(m.ORCPT["ann@example.org"], "rfc822;ann@example.org") || m.Body != "8BITMIME" {
		t.Fatalf("DSN parameters not sent: %#v", m)
	}

	u := &mailsec.Delivery{From: "app@example.com", To: []string{"jöhn@example.org"}, SMTPUTF8: true, EightBit: true,
		Content: content("Subject: x\r\nTo: jöhn@example.org\r\n\r\nx\r\n")}
	if _, err := deliver(t, tr, u); err != nil {
		t.Fatal(err)
	}
	if m := srv.Messages()[1]; !m.SMTPUTF8 || m.To[0] != "jöhn@example.org" {
		t.Fatalf("%+v", m)
	}

	// Without the extensions: DSN options are left out (RFC 3461 section 4),
	// SMTPUTF8 fails clearly before MAIL.
	plain := mailsectest.NewServer(t, mailsectest.Config{})
	if _, err := deliver(t, plain.Transport(), d); err != nil {
		t.Fatal(err)
	}
	_, err := deliver(t, plain.Transport(), u)
	var ee *mailsec.ExtensionError
	if !errors.As(err, &ee) || ee.Extension != "SMTPUTF8" || !errors.Is(err, mailsec.ErrUnsupported) {
		t.Fatalf("error %v", err)
	}
	if plain.Transactions() != 1 {
		t.Fatal("MAIL sent for a UTF-8 envelope the server cannot take")
	}
}

func TestRecipientRefusals(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{RcptReply: map[string]*mailsec.Reply{
		"gone@example.org": {Code: 550, EnhancedCode: mailsec.EnhancedCode{5, 1, 1}, Text: "no such user"},
		"full@example.org": {Code: 452, EnhancedCode: mailsec.EnhancedCode{4, 2, 2}, Text: "mailbox full"},
	}})
	tr := srv.Transport()
	d := &mailsec.Delivery{From: "app@example.com", To: []string{"ann@example.org", "gone@example.org", "full@example.org"},
		Content: content("Subject: x\r\n\r\nx\r\n")}
	res, err := deliver(t, tr, d)
	if err != nil {
		t.Fatalf("partial delivery is not an error at the transport level: %v", err)
	}
	if got := acceptedOf(res); len(got) != 1 || got[0] != "ann@example.org" {
		t.Fatalf("accepted %v", got)
	}
	var se *mailsec.SMTPError
	if r := res.Recipients[1]; !errors.As(r.Err, &se) || se.Code != 550 || se.Command != "RCPT" || se.Temporary() || r.Reply.Code != 550 {
		t.Fatalf("refused recipient: %+v", r)
	}
	if r := res.Recipients[2]; !mailsec.IsTemporary(r.Err) {
		t.Fatalf("452 should be temporary: %+v", r)
	}
	if m := srv.Messages(); len(m) != 1 || len(m[0].To) != 1 {
		t.Fatalf("%v", m)
	}

	// All refused: an error, and the session (reset with RSET) serves the next one.
	d.To = []string{"gone@example.org"}
	if _, err := deliver(t, tr, d); err == nil {
		t.Fatal("no error when every recipient was refused")
	}
	d.To = []string{"ann@example.org"}
	if _, err := deliver(t, tr, d); err != nil {
		t.Fatal(err)
	}
	if srv.Connections() != 1 {
		t.Fatalf("%d connections; the session should have been reset and reused", srv.Connections())
	}
}

func TestMailAndDataRefused(t *testing.T) {
	for name, cfg := range map[string]mailsectest.Config{
		"MAIL": {MailReply: &mailsec.Reply{Code: 553, EnhancedCode: mailsec.EnhancedCode{5, 7, 1}, Text: "sender not allowed"}},
		"DATA": {DataReply: &mailsec.Reply{Code: 554, EnhancedCode: mailsec.EnhancedCode{5, 6, 0}, Text: "content rejected"}},
	} {
		srv := mailsectest.NewServer(t, cfg)
		d, _ := canaryDelivery(t)
		_, err := deliver(t, srv.Transport(), d)
		var se *mailsec.SMTPError
		if !errors.As(err, &se) || se.Command != name || se.Temporary() {
			t.Fatalf("%s: error %v", name, err)
		}
	}
}

// The DATA stream on the wire: every line ending CRLF, dots stuffed, one
// terminator, whatever the content's line endings.
func TestDataOnTheWire(t *testing.T) {
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}})
	tr := fakeTransport(f, transport.StartTLS)
	tr.Auth = nil
	body := "Subject: hygiene\n\nbare LF\nbare CR\rCRLF\r\n.\nleading .dot\n..two\r.\r\nend\r\r\n\n.\r\n\rlast"
	d := &mailsec.Delivery{From: "app@example.com", To: []string{"rcpt@example.org"}, Content: content(body)}
	if _, err := deliver(t, tr, d); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	plain := string(f.plainBytes())
	_, data, ok := strings.Cut(plain, "DATA\r\n")
	if !ok {
		t.Fatalf("no DATA in %q", plain)
	}
	data, _, _ = strings.Cut(data, "QUIT\r\n")
	want := "Subject: hygiene\r\n\r\nbare LF\r\nbare CR\r\nCRLF\r\n..\r\nleading .dot\r\n...two\r\n..\r\nend\r\n\r\n\r\n..\r\n\r\nlast\r\n.\r\n"
	if data != want {
		t.Fatalf("DATA on the wire:\n got %q\nwant %q", data, want)
	}
}

// A content writer that fails midway must not produce a terminated
// message: the connection is dropped instead.
func TestContentErrorAbortsWithoutTerminator(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := srv.Transport()
	d := &mailsec.Delivery{From: "app@example.com", To: []string{"rcpt@example.org"}, Content: failingContent{}}
	_, err := deliver(t, tr, d)
	if err == nil || !strings.Contains(err.Error(), "nothing delivered") {
		t.Fatalf("error %v", err)
	}
	long := &mailsec.Delivery{From: "app@example.com", To: []string{"rcpt@example.org"},
		Content: content("Subject: x\r\n\r\n" + strings.Repeat("x", 999) + "\r\n")}
	if _, err := deliver(t, tr, long); err == nil {
		t.Fatal("a 999-octet line was sent")
	}
	tr.Close()
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("server accepted %d truncated messages", n)
	}
}

type failingContent struct{}

func (failingContent) WriteTo(w io.Writer) (int64, error) {
	n, _ := io.WriteString(w, "Subject: half\r\n\r\nfirst half\r\n.\r\n")
	return int64(n), errors.New("attachment reader failed")
}

func TestPoolReuse(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{Users: users})
	tr := srv.Transport()
	tr.Auth = &transport.Auth{Username: "alice", Password: password}
	tr.MaxMessagesPerConn = 4
	for i := range 10 {
		d, _ := canaryDelivery(t)
		res, err := deliver(t, tr, d)
		if err != nil {
			t.Fatal(err)
		}
		if want := i%4 != 0; res.Connection.Reused != want {
			t.Fatalf("message %d: reused=%v", i, res.Connection.Reused)
		}
	}
	if got := srv.Connections(); got != 3 {
		t.Fatalf("%d connections for 10 messages at 4 per connection", got)
	}
}

func TestPoolIdleTimeoutAndHealthCheck(t *testing.T) {
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}})
	tr := fakeTransport(f, transport.StartTLS)
	tr.Auth = nil
	tr.IdleTimeout = 300 * time.Millisecond
	tr.HealthCheckAfter = 50 * time.Millisecond
	d, _ := canaryDelivery(t)
	for _, pause := range []time.Duration{0, 100 * time.Millisecond, 600 * time.Millisecond} {
		time.Sleep(pause)
		if _, err := deliver(t, tr, d); err != nil {
			t.Fatal(err)
		}
	}
	tr.Close()
	cmds := strings.Join(f.commands(), "|")
	if strings.Count(cmds, "NOOP") != 1 {
		t.Errorf("want one NOOP health check (after 100ms idle): %s", cmds)
	}
	if f.connections() != 2 {
		t.Errorf("%d connections; the session idle for 600ms should have been closed", f.connections())
	}
}

func TestPoolRetriesStaleSession(t *testing.T) {
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, closeAfter: 1})
	tr := fakeTransport(f, transport.StartTLS)
	tr.Auth = nil
	for range 3 {
		d, _ := canaryDelivery(t)
		if _, err := deliver(t, tr, d); err != nil {
			t.Fatal(err)
		}
	}
	if f.connections() != 3 {
		t.Fatalf("%d connections", f.connections())
	}
}

// A server that limits messages per connection (421 to MAIL) costs the
// sender nothing: the delivery moves to a fresh session.
func TestPoolMovesOnAfter421(t *testing.T) {
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, limit421: 2})
	tr := fakeTransport(f, transport.StartTLS)
	tr.Auth = nil
	for range 5 {
		d, _ := canaryDelivery(t)
		if _, err := deliver(t, tr, d); err != nil {
			t.Fatal(err)
		}
	}
	if f.connections() != 3 {
		t.Fatalf("%d connections", f.connections())
	}
	// On a fresh session a 421 is the server's answer, not staleness.
	f2 := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, mailReply: "421 4.3.2 shutting down"})
	tr2 := fakeTransport(f2, transport.StartTLS)
	tr2.Auth = nil
	d, _ := canaryDelivery(t)
	if _, err := deliver(t, tr2, d); !mailsec.IsTemporary(err) || f2.connections() != 1 {
		t.Fatalf("error %v after %d connections", err, f2.connections())
	}
}

func TestPoolBoundsConnections(t *testing.T) {
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, dataDelay: 20 * time.Millisecond})
	tr := fakeTransport(f, transport.StartTLS)
	tr.Auth = nil
	tr.MaxConns = 2
	t.Cleanup(func() { tr.Close() })
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for range 12 {
		wg.Go(func() {
			d, _ := canaryDelivery(t)
			_, err := tr.Deliver(context.Background(), d)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := f.connections(); n > 2 {
		t.Fatalf("%d connections with MaxConns 2", n)
	}

	// A delivery that cannot get a session before its deadline fails
	// with the deadline, not by opening a third connection.
	hold := make(chan struct{})
	var held sync.WaitGroup
	for range 2 {
		held.Add(1)
		go func() {
			defer held.Done()
			d, _ := canaryDelivery(t)
			d.Content = blockingContent{hold}
			_, _ = tr.Deliver(context.Background(), d)
		}()
	}
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	d, _ := canaryDelivery(t)
	_, err := tr.Deliver(ctx, d)
	close(hold)
	held.Wait()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v", err)
	}
	if n := f.connections(); n > 2 {
		t.Fatalf("%d connections with MaxConns 2", n)
	}
}

type blockingContent struct{ release chan struct{} }

func (b blockingContent) WriteTo(w io.Writer) (int64, error) {
	<-b.release
	n, err := io.WriteString(w, "Subject: x\r\n\r\nx\r\n")
	return int64(n), err
}

func TestClosedTransport(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := srv.Transport()
	d, _ := canaryDelivery(t)
	if _, err := tr.Deliver(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if _, err := tr.Deliver(context.Background(), d); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("error %v", err)
	}
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatal("Close left a session open:", err)
	}
}

func TestConcurrentDeliveriesLeaveNoGoroutines(t *testing.T) {
	noLeaks := leaktest.Check(t)
	srv, err := mailsectest.Start(mailsectest.Config{Users: users})
	if err != nil {
		t.Fatal(err)
	}
	tr := srv.Transport()
	tr.Auth = &transport.Auth{Username: "alice", Password: password}
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			d, _ := canaryDelivery(t)
			if _, err := tr.Deliver(context.Background(), d); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := len(srv.Messages()); n != 64 {
		t.Fatalf("%d messages", n)
	}
	tr.Close()
	srv.Close()
	noLeaks()
}

// Server text reaches errors and receipts, which end up in terminals and
// logs: control characters are neutralised.
func TestServerTextIsCleaned(t *testing.T) {
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, mailReply: "550 5.7.1 \x1b[2J\x1b]0;pwned\x07 rejected"})
	tr := fakeTransport(f, transport.StartTLS)
	tr.Auth = nil
	d, _ := canaryDelivery(t)
	_, err := deliver(t, tr, d)
	var se *mailsec.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (mailsec.EnhancedCode{5, 7, 1}) {
		t.Fatalf("error %v", err)
	}
	if strings.ContainsAny(se.Message, "\x1b\x07") || !strings.Contains(se.Message, "rejected") {
		t.Fatalf("message %q", se.Message)
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range []transport.Mode{transport.Auto, transport.ImplicitTLS, transport.StartTLS} {
		var got transport.Mode
		b, _ := m.MarshalText()
		if err := got.UnmarshalText(b); err != nil || got != m {
			t.Errorf("%v: %v %v", m, got, err)
		}
	}
	if _, err := transport.ParseMode("opportunistic"); !errors.Is(err, mailsec.ErrInvalid) {
		t.Error("unknown mode accepted")
	}
}

// After an aborted transaction the session is reset with RSET, which keeps
// the capabilities the server listed after TLS (RFC 5321 section 4.1.1.5):
// no second EHLO, whose failure could otherwise be mistaken for a missing
// capability.
func TestResetKeepsCapabilities(t *testing.T) {
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, postTLSExt: []string{"8BITMIME", "REQUIRETLS"},
		rejectMails: 1, failEHLO: 2})
	tr := fakeTransport(f, transport.StartTLS)
	tr.Auth = nil
	d, _ := canaryDelivery(t)
	d.RequireTLS = true
	var se *mailsec.SMTPError
	if _, err := deliver(t, tr, d); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("first delivery: %v", err)
	}
	for i := range 2 {
		if _, err := deliver(t, tr, d); err != nil {
			t.Fatalf("delivery %d after the reset: %v", i+2, err)
		}
	}
	tr.Close()
	cmds := strings.Join(f.commands(), "|")
	if f.connections() != 1 || strings.Count(cmds, "EHLO") != 2 || strings.Count(cmds, "RSET") != 1 {
		t.Fatalf("%d connections, commands %s", f.connections(), cmds)
	}
}

// Without a deadline in the context, a peer that never speaks is still
// given up on.
func TestDialTimeoutWithoutContextDeadline(t *testing.T) {
	f := newFake(t, fakeOpts{silent: true})
	tr := fakeTransport(f, transport.StartTLS)
	tr.DialTimeout = 200 * time.Millisecond
	d, _ := canaryDelivery(t)
	start := time.Now()
	_, err := tr.Deliver(context.Background(), d)
	tr.Close()
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Fatalf("error %v after %v", err, time.Since(start))
	}
}

// A content writer that panics (an application's reader) must not keep
// the pool slot: the next delivery gets a session.
func TestPanicInContentFreesSession(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := srv.Transport()
	tr.MaxConns = 1
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("no panic")
			}
		}()
		_, _ = tr.Deliver(context.Background(), &mailsec.Delivery{From: "a@example.com", To: []string{"b@example.org"}, Content: panickingContent{}})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, _ := canaryDelivery(t)
	if _, err := tr.Deliver(ctx, d); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d messages", n)
	}
}

type panickingContent struct{}

func (panickingContent) WriteTo(w io.Writer) (int64, error) {
	_, _ = io.WriteString(w, "Subject: x\r\n\r\n")
	panic("reader exploded")
}

func TestHostileServerInput(t *testing.T) {
	// A 2 MiB reply after TLS is cut off at 1 MiB.
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, hugeEHLO: true})
	tr := fakeTransport(f, transport.StartTLS)
	tr.Auth = nil
	d, canary := canaryDelivery(t)
	if _, err := deliver(t, tr, d); err == nil || !strings.Contains(err.Error(), "1 MiB") {
		t.Fatalf("error %v", err)
	}
	assertNothingSent(t, f.plainBytes(), canary)

	// A peer that hangs up during the handshake is a network failure,
	// worth retrying, not a verdict on its TLS.
	f = newFake(t, fakeOpts{hangup: true})
	_, err := deliver(t, fakeTransport(f, transport.ImplicitTLS), d)
	var ne *mailsec.NetworkError
	if !errors.As(err, &ne) || !mailsec.IsTemporary(err) {
		t.Fatalf("error %v (%T)", err, err)
	}

	// A busy server (421 to EHLO before TLS) is a temporary reply, not a
	// downgrade.
	f = newFake(t, fakeOpts{preTLSEHLO: "421 4.3.2 too busy"})
	_, err = deliver(t, fakeTransport(f, transport.StartTLS), d)
	var se *mailsec.SMTPError
	if !errors.As(err, &se) || se.Code != 421 || !mailsec.IsTemporary(err) || errors.Is(err, mailsec.ErrDowngrade) {
		t.Fatalf("error %v", err)
	}
}
