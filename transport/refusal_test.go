package transport_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// content is a message that can be written any number of times.
type content string

func (c content) WriteTo(w io.Writer) (int64, error) {
	n, err := io.WriteString(w, string(c))
	return int64(n), err
}

const password = "s3cret-Passw0rd"

// canaryDelivery returns a delivery whose subject and body carry a unique
// canary: finding it on the wire in clear means the refusal failed.
func canaryDelivery(t testing.TB) (*mailsec.Delivery, string) {
	t.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:])
	canary := "CANARY-" + hex.EncodeToString(b[:])
	return &mailsec.Delivery{
		From: "app@example.com",
		To:   []string{"rcpt@example.org"},
		Content: content("From: app@example.com\r\nTo: rcpt@example.org\r\nSubject: " + canary +
			"\r\n\r\nThe secret is " + canary + "\r\n"),
	}, canary
}

// assertNothingSent fails if the canary, an envelope command or the
// password (raw, or in base64 alone or as the PLAIN response) appears in
// what the server read: plaintext, or decrypted after TLS (never raw
// ciphertext, where it could not be seen).
func assertNothingSent(t testing.TB, received []byte, canary string) {
	t.Helper()
	for _, bad := range []string{canary, "MAIL FROM", "RCPT TO", password,
		base64.StdEncoding.EncodeToString([]byte(password)),
		base64.StdEncoding.EncodeToString([]byte("\x00alice\x00" + password))} {
		if bytes.Contains(received, []byte(bad)) {
			t.Fatalf("%q reached the server:\n%q", bad, received)
		}
	}
}

// assertNoHandshake fails if a TLS handshake with the server completed:
// a certificate the client must refuse is refused during the handshake,
// not only by the checks after it.
func assertNoHandshake(t testing.TB, srv *mailsectest.Server) {
	t.Helper()
	for i, tr := range srvTranscripts(t, srv) {
		if tr.TLS {
			t.Fatalf("connection %d: the TLS handshake completed", i+1)
		}
	}
}

// received returns what the server's SMTP layer read, decrypted, on every
// connection, once every client connection has ended.
func received(t testing.TB, srv *mailsectest.Server) []byte {
	t.Helper()
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	return srv.Received()
}

func srvTranscripts(t testing.TB, srv *mailsectest.Server) []mailsectest.Transcript {
	t.Helper()
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	return srv.Transcripts()
}

// fakeReceived returns what a fake read: the bytes before TLS and the
// decrypted stream after.
func fakeReceived(f *fake) []byte {
	return append(f.wireBytes(), f.plainBytes()...)
}

// assertSecurity checks that err is a *mailsec.SecurityError of category
// for the reason want (one of the transport's Fail values), and no other.
func assertSecurity(t testing.TB, err error, want error, category error) *mailsec.SecurityError {
	t.Helper()
	var se *mailsec.SecurityError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *mailsec.SecurityError", err, err)
	}
	if !errors.Is(se, want) {
		t.Fatalf("reason is not %q (error: %v)", want, err)
	}
	for _, other := range []error{transport.FailStartTLSMissing, transport.FailStartTLSRefused, transport.FailInjection,
		transport.FailNotTLS, transport.FailCertificate, transport.FailPinMismatch, transport.FailDANE, transport.FailHandshake,
		transport.FailRequireTLS, transport.FailPlaintextNotLocal, transport.FailPlaintextAuth} {
		if other != want && errors.Is(se, other) {
			t.Fatalf("error %v is also %q", err, other)
		}
	}
	if se.Category != category || !errors.Is(err, category) {
		t.Fatalf("category %v, want %v (error: %v)", se.Category, category, err)
	}
	if !strings.Contains(se.Error(), want.Error()) {
		t.Fatalf("error %q does not say %q", se, want)
	}
	return se
}

func fakeTransport(f *fake, mode transport.Mode) *transport.Submission {
	return &transport.Submission{
		Addr:       f.addr(),
		Mode:       mode,
		ServerName: "localhost",
		TLSConfig:  &tls.Config{RootCAs: f.ca.Pool()},
		LocalName:  "client.test",
		Auth:       &transport.Auth{Username: "alice", Password: password},
	}
}

func deliver(t testing.TB, tr *transport.Submission, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	t.Helper()
	t.Cleanup(func() { tr.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return tr.Deliver(ctx, d)
}

func TestRefuseStartTLSWithheld(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{WithholdStartTLS: true})
	d, canary := canaryDelivery(t)
	tr := srv.Transport()
	tr.Auth = &transport.Auth{Username: "alice", Password: password}
	_, err := deliver(t, tr, d)
	se := assertSecurity(t, err, transport.FailStartTLSMissing, mailsec.ErrDowngrade)
	if se.Temporary() || mailsec.IsTemporary(err) {
		t.Error("a stripped STARTTLS must not be reported as temporary")
	}
	if errors.Is(err, mailsec.ErrCertificate) {
		t.Error("a downgrade must be distinct from a certificate error")
	}
	assertNothingSent(t, received(t, srv), canary)
	if srv.Transactions() != 0 || len(srv.Messages()) != 0 {
		t.Fatal("server saw a transaction")
	}
}

func TestRefuseStartTLS454(t *testing.T) {
	f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, startTLSResp: "454 4.7.0 TLS not available due to temporary reason"})
	d, canary := canaryDelivery(t)
	_, err := deliver(t, fakeTransport(f, transport.StartTLS), d)
	se := assertSecurity(t, err, transport.FailStartTLSRefused, mailsec.ErrDowngrade)
	if !se.Temporary() {
		t.Error("454 is a temporary refusal")
	}
	if !strings.Contains(err.Error(), "454") {
		t.Errorf("error does not quote the reply: %v", err)
	}
	assertNothingSent(t, fakeReceived(f), canary)
	if got := f.commands(); strings.Join(got, "|") != "EHLO client.test|STARTTLS" {
		t.Fatalf("commands after a refused STARTTLS: %q", got)
	}
}

func TestRefuseInjectionAfterSTARTTLS(t *testing.T) {
	for name, o := range map[string]fakeOpts{
		// The classic attack: a reply queued behind the 220, in the same
		// segment, to be read as the answer to the first command under TLS.
		"same segment": {preTLSExt: []string{"STARTTLS", "AUTH PLAIN"}, inject: "250-evil\r\n250 AUTH PLAIN\r\n"},
		// Bytes that arrive after the 220 was read: they are where the
		// server's TLS handshake should be.
		"later": {preTLSExt: []string{"STARTTLS"}, injectLater: "250 injected\r\n"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFake(t, o)
			d, canary := canaryDelivery(t)
			_, err := deliver(t, fakeTransport(f, transport.StartTLS), d)
			assertSecurity(t, err, transport.FailInjection, mailsec.ErrDowngrade)
			assertNothingSent(t, fakeReceived(f), canary)
			if got := f.commands(); len(got) != 2 || got[1] != "STARTTLS" {
				t.Fatalf("commands: %q", got)
			}
		})
	}
}

func TestRefusePlaintextGreetingOnImplicitPort(t *testing.T) {
	f := newFake(t, fakeOpts{})
	d, canary := canaryDelivery(t)
	_, err := deliver(t, fakeTransport(f, transport.ImplicitTLS), d)
	assertSecurity(t, err, transport.FailNotTLS, mailsec.ErrDowngrade)
	wire := f.wireBytes()
	assertNothingSent(t, wire, canary)
	if len(wire) == 0 || wire[0] != 0x16 {
		t.Fatalf("client sent something other than a TLS ClientHello: %q", wire)
	}
	if bytes.Contains(wire, []byte("EHLO")) {
		t.Fatal("client sent EHLO in clear")
	}
}

func TestRefuseBadCertificates(t *testing.T) {
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	issue := func(o mailsectest.CertOptions) *tls.Certificate {
		c, err := ca.Issue(o)
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	// typed checks the x509 error under the SecurityError; reason is what
	// the message must say in words.
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	invalid := func(r x509.InvalidReason) func(error) bool {
		return func(err error) bool {
			var ci x509.CertificateInvalidError
			return errors.As(err, &ci) && ci.Reason == r
		}
	}
	cases := []struct {
		name   string
		cert   *tls.Certificate
		typed  func(error) bool
		reason string
	}{
		{"untrusted", nil, func(err error) bool { return errors.As(err, &ua) }, "untrusted authority"},
		{"self-signed", issue(mailsectest.CertOptions{SelfSigned: true}), func(err error) bool { return errors.As(err, &ua) }, "untrusted authority"},
		{"expired", issue(mailsectest.CertOptions{NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}), invalid(x509.Expired), "expired"},
		{"not yet valid", issue(mailsectest.CertOptions{NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(72 * time.Hour)}), invalid(x509.Expired), "expired or not yet valid"},
		{"wrong name", issue(mailsectest.CertOptions{DNSNames: []string{"mail.attacker.example"}}), func(err error) bool { return errors.As(err, &he) }, "host name"},
		{"client-auth only", issue(mailsectest.CertOptions{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}), invalid(x509.IncompatibleUsage), "incompatible key usage"},
	}
	for _, implicit := range []bool{false, true} {
		for _, c := range cases {
			t.Run(c.name+map[bool]string{false: "/starttls", true: "/implicit"}[implicit], func(t *testing.T) {
				srv := mailsectest.NewServer(t, mailsectest.Config{ImplicitTLS: implicit, Certificate: c.cert})
				tr := srv.Transport()
				tr.Auth = &transport.Auth{Username: "alice", Password: password}
				// ca is trusted: it issued every certificate but the
				// "untrusted" case's, which the server's own CA did.
				tr.TLSConfig = &tls.Config{RootCAs: ca.Pool()}
				d, canary := canaryDelivery(t)
				_, err := deliver(t, tr, d)
				assertSecurity(t, err, transport.FailCertificate, mailsec.ErrCertificate)
				if errors.Is(err, mailsec.ErrDowngrade) {
					t.Error("certificate error also matches ErrDowngrade")
				}
				if !c.typed(err) {
					t.Errorf("error %v does not wrap the expected x509 error", err)
				}
				if !strings.Contains(err.Error(), c.reason) {
					t.Errorf("error %q does not say %q", err, c.reason)
				}
				assertNothingSent(t, received(t, srv), canary)
				assertNoHandshake(t, srv)
				if srv.Transactions() != 0 {
					t.Fatal("server saw MAIL")
				}
			})
		}
	}
}

// The policy turns InsecureSkipVerify off for a verified session: the
// handshake itself fails (TestVerifiedChainCheckAlone shows the check
// behind it).
func TestInsecureSkipVerifyInBaseConfigDoesNotWeakenVerified(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := srv.Transport()
	tr.TLSConfig = &tls.Config{InsecureSkipVerify: true} // system roots do not include the test CA
	d, canary := canaryDelivery(t)
	_, err := deliver(t, tr, d)
	assertSecurity(t, err, transport.FailCertificate, mailsec.ErrCertificate)
	assertNothingSent(t, received(t, srv), canary)
	assertNoHandshake(t, srv)
}

// A server that speaks only TLS 1.0 and 1.1 fails the handshake, also when
// the application's base configuration allows TLS 1.0
// (TestTLSVersionCheckAlone shows the check behind it).
func TestRefuseTLS11OnlyServer(t *testing.T) {
	for _, implicit := range []bool{false, true} {
		for _, base := range []*tls.Config{nil, {MinVersion: tls.VersionTLS10}} {
			srv := mailsectest.NewServer(t, mailsectest.Config{ImplicitTLS: implicit, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
			d, canary := canaryDelivery(t)
			tr := srv.Transport()
			if base != nil {
				tr.TLSConfig.MinVersion = base.MinVersion
			}
			_, err := deliver(t, tr, d)
			se := assertSecurity(t, err, transport.FailHandshake, mailsec.ErrHandshake)
			if !errors.Is(err, transport.ErrTLSVersion) || se.Temporary() || mailsec.IsTemporary(err) {
				t.Errorf("error %v: want ErrTLSVersion, permanent", err)
			}
			assertNothingSent(t, received(t, srv), canary)
			assertNoHandshake(t, srv)
			if srv.Transactions() != 0 {
				t.Fatal("server saw MAIL")
			}
		}
	}
}

func TestRefuseAuthOfferedOnlyBeforeTLS(t *testing.T) {
	f := newFake(t, fakeOpts{
		preTLSExt:  []string{"STARTTLS", "AUTH PLAIN LOGIN"},
		postTLSExt: []string{"8BITMIME"},
	})
	d, canary := canaryDelivery(t)
	_, err := deliver(t, fakeTransport(f, transport.StartTLS), d)
	var ae *mailsec.AuthError
	if !errors.As(err, &ae) || !errors.Is(err, mailsec.ErrAuth) {
		t.Fatalf("error %v is not an auth error", err)
	}
	if !strings.Contains(ae.Reason, "only before TLS") {
		t.Errorf("reason %q does not explain", ae.Reason)
	}
	assertNothingSent(t, fakeReceived(f), canary)
	for _, c := range f.commands() {
		if strings.HasPrefix(c, "AUTH") || strings.HasPrefix(c, "MAIL") {
			t.Fatalf("client sent %q", c)
		}
	}
}

func TestRefuseRequireTLSNotOffered(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	d, canary := canaryDelivery(t)
	d.RequireTLS = true
	tr := srv.Transport()
	res, err := deliver(t, tr, d)
	assertSecurity(t, err, transport.FailRequireTLS, mailsec.ErrRequireTLS)
	if res == nil || res.Connection == nil || res.Connection.Verification != mailsec.VerifiedWebPKI {
		t.Errorf("result should describe the verified session that lacked REQUIRETLS: %+v", res)
	}
	tr.Close()
	assertNothingSent(t, received(t, srv), canary)
	if srv.Transactions() != 0 {
		t.Fatal("server saw MAIL")
	}

	// With the extension offered, it goes through and MAIL carries it.
	srv = mailsectest.NewServer(t, mailsectest.Config{RequireTLS: true})
	d, _ = canaryDelivery(t)
	d.RequireTLS = true
	if _, err := deliver(t, srv.Transport(), d); err != nil {
		t.Fatal(err)
	}
	if m := srv.Messages(); len(m) != 1 || !m[0].RequireTLS {
		t.Fatalf("REQUIRETLS not sent: %+v", m)
	}
}

func TestRefuseRequireTLSOverUnverifiedSession(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{RequireTLS: true})
	d, canary := canaryDelivery(t)
	d.RequireTLS = true
	d.Security = mailsec.Security{Level: mailsec.Unverified}
	_, err := deliver(t, srv.Transport(), d)
	assertSecurity(t, err, transport.FailRequireTLS, mailsec.ErrRequireTLS)
	if srv.Connections() != 0 {
		t.Fatal("connected although the requirement could never be met")
	}
	assertNothingSent(t, received(t, srv), canary)
}

func TestServerThatNeverGreets(t *testing.T) {
	for _, mode := range []transport.Mode{transport.StartTLS, transport.ImplicitTLS} {
		t.Run(mode.String(), func(t *testing.T) {
			f := newFake(t, fakeOpts{silent: true})
			d, canary := canaryDelivery(t)
			tr := fakeTransport(f, mode)
			defer tr.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := tr.Deliver(ctx, d)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("error %v (%T) is not the context deadline", err, err)
			}
			if el := time.Since(start); el > 3*time.Second {
				t.Fatalf("took %v", el)
			}
			if !mailsec.IsTemporary(err) {
				t.Error("a timeout is temporary")
			}
			assertNothingSent(t, fakeReceived(f), canary)
		})
	}
}

func TestCancelledContextEndsSession(t *testing.T) {
	f := newFake(t, fakeOpts{silent: true})
	d, _ := canaryDelivery(t)
	tr := fakeTransport(f, transport.StartTLS)
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := tr.Deliver(ctx, d)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v is not context.Canceled", err)
	}
	if mailsec.IsTemporary(err) {
		t.Error("cancellation is not a temporary failure")
	}
}

func TestPinnedKey(t *testing.T) {
	ca, _ := mailsectest.NewCA()
	cert, err := ca.Issue(mailsectest.CertOptions{SelfSigned: true, DNSNames: []string{"unrelated.example"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	srv := mailsectest.NewServer(t, mailsectest.Config{Certificate: &cert})
	pin := mailsec.PinOf(cert.Leaf)

	// A pin is the trust anchor: self-signed, another name, expired: accepted.
	d, _ := canaryDelivery(t)
	d.Security = mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{{1}, pin}}
	tr1 := srv.Transport()
	res, err := deliver(t, tr1, d)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connection.Verification != mailsec.VerifiedPin || res.Connection.PeerPin != pin {
		t.Fatalf("connection state: %+v", res.Connection)
	}

	// Any other key is refused.
	d, canary := canaryDelivery(t)
	d.Security = mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{{1}}}
	before := srv.Transactions()
	_, err = deliver(t, srv.Transport(), d)
	assertSecurity(t, err, transport.FailPinMismatch, mailsec.ErrCertificate)
	tr1.Close() // ends the first transport's pooled session
	if srv.Transactions() != before {
		t.Fatal("MAIL sent to a server with the wrong key")
	}
	// The first connection carried the accepted message; the refused one
	// got nothing, and its handshake did not complete (TestPinCheckAlone
	// shows the check behind the handshake's).
	ts := srvTranscripts(t, srv)
	if len(ts) != 2 || !ts[0].TLS || !bytes.Contains(ts[0].Received, []byte("MAIL FROM")) {
		t.Fatalf("transcripts: %+v", ts)
	}
	assertNothingSent(t, ts[1].Received, canary)
	if ts[1].TLS {
		t.Fatal("the handshake with the wrong key completed")
	}
}

func TestUnverifiedIsRecorded(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := srv.Transport()
	tr.TLSConfig = nil
	d, _ := canaryDelivery(t)
	d.Security = mailsec.Security{Level: mailsec.Unverified}
	res, err := deliver(t, tr, d)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connection.Verification != mailsec.NotVerified || res.Connection.TLSVersion == "" {
		t.Fatalf("connection state: %+v", res.Connection)
	}
}

func TestPlaintextOnlyToLoopbackAndWithoutCredentials(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{WithholdStartTLS: true})
	d, _ := canaryDelivery(t)
	d.Security = mailsec.Security{Level: mailsec.Plaintext}
	res, err := deliver(t, srv.Transport(), d)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connection.Verification != mailsec.NoTLS || res.Connection.TLSVersion != "" {
		t.Fatalf("plaintext session not recorded as such: %+v", res.Connection)
	}

	// Credentials never go over plaintext, even to loopback.
	srv = mailsectest.NewServer(t, mailsectest.Config{WithholdStartTLS: true})
	tr := srv.Transport()
	tr.Auth = &transport.Auth{Username: "alice", Password: password}
	d, canary := canaryDelivery(t)
	d.Security = mailsec.Security{Level: mailsec.Plaintext}
	before := srv.Connections()
	_, err = deliver(t, tr, d)
	assertSecurity(t, err, transport.FailPlaintextAuth, mailsec.ErrPlaintext)
	if srv.Connections() != before {
		t.Fatal("connected to send credentials in clear")
	}

	// A peer that is not on loopback gets nothing, not even EHLO.
	rec := &recordingDialer{remote: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 25), Port: 25}}
	tr = srv.Transport()
	tr.Dialer = rec
	_, err = deliver(t, tr, d)
	assertSecurity(t, err, transport.FailPlaintextNotLocal, mailsec.ErrPlaintext)
	if len(rec.written) != 0 {
		t.Fatalf("wrote %q to a non-loopback peer", rec.written)
	}
	assertNothingSent(t, received(t, srv), canary)
}

// recordingDialer connects to the real address but reports another
// remote address, and records what is written.
type recordingDialer struct {
	remote  net.Addr
	written []byte
}

func (r *recordingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &fakeRemote{Conn: c, r: r}, nil
}

type fakeRemote struct {
	net.Conn
	r *recordingDialer
}

func (f *fakeRemote) RemoteAddr() net.Addr { return f.r.remote }
func (f *fakeRemote) Write(p []byte) (int, error) {
	f.r.written = append(f.r.written, p...)
	return f.Conn.Write(p)
}
