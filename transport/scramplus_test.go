package transport_test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/xdg-go/scram"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677) with tls-exporter channel
// binding (RFC 9266), against a scripted server that checks the client's
// proof with the exporter value of its own side of the TLS session.

// plusServer answers AUTH SCRAM-SHA-256 and SCRAM-SHA-256-PLUS. When
// advertised is set it behaves as a server that offered the PLUS variant
// (whether or not the client saw the offer): it checks the channel
// binding, and refuses a client that says it could have bound the session
// (GS2 flag "y"), as RFC 5802 section 6 asks.
type plusServer struct {
	advertised bool

	mu       sync.Mutex
	firsts   []string // client-first messages, decoded
	failures []string // why the server refused, its own words
	ok       int      // exchanges the server accepted
}

func (p *plusServer) fail(c *fakeConn, why string) bool {
	p.mu.Lock()
	p.failures = append(p.failures, why)
	p.mu.Unlock()
	c.w("535 5.7.8 Authentication credentials invalid\r\n")
	return true
}

func (p *plusServer) hook(verb string, c *fakeConn) bool {
	if verb != "AUTH" {
		return false
	}
	f := strings.Fields(c.line)
	mech := strings.ToUpper(f[1])
	if mech != transport.MechSCRAMSHA256 && mech != transport.MechSCRAMSHA256PLUS {
		return false // the fake's own: 235 to anything
	}
	if len(f) != 3 {
		return p.fail(c, "no initial response")
	}
	first, err := base64.StdEncoding.DecodeString(f[2])
	if err != nil {
		return p.fail(c, "initial response not base64")
	}
	p.mu.Lock()
	p.firsts = append(p.firsts, string(first))
	p.mu.Unlock()
	// The mechanism name and the GS2 flag must agree (RFC 5802 section 6).
	if bound := strings.HasPrefix(string(first), "p="); bound != (mech == transport.MechSCRAMSHA256PLUS) {
		return p.fail(c, "mechanism "+mech+" with GS2 header "+strings.SplitN(string(first), ",", 2)[0])
	}
	srv, err := scram.SHA256.NewServer(func(name string) (scram.StoredCredentials, error) {
		cl, err := scram.SHA256.NewClient(name, password, "")
		if err != nil {
			return scram.StoredCredentials{}, err
		}
		return cl.GetStoredCredentialsWithError(scram.KeyFactors{Salt: "0123456789abcdef", Iters: 4096})
	})
	if err != nil {
		return p.fail(c, err.Error())
	}
	conv := srv.NewConversation()
	if p.advertised {
		cs := c.tlsState()
		cb, err := scram.NewTLSExporterBinding(&cs)
		if err != nil {
			return p.fail(c, "no exporter: "+err.Error())
		}
		conv = srv.NewConversationWithChannelBinding(cb)
	}
	serverFirst, err := conv.Step(string(first))
	if err != nil {
		return p.fail(c, err.Error())
	}
	c.w("334 " + base64.StdEncoding.EncodeToString([]byte(serverFirst)) + "\r\n")
	line, err := c.readLine()
	if err != nil {
		return true
	}
	final, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		return p.fail(c, "client-final not base64")
	}
	serverFinal, err := conv.Step(string(final))
	if err != nil || !conv.Valid() {
		return p.fail(c, "client-final refused: "+errString(err))
	}
	c.w("334 " + base64.StdEncoding.EncodeToString([]byte(serverFinal)) + "\r\n")
	if _, err := c.readLine(); err != nil {
		return true
	}
	p.mu.Lock()
	p.ok++
	p.mu.Unlock()
	c.w("235 2.7.0 Authentication successful\r\n")
	return true
}

func errString(err error) string {
	if err == nil {
		return "no error, but not valid"
	}
	return err.Error()
}

func (p *plusServer) result() (firsts, failures []string, ok int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.firsts...), append([]string(nil), p.failures...), p.ok
}

func plusFake(t *testing.T, p *plusServer, implicit bool, mechs string) *fake {
	o := fakeOpts{implicitTLS: implicit, postTLSExt: []string{"PIPELINING", "AUTH " + mechs}, hook: p.hook}
	if !implicit {
		o.preTLSExt = []string{"STARTTLS"}
	}
	return newFake(t, o)
}

// The server offers both variants: the bound one is used, with
// tls-exporter, whether the application allows both or lists only
// SCRAM-SHA-256, and the server verifies the binding with its own
// exporter value.
func TestSCRAMPlusPreferred(t *testing.T) {
	for _, allowed := range [][]string{nil, {transport.MechSCRAMSHA256}, {transport.MechSCRAMSHA256PLUS}} {
		for _, implicit := range []bool{false, true} {
			p := &plusServer{advertised: true}
			f := plusFake(t, p, implicit, "PLAIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS")
			mode := transport.StartTLS
			if implicit {
				mode = transport.ImplicitTLS
			}
			tr := fakeTransport(f, mode)
			tr.Auth.Mechanisms = allowed
			d, _ := canaryDelivery(t)
			res, err := deliver(t, tr, d)
			if err != nil {
				t.Fatalf("allowed %v, implicit %v: %v", allowed, implicit, err)
			}
			firsts, failures, ok := p.result()
			if res.Connection.SASLMechanism != transport.MechSCRAMSHA256PLUS || ok != 1 || len(failures) != 0 {
				t.Fatalf("allowed %v: used %q; server accepted %d, refused %v", allowed, res.Connection.SASLMechanism, ok, failures)
			}
			if len(firsts) != 1 || !strings.HasPrefix(firsts[0], "p=tls-exporter,,n=alice,r=") {
				t.Fatalf("client-first messages %q: want the GS2 header p=tls-exporter", firsts)
			}
			if f.transactions() != 1 {
				t.Fatalf("%d transactions after AUTH", f.transactions())
			}
		}
	}
}

// The server offers SCRAM-SHA-256 alone: on TLS 1.3 the client says it
// could have bound the session (GS2 flag "y"). A server that did offer
// SCRAM-SHA-256-PLUS, where someone removed it from the EHLO reply on the
// way, sees the downgrade and refuses; nothing is sent.
func TestSCRAMAdvertisesChannelBinding(t *testing.T) {
	for _, advertised := range []bool{false, true} {
		p := &plusServer{advertised: advertised}
		f := plusFake(t, p, false, "PLAIN SCRAM-SHA-256")
		tr := fakeTransport(f, transport.StartTLS)
		d, canary := canaryDelivery(t)
		res, err := deliver(t, tr, d)
		firsts, failures, ok := p.result()
		if len(firsts) != 1 || !strings.HasPrefix(firsts[0], "y,,n=alice,r=") {
			t.Fatalf("client-first messages %q: want the GS2 flag y", firsts)
		}
		if !advertised {
			if err != nil || res.Connection.SASLMechanism != transport.MechSCRAMSHA256 || ok != 1 {
				t.Fatalf("error %v, server accepted %d, refused %v", err, ok, failures)
			}
			continue
		}
		var ae *mailsec.AuthError
		if !errors.As(err, &ae) || ae.Mechanism != transport.MechSCRAMSHA256 {
			t.Fatalf("error %v: want an AuthError for SCRAM-SHA-256", err)
		}
		if ok != 0 || len(failures) != 1 || !strings.Contains(failures[0], "downgrade") {
			t.Fatalf("server accepted %d, refused %v: want the downgrade seen", ok, failures)
		}
		assertNothingSent(t, f.plainBytes(), canary)
	}
}

// On TLS 1.2 there is no tls-exporter binding here (and tls-unique is
// never used): SCRAM-SHA-256 runs unbound, saying so (GS2 flag "n"), and a
// client that allows only SCRAM-SHA-256-PLUS sends nothing.
func TestSCRAMPlusNeedsTLS13(t *testing.T) {
	p := &plusServer{advertised: true}
	f := plusFake(t, p, false, "SCRAM-SHA-256 SCRAM-SHA-256-PLUS")
	tr := fakeTransport(f, transport.StartTLS)
	tr.TLSConfig.MaxVersion = tls.VersionTLS12
	d, _ := canaryDelivery(t)
	res, err := deliver(t, tr, d)
	if err != nil || res.Connection.TLSVersion != "TLS 1.2" || res.Connection.SASLMechanism != transport.MechSCRAMSHA256 {
		t.Fatalf("error %v, state %+v: want SCRAM-SHA-256 over TLS 1.2", err, res.Connection)
	}
	if firsts, _, _ := p.result(); len(firsts) != 1 || !strings.HasPrefix(firsts[0], "n,,") {
		t.Fatalf("client-first messages %q: want the GS2 flag n", firsts)
	}

	p = &plusServer{advertised: true}
	f = plusFake(t, p, false, "SCRAM-SHA-256 SCRAM-SHA-256-PLUS")
	tr = fakeTransport(f, transport.StartTLS)
	tr.TLSConfig.MaxVersion = tls.VersionTLS12
	tr.Auth.Mechanisms = []string{transport.MechSCRAMSHA256PLUS}
	d, canary := canaryDelivery(t)
	_, err = deliver(t, tr, d)
	var ae *mailsec.AuthError
	if !errors.As(err, &ae) || !strings.Contains(ae.Reason, "needs TLS 1.3") {
		t.Fatalf("error %v: want an AuthError saying PLUS needs TLS 1.3", err)
	}
	if firsts, _, _ := p.result(); len(firsts) != 0 {
		t.Fatalf("AUTH sent: %q", firsts)
	}
	assertNothingSent(t, f.plainBytes(), canary)
}

// tlsProxy terminates TLS with a certificate of its own (which the client
// trusts: a misissued one) and relays the plaintext to the fake over a TLS
// session of its own, replacing strip in what the server sends with "".
func tlsProxy(t *testing.T, f *fake, strip string) string {
	t.Helper()
	cert, err := f.ca.Issue(mailsectest.CertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := tls.Dial("tcp", f.addr(), &tls.Config{RootCAs: f.ca.Pool(), ServerName: "localhost"})
			if err != nil {
				c.Close()
				continue
			}
			down := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
			mu.Lock()
			conns = append(conns, down, up)
			mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(up, down)
				up.Close()
			}()
			go func() {
				defer wg.Done()
				defer down.Close()
				r := bufio.NewReader(up)
				for {
					line, err := r.ReadString('\n')
					if strip != "" {
						line = strings.ReplaceAll(line, strip, "")
					}
					if _, werr := io.WriteString(down, line); werr != nil || err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// A man in the middle with a certificate the client trusts relays the
// exchange: SCRAM-SHA-256-PLUS fails, since the client's TLS session is
// not the server's, and so does SCRAM-SHA-256 once the proxy removes the
// PLUS variant from the EHLO reply. PLAIN through the same proxy works
// (and hands the proxy the password): the proxy relays faithfully, and
// the binding is what stops it.
func TestSCRAMPlusThroughInterceptingProxy(t *testing.T) {
	for _, c := range []struct {
		name  string
		strip string
		mechs []string
		used  string
		why   string // the server's reason for refusing; "" for success
	}{
		{"PLUS", "", nil, transport.MechSCRAMSHA256PLUS, "channel binding mismatch"},
		{"PLUS removed", " SCRAM-SHA-256-PLUS", nil, transport.MechSCRAMSHA256, "downgrade"},
		{"PLAIN", "", []string{transport.MechPlain}, transport.MechPlain, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &plusServer{advertised: true}
			f := plusFake(t, p, true, "PLAIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS")
			tr := fakeTransport(f, transport.ImplicitTLS)
			tr.Addr = tlsProxy(t, f, c.strip)
			tr.Auth.Mechanisms = c.mechs
			d, canary := canaryDelivery(t)
			res, err := deliver(t, tr, d)
			_, failures, ok := p.result()
			if c.why == "" {
				if err != nil || res.Connection.SASLMechanism != c.used || f.transactions() != 1 {
					t.Fatalf("error %v: the proxy does not relay", err)
				}
				return
			}
			var ae *mailsec.AuthError
			if !errors.As(err, &ae) || ae.Mechanism != c.used || !errors.Is(err, mailsec.ErrAuth) {
				t.Fatalf("error %v: want an AuthError for %s", err, c.used)
			}
			if ok != 0 || len(failures) != 1 || !strings.Contains(failures[0], c.why) {
				t.Fatalf("server accepted %d, refused %q: want %q", ok, failures, c.why)
			}
			if c.used == transport.MechSCRAMSHA256PLUS && !strings.Contains(ae.Reason, "channel binding") {
				t.Fatalf("reason %q does not name the channel binding", ae.Reason)
			}
			if strings.Contains(err.Error(), password) {
				t.Fatal("the error reveals the password")
			}
			assertNothingSent(t, f.plainBytes(), canary)
		})
	}
}
