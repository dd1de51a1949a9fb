package mtasts_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport/mtasts"
)

// addrs parses IP addresses.
func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
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

// stsServer is an HTTPS policy server on loopback that counts requests
// and whose handler the test can change.
type stsServer struct {
	srv     *httptest.Server
	fetches atomic.Int64
	handler atomic.Pointer[http.HandlerFunc]

	mu    sync.Mutex
	hosts []string // Host of each request
	dials []string // addresses the Client dialled
}

func newSTSServer(t testing.TB, cert tls.Certificate, h http.HandlerFunc) *stsServer {
	t.Helper()
	ps := &stsServer{}
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

func (ps *stsServer) set(h http.HandlerFunc) { ps.handler.Store(&h) }

// dial connects every address to the server, remembering the address.
func (ps *stsServer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
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

// policyText is a policy file in mode with max_age maxAge listing mx.
var policyText = mtasts.PolicyText

// env is a Client wired to a test resolver, a fake clock and a policy
// server for example.com whose certificate the Client trusts.
type env struct {
	res   *mailsectest.Resolver
	clock *fakeClock
	ca    *testCA
	srv   *stsServer
	c     *mtasts.Client
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
	e := &env{res: mailsectest.NewResolver(), clock: newFakeClock(), ca: newTestCA(t)}
	e.res.TXT(testTXT, "v=STSv1; id=one;")
	// The policy hosts' addresses, as the resolver gives them; the test
	// dialer connects them to the server on loopback.
	e.res.IP("mta-sts."+testDomain, addrs(testPolicyAddr)...)
	e.res.IP("mta-sts.xn--bcher-kva.example", addrs(testPolicyAddr)...)
	e.srv = newSTSServer(t, e.ca.leaf(t, "mta-sts."+testDomain, "mta-sts.xn--bcher-kva.example"), servePolicy(policyText(mtasts.Enforce, weekPolicy, "mx.example.com")))
	e.c = e.client(nil)
	return e
}

// client returns a new Client sharing the env's resolver, clock and
// server, with cache.
func (e *env) client(cache mtasts.Cache) *mtasts.Client {
	return &mtasts.Client{
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

func (e *env) lookup(t testing.TB, c *mtasts.Client) *mtasts.Result {
	t.Helper()
	r, err := c.Lookup(context.Background(), testDomain)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
