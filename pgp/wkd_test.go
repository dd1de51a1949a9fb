package pgp_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

func TestWKDHash(t *testing.T) {
	// The vector gpg-wks-client --print-wkd-hash gives.
	if h := pgp.WKDHash("rcpt"); h != "9fbnk5ct9jhruf8nx9ezzkd5jot6ugu6" {
		t.Fatalf("hash %s", h)
	}
	if pgp.WKDHash("RCPT") != pgp.WKDHash("rcpt") {
		t.Fatal("hash is case-sensitive")
	}
	u, err := pgp.WKDURLs("rcpt@Example.ORG")
	if err != nil {
		t.Fatal(err)
	}
	if u[0] != "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/9fbnk5ct9jhruf8nx9ezzkd5jot6ugu6?l=rcpt" ||
		u[1] != "https://example.org/.well-known/openpgpkey/hu/9fbnk5ct9jhruf8nx9ezzkd5jot6ugu6?l=rcpt" {
		t.Fatalf("URLs %v", u)
	}
	for _, bad := range []string{"noat", "a@b/c", "@x", "a@"} {
		if _, err := pgp.WKDURLs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// wkdServer serves the keys (binary) at the advanced or direct path.
func wkdServer(t *testing.T, handler http.HandlerFunc) (*httptest.Server, *atomic.Int32, func(string) ([]string, error)) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	urls := func(addr string) ([]string, error) {
		u, err := pgp.WKDURLs(addr)
		if err != nil {
			return nil, err
		}
		for i := range u {
			u[i] = srv.URL + u[i][strings.Index(u[i], "/.well-known"):]
		}
		return u, nil
	}
	return srv, &hits, urls
}

func TestWKDLookup(t *testing.T) {
	k := testKeys(t)
	var ring strings.Builder
	for _, a := range []string{"ann@example.org", "carl@example.org"} {
		if err := k[a].Serialize(&ring); err != nil {
			t.Fatal(err)
		}
	}
	advanced := "/.well-known/openpgpkey/example.org/hu/" + pgp.WKDHash("ann")
	direct := "/.well-known/openpgpkey/hu/" + pgp.WKDHash("ann")
	for _, path := range []string{advanced, direct} {
		srv, hits, urls := wkdServer(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != path || r.URL.Query().Get("l") != "ann" {
				http.NotFound(w, r)
				return
			}
			_, _ = w.Write([]byte(ring.String()))
		})
		wkd := &pgp.WKD{Client: srv.Client(), URLs: urls, AllowPrivate: true}
		for range 2 {
			es, err := wkd.Lookup(context.Background(), "ann@example.org")
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			// carl's key came along in the response; only ann's is kept.
			if len(es) != 1 || pgp.Fingerprint(es[0]) != pgp.Fingerprint(k["ann@example.org"]) {
				t.Fatalf("%s: %d keys", path, len(es))
			}
		}
		want := int32(1)
		if path == direct {
			want = 2 // advanced 404, then direct
		}
		if hits.Load() != want {
			t.Fatalf("%s: %d fetches for two lookups, want %d (cached)", path, hits.Load(), want)
		}
		if _, err := wkd.Lookup(context.Background(), "dave@example.org"); !errors.Is(err, pgp.ErrKeyNotFound) {
			t.Fatalf("unknown address: %v", err)
		}
	}
}

func TestWKDRefusals(t *testing.T) {
	k := testKeys(t)
	var key strings.Builder
	_ = k["ann@example.org"].Serialize(&key)
	srv, _, urls := wkdServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("l") {
		case "slow":
			time.Sleep(time.Second)
		case "redirect":
			http.Redirect(w, r, "http://example.org/key", http.StatusFound)
		case "big":
			_, _ = w.Write([]byte(strings.Repeat(key.String(), 20)))
		case "other":
			_, _ = w.Write([]byte(key.String())) // ann's key for another address
		case "junk":
			_, _ = w.Write([]byte("\x99\x01junk"))
		}
	})
	base := pgp.WKD{Client: srv.Client(), URLs: urls, MaxSize: 4 << 10, Timeout: 300 * time.Millisecond, TTL: -1, AllowPrivate: true}
	for addr, want := range map[string]string{
		"slow@example.org":     "deadline",
		"redirect@example.org": "HTTPS only",
		"big@example.org":      "larger than",
		"other@example.org":    "no key found",
		"junk@example.org":     "corrupt",
	} {
		wkd := &pgp.WKD{Client: base.Client, URLs: base.URLs, MaxSize: base.MaxSize, Timeout: base.Timeout, TTL: base.TTL, AllowPrivate: true}
		start := time.Now()
		_, err := wkd.Lookup(context.Background(), addr)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", addr, err, want)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("%s: took %v", addr, time.Since(start))
		}
	}
	plain := &pgp.WKD{URLs: func(string) ([]string, error) { return []string{"http://127.0.0.1:1/x"}, nil }}
	if _, err := plain.Lookup(context.Background(), "ann@example.org"); err == nil || !strings.Contains(err.Error(), "HTTPS only") {
		t.Fatalf("plain HTTP: %v", err)
	}
}

// Concurrent first lookups of one address share one fetch; the cache is
// bounded; a domain that does not exist in DNS means "no key", while a
// failure to connect is an error, never "no key".
func TestWKDFlightCacheAndFailures(t *testing.T) {
	k := testKeys(t)
	var key strings.Builder
	_ = k["ann@example.org"].Serialize(&key)
	srv, hits, urls := wkdServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("l") != "ann" {
			http.NotFound(w, r)
			return
		}
		time.Sleep(200 * time.Millisecond)
		_, _ = w.Write([]byte(key.String()))
	})
	wkd := &pgp.WKD{Client: srv.Client(), URLs: urls, MaxEntries: 1, AllowPrivate: true}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if es, err := wkd.Lookup(context.Background(), "ann@example.org"); err != nil || len(es) != 1 {
				t.Errorf("lookup: %v", err)
			}
		})
	}
	wg.Wait()
	if n := hits.Load(); n != 1 {
		t.Fatalf("%d fetches for 8 concurrent lookups, want 1", n)
	}
	// A second address evicts the first from a one-entry cache.
	if _, err := wkd.Lookup(context.Background(), "dave@example.org"); !errors.Is(err, pgp.ErrKeyNotFound) {
		t.Fatal(err)
	}
	before := hits.Load()
	if _, err := wkd.Lookup(context.Background(), "ann@example.org"); err != nil || hits.Load() == before {
		t.Fatalf("after eviction: %v, fetched again: %v", err, hits.Load() != before)
	}

	dialing := func(err error) *http.Client {
		return &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return nil, err }}}
	}
	nxdomain := &pgp.WKD{Client: dialing(&net.DNSError{Err: "no such host", Name: "openpgpkey.example.org", IsNotFound: true}), TTL: -1}
	if _, err := nxdomain.Lookup(context.Background(), "ann@example.org"); !errors.Is(err, pgp.ErrKeyNotFound) {
		t.Fatalf("NXDOMAIN: %v, want ErrKeyNotFound", err)
	}
	reset := &pgp.WKD{Client: dialing(errors.New("connection reset by peer")), TTL: -1}
	if _, err := reset.Lookup(context.Background(), "ann@example.org"); err == nil || errors.Is(err, pgp.ErrKeyNotFound) {
		t.Fatalf("connection reset: %v, want an error that is not ErrKeyNotFound", err)
	}
	// Under a policy that only prefers protection, a reset lookup must
	// not turn into "no key, send in clear".
	p, err := pgp.New(reset, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	sender, err := mailsec.NewSender(rt, &mailsec.Options{Policy: mailsec.PreferProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = sender.Send(context.Background(), &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Subject: "s", Text: "t"})
	if err == nil || !mailsec.IsTemporary(err) || len(rt.Deliveries()) != 0 {
		t.Fatalf("prefer with a reset lookup: %v (temporary %v), %d deliveries", err, mailsec.IsTemporary(err), len(rt.Deliveries()))
	}
}

// The key servers' names come from the recipient's domain: by default a
// server at a loopback, private or link-local address gets no request,
// and the lookup fails (it is not "no key"). With AllowPrivate the same
// server answers.
func TestWKDRefusesNonGlobal(t *testing.T) {
	k := testKeys(t)
	var key strings.Builder
	_ = k["ann@example.org"].Serialize(&key)
	srv, hits, urls := wkdServer(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(key.String())) })
	wkd := &pgp.WKD{Client: srv.Client(), URLs: urls, TTL: -1}
	_, err := wkd.Lookup(context.Background(), "ann@example.org")
	var ae *mailsec.AddressError
	var we *pgp.WKDError
	if !errors.As(err, &we) || we.Addr != "ann@example.org" || !errors.As(err, &ae) || ae.Host != "127.0.0.1" ||
		ae.Addr != netip.MustParseAddr("127.0.0.1") || errors.Is(err, pgp.ErrKeyNotFound) {
		t.Fatalf("err = %v, want a WKDError with an AddressError", err)
	}
	if hits.Load() != 0 {
		t.Fatalf("%d requests reached the server", hits.Load())
	}
	// A RoundTripper whose connections cannot be checked is refused.
	odd := &pgp.WKD{Client: &http.Client{Transport: roundTripper(func(*http.Request) (*http.Response, error) {
		t.Error("unchecked RoundTripper used")
		return nil, errors.New("no")
	})}, URLs: urls, TTL: -1}
	if _, err := odd.Lookup(context.Background(), "ann@example.org"); !errors.Is(err, mailsec.ErrConfig) {
		t.Fatalf("opaque RoundTripper: %v", err)
	}
	if _, err := pgp.New(odd, nil); !errors.Is(err, mailsec.ErrConfig) {
		t.Fatalf("pgp.New with an opaque RoundTripper: %v", err)
	}
	wkd.AllowPrivate = true
	if es, err := wkd.Lookup(context.Background(), "ann@example.org"); err != nil || len(es) != 1 {
		t.Fatalf("with AllowPrivate: %v", err)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// With a Resolver, the key servers' names are resolved through it and
// the connections go to its addresses; the certificate is still checked
// for the name. A name the Resolver does not know is "not found".
func TestWKDResolver(t *testing.T) {
	k := testKeys(t)
	var key strings.Builder
	_ = k["ann@example.org"].Serialize(&key)
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(mailsectest.CertOptions{DNSNames: []string{"openpgpkey.example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "openpgpkey.example.org" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(key.String()))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	res := mailsectest.NewResolver()
	res.IP("openpgpkey.example.org", netip.MustParseAddr("203.0.113.7"))
	var mu sync.Mutex
	var dialled []string
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool()},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialled = append(dialled, addr)
			mu.Unlock()
			return new(net.Dialer).DialContext(ctx, network, srv.Listener.Addr().String())
		},
	}}
	wkd := &pgp.WKD{Client: client, Resolver: res, AllowPrivate: true, TTL: -1}
	es, err := wkd.Lookup(context.Background(), "ann@example.org")
	if err != nil || len(es) != 1 {
		t.Fatalf("lookup: %v", err)
	}
	if len(dialled) != 1 || dialled[0] != "203.0.113.7:443" {
		t.Fatalf("dialled %q, want the resolver's address", dialled)
	}
	// example.org itself (the direct method) is unknown to the resolver,
	// and so is a domain with no key server at all.
	if _, err := wkd.Lookup(context.Background(), "ann@nowhere.example"); !errors.Is(err, pgp.ErrKeyNotFound) {
		t.Fatalf("unknown domain: %v", err)
	}
	// Without AllowPrivate, an address the resolver gives that is not
	// global is not dialled.
	res.IP("openpgpkey.example.org", netip.MustParseAddr("10.0.0.7"))
	dialled = nil
	wkd = &pgp.WKD{Client: client, Resolver: res, TTL: -1}
	_, err = wkd.Lookup(context.Background(), "ann@example.org")
	var ae *mailsec.AddressError
	if !errors.As(err, &ae) || ae.Host != "openpgpkey.example.org" || ae.Addr != netip.MustParseAddr("10.0.0.7") || len(dialled) != 0 {
		t.Fatalf("err = %v, dialled %q", err, dialled)
	}
}

// What a key server's certificate says reaches the error cleaned.
func TestWKDErrorCleaned(t *testing.T) {
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(mailsectest.CertOptions{DNSNames: []string{"\x1b]0;pwned\x07.example.net"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	wkd := &pgp.WKD{Client: client, AllowPrivate: true, TTL: -1, URLs: func(string) ([]string, error) {
		return []string{strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/k"}, nil
	}}
	_, err = wkd.Lookup(context.Background(), "ann@example.org")
	if err == nil || strings.ContainsAny(err.Error(), "\x1b\x07") || !strings.Contains(err.Error(), "?]0;pwned?.example.net") {
		t.Fatalf("err = %q", err)
	}
}

// An address WKD cannot look up is refused with a typed error, before any
// request.
func TestWKDInvalidAddressTyped(t *testing.T) {
	_, err := (&pgp.WKD{}).Lookup(context.Background(), "not an address")
	var ve *mailsec.ValidationError
	if !errors.As(err, &ve) || ve.Value != "not an address" || mailsec.IsTemporary(err) {
		t.Fatalf("err = %T %v, want a permanent ValidationError", err, err)
	}
}

// A nil pointer as the Resolver or as the client's Transport is refused
// with a ConfigError that names the field, instead of panicking, and is
// never read as "no key"; pgp.New refuses such a WKD at once.
func TestWKDTypedNil(t *testing.T) {
	for field, w := range map[string]*pgp.WKD{
		"WKD.Resolver":          {Resolver: (*mailsectest.Resolver)(nil), TTL: -1},
		"WKD.Client.Transport":  {Client: &http.Client{Transport: (*http.Transport)(nil)}, TTL: -1},
		"WKD.Client.Transport ": {Client: &http.Client{Transport: (*http.Transport)(nil)}, AllowPrivate: true, TTL: -1},
	} {
		var err error
		func() {
			defer func() {
				if v := recover(); v != nil {
					t.Fatalf("%s: Lookup panicked: %v", field, v)
				}
			}()
			_, err = w.Lookup(context.Background(), "ann@example.org")
		}()
		var ce *mailsec.ConfigError
		if !errors.As(err, &ce) || ce.Field != strings.TrimSpace(field) || errors.Is(err, pgp.ErrKeyNotFound) {
			t.Fatalf("%s: err = %v, want a ConfigError for the field", field, err)
		}
		if _, err := pgp.New(w, nil); !errors.As(err, &ce) || ce.Field != strings.TrimSpace(field) {
			t.Fatalf("%s: pgp.New: err = %v, want a ConfigError for the field", field, err)
		}
	}
}

// panicIPResolver panics when asked for addresses.
type panicIPResolver struct{ *mailsectest.Resolver }

func (panicIPResolver) LookupIP(context.Context, string) (dns.Answer[netip.Addr], error) {
	panic("resolver bug")
}

// The key servers' names are resolved inside net/http's dialing
// goroutine, where a panicking Resolver would take the process down: the
// lookup fails instead (an error, never "no key").
func TestWKDResolverPanic(t *testing.T) {
	w := &pgp.WKD{Resolver: panicIPResolver{mailsectest.NewResolver()}, TTL: -1}
	_, err := w.Lookup(context.Background(), "ann@example.org")
	var we *pgp.WKDError
	if !errors.As(err, &we) || errors.Is(err, pgp.ErrKeyNotFound) || !strings.Contains(err.Error(), "resolver bug") {
		t.Fatalf("err = %v, want a WKDError with the panic", err)
	}
}
