package mtasts_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport/mtasts"
)

// The policy host is resolved through the Client's Resolver and nothing
// else: a name the Resolver does not know is not found, even where the
// system's resolver would find it, and nothing is dialled.
func TestPolicyHostThroughResolver(t *testing.T) {
	e := newEnv(t)
	r := e.lookup(t, e.c)
	if r.Policy == nil || e.res.Queries("IP", "mta-sts.example.com") != 1 {
		t.Fatalf("policy %v, %d address lookups of the policy host", r.Policy, e.res.Queries("IP", "mta-sts.example.com"))
	}
	e.srv.mu.Lock()
	dials := append([]string(nil), e.srv.dials...)
	e.srv.mu.Unlock()
	if len(dials) != 1 || dials[0] != testPolicyAddr+":443" {
		t.Fatalf("dialled %q, want the resolver's address %s:443", dials, testPolicyAddr)
	}

	e = newEnv(t)
	e.res.Delete("IP", "mta-sts.example.com")
	se := checkFetchFailure(t, e, mtasts.ResultFetchError, dns.ErrNXDomain)
	var de *dns.Error
	if !errors.As(se, &de) || de.Name != "mta-sts.example.com" {
		t.Fatalf("Err = %v, want the Resolver's NXDOMAIN for the policy host", se)
	}
	if len(e.srv.dials) != 0 || e.srv.fetches.Load() != 0 {
		t.Fatalf("dialled %q without an address from the Resolver", e.srv.dials)
	}
}

// By default a policy host at a non-global address is not connected to:
// the fetch fails with an AddressError naming the host and the address,
// nothing is dialled, and no request is sent.
func TestPolicyHostNonGlobalRefused(t *testing.T) {
	for _, addr := range []string{"127.0.0.1", "10.1.2.3", "169.254.169.254", "::ffff:127.0.0.1", "fd00::1", "100.64.1.1", "::"} {
		t.Run(addr, func(t *testing.T) {
			e := newEnv(t)
			e.res.IP("mta-sts.example.com", addrs(addr)...)
			e.c.AllowPrivate = false
			se := checkFetchFailure(t, e, mtasts.ResultFetchError, mailsec.ErrNonGlobalAddress)
			var ae *mailsec.AddressError
			if !errors.As(se, &ae) || ae.Host != "mta-sts.example.com" || ae.Addr != netip.MustParseAddr(addr) || ae.Reason == "" {
				t.Fatalf("Err = %v, want an AddressError for mta-sts.example.com and %s", se, addr)
			}
			if len(e.srv.dials) != 0 || e.srv.fetches.Load() != 0 {
				t.Fatalf("dialled %q", e.srv.dials)
			}
		})
	}
}

// The check holds where the connection is made: a DialContext that
// ignores the address it is given and connects to loopback is refused
// once connected, before any byte of the request is sent.
func TestPolicyHostCheckedAtConnect(t *testing.T) {
	e := newEnv(t)
	e.res.IP("mta-sts.example.com", addrs("8.8.8.8")...)
	e.c.AllowPrivate = false
	se := checkFetchFailure(t, e, mtasts.ResultFetchError, mailsec.ErrNonGlobalAddress)
	var ae *mailsec.AddressError
	if !errors.As(se, &ae) || ae.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("Err = %v, want an AddressError for 127.0.0.1", se)
	}
	if n := e.srv.fetches.Load(); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}
}

// rawPolicyServer answers every request on a TLS listener with resp, as
// given, so that a test can send what net/http's server would not.
func rawPolicyServer(t *testing.T, e *env, resp string) {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{e.ca.leaf(t, "mta-sts.example.com")}})
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
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				_, _ = c.Write([]byte(resp))
			}()
		}
	}()
	e.c = e.client(nil)
	e.c.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return new(net.Dialer).DialContext(ctx, network, l.Addr().String())
	}
}

// What the policy server says (status line, Location, Content-Type)
// reaches Result.Err, and from there Receipts and logs, cleaned of
// terminal controls and of bidirectional overrides. net/http refuses
// header values with ASCII controls itself; C1 controls (U+009B is CSI
// on many terminals) and U+202E pass it.
func TestPolicyServerTextCleaned(t *testing.T) {
	const (
		ascii    = "\x1b[2J\x1b]0;pwned\x07"
		unicode  = "\u009b2J\u202egnp.exe"
		asciiOut = "?[2J?]0;pwned?"
		uniOut   = "?2J?gnp.exe"
	)
	for name, tc := range map[string]struct {
		resp, want string
		target     error
	}{
		"status":       {"HTTP/1.1 500 " + ascii + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", asciiOut, mtasts.ErrHTTPStatus},
		"status C1":    {"HTTP/1.1 500 " + unicode + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", uniOut, mtasts.ErrHTTPStatus},
		"location":     {"HTTP/1.1 302 Found\r\nLocation: https://x.example/" + unicode + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", uniOut, mtasts.ErrRedirect},
		"content type": {"HTTP/1.1 200 OK\r\nContent-Type: text/html" + unicode + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", uniOut, mtasts.ErrContentType},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			rawPolicyServer(t, e, tc.resp)
			se := checkFetchFailure(t, e, mtasts.ResultFetchError, tc.target)
			msg := se.Error()
			// The cause alone is clean too, for code that unwraps it.
			if cause := errors.Unwrap(se).Error(); strings.ContainsAny(msg+cause, "\x1b\x07\u009b\u202e") {
				t.Fatalf("controls in %q (cause %q)", msg, cause)
			}
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("the server's text is not reported (cleaned) in %q", msg)
			}
		})
	}
}

// A context that ends while the policy is fetched ends Lookup with an
// error that names the policy host and still matches the context's.
func TestLookupContextEndsTyped(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	defer close(release)
	e.srv.set(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := e.c.Lookup(ctx, testDomain)
	var ne *mailsec.NetworkError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ne) || ne.Host != "mta-sts.example.com" {
		t.Fatalf("err = %T %v, want a NetworkError for mta-sts.example.com matching DeadlineExceeded", err, err)
	}
	if !mailsec.IsTemporary(err) {
		t.Fatal("a deadline is temporary")
	}
}

// Text inside the fetch error that no status or header check sees (here
// the names of a certificate for the wrong host) is cleaned by the
// Error's own text.
func TestPolicyErrorTextCleaned(t *testing.T) {
	e := newEnv(t)
	e.srv = newSTSServer(t, e.ca.leaf(t, "\x1b]0;pwned\x07.example.com"), servePolicy(policyText(mtasts.Enforce, 600, "mx.example.com")))
	e.c = e.client(nil)
	se := checkFetchFailure(t, e, mtasts.ResultWebPKIInvalid, nil)
	if msg := se.Error(); strings.ContainsAny(msg, "\x1b\x07") || !strings.Contains(msg, "?]0;pwned?.example.com") {
		t.Fatalf("Err = %q", msg)
	}
}

// A nil pointer as the Resolver or the Cache (a nil *DirCache when no
// directory was configured, say) is refused with a ConfigError that names
// the field, instead of panicking in Lookup.
func TestTypedNilConfiguration(t *testing.T) {
	e := newEnv(t)
	for field, c := range map[string]*mtasts.Client{
		"mtasts.Client.Resolver": {Resolver: (*mailsectest.Resolver)(nil)},
		"mtasts.Client.Cache":    {Resolver: e.res, Cache: (*mtasts.MemCache)(nil)},
		"mtasts.Client.Cache ":   {Resolver: e.res, Cache: (*mtasts.DirCache)(nil)},
	} {
		var err error
		func() {
			defer func() {
				if v := recover(); v != nil {
					t.Fatalf("%s: Lookup panicked: %v", field, v)
				}
			}()
			_, err = c.Lookup(context.Background(), "example.com")
		}()
		var ce *mailsec.ConfigError
		if !errors.As(err, &ce) || ce.Field != strings.TrimSpace(field) {
			t.Fatalf("%s: err = %v, want a ConfigError for the field", field, err)
		}
	}
	if n := e.res.Lookups(); n != 0 {
		t.Fatalf("%d lookups", n)
	}
}

// panicResolver panics in the lookups named in its set, else asks r.
type panicResolver struct {
	*mailsectest.Resolver
	txt, ip bool
}

func (p panicResolver) LookupTXT(ctx context.Context, name string) (dns.Answer[string], error) {
	if p.txt {
		panic("resolver bug (TXT)")
	}
	return p.Resolver.LookupTXT(ctx, name)
}

func (p panicResolver) LookupIP(ctx context.Context, name string) (dns.Answer[netip.Addr], error) {
	if p.ip {
		panic("resolver bug (A/AAAA)")
	}
	return p.Resolver.LookupIP(ctx, name)
}

// panicCache panics on Put, or on Get when get is set.
type panicCache struct {
	mtasts.MemCache
	get bool
}

func (c *panicCache) Get(ctx context.Context, domain string) ([]byte, error) {
	if c.get {
		panic("cache bug (Get)")
	}
	return c.MemCache.Get(ctx, domain)
}

func (*panicCache) Put(context.Context, string, []byte) error { panic("cache bug") }

// A Resolver, Cache or DialContext that panics runs in goroutines of the
// Client's and of net/http's, where no caller could recover the panic:
// the process would go down. Lookup returns the panic as its error
// instead, and remembers nothing: the next Lookup tries again rather than
// going on as if the domain had no policy.
func TestLookupSurvivesPanickingDependencies(t *testing.T) {
	for name, edit := range map[string]func(e *env, c *mtasts.Client){
		"LookupTXT": func(e *env, c *mtasts.Client) { c.Resolver = panicResolver{Resolver: e.res, txt: true} },
		"LookupIP":  func(e *env, c *mtasts.Client) { c.Resolver = panicResolver{Resolver: e.res, ip: true} },
		"Cache":     func(e *env, c *mtasts.Client) { c.Cache = &panicCache{} },
		"Cache.Get": func(e *env, c *mtasts.Client) { c.Cache = &panicCache{get: true} },
		"DialContext": func(e *env, c *mtasts.Client) {
			c.DialContext = func(context.Context, string, string) (net.Conn, error) { panic("dialer bug") }
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			c := e.client(nil)
			edit(e, c)
			for range 2 {
				r, err := c.Lookup(context.Background(), testDomain)
				if err == nil || r != nil || !strings.Contains(err.Error(), "panicked") || !strings.Contains(err.Error(), "bug") {
					t.Fatalf("Lookup = %+v, %v; want the panic as an error", r, err)
				}
			}
		})
	}
}
