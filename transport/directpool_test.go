package transport_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/leaktest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// sameEvidence fails the test unless a reused session's Receipt shows the
// verification evidence the session had when it was made.
func sameEvidence(t *testing.T, first, again *mailsec.ConnectionState) {
	t.Helper()
	if !again.Reused || first.Reused {
		t.Fatalf("reused: first %v, then %v; want false, then true", first.Reused, again.Reused)
	}
	a, b := *first, *again
	a.Reused, b.Reused, a.Notes, b.Notes = false, false, nil, nil
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("the reused session's evidence differs:\nfirst %+v\nthen  %+v", a, b)
	}
	if a.Verification == "" || a.PeerPin == (mailsec.Pin{}) || a.Policy == "" || a.Domain == "" {
		t.Fatalf("no evidence: %+v", a)
	}
}

func TestDirectPoolReuse(t *testing.T) {
	t.Run("webpki", func(t *testing.T) {
		t.Cleanup(leaktest.Check(t)) // after the servers have closed
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
		tr := e.direct()
		first, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@example.org"))
		if err != nil {
			t.Fatal(err)
		}
		again, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "bob@example.org"))
		if err != nil {
			t.Fatal(err)
		}
		sameEvidence(t, first.Connection, again.Connection)
		if !again.Recipients[0].Connection.Reused {
			t.Fatal("the recipient's result does not say the session was reused")
		}
		if len(s.Messages()) != 2 || s.Connections() != 1 || e.totalDials() != 1 {
			t.Fatalf("%d messages over %d connections (%d dials); want 2 over 1", len(s.Messages()), s.Connections(), e.totalDials())
		}
		// One TLS session, one result for TLS reporting.
		if rs := e.reports.results(); len(rs) != 1 || !rs[0].Success {
			t.Fatalf("reports = %+v", rs)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.WaitIdle(5 * time.Second); err != nil {
			t.Fatalf("Close left the pooled session open: %v", err)
		}
		if _, err := tr.Deliver(context.Background(), delivery(mailsec.Security{}, "cy@example.org")); !errors.Is(err, transport.ErrClosed) {
			t.Fatalf("Deliver after Close: %v", err)
		}
		if len(s.Messages()) != 2 {
			t.Fatal("a message went out after Close")
		}
	})
	t.Run("dane", func(t *testing.T) {
		e, leaf := daneEnv(t)
		tr := e.direct()
		defer tr.Close()
		e.res.TLSA("_25._tcp.mx1.secure.example", tlsaFor(leaf))
		first, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@secure.example"))
		if err != nil {
			t.Fatal(err)
		}
		again, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@secure.example"))
		if err != nil {
			t.Fatal(err)
		}
		sameEvidence(t, first.Connection, again.Connection)
		if c := again.Connection; c.Verification != mailsec.VerifiedDANEEE || c.TLSA != tlsaFor(leaf).String() || c.Policy != "dane" {
			t.Fatalf("connection = %+v", c)
		}
		if e.totalDials() != 1 {
			t.Fatalf("%d dials", e.totalDials())
		}
	})
}

// daneEnv is secure.example with one MX host whose certificate only its
// TLSA records can authenticate, and which offers REQUIRETLS.
func daneEnv(t *testing.T) (*mxEnv, *x509.Certificate) {
	t.Helper()
	untrusted, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := untrusted.Issue(mailsectest.CertOptions{DNSNames: []string{"mx1.secure.example"}})
	if err != nil {
		t.Fatal(err)
	}
	e := newMXEnv(t)
	e.res.Secure("secure.example")
	e.res.MX("secure.example", dns.MX{Host: "mx1.secure.example", Pref: 10})
	e.mx("mx1.secure.example", "192.0.2.60", mailsectest.Config{Certificate: &cert, RequireTLS: true})
	return e, cert.Leaf
}

// A session is never shared across requirements: each case makes a
// session under one requirement, then delivers under another that the
// first session does not meet, or that was not asked when it was made.
func TestDirectPoolSeparatesRequirements(t *testing.T) {
	untrusted, _ := mailsectest.NewCA()
	wrong, err := untrusted.Issue(mailsectest.CertOptions{DNSNames: []string{"mx1.example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("a stricter level", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{Certificate: &wrong})
		tr := e.direct()
		defer tr.Close()
		if _, err := deliverDirect(t, tr, delivery(mailsec.Security{Level: mailsec.Unverified}, "ann@example.org")); err != nil {
			t.Fatal(err)
		}
		_, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@example.org"))
		var se *mailsec.SecurityError
		if !errors.As(err, &se) || !errors.Is(err, mailsec.ErrCertificate) {
			t.Fatalf("err = %v; want the certificate refused", err)
		}
		if n := len(s.Messages()); n != 1 {
			t.Fatalf("%d messages: the verified delivery rode the unverified session", n)
		}
	})
	t.Run("DANE records changed", func(t *testing.T) {
		e, leaf := daneEnv(t)
		tr := e.direct()
		defer tr.Close()
		e.res.TLSA("_25._tcp.mx1.secure.example", tlsaFor(leaf))
		if _, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@secure.example")); err != nil {
			t.Fatal(err)
		}
		// The domain now publishes a key the server does not have.
		other, _ := mailsectest.NewCA()
		c, err := other.Issue(mailsectest.CertOptions{DNSNames: []string{"mx1.secure.example"}})
		if err != nil {
			t.Fatal(err)
		}
		e.res.TLSA("_25._tcp.mx1.secure.example", tlsaFor(c.Leaf))
		_, err = deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@secure.example"))
		if !errors.Is(err, mailsec.ErrCertificate) {
			t.Fatalf("err = %v; want a DANE mismatch", err)
		}
		if n := len(e.servers["192.0.2.60"].Messages()); n != 1 {
			t.Fatalf("%d messages: the delivery rode a session made under other TLSA records", n)
		}
	})
	t.Run("pins changed", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{Certificate: &wrong})
		tr := e.direct()
		defer tr.Close()
		if _, err := deliverDirect(t, tr, delivery(mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{mailsec.PinOf(wrong.Leaf)}}, "ann@example.org")); err != nil {
			t.Fatal(err)
		}
		_, err := deliverDirect(t, tr, delivery(mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{{1}}}, "ann@example.org"))
		if !errors.Is(err, mailsec.ErrCertificate) {
			t.Fatalf("err = %v; want a pin mismatch", err)
		}
		if n := len(s.Messages()); n != 1 {
			t.Fatalf("%d messages: the delivery rode a session pinned to another key", n)
		}
	})
	t.Run("REQUIRETLS", func(t *testing.T) {
		e, leaf := daneEnv(t)
		tr := e.direct()
		defer tr.Close()
		e.res.TLSA("_25._tcp.mx1.secure.example", tlsaFor(leaf))
		if _, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@secure.example")); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			d := delivery(mailsec.Security{}, "ann@secure.example")
			d.RequireTLS = true
			res, err := deliverDirect(t, tr, d)
			if err != nil {
				t.Fatal(err)
			}
			// The first REQUIRETLS message gets a session of its own; the
			// second reuses that one.
			if want := i == 1; res.Connection.Reused != want {
				t.Fatalf("REQUIRETLS message %d: reused = %v", i, res.Connection.Reused)
			}
		}
		if e.totalDials() != 2 {
			t.Fatalf("%d dials; want one per requirement", e.totalDials())
		}
	})
	t.Run("another recipient domain", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		e.res.MX("example.net", dns.MX{Host: "mx1.example.org", Pref: 10})
		e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
		tr := e.direct()
		defer tr.Close()
		if _, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@example.org")); err != nil {
			t.Fatal(err)
		}
		res, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@example.net"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Connection.Reused || res.Connection.Domain != "example.net" || e.totalDials() != 2 {
			t.Fatalf("connection = %+v after %d dials", res.Connection, e.totalDials())
		}
	})
}

// A new MTA-STS policy (a new id) is a new requirement: the session made
// under the old one is not reused.
func TestDirectPoolMTASTSPolicyChange(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
	// The policy's id is looked up before every delivery.
	e.stsClient.RefreshInterval = time.Nanosecond
	tr := e.direct()
	defer tr.Close()
	for i, step := range []struct {
		id     string
		reused bool
	}{{"1", false}, {"1", true}, {"2", false}, {"2", true}} {
		e.sts("example.org", step.id, "enforce", "mx1.example.org")
		res, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@example.org"))
		if err != nil {
			t.Fatal(err)
		}
		c := res.Connection
		if c.Reused != step.reused || c.Verification != mailsec.VerifiedMTASTS {
			t.Fatalf("delivery %d under policy %s: connection = %+v", i, step.id, c)
		}
	}
	if s.Connections() != 2 || len(s.Messages()) != 4 || e.fetches.Load() != 2 {
		t.Fatalf("%d connections, %d messages, %d policy fetches", s.Connections(), len(s.Messages()), e.fetches.Load())
	}
}

// fakeDirect is a Direct whose only MX host, mx1.example.org for
// example.org, is the scripted server f. Its certificate is for no name:
// deliveries use the Unverified level.
func fakeDirect(f *fake) *transport.Direct {
	res := mailsectest.NewResolver()
	res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	res.IP("mx1.example.org", netip.MustParseAddr("192.0.2.10"))
	return &transport.Direct{
		Resolver:  res,
		LocalName: "sender.example",
		Dialer: dialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, f.addr())
		}),
		AllowPrivate: true,
	}
}

var unverified = mailsec.Security{Level: mailsec.Unverified}

func TestDirectPoolStaleSessions(t *testing.T) {
	for _, c := range []struct {
		name string
		ext  []string
	}{
		{"pipelining", []string{"PIPELINING", "8BITMIME"}},
		{"chunking", []string{"PIPELINING", "8BITMIME", "CHUNKING"}},
		{"lockstep", []string{"8BITMIME"}},
	} {
		ext := c.ext
		t.Run(c.name, func(t *testing.T) {
			t.Run("closed by the server", func(t *testing.T) {
				f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, postTLSExt: ext, closeAfter: 1})
				tr := fakeDirect(f)
				for i := range 3 {
					// The server has hung up by now (with CHUNKING, a
					// session it closes while the next message is on its
					// way leaves that message's verdict unknown, and the
					// message is not sent again: see below).
					f.settle()
					res, err := deliverDirect(t, tr, delivery(unverified, "ann@example.org"))
					if err != nil {
						t.Fatal(err)
					}
					if res.Connection.Reused {
						t.Fatalf("message %d went over a session the server had closed", i)
					}
				}
				tr.Close()
				if f.connections() != 3 || f.terminators() != 3 {
					t.Fatalf("%d connections, %d messages", f.connections(), f.terminators())
				}
			})
			t.Run("421 before the content", func(t *testing.T) {
				f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, postTLSExt: ext, limit421: 1})
				tr := fakeDirect(f)
				for range 2 {
					if _, err := deliverDirect(t, tr, delivery(unverified, "ann@example.org")); err != nil {
						t.Fatal(err)
					}
				}
				tr.Close()
				if f.connections() != 2 || f.terminators() != 2 {
					t.Fatalf("%d connections, %d messages; want the second moved to a new session", f.connections(), f.terminators())
				}
			})
			t.Run("dropped after the content", func(t *testing.T) {
				f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}, postTLSExt: ext, hook: func(verb string, c *fakeConn) bool {
					if verb == "." && c.n == 2 {
						c.hangup()
						return true
					}
					return false
				}})
				tr := fakeDirect(f)
				if _, err := deliverDirect(t, tr, delivery(unverified, "ann@example.org")); err != nil {
					t.Fatal(err)
				}
				res, err := deliverDirect(t, tr, delivery(unverified, "ann@example.org"))
				var ne *mailsec.NetworkError
				if !errors.As(err, &ne) || !mailsec.IsTemporary(err) {
					t.Fatalf("err = %v; want a temporary network error", err)
				}
				if res == nil || res.Recipients[0].Accepted {
					t.Fatalf("result = %+v", res)
				}
				tr.Close()
				// The content went out: a retry could deliver it twice.
				if f.connections() != 1 || f.terminators() != 2 {
					t.Fatalf("%d connections, %d messages; the message whose verdict is unknown was sent again",
						f.connections(), f.terminators())
				}
			})
		})
	}
}

func TestDirectPoolLimits(t *testing.T) {
	t.Run("messages per session", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
		tr := e.direct()
		tr.MaxMessagesPerConn = 2
		defer tr.Close()
		for i := range 5 {
			res, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@example.org"))
			if err != nil {
				t.Fatal(err)
			}
			if want := i%2 == 1; res.Connection.Reused != want {
				t.Fatalf("message %d: reused = %v", i, res.Connection.Reused)
			}
		}
		if s.Connections() != 3 {
			t.Fatalf("%d connections for 5 messages at 2 per session", s.Connections())
		}
	})
	t.Run("idle timeout and health check", func(t *testing.T) {
		f := newFake(t, fakeOpts{preTLSExt: []string{"STARTTLS"}})
		tr := fakeDirect(f)
		tr.IdleTimeout = 300 * time.Millisecond
		tr.HealthCheckAfter = 50 * time.Millisecond
		for _, pause := range []time.Duration{0, 100 * time.Millisecond, 600 * time.Millisecond} {
			time.Sleep(pause)
			if _, err := deliverDirect(t, tr, delivery(unverified, "ann@example.org")); err != nil {
				t.Fatal(err)
			}
		}
		tr.Close()
		n := 0
		for _, c := range f.commands() {
			if c == "NOOP" {
				n++
			}
		}
		if n != 1 || f.connections() != 2 {
			t.Fatalf("%d NOOPs, %d connections; want one NOOP (after 100ms idle) and a new session after 600ms", n, f.connections())
		}
	})
	t.Run("negative", func(t *testing.T) {
		e := newMXEnv(t)
		tr := e.direct()
		tr.MaxConnsPerHost = -1
		var ce *mailsec.ConfigError
		if err := tr.Validate(); !errors.As(err, &ce) || ce.Field != "Direct.MaxConnsPerHost" {
			t.Fatalf("err = %v", err)
		}
	})
}

// Many goroutines delivering to one MX host under two requirements share
// at most MaxConnsPerHost sessions.
func TestDirectPoolConcurrent(t *testing.T) {
	t.Cleanup(leaktest.Check(t)) // after the servers have closed
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{Discard: true})
	tr := e.direct()
	tr.MaxConnsPerHost = 2
	oc := &openCounter{d: e}
	tr.Dialer = oc
	levels := []mailsec.SecurityLevel{mailsec.Verified, mailsec.VerifyMX}
	var wg sync.WaitGroup
	var mu sync.Mutex
	reused := 0
	for g := range 8 {
		wg.Go(func() {
			for range 5 {
				sec := mailsec.Security{Level: levels[g%2]}
				res, err := deliverDirect(t, tr, delivery(sec, "ann@example.org"))
				if err != nil {
					t.Error(err)
					return
				}
				if want := map[mailsec.SecurityLevel]string{mailsec.Verified: "verified", mailsec.VerifyMX: "verify"}[sec.Level]; res.Connection.Policy != want {
					t.Errorf("a %s delivery went over a %q session", sec.Level, res.Connection.Policy)
				}
				mu.Lock()
				if res.Connection.Reused {
					reused++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	tr.Close()
	if err := s.WaitIdle(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := s.Transactions(); n != 40 {
		t.Fatalf("%d transactions", n)
	}
	if s.Connections() > 40-reused || reused == 0 {
		t.Fatalf("%d connections, %d reused sessions", s.Connections(), reused)
	}
	if max := oc.maxOpen(); max > 2 {
		t.Fatalf("%d sessions open at once; the limit is 2", max)
	}
}

// openCounter is a Dialer that counts the connections open at once.
type openCounter struct {
	d         transport.Dialer
	mu        sync.Mutex
	open, max int
}

func (o *openCounter) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := o.d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	o.open++
	o.max = max(o.max, o.open)
	o.mu.Unlock()
	return &countedConn{Conn: c, o: o}, nil
}

func (o *openCounter) maxOpen() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.max
}

type countedConn struct {
	net.Conn
	o    *openCounter
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.o.mu.Lock()
		c.o.open--
		c.o.mu.Unlock()
	})
	return c.Conn.Close()
}

// A new session to an MX host resumes the TLS session of an earlier one
// made under the same requirement, and the Receipt says so; under
// another requirement it does not.
func TestDirectTLSResumption(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
	tr := e.direct()
	tr.MaxMessagesPerConn = 1 // every delivery on a session of its own
	defer tr.Close()
	first, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "bob@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if first.Connection.TLSResumed || !again.Connection.TLSResumed || again.Connection.Reused {
		t.Fatalf("first resumed %v; second resumed %v, reused %v", first.Connection.TLSResumed, again.Connection.TLSResumed, again.Connection.Reused)
	}
	if again.Connection.Verification != first.Connection.Verification {
		t.Fatalf("verification %q, then %q", first.Connection.Verification, again.Connection.Verification)
	}
	other, err := deliverDirect(t, tr, delivery(mailsec.Security{Level: mailsec.Unverified}, "carl@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if other.Connection.TLSResumed {
		t.Fatal("a session made under another requirement was resumed")
	}
	if n := s.Connections(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}
