package mtasts

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailsec/mailsec/dns"
)

// fakeResolver answers TXT and address lookups from maps and counts the
// TXT lookups (address lookups apart, in ipLookups). A name absent from
// txt or ips is NXDOMAIN; a name in fail returns that error.
type fakeResolver struct {
	mu        sync.Mutex
	txt       map[string][]string
	ips       map[string][]netip.Addr
	fail      map[string]error
	lookups   map[string]int
	ipLookups map[string]int
}

func newFakeResolver() *fakeResolver {
	return &fakeResolver{txt: map[string][]string{}, ips: map[string][]netip.Addr{}, fail: map[string]error{},
		lookups: map[string]int{}, ipLookups: map[string]int{}}
}

func (r *fakeResolver) setIP(name string, addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ips[name] = nil
	for _, a := range addrs {
		r.ips[name] = append(r.ips[name], netip.MustParseAddr(a))
	}
}

func (r *fakeResolver) setTXT(name string, recs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if recs == nil {
		delete(r.txt, name)
	} else {
		r.txt[name] = recs
	}
}

func (r *fakeResolver) setFail(name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.fail, name)
	} else {
		r.fail[name] = err
	}
}

func (r *fakeResolver) count(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lookups[name]
}

func (r *fakeResolver) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.lookups {
		n += c
	}
	return n
}

func (r *fakeResolver) LookupTXT(ctx context.Context, name string) (dns.Answer[string], error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups[name]++
	if err := r.fail[name]; err != nil {
		return dns.Answer[string]{}, err
	}
	recs, ok := r.txt[name]
	if !ok {
		return dns.Answer[string]{}, &dns.Error{Name: name, Type: "TXT", Kind: dns.NXDomain}
	}
	return dns.Answer[string]{Records: slices.Clone(recs), Name: name}, nil
}

var errNotUsed = errors.New("not used by mtasts")

func (r *fakeResolver) LookupMX(context.Context, string) (dns.Answer[dns.MX], error) {
	return dns.Answer[dns.MX]{}, errNotUsed
}

func (r *fakeResolver) LookupIP(_ context.Context, name string) (dns.Answer[netip.Addr], error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ipLookups[name]++
	if err := r.fail["IP "+name]; err != nil {
		return dns.Answer[netip.Addr]{}, err
	}
	addrs, ok := r.ips[name]
	if !ok {
		return dns.Answer[netip.Addr]{}, &dns.Error{Name: name, Type: "A/AAAA", Kind: dns.NXDomain}
	}
	return dns.Answer[netip.Addr]{Records: slices.Clone(addrs), Name: name}, nil
}

func (r *fakeResolver) LookupTLSA(context.Context, string) (dns.Answer[dns.TLSA], error) {
	return dns.Answer[dns.TLSA]{}, errNotUsed
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testCA issues server certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mtasts test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf returns a server certificate for names.
func (ca *testCA) leaf(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// policyServer is an HTTPS policy server on loopback that counts requests
// and whose handler the test can change.
type policyServer struct {
	srv     *httptest.Server
	fetches atomic.Int64
	handler atomic.Pointer[http.HandlerFunc]

	mu    sync.Mutex
	hosts []string // Host of each request
	dials []string // addresses the Client dialled
}

func newPolicyServer(t testing.TB, cert tls.Certificate, h http.HandlerFunc) *policyServer {
	t.Helper()
	ps := &policyServer{}
	ps.set(h)
	ps.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps.fetches.Add(1)
		ps.mu.Lock()
		ps.hosts = append(ps.hosts, r.Host+r.URL.Path)
		ps.mu.Unlock()
		(*ps.handler.Load())(w, r)
	}))
	ps.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ps.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	ps.srv.StartTLS()
	t.Cleanup(ps.srv.Close)
	return ps
}

func (ps *policyServer) set(h http.HandlerFunc) { ps.handler.Store(&h) }

// dial connects every address to the server, remembering the address.
func (ps *policyServer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ps.mu.Lock()
	ps.dials = append(ps.dials, addr)
	ps.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, "tcp", ps.srv.Listener.Addr().String())
}

// servePolicy answers with body as text/plain.
func servePolicy(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(body))
	}
}

func policyText(mode Mode, maxAge int, mx ...string) string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\nmode: " + string(mode) + "\r\n")
	for _, m := range mx {
		b.WriteString("mx: " + m + "\r\n")
	}
	b.WriteString("max_age: " + strconv.Itoa(maxAge) + "\r\n")
	return b.String()
}

// env is a Client wired to a fake resolver, a fake clock and a policy
// server for example.com whose certificate the Client trusts.
type env struct {
	res   *fakeResolver
	clock *fakeClock
	ca    *testCA
	srv   *policyServer
	c     *Client
}

const (
	// testPolicyAddr is where the resolver puts every policy host.
	testPolicyAddr = "203.0.113.80"
	testDomain     = "example.com"
	testTXT        = "_mta-sts.example.com"
	weekPolicy     = 604800
)

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{res: newFakeResolver(), clock: newFakeClock(), ca: newTestCA(t)}
	e.res.setTXT(testTXT, "v=STSv1; id=one;")
	// The policy hosts' addresses, as the resolver gives them; the test
	// dialer connects them to the server on loopback.
	e.res.setIP("mta-sts."+testDomain, testPolicyAddr)
	e.res.setIP("mta-sts.xn--bcher-kva.example", testPolicyAddr)
	e.srv = newPolicyServer(t, e.ca.leaf(t, "mta-sts."+testDomain, "mta-sts.xn--bcher-kva.example"), servePolicy(policyText(Enforce, weekPolicy, "mx.example.com")))
	e.c = e.client(nil)
	return e
}

// client returns a new Client sharing the env's resolver, clock and
// server, with cache.
func (e *env) client(cache Cache) *Client {
	return &Client{
		Resolver:    e.res,
		Cache:       cache,
		TLSConfig:   &tls.Config{RootCAs: e.ca.pool},
		DialContext: e.srv.dial,
		Timeout:     5 * time.Second,
		Now:         e.clock.Now,
		// The test server listens on loopback (the resolver's
		// documentation address is dialled there).
		AllowPrivate: true,
	}
}

func (e *env) lookup(t testing.TB, c *Client) *Result {
	t.Helper()
	r, err := c.Lookup(context.Background(), testDomain)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
