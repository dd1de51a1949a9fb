package transport_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
	"github.com/mailsec/mailsec/transport/mtasts"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

// guarded is the env's Direct with the default address rule.
func (e *mxEnv) guarded() *transport.Direct {
	d := e.direct()
	d.AllowPrivate = false
	sts := e.newSTSClient()
	sts.AllowPrivate = false
	d.MTASTS = sts
	return d
}

// An MX host whose address is not global unicast is not dialled: the
// delivery fails permanently with an AddressError naming the host and
// the address, and the server there sees nothing. The same env delivers
// with AllowPrivate, so the refusal is the guard's.
func TestDirectRefusesNonGlobalMX(t *testing.T) {
	for _, addr := range []string{"127.0.0.1", "10.0.0.1", "169.254.169.254", "::", "::ffff:127.0.0.1", "100.64.0.1",
		"fd00::25", "fe80::1", "192.0.2.10", "2002:7f00:1::1", "64:ff9b::a00:1", "0.0.0.0", "255.255.255.255", "240.0.0.1"} {
		t.Run(addr, func(t *testing.T) {
			e := newMXEnv(t)
			e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
			s := e.mx("mx1.example.org", addr, mailsectest.Config{})
			_, err := deliverDirect(t, e.guarded(), delivery(mailsec.Security{}, "ann@example.org"))
			var ae *mailsec.AddressError
			if !errors.Is(err, mailsec.ErrNonGlobalAddress) || !errors.As(err, &ae) {
				t.Fatalf("err = %v, want an AddressError", err)
			}
			if ae.Host != "mx1.example.org" || ae.Addr != netip.MustParseAddr(addr) || ae.Reason == "" ||
				!strings.Contains(err.Error(), "mx1.example.org") || !strings.Contains(err.Error(), ae.Addr.String()) {
				t.Fatalf("err = %v (%+v), want the host and the address named", err, ae)
			}
			if mailsec.IsTemporary(err) {
				t.Fatal("refusal is temporary; the same DNS answer is refused again")
			}
			if e.totalDials() != 0 || len(s.Wire()) != 0 || s.Transactions() != 0 {
				t.Fatalf("dialled %d times, server saw %d bytes", e.totalDials(), len(s.Wire()))
			}
			if a := netip.MustParseAddr(addr); a.Is4In6() {
				return // dialled as its IPv4 form, where the env has no server
			}
			if _, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org")); err != nil {
				t.Fatalf("with AllowPrivate: %v", err)
			}
		})
	}
}

// A Dialer that goes elsewhere than the address it was given (here: the
// env's, which connects a public address to a server on loopback) is
// caught on the connection's peer address, before a byte is sent.
func TestDirectGuardHoldsAtConnect(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	s := e.mx("mx1.example.org", "8.8.8.8", mailsectest.Config{})
	_, err := deliverDirect(t, e.guarded(), delivery(mailsec.Security{}, "ann@example.org"))
	var ae *mailsec.AddressError
	if !errors.As(err, &ae) || ae.Host != "mx1.example.org" || ae.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("err = %v, want an AddressError for 127.0.0.1", err)
	}
	if e.totalDials() != 1 {
		t.Fatalf("%d dials", e.totalDials())
	}
	if w := s.Wire(); len(w) != 0 || s.Transactions() != 0 {
		t.Fatalf("the server received %q", w)
	}
}

// One message to a domain with a thousand MX hosts, or one MX host with
// five hundred addresses, makes at most MaxAddresses connection attempts
// and looks up at most MaxMXHosts hosts.
func TestDirectLimits(t *testing.T) {
	t.Run("many MX hosts", func(t *testing.T) {
		e := newMXEnv(t)
		var mx []dns.MX
		for i := range 1000 {
			h := fmt.Sprintf("mx%d.example.org", i)
			mx = append(mx, dns.MX{Host: h, Pref: uint16(i)})
			e.res.IP(h, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
		}
		e.res.MX("example.org", mx...)
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
		if err == nil || !mailsec.IsTemporary(err) {
			t.Fatalf("err = %v, want a temporary failure (nothing listens)", err)
		}
		if n := e.totalDials(); n != transport.DefaultMaxAddresses {
			t.Fatalf("%d connection attempts, want %d", n, transport.DefaultMaxAddresses)
		}
		looked := 0
		for i := range 1000 {
			looked += e.res.Queries("IP", fmt.Sprintf("mx%d.example.org", i))
		}
		if looked > transport.DefaultMaxMXHosts {
			t.Fatalf("%d address lookups, want at most %d", looked, transport.DefaultMaxMXHosts)
		}
	})
	t.Run("many MX hosts without addresses", func(t *testing.T) {
		e := newMXEnv(t)
		var mx []dns.MX
		for i := range 1000 {
			mx = append(mx, dns.MX{Host: fmt.Sprintf("mx%d.example.org", i), Pref: uint16(i)})
		}
		e.res.MX("example.org", mx...)
		if _, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org")); err == nil {
			t.Fatal("delivered")
		}
		looked := 0
		for i := range 1000 {
			looked += e.res.Queries("IP", fmt.Sprintf("mx%d.example.org", i))
		}
		if looked != transport.DefaultMaxMXHosts {
			t.Fatalf("%d address lookups, want %d", looked, transport.DefaultMaxMXHosts)
		}
	})
	t.Run("many addresses", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		var addrs []netip.Addr
		for i := range 500 {
			addrs = append(addrs, netip.AddrFrom4([4]byte{198, 51, byte(100 + i/250), byte(i % 250)}))
		}
		e.res.IP("mx1.example.org", addrs...)
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
		if err == nil {
			t.Fatal("delivered with nothing listening")
		}
		if n := e.totalDials(); n != transport.DefaultMaxAddresses {
			t.Fatalf("%d connection attempts, want %d", n, transport.DefaultMaxAddresses)
		}
	})
	t.Run("sessions", func(t *testing.T) {
		e := newMXEnv(t)
		busy := &mailsec.Reply{Code: 421, EnhancedCode: mailsec.EnhancedCode{4, 3, 2}, Text: "busy"}
		var servers []*mailsectest.Server
		var mx []dns.MX
		for i := range 4 {
			h := fmt.Sprintf("mx%d.example.org", i)
			mx = append(mx, dns.MX{Host: h, Pref: uint16(10 * i)})
			servers = append(servers, e.mx(h, fmt.Sprintf("192.0.2.%d", 10+i), mailsectest.Config{MailReply: busy}))
		}
		e.res.MX("example.org", mx...)
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
		if err == nil || !mailsec.IsTemporary(err) {
			t.Fatalf("err = %v, want temporary", err)
		}
		if n := e.totalDials(); n != transport.DefaultMaxSessions {
			t.Fatalf("%d sessions, want %d", n, transport.DefaultMaxSessions)
		}
		for i, s := range servers {
			if got, want := len(s.Wire()) > 0, i < transport.DefaultMaxSessions; got != want {
				t.Errorf("server %d reached: %v, want %v", i, got, want)
			}
		}
	})
	t.Run("configured", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10}, dns.MX{Host: "mx2.example.org", Pref: 20},
			dns.MX{Host: "mx3.example.org", Pref: 30})
		for i, h := range []string{"mx1.example.org", "mx2.example.org", "mx3.example.org"} {
			e.res.IP(h, netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}))
		}
		d := e.direct()
		d.MaxMXHosts = 2
		d.MaxAddresses = 1
		_, err := deliverDirect(t, d, delivery(mailsec.Security{}, "ann@example.org"))
		if err == nil || e.totalDials() != 1 || e.res.Queries("IP", "mx3.example.org") != 0 {
			t.Fatalf("err %v, %d dials, mx3 looked up %d times", err, e.totalDials(), e.res.Queries("IP", "mx3.example.org"))
		}
		for _, bad := range []*transport.Direct{{Resolver: e.res, MaxMXHosts: -1}, {Resolver: e.res, MaxAddresses: -1}, {Resolver: e.res, MaxSessions: -1}, {Resolver: e.res, DialTimeout: -time.Second}} {
			if err := bad.Validate(); !errors.Is(err, mailsec.ErrConfig) {
				t.Errorf("negative limit: %v", err)
			}
		}
	})
}

// A Direct is refused when its MTA-STS client would resolve, trust or
// reach policy hosts differently from its MX hosts; the client it builds
// itself shares all three.
func TestDirectOneConfigurationForPolicyHosts(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
	e.sts("example.org", "1", "enforce", "mx1.example.org")
	for name, change := range map[string]func(d *transport.Direct, c *mtasts.Client){
		"TLSConfig":    func(d *transport.Direct, c *mtasts.Client) { c.TLSConfig = nil },
		"TLSConfig2":   func(d *transport.Direct, c *mtasts.Client) { c.TLSConfig = &tls.Config{RootCAs: e.ca.Pool()} },
		"Resolver":     func(d *transport.Direct, c *mtasts.Client) { c.Resolver = mailsectest.NewResolver() },
		"AllowPrivate": func(d *transport.Direct, c *mtasts.Client) { c.AllowPrivate = false },
	} {
		t.Run(name, func(t *testing.T) {
			d := e.direct()
			c := e.newSTSClient()
			change(d, c)
			d.MTASTS = c
			var ce *mailsec.ConfigError
			if err := d.Validate(); !errors.As(err, &ce) || !strings.HasPrefix(ce.Field, "Direct.MTASTS.") {
				t.Fatalf("Validate = %v", err)
			}
			if _, err := deliverDirect(t, d, delivery(mailsec.Security{}, "ann@example.org")); !errors.Is(err, mailsec.ErrConfig) {
				t.Fatalf("Deliver = %v", err)
			}
			e.nothingSent()
		})
	}

	// Without MTASTS, the client Direct builds trusts Direct.TLSConfig
	// (a private CA here), resolves the policy host through
	// Direct.Resolver and connects through Direct.Dialer: the enforce
	// policy served only in this resolver's view is applied.
	d := e.direct()
	d.MTASTS = nil
	d.Dialer = dialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, port, _ := net.SplitHostPort(addr); port == "443" {
			if host != policyHostAddr.String() {
				return nil, fmt.Errorf("policy host dialled at %s, not the resolver's address", host)
			}
			return new(net.Dialer).DialContext(ctx, network, e.policySrv.Listener.Addr().String())
		}
		return e.DialContext(ctx, network, addr)
	})
	res, err := deliverDirect(t, d, delivery(mailsec.Security{}, "ann@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Connection.Verification != mailsec.VerifiedMTASTS || len(s.Messages()) != 1 {
		t.Fatalf("connection = %+v, notes %q", res.Connection, res.Connection.Notes)
	}
}

// A context that ends while the policy is being fetched fails the
// delivery with a DomainError naming the domain and the policy host, and
// still matching the context's error.
func TestDirectPolicyFetchDeadlineTyped(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
	e.sts("example.org", "1", "enforce", "mx1.example.org")
	e.stalls.Store("example.org", true)
	d := e.direct()
	// The shared fetch outlives the caller up to the client's Timeout;
	// keep it short so that the policy server can close.
	d.MTASTS = e.newSTSClient()
	d.MTASTS.Timeout = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := d.Deliver(ctx, delivery(mailsec.Security{}, "ann@example.org"))
	var de *transport.DomainError
	var ne *mailsec.NetworkError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &de) || de.Domain != "example.org" ||
		!errors.As(err, &ne) || ne.Host != "mta-sts.example.org" {
		t.Fatalf("err = %T %v, want a DomainError for example.org naming mta-sts.example.org", err, err)
	}
	if !mailsec.IsTemporary(err) {
		t.Fatal("a deadline is temporary")
	}
	e.nothingSent()
}

// rawPolicy serves resp, as given, to every request for
// mta-sts.example.org, and returns an MTA-STS client for the env that
// reaches it.
func rawPolicy(t *testing.T, e *mxEnv, resp string, log *slog.Logger) *mtasts.Client {
	t.Helper()
	cert, err := e.ca.Issue(mailsectest.CertOptions{DNSNames: []string{"mta-sts.example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					_, _ = c.Write([]byte(resp))
				}
			}()
		}
	}()
	c := e.newSTSClient()
	c.Logger = log
	c.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return new(net.Dialer).DialContext(ctx, network, l.Addr().String())
	}
	return c
}

// The policy server's status line reaches the Receipt's notes and the
// log cleaned of terminal controls.
func TestDirectPolicyServerTextCleaned(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
	e.sts("example.org", "1", "enforce", "mx1.example.org")
	var logged bytes.Buffer
	d := e.direct()
	d.MTASTS = rawPolicy(t, e, "HTTP/1.1 500 \x1b[2J\x1b]0;pwned\x07\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		slog.New(slog.NewTextHandler(&logged, nil)))
	res, err := deliverDirect(t, d, delivery(mailsec.Security{}, "ann@example.org"))
	if err != nil || len(s.Messages()) != 1 {
		t.Fatalf("err = %v (a failed fetch is no policy)", err)
	}
	notes := strings.Join(res.Connection.Notes, "\n")
	if !strings.Contains(notes, "500 ?[2J?]0;pwned?") || strings.ContainsAny(notes, "\x1b\x07") {
		t.Fatalf("notes = %q", notes)
	}
	b, _ := json.Marshal(res.Connection)
	if bytes.Contains(b, []byte(`\u001b`)) || bytes.Contains(b, []byte(`\u0007`)) {
		t.Fatalf("receipt JSON carries the controls: %s", b)
	}
	if !strings.Contains(logged.String(), "policy fetch failed") || strings.ContainsAny(logged.String(), "\x1b\x07") || strings.Contains(logged.String(), `\x1b`) {
		t.Fatalf("log = %q", logged.String())
	}
}

// Every note in the Receipt is cleaned, whatever produced it: here a
// resolver's error text for the first MX host.
func TestDirectNotesCleaned(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10}, dns.MX{Host: "mx2.example.org", Pref: 20})
	e.res.Fail("IP", "mx1.example.org", &dns.Error{Name: "mx1.example.org", Type: "A", Kind: dns.Malformed,
		Err: errors.New("bad answer \x1b]0;pwned\x07\u202e")})
	e.mx("mx2.example.org", "192.0.2.20", mailsectest.Config{})
	res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(res.Connection.Notes, "\n")
	if !strings.Contains(notes, "bad answer ?]0;pwned??") || strings.ContainsAny(notes, "\x1b\x07\u202e") {
		t.Fatalf("notes = %q", notes)
	}
}

// After a failed policy fetch, the one session that follows is reported
// once: as a failure of the fetch, not as a failure and a success.
func TestDirectReportsOneResultPerSession(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
	e.sts("example.org", "1", "enforce", "mx1.example.org")
	e.redirects.Store("example.org", true)
	agg := &tlsrpt.Aggregator{}
	d := e.direct()
	d.Reports = agg
	if _, err := deliverDirect(t, d, delivery(mailsec.Security{}, "ann@example.org")); err != nil {
		t.Fatal(err)
	}
	rep, err := agg.Report("example.org", time.Now(), tlsrpt.Organization{Name: "Sender", ContactInfo: "tlsrpt@sender.example"})
	if err != nil {
		t.Fatal(err)
	}
	var ok, failed int64
	var types []tlsrpt.ResultType
	for _, p := range rep.Policies {
		ok += p.Summary.TotalSuccessfulSessionCount
		failed += p.Summary.TotalFailureSessionCount
		for _, f := range p.FailureDetails {
			types = append(types, f.ResultType)
		}
	}
	if ok+failed != 1 || failed != 1 || len(types) != 1 || types[0] != tlsrpt.STSPolicyFetchError {
		t.Fatalf("one session counted as %d successes and %d failures (%v)", ok, failed, types)
	}

	// The same for a testing-mode policy that does not list the host.
	e = newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx.other.example", Pref: 10})
	e.mx("mx.other.example", "192.0.2.10", mailsectest.Config{})
	e.sts("example.org", "1", "testing", "mx1.example.org")
	if _, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org")); err != nil {
		t.Fatal(err)
	}
	if rs := e.reports.results(); len(rs) != 1 || rs[0].Success || rs[0].Failure != tlsrpt.ValidationFailure {
		t.Fatalf("testing-mode violation reported as %+v", rs)
	}
}

// A report's failure-reason-code goes to the recipient domain: it names
// nothing of our own network (the resolver asked, our addresses).
func TestDirectReportsNoInternalAddresses(t *testing.T) {
	internal := []string{"10.1.2.3", "127.0.0.1", "5353", "10.9.9.9"}
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
	e.res.Fail("TXT", "_mta-sts.example.org", &dns.Error{Name: "_mta-sts.example.org", Type: "TXT",
		Kind: dns.ServerFailure, Server: "127.0.0.1:5353",
		Err: errors.New("lookup _mta-sts.example.org on 10.1.2.3:53: read udp 10.9.9.9:40000->10.1.2.3:53: i/o timeout")})
	// A signed host whose TLSA lookup fails the same way.
	e.res.MX("signed.example", dns.MX{Host: "mx1.signed.example", Pref: 10})
	e.res.Secure("signed.example")
	e.mx("mx1.signed.example", "192.0.2.11", mailsectest.Config{})
	e.res.Fail("TLSA", "_25._tcp.mx1.signed.example", &dns.Error{Name: "_25._tcp.mx1.signed.example", Type: "TLSA",
		Kind: dns.ServerFailure, Server: "[fd00::53]:53", Err: errors.New("read udp [fd00::1]:4000->[fd00::53]:53: i/o timeout")})
	agg := &tlsrpt.Aggregator{}
	d := e.direct()
	d.Reports = agg
	if _, err := deliverDirect(t, d, delivery(mailsec.Security{}, "ann@example.org")); err != nil {
		t.Fatal(err)
	}
	if _, err := deliverDirect(t, d, delivery(mailsec.Security{}, "ann@signed.example")); err == nil {
		t.Fatal("delivered although the TLSA lookup failed")
	}
	for _, dom := range []string{"example.org", "signed.example"} {
		rep, err := agg.Report(dom, time.Now(), tlsrpt.Organization{Name: "Sender", ContactInfo: "tlsrpt@sender.example"})
		if err != nil {
			t.Fatal(err)
		}
		// The report's ID is random hex, which may hold "fd00" itself.
		rep.ReportID = "id"
		js, _ := json.Marshal(rep)
		for _, s := range append(internal, "fd00", "resolver") {
			if bytes.Contains(js, []byte(s)) {
				t.Errorf("%s report names %q: %s", dom, s, js)
			}
		}
		if !bytes.Contains(js, []byte(`"failure-reason-code":"`)) {
			t.Errorf("%s report has no reason code: %s", dom, js)
		}
	}
}

// Check refuses an address where a domain is due, before any lookup.
func TestDirectCheckRefusesAnAddress(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	for _, in := range []string{"ann@example.org", "a@b", "@example.org", "example.org@"} {
		dc, err := e.direct().Check(t.Context(), in)
		var ve *mailsec.ValidationError
		if dc != nil || !errors.As(err, &ve) || ve.Value != in {
			t.Errorf("Check(%q) = %v, %v; want a ValidationError", in, dc, err)
		}
	}
	if n := e.res.Queries("MX", "example.org") + e.res.Queries("MX", "b"); n != 0 {
		t.Fatalf("%d MX lookups for an address", n)
	}
}

// Check does not connect to a host at a non-global address, and says so.
func TestDirectCheckNonGlobal(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	e.mx("mx1.example.org", "169.254.169.254", mailsectest.Config{})
	dc, err := e.guarded().Check(t.Context(), "example.org")
	if err != nil {
		t.Fatal(err)
	}
	// Refused on the DNS answer, before any dial (the connection-time
	// check words it differently).
	if len(dc.Hosts) != 1 || dc.Hosts[0].Status != "refused" || !strings.Contains(dc.Hosts[0].Verdict, "169.254.169.254") ||
		!strings.Contains(dc.Hosts[0].Verdict, "AllowPrivate") {
		t.Fatalf("check = %+v", dc.Hosts)
	}
	if e.totalDials() != 0 {
		t.Fatal("dialled")
	}
}

// nilAddrConn is a connection whose RemoteAddr is a nil *net.TCPAddr.
type nilAddrConn struct{ net.Conn }

func (nilAddrConn) RemoteAddr() net.Addr { return (*net.TCPAddr)(nil) }

// A nil pointer where Direct expects a Resolver, a Dialer or a reports
// recorder (the typed-nil mistake: a nil *tlsrpt.Aggregator assigned to
// Reports) is refused by Validate, Deliver and Check with a ConfigError
// naming the field, instead of panicking in a delivery.
// A Dialer whose connection reports a nil *net.TCPAddr as its peer is
// refused by the address guard, not a panic.
func TestDirectTypedNilConfiguration(t *testing.T) {
	for field, change := range map[string]func(d *transport.Direct){
		"Direct.Resolver": func(d *transport.Direct) { d.Resolver = (*mailsectest.Resolver)(nil); d.MTASTS = nil },
		"Direct.Reports":  func(d *transport.Direct) { d.Reports = (*tlsrpt.Aggregator)(nil) },
		"Direct.Dialer":   func(d *transport.Direct) { d.Dialer = (*net.Dialer)(nil) },
	} {
		t.Run(field, func(t *testing.T) {
			e := newMXEnv(t)
			e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
			e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
			for _, op := range []string{"Validate", "Deliver", "Check"} {
				d := e.direct()
				change(d)
				var err error
				func() {
					defer func() {
						if v := recover(); v != nil {
							t.Fatalf("%s panicked: %v", op, v)
						}
					}()
					switch op {
					case "Validate":
						err = d.Validate()
					case "Deliver":
						_, err = deliverDirect(t, d, delivery(mailsec.Security{}, "ann@example.org"))
					case "Check":
						_, err = d.Check(t.Context(), "example.org")
					}
				}()
				var ce *mailsec.ConfigError
				if !errors.As(err, &ce) || ce.Field != field {
					t.Fatalf("%s: err = %v, want a ConfigError for %s", op, err, field)
				}
			}
			e.nothingSent()
		})
	}

	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	s := e.mx("mx1.example.org", "8.8.8.8", mailsectest.Config{})
	d := e.guarded()
	d.Dialer = dialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := e.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return nilAddrConn{c}, nil
	})
	var err error
	func() {
		defer func() {
			if v := recover(); v != nil {
				t.Fatalf("Deliver panicked: %v", v)
			}
		}()
		_, err = deliverDirect(t, d, delivery(mailsec.Security{}, "ann@example.org"))
	}()
	var ae *mailsec.AddressError
	if !errors.As(err, &ae) || ae.Host != "mx1.example.org" || ae.Addr.IsValid() {
		t.Fatalf("err = %v, want an AddressError for a peer without an address", err)
	}
	if s.Transactions() != 0 || len(s.Wire()) != 0 {
		t.Fatal("the server was reached")
	}
}
