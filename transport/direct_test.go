package transport_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
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
	"github.com/mailsec/mailsec/transport"
	"github.com/mailsec/mailsec/transport/mtasts"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

// mxEnv is a small internet on loopback: a mock resolver, SMTP servers
// standing for MX hosts (dialled through a map from their public
// addresses), an HTTPS server for MTA-STS policies, one CA for all of
// them, and a recorder of TLS reports.
type mxEnv struct {
	t       testing.TB
	ca      *mailsectest.CA
	res     *mailsectest.Resolver
	dnsres  dns.Resolver // res, or a real resolver
	mu      sync.Mutex
	servers map[string]*mailsectest.Server // by the address the resolver gives
	dials   map[string]int

	policies   sync.Map // domain → policy text served at mta-sts.<domain>
	redirects  sync.Map // domain → true: the policy URL redirects
	stalls     sync.Map // domain → true: the policy server never answers
	policySrv  *httptest.Server
	fetches    atomic.Int32
	reports    *reportLog
	stsClient  *mtasts.Client
	stsDialled atomic.Int32
	// tlsConfig trusts the env's CA; the Direct and its MTA-STS client
	// share it (one trust configuration).
	tlsConfig *tls.Config
}

type reportLog struct {
	mu  sync.Mutex
	all []tlsrpt.Result
}

func (r *reportLog) Record(x tlsrpt.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, x)
}

func (r *reportLog) results() []tlsrpt.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tlsrpt.Result(nil), r.all...)
}

func (r *reportLog) failures(rt tlsrpt.ResultType) int {
	n := 0
	for _, x := range r.results() {
		if !x.Success && x.Failure == rt {
			n++
		}
	}
	return n
}

func newMXEnv(t *testing.T) *mxEnv { return newMXEnvWith(t, nil) }

// newMXEnvWith makes an env whose lookups go to r (nil: the mock) and
// whose policy server has certificates for every mta-sts.<domain> of
// stsDomains.
func newMXEnvWith(t testing.TB, r dns.Resolver, stsDomains ...string) *mxEnv {
	t.Helper()
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	e := &mxEnv{t: t, ca: ca, res: mailsectest.NewResolver(), servers: map[string]*mailsectest.Server{},
		dials: map[string]int{}, reports: &reportLog{}}
	e.dnsres = r
	if r == nil {
		e.dnsres = e.res
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.fetches.Add(1)
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		domain := strings.TrimPrefix(host, "mta-sts.")
		if _, ok := e.stalls.Load(domain); ok {
			<-r.Context().Done()
			return
		}
		if _, ok := e.redirects.Load(domain); ok {
			http.Redirect(w, r, "https://elsewhere.example/.well-known/mta-sts.txt", http.StatusFound)
			return
		}
		v, ok := e.policies.Load(domain)
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, v.(string))
	}))
	names := []string{"mta-sts.example.org", "mta-sts.secure.example"}
	for _, d := range stsDomains {
		names = append(names, "mta-sts."+d)
	}
	cert, err := ca.Issue(mailsectest.CertOptions{DNSNames: names})
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	e.policySrv = srv
	e.tlsConfig = &tls.Config{RootCAs: ca.Pool()}
	e.stsClient = e.newSTSClient()
	return e
}

// newSTSClient returns an MTA-STS client with the env's resolver and
// trust that reaches the env's policy server whatever address it dials.
func (e *mxEnv) newSTSClient() *mtasts.Client {
	return &mtasts.Client{
		Resolver:  e.dnsres,
		TLSConfig: e.tlsConfig,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			e.stsDialled.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", e.policySrv.Listener.Addr().String())
		},
		// The policy server listens on loopback.
		AllowPrivate: true,
	}
}

// mx starts an SMTP server for host at addr (a public-looking address the
// resolver hands out) with a certificate for host from the env's CA,
// unless cfg brings its own.
func (e *mxEnv) mx(host, addr string, cfg mailsectest.Config) *mailsectest.Server {
	e.t.Helper()
	s := e.serve(host, addr, cfg)
	e.res.IP(host, netip.MustParseAddr(addr))
	return s
}

// serve starts an SMTP server for host, reached when addr is dialled.
func (e *mxEnv) serve(host, addr string, cfg mailsectest.Config) *mailsectest.Server {
	e.t.Helper()
	if cfg.Certificate == nil {
		c, err := e.ca.Issue(mailsectest.CertOptions{DNSNames: []string{host}})
		if err != nil {
			e.t.Fatal(err)
		}
		cfg.Certificate = &c
	}
	if cfg.Hostname == "" {
		cfg.Hostname = host
	}
	s := mailsectest.NewServer(e.t, cfg)
	e.mu.Lock()
	e.servers[addr] = s
	e.mu.Unlock()
	return s
}

// DialContext connects to the server standing at addr's host, or fails
// like an unreachable host.
func (e *mxEnv) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if port != "25" {
		return nil, fmt.Errorf("dialled port %s, want 25", port)
	}
	e.mu.Lock()
	e.dials[host]++
	s := e.servers[host]
	e.mu.Unlock()
	if s == nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, s.Addr)
}

func (e *mxEnv) totalDials() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.dials {
		n += c
	}
	return n
}

func (e *mxEnv) direct() *transport.Direct {
	return &transport.Direct{
		Resolver:  e.dnsres,
		MTASTS:    e.stsClient,
		TLSConfig: e.tlsConfig,
		Dialer:    e,
		LocalName: "sender.example",
		Reports:   e.reports,
		// The env's MX hosts are servers on loopback, dialled through e
		// from the documentation addresses the resolver hands out.
		AllowPrivate: true,
	}
}

// sts publishes an MTA-STS record (in the mock resolver) and policy for
// domain.
func (e *mxEnv) sts(domain, id, mode string, mx ...string) {
	e.res.TXT("_mta-sts."+domain, "v=STSv1; id="+id+";")
	e.res.IP("mta-sts."+domain, policyHostAddr)
	e.stsPolicy(domain, mode, mx...)
}

// policyHostAddr is where the mock resolver puts policy hosts; the
// env's MTA-STS client dials the policy server instead.
var policyHostAddr = netip.MustParseAddr("192.0.2.201")

// stsPolicy serves a policy for domain.
func (e *mxEnv) stsPolicy(domain, mode string, mx ...string) {
	var b strings.Builder
	b.WriteString("version: STSv1\nmode: " + mode + "\n")
	for _, m := range mx {
		b.WriteString("mx: " + m + "\n")
	}
	b.WriteString("max_age: 86400\n")
	e.policies.Store(domain, b.String())
}

const directCanary = "CANARY-direct-7d3f"

func delivery(sec mailsec.Security, to ...string) *mailsec.Delivery {
	return &mailsec.Delivery{
		From:     "app@sender.example",
		To:       to,
		Security: sec,
		Content:  content("From: app@sender.example\r\nSubject: hello\r\n\r\n" + directCanary + "\r\n"),
	}
}

func deliverDirect(t *testing.T, tr *transport.Direct, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return tr.Deliver(ctx, d)
}

// nothingSent fails the test if any server saw a transaction or the
// canary.
func (e *mxEnv) nothingSent() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for addr, s := range e.servers {
		if n := s.Transactions(); n != 0 {
			e.t.Errorf("server at %s saw %d transactions; want none", addr, n)
		}
		if strings.Contains(string(s.Received()), directCanary) {
			e.t.Errorf("server at %s received the canary", addr)
		}
	}
}

func TestDirectVerifiedWebPKI(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
	res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(s.Messages()); got != 1 {
		t.Fatalf("messages = %d", got)
	}
	c := res.Connection
	if c == nil || c.Host != "mx1.example.org" || c.Verification != mailsec.VerifiedWebPKI || c.Policy != "verified" || c.Domain != "example.org" {
		t.Fatalf("connection = %+v", c)
	}
	if !res.Recipients[0].Accepted {
		t.Fatalf("not accepted: %+v", res.Recipients[0])
	}
}

func TestDirectRefusesUnverifiedMX(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	other, _ := mailsectest.NewCA()
	bad, err := other.Issue(mailsectest.CertOptions{DNSNames: []string{"mx1.example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{Certificate: &bad})
	_, err = deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
	if !errors.Is(err, mailsec.ErrCertificate) {
		t.Fatalf("err = %v, want ErrCertificate", err)
	}
	var de *transport.DomainError
	if !errors.As(err, &de) || de.Domain != "example.org" {
		t.Fatalf("err = %T %v, want *DomainError for example.org", err, err)
	}
	e.nothingSent()
	if e.reports.failures(tlsrpt.CertificateNotTrusted) != 1 {
		t.Fatalf("reports = %+v", e.reports.results())
	}
}

func TestDirectMXOrderAndFallback(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx2.example.org", Pref: 20}, dns.MX{Host: "mx1.example.org", Pref: 10})
	e.res.IP("mx1.example.org", netip.MustParseAddr("192.0.2.10")) // nothing listens there
	s2 := e.mx("mx2.example.org", "192.0.2.20", mailsectest.Config{})
	res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s2.Messages()) != 1 || res.Connection.Host != "mx2.example.org" {
		t.Fatalf("delivered via %v", res.Connection.Host)
	}
	if e.dials["192.0.2.10"] != 1 {
		t.Fatalf("mx1 dialled %d times, want 1 (preference order)", e.dials["192.0.2.10"])
	}
	if !strings.Contains(strings.Join(res.Connection.Notes, "\n"), "mx1.example.org") {
		t.Fatalf("notes do not record the skipped host: %q", res.Connection.Notes)
	}
}

func TestDirectTiesInRandomOrder(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "a.example.org", Pref: 10}, dns.MX{Host: "b.example.org", Pref: 10},
		dns.MX{Host: "c.example.org", Pref: 5})
	e.res.IP("a.example.org", netip.MustParseAddr("192.0.2.1"))
	e.res.IP("b.example.org", netip.MustParseAddr("192.0.2.2"))
	e.res.IP("c.example.org", netip.MustParseAddr("192.0.2.3"))
	firstAfterC := map[string]int{}
	for range 64 {
		order := make(chan string, 3)
		tr := &transport.Direct{Resolver: e.res, MTASTS: e.stsClient, TLSConfig: e.tlsConfig, Dialer: dialRecorder(e, order),
			LocalName: "s.example", AllowPrivate: true}
		_, err := deliverDirect(t, tr, delivery(mailsec.Security{Level: mailsec.Unverified}, "ann@example.org"))
		if err == nil {
			t.Fatal("delivered with no server listening")
		}
		close(order)
		var got []string
		for a := range order {
			got = append(got, a)
		}
		if len(got) != 3 || got[0] != "192.0.2.3" {
			t.Fatalf("dial order %v: the preferred host comes first", got)
		}
		firstAfterC[got[1]]++
	}
	if firstAfterC["192.0.2.1"] == 0 || firstAfterC["192.0.2.2"] == 0 {
		t.Fatalf("equal-preference hosts always in one order: %v", firstAfterC)
	}
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

func dialRecorder(e *mxEnv, order chan<- string) transport.Dialer {
	return dialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		h, _, _ := net.SplitHostPort(addr)
		order <- h
		return e.DialContext(ctx, network, addr)
	})
}

func TestDirectRoutes(t *testing.T) {
	t.Run("null MX is permanent, no connection", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("nomail.example", dns.MX{Host: "", Pref: 0})
		e.res.IP("nomail.example", netip.MustParseAddr("192.0.2.30"))
		e.mx("nomail.example", "192.0.2.30", mailsectest.Config{})
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@nomail.example"))
		if !errors.Is(err, transport.ErrNullMX) || mailsec.IsTemporary(err) {
			t.Fatalf("err = %v (temporary %v), want permanent ErrNullMX", err, mailsec.IsTemporary(err))
		}
		if e.totalDials() != 0 {
			t.Fatalf("%d connections to a null-MX domain", e.totalDials())
		}
	})
	t.Run("NXDOMAIN is permanent", func(t *testing.T) {
		e := newMXEnv(t)
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@nowhere.example"))
		if !errors.Is(err, dns.ErrNXDomain) || mailsec.IsTemporary(err) {
			t.Fatalf("err = %v, want permanent NXDOMAIN", err)
		}
	})
	t.Run("SERVFAIL is temporary with no address fallback", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.Fail("MX", "example.org", &dns.Error{Name: "example.org", Type: "MX", Kind: dns.ServerFailure})
		e.mx("example.org", "192.0.2.40", mailsectest.Config{})
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
		if err == nil || !mailsec.IsTemporary(err) {
			t.Fatalf("err = %v, want temporary", err)
		}
		if e.totalDials() != 0 || e.res.Queries("IP", "example.org") != 0 {
			t.Fatalf("fell back to the domain's address after SERVFAIL (dials %d)", e.totalDials())
		}
	})
	t.Run("NODATA means the domain itself", func(t *testing.T) {
		e := newMXEnv(t)
		s := e.mx("example.org", "192.0.2.50", mailsectest.Config{})
		res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Messages()) != 1 || res.Connection.Host != "example.org" {
			t.Fatalf("implicit MX not used: %+v", res.Connection)
		}
	})
}

func TestDirectMTASTS(t *testing.T) {
	t.Run("enforce refuses an unlisted MX", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx.attacker.example", Pref: 10})
		e.mx("mx.attacker.example", "198.51.100.1", mailsectest.Config{})
		e.sts("example.org", "1", "enforce", "mx1.example.org")
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
		if !errors.Is(err, mailsec.ErrDomainPolicy) || !mailsec.IsTemporary(err) {
			t.Fatalf("err = %v, want a temporary ErrDomainPolicy", err)
		}
		if e.totalDials() != 0 {
			t.Fatal("connected to an MX host the enforce policy does not list")
		}
		e.nothingSent()
		if e.reports.failures(tlsrpt.ValidationFailure) == 0 {
			t.Fatalf("no report: %+v", e.reports.results())
		}
	})
	t.Run("enforce refuses a stripped STARTTLS", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{WithholdStartTLS: true})
		e.sts("example.org", "1", "enforce", "mx1.example.org")
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
		if !errors.Is(err, mailsec.ErrDowngrade) || !mailsec.IsTemporary(err) {
			t.Fatalf("err = %v, want a temporary ErrDowngrade (deferred, not bounced)", err)
		}
		e.nothingSent()
		rs := e.reports.results()
		if len(rs) != 1 || rs[0].Failure != tlsrpt.StartTLSNotSupported || rs[0].PolicyType != tlsrpt.PolicySTS {
			t.Fatalf("reports = %+v, want one starttls-not-supported under the sts policy", rs)
		}
	})
	t.Run("enforce delivers to a listed MX and says so", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
		e.sts("example.org", "1", "enforce", "*.example.org")
		res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Messages()) != 1 || res.Connection.Verification != mailsec.VerifiedMTASTS || res.Connection.Policy != "mta-sts" {
			t.Fatalf("connection = %+v", res.Connection)
		}
		rs := e.reports.results()
		if len(rs) != 1 || !rs[0].Success || rs[0].PolicyType != tlsrpt.PolicySTS || rs[0].PolicyDomain != "example.org" {
			t.Fatalf("reports = %+v", rs)
		}
	})
	t.Run("testing mode delivers and reports", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx.other.example", Pref: 10})
		s := e.mx("mx.other.example", "192.0.2.10", mailsectest.Config{})
		e.sts("example.org", "1", "testing", "mx1.example.org")
		res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Messages()) != 1 || res.Connection.Policy != "mta-sts-testing" {
			t.Fatalf("connection = %+v", res.Connection)
		}
		if !strings.Contains(strings.Join(res.Connection.Notes, "\n"), "testing") {
			t.Fatalf("notes = %q", res.Connection.Notes)
		}
		if e.reports.failures(tlsrpt.ValidationFailure) != 1 {
			t.Fatalf("reports = %+v", e.reports.results())
		}
	})
	t.Run("a redirected policy fetch is no policy, reported", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx.other.example", Pref: 10})
		s := e.mx("mx.other.example", "192.0.2.10", mailsectest.Config{})
		e.sts("example.org", "1", "enforce", "mx1.example.org")
		e.redirects.Store("example.org", true)
		res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Messages()) != 1 || res.Connection.Verification != mailsec.VerifiedWebPKI {
			t.Fatalf("connection = %+v", res.Connection)
		}
		if e.reports.failures(tlsrpt.STSPolicyFetchError) != 1 {
			t.Fatalf("reports = %+v", e.reports.results())
		}
	})
}

// tlsaFor is a 3 1 1 record for cert's key.
func tlsaFor(cert *x509.Certificate) dns.TLSA {
	h := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return dns.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: h[:]}
}

func TestDirectDANE(t *testing.T) {
	// The certificates below come from a CA nobody trusts: DANE-EE is the
	// only thing that can authenticate them.
	untrusted, _ := mailsectest.NewCA()
	leaf, err := untrusted.Issue(mailsectest.CertOptions{DNSNames: []string{"mx1.secure.example"}})
	if err != nil {
		t.Fatal(err)
	}
	setup := func(t *testing.T) *mxEnv {
		e := newMXEnv(t)
		e.res.Secure("secure.example")
		e.res.MX("secure.example", dns.MX{Host: "mx1.secure.example", Pref: 10})
		e.mx("mx1.secure.example", "192.0.2.60", mailsectest.Config{Certificate: &leaf, RequireTLS: true})
		return e
	}
	t.Run("3 1 1 match", func(t *testing.T) {
		e := setup(t)
		rec := tlsaFor(leaf.Leaf)
		e.res.TLSA("_25._tcp.mx1.secure.example", rec)
		res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@secure.example"))
		if err != nil {
			t.Fatal(err)
		}
		c := res.Connection
		if c.Verification != mailsec.VerifiedDANEEE || c.Policy != "dane" || c.TLSA != rec.String() {
			t.Fatalf("connection = %+v", c)
		}
		rs := e.reports.results()
		if len(rs) != 1 || !rs[0].Success || rs[0].PolicyType != tlsrpt.PolicyTLSA {
			t.Fatalf("reports = %+v", rs)
		}
	})
	t.Run("2 0 1 trust anchor", func(t *testing.T) {
		e := setup(t)
		if len(leaf.Certificate) < 2 {
			t.Fatal("the test server's chain lacks its CA")
		}
		h := sha256.Sum256(leaf.Certificate[1])
		e.res.TLSA("_25._tcp.mx1.secure.example", dns.TLSA{Usage: 2, Selector: 0, MatchingType: 1, Data: h[:]})
		res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@secure.example"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Connection.Verification != mailsec.VerifiedDANETA {
			t.Fatalf("connection = %+v", res.Connection)
		}
	})
	t.Run("mismatch refused", func(t *testing.T) {
		e := setup(t)
		e.res.TLSA("_25._tcp.mx1.secure.example", dns.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: make([]byte, 32)})
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@secure.example"))
		if !errors.Is(err, mailsec.ErrCertificate) || !mailsec.IsTemporary(err) {
			t.Fatalf("err = %v, want a temporary ErrCertificate", err)
		}
		e.nothingSent()
		// RFC 8460 §4.3.2.1: "tlsa-invalid: This indicates a validation
		// error in the TLSA record associated with a DANE policy. None of
		// the records in the RRset were found to be valid."
		rs := e.reports.results()
		if len(rs) != 1 || rs[0].Failure != tlsrpt.TLSAInvalid || rs[0].PolicyType != tlsrpt.PolicyTLSA || rs[0].Success {
			t.Fatalf("reports = %+v, want one tlsa-invalid failure under the tlsa policy", rs)
		}
	})
	t.Run("failed TLSA lookup: temporary, no connection", func(t *testing.T) {
		e := setup(t)
		e.res.Fail("TLSA", "_25._tcp.mx1.secure.example", &dns.Error{Kind: dns.ServerFailure, Type: "TLSA", Name: "_25._tcp.mx1.secure.example"})
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@secure.example"))
		if !errors.Is(err, mailsec.ErrDomainPolicy) || !mailsec.IsTemporary(err) {
			t.Fatalf("err = %v, want a temporary ErrDomainPolicy", err)
		}
		if e.totalDials() != 0 {
			t.Fatal("connected although the TLSA lookup failed")
		}
		if e.reports.failures(tlsrpt.DNSSECInvalid) != 1 {
			t.Fatalf("reports = %+v", e.reports.results())
		}
	})
	t.Run("insecure zone: TLSA ignored", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{Certificate: &leaf})
		e.res.TLSA("_25._tcp.mx1.example.org", tlsaFor(leaf.Leaf))
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org"))
		if !errors.Is(err, mailsec.ErrCertificate) {
			t.Fatalf("err = %v: an unsigned TLSA record must not authenticate anything", err)
		}
		if e.res.Queries("TLSA", "_25._tcp.mx1.example.org") != 0 {
			t.Fatal("TLSA looked up for a host in an unsigned zone")
		}
	})
	t.Run("DANE wins over MTA-STS", func(t *testing.T) {
		e := setup(t)
		e.res.TLSA("_25._tcp.mx1.secure.example", tlsaFor(leaf.Leaf))
		e.sts("secure.example", "1", "enforce", "mx9.secure.example")
		res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@secure.example"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Connection.Verification != mailsec.VerifiedDANEEE {
			t.Fatalf("connection = %+v", res.Connection)
		}
	})
	t.Run("only unusable records: dane level encrypts, dane-only refuses", func(t *testing.T) {
		e := setup(t)
		e.res.TLSA("_25._tcp.mx1.secure.example", dns.TLSA{Usage: 1, Selector: 1, MatchingType: 1, Data: make([]byte, 32)})
		res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{Level: mailsec.DANE}, "ann@secure.example"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Connection.Verification != mailsec.NotVerified || res.Connection.Policy != "dane-unusable" {
			t.Fatalf("connection = %+v", res.Connection)
		}
		_, err = deliverDirect(t, e.direct(), delivery(mailsec.Security{Level: mailsec.DANEOnly}, "ann@secure.example"))
		if !errors.Is(err, mailsec.ErrDomainPolicy) {
			t.Fatalf("dane-only: err = %v", err)
		}
		// The refusal is the attempt's one result for TLS reporting.
		if n := e.reports.failures(tlsrpt.DANERequired); n != 1 {
			t.Fatalf("%d dane-required results: %+v", n, e.reports.results())
		}
		for _, r := range e.reports.results() {
			if r.Failure == tlsrpt.DANERequired && (r.ReceivingMXHostname != "mx1.secure.example" || r.PolicyDomain != "secure.example") {
				t.Errorf("dane-required result %+v", r)
			}
		}
	})
	t.Run("TLS-Required: No never means plaintext", func(t *testing.T) {
		for _, l := range []mailsec.SecurityLevel{mailsec.Verified, mailsec.DANE, mailsec.DANEOnly} {
			e := newMXEnv(t)
			e.res.Secure("secure.example")
			e.res.MX("secure.example", dns.MX{Host: "mx1.secure.example", Pref: 10})
			e.mx("mx1.secure.example", "192.0.2.60", mailsectest.Config{WithholdStartTLS: true})
			e.res.TLSA("_25._tcp.mx1.secure.example", tlsaFor(leaf.Leaf))
			d := delivery(mailsec.Security{Level: l}, "ann@secure.example")
			d.TLSRequiredNo = true
			if _, err := deliverDirect(t, e.direct(), d); !errors.Is(err, mailsec.ErrDowngrade) {
				t.Errorf("%v: err = %v, want ErrDowngrade", l, err)
			}
			e.nothingSent()
		}
	})
	t.Run("REQUIRETLS at the dane level over usable records", func(t *testing.T) {
		e := setup(t)
		e.res.TLSA("_25._tcp.mx1.secure.example", tlsaFor(leaf.Leaf))
		d := delivery(mailsec.Security{Level: mailsec.DANE}, "ann@secure.example")
		d.RequireTLS = true
		res, err := deliverDirect(t, e.direct(), d)
		if err != nil {
			t.Fatal(err)
		}
		if res.Connection.Verification != mailsec.VerifiedDANEEE {
			t.Fatalf("connection = %+v", res.Connection)
		}
	})
	t.Run("CNAME'd MX host: TLSA at the expanded name", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.Secure("secure.example")
		e.res.MX("secure.example", dns.MX{Host: "mx.secure.example", Pref: 10})
		e.res.CNAME("mx.secure.example", "real.secure.example")
		e.serve("real.secure.example", "192.0.2.61", mailsectest.Config{Certificate: &leaf})
		e.res.IP("real.secure.example", netip.MustParseAddr("192.0.2.61"))
		e.res.TLSA("_25._tcp.real.secure.example", tlsaFor(leaf.Leaf))
		res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{Level: mailsec.DANEOnly}, "ann@secure.example"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Connection.Verification != mailsec.VerifiedDANEEE || res.Connection.Host != "real.secure.example" {
			t.Fatalf("connection = %+v", res.Connection)
		}
		dc, err := e.direct().Check(context.Background(), "secure.example")
		if err != nil || len(dc.Hosts) != 1 || dc.Hosts[0].Status != "protected" {
			t.Fatalf("check = %+v, %v: it must see the records delivery uses", dc, err)
		}
	})
	t.Run("TLS-Required: No sets DANE aside but keeps TLS", func(t *testing.T) {
		e := setup(t)
		e.res.TLSA("_25._tcp.mx1.secure.example", dns.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: make([]byte, 32)})
		d := delivery(mailsec.Security{}, "ann@secure.example")
		d.TLSRequiredNo = true
		res, err := deliverDirect(t, e.direct(), d)
		if err != nil {
			t.Fatal(err)
		}
		if res.Connection.Verification != mailsec.NotVerified || res.Connection.TLSVersion == "" {
			t.Fatalf("connection = %+v", res.Connection)
		}
		if !strings.Contains(strings.Join(res.Connection.Notes, "\n"), "TLS-Required: No") {
			t.Fatalf("notes = %q", res.Connection.Notes)
		}
		d.RequireTLS = true
		if _, err := deliverDirect(t, e.direct(), d); !errors.Is(err, mailsec.ErrInvalid) {
			t.Fatalf("REQUIRETLS with TLS-Required: No: err = %v", err)
		}
	})
}

func TestDirectRequireTLS(t *testing.T) {
	t.Run("only a testing policy: refused, nothing sent", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{RequireTLS: true})
		e.sts("example.org", "1", "testing", "mx1.example.org")
		d := delivery(mailsec.Security{}, "ann@example.org")
		d.RequireTLS = true
		_, err := deliverDirect(t, e.direct(), d)
		if !errors.Is(err, mailsec.ErrRequireTLS) || mailsec.IsTemporary(err) {
			t.Fatalf("err = %v, want permanent ErrRequireTLS", err)
		}
		if e.totalDials() != 0 {
			t.Fatal("connected to an MX host REQUIRETLS may not use")
		}
	})
	t.Run("enforce policy and REQUIRETLS offered: delivered", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{RequireTLS: true})
		e.sts("example.org", "1", "enforce", "mx1.example.org")
		d := delivery(mailsec.Security{}, "ann@example.org")
		d.RequireTLS = true
		if _, err := deliverDirect(t, e.direct(), d); err != nil {
			t.Fatal(err)
		}
		if m := s.Messages(); len(m) != 1 || !m[0].RequireTLS {
			t.Fatalf("messages = %+v", m)
		}
	})
	t.Run("next MX when the first does not offer REQUIRETLS", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.Secure("example.org")
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10}, dns.MX{Host: "mx2.example.org", Pref: 20})
		s1 := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
		s2 := e.mx("mx2.example.org", "192.0.2.20", mailsectest.Config{RequireTLS: true})
		d := delivery(mailsec.Security{}, "ann@example.org")
		d.RequireTLS = true
		if _, err := deliverDirect(t, e.direct(), d); err != nil {
			t.Fatal(err)
		}
		if s1.Transactions() != 0 || len(s2.Messages()) != 1 {
			t.Fatalf("mx1 %d transactions, mx2 %d messages", s1.Transactions(), len(s2.Messages()))
		}
	})
}

func TestDirectLevels(t *testing.T) {
	untrusted, _ := mailsectest.NewCA()
	wrong, err := untrusted.Issue(mailsectest.CertOptions{DNSNames: []string{"mx1.example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("may: plaintext only when STARTTLS is missing, recorded", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{WithholdStartTLS: true})
		res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{Level: mailsec.Opportunistic}, "ann@example.org"))
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Messages()) != 1 || res.Connection.Verification != mailsec.NoTLS || len(res.Connection.Notes) == 0 {
			t.Fatalf("connection = %+v", res.Connection)
		}
	})
	t.Run("may: a failed handshake is not a way to plaintext", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11})
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{Level: mailsec.Opportunistic}, "ann@example.org"))
		if !errors.Is(err, mailsec.ErrHandshake) {
			t.Fatalf("err = %v, want ErrHandshake", err)
		}
		e.nothingSent()
	})
	t.Run("encrypt: TLS without verification", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{Certificate: &wrong})
		res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{Level: mailsec.Unverified}, "ann@example.org"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Connection.Verification != mailsec.NotVerified || res.Connection.TLSVersion == "" {
			t.Fatalf("connection = %+v", res.Connection)
		}
		e2 := newMXEnv(t)
		e2.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		e2.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{WithholdStartTLS: true})
		if _, err := deliverDirect(t, e2.direct(), delivery(mailsec.Security{Level: mailsec.Unverified}, "ann@example.org")); !errors.Is(err, mailsec.ErrDowngrade) {
			t.Fatalf("encrypt without STARTTLS: err = %v", err)
		}
		e2.nothingSent()
	})
	t.Run("secure: the certificate must name the domain", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx.hoster.example", Pref: 10})
		e.mx("mx.hoster.example", "192.0.2.10", mailsectest.Config{})
		if _, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{Level: mailsec.SecureDomain}, "ann@example.org")); !errors.Is(err, mailsec.ErrCertificate) {
			t.Fatalf("err = %v, want ErrCertificate", err)
		}
		e.nothingSent()
		e2 := newMXEnv(t)
		e2.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		e2.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
		if _, err := deliverDirect(t, e2.direct(), delivery(mailsec.Security{Level: mailsec.SecureDomain}, "ann@example.org")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("verify: a wrong-CA certificate is refused", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{Certificate: &wrong})
		if _, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{Level: mailsec.VerifyMX}, "ann@example.org")); !errors.Is(err, mailsec.ErrCertificate) {
			t.Fatalf("err = %v", err)
		}
		e.nothingSent()
	})
	t.Run("none: no TLS at all", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
		res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{Level: mailsec.Cleartext}, "ann@example.org"))
		if err != nil {
			t.Fatal(err)
		}
		if m := s.Messages(); len(m) != 1 || m[0].TLS != nil || res.Connection.Verification != mailsec.NoTLS {
			t.Fatalf("connection = %+v", res.Connection)
		}
	})
	t.Run("REQUIRETLS with a weak level is refused before any lookup", func(t *testing.T) {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
		d := delivery(mailsec.Security{Level: mailsec.Opportunistic}, "ann@example.org")
		d.RequireTLS = true
		if _, err := deliverDirect(t, e.direct(), d); !errors.Is(err, mailsec.ErrRequireTLS) {
			t.Fatalf("err = %v", err)
		}
		if e.res.Queries("MX", "example.org") != 0 {
			t.Fatal("looked up MX records for a delivery that cannot be made")
		}
	})
}

func TestDirectSeveralDomains(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	e.res.MX("example.net", dns.MX{Host: "mx1.example.net", Pref: 10})
	e.res.MX("nomail.example", dns.MX{Host: "", Pref: 0})
	s1 := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
	s2 := e.mx("mx1.example.net", "192.0.2.20", mailsectest.Config{})
	res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@example.org", "bob@example.net", "cy@nomail.example", "dee@EXAMPLE.org"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s1.Messages()) != 1 || len(s2.Messages()) != 1 || len(s1.Messages()[0].To) != 2 {
		t.Fatalf("messages: %d, %d", len(s1.Messages()), len(s2.Messages()))
	}
	r := res.Recipients
	if !r[0].Accepted || !r[1].Accepted || r[2].Accepted || !r[3].Accepted {
		t.Fatalf("recipients = %+v", r)
	}
	if r[0].Connection.Host != "mx1.example.org" || r[1].Connection.Host != "mx1.example.net" || !errors.Is(r[2].Err, transport.ErrNullMX) {
		t.Fatalf("per-recipient sessions wrong: %+v", r)
	}
}

func TestSubmissionRefusesDirectLevels(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := srv.Transport()
	for _, l := range []mailsec.SecurityLevel{mailsec.Opportunistic, mailsec.DANE, mailsec.DANEOnly, mailsec.VerifyMX, mailsec.SecureDomain} {
		_, err := tr.Deliver(context.Background(), delivery(mailsec.Security{Level: l}, "ann@example.org"))
		if !errors.Is(err, mailsec.ErrDomainPolicy) {
			t.Errorf("%v: err = %v", l, err)
		}
	}
	if srv.Connections() != 0 {
		t.Fatalf("%d connections", srv.Connections())
	}
}

func TestDirectCheck(t *testing.T) {
	e := newMXEnv(t)
	untrusted, _ := mailsectest.NewCA()
	leaf, err := untrusted.Issue(mailsectest.CertOptions{DNSNames: []string{"mx1.secure.example"}})
	if err != nil {
		t.Fatal(err)
	}
	e.res.Secure("secure.example")
	e.res.MX("secure.example", dns.MX{Host: "mx1.secure.example", Pref: 10}, dns.MX{Host: "mx2.secure.example", Pref: 20},
		dns.MX{Host: "mx3.secure.example", Pref: 30})
	e.mx("mx1.secure.example", "192.0.2.1", mailsectest.Config{Certificate: &leaf})
	e.res.TLSA("_25._tcp.mx1.secure.example", tlsaFor(leaf.Leaf))
	e.mx("mx2.secure.example", "192.0.2.2", mailsectest.Config{})
	e.mx("mx3.secure.example", "192.0.2.3", mailsectest.Config{WithholdStartTLS: true})
	e.res.TXT("_smtp._tls.secure.example", "v=TLSRPTv1; rua=mailto:tls@secure.example")
	dc, err := e.direct().Check(context.Background(), "secure.example")
	if err != nil {
		t.Fatal(err)
	}
	if !dc.MXAuthentic || len(dc.Hosts) != 3 || len(dc.TLSRPT) != 1 {
		t.Fatalf("check = %+v", dc)
	}
	h1, h2, h3 := dc.Hosts[0], dc.Hosts[1], dc.Hosts[2]
	if h1.Status != "protected" || h1.DANEMatch == "" || h1.CertValid {
		t.Errorf("mx1 = %+v", h1)
	}
	if h2.Status != "verified" || !h2.CertValid || !h2.StartTLS || h2.TLSVersion == "" {
		t.Errorf("mx2 = %+v", h2)
	}
	if h3.Status != "refused" || h3.StartTLS {
		t.Errorf("mx3 = %+v", h3)
	}
	if !strings.HasPrefix(dc.Verdict, "partly protected") {
		t.Errorf("verdict = %q", dc.Verdict)
	}
	e.nothingSent()
}

// TestDirectOnePolicyFetch: 100 concurrent first deliveries to one domain
// fetch its MTA-STS policy once; later ones fetch nothing.
func TestDirectOnePolicyFetch(t *testing.T) {
	e := newMXEnv(t)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	s := e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{})
	e.sts("example.org", "1", "enforce", "mx1.example.org")
	tr := e.direct()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Go(func() {
			_, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@example.org"))
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
	if n := e.fetches.Load(); n != 1 {
		t.Fatalf("%d policy fetches for 100 concurrent first sends, want 1", n)
	}
	if len(s.Messages()) != 100 {
		t.Fatalf("%d messages", len(s.Messages()))
	}
	for range 10 {
		if _, err := deliverDirect(t, tr, delivery(mailsec.Security{}, "ann@example.org")); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.fetches.Load(); n != 1 {
		t.Fatalf("a cached policy was fetched again (%d fetches)", n)
	}
	if n := e.res.Queries("TXT", "_mta-sts.example.org"); n != 1 {
		t.Fatalf("%d TXT lookups within one refresh interval, want 1", n)
	}
}

// BenchmarkDirectCachedPolicy delivers to a domain with an enforced
// MTA-STS policy, cached after the first delivery. It reports the policy
// fetches and TXT lookups per delivery, both of which must be 0 once the
// policy is cached (the one of the first delivery aside).
func BenchmarkDirectCachedPolicy(b *testing.B) {
	e := newMXEnvWith(b, nil)
	e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10})
	e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{Discard: true})
	e.sts("example.org", "1", "enforce", "mx1.example.org")
	tr := e.direct()
	ctx := context.Background()
	if _, err := tr.Deliver(ctx, delivery(mailsec.Security{}, "ann@example.org")); err != nil {
		b.Fatal(err)
	}
	f0, q0 := e.fetches.Load(), e.res.Queries("TXT", "_mta-sts.example.org")
	b.ResetTimer()
	for b.Loop() {
		if _, err := tr.Deliver(ctx, delivery(mailsec.Security{}, "ann@example.org")); err != nil {
			b.Fatal(err)
		}
	}
	fetches, txt := e.fetches.Load()-f0, e.res.Queries("TXT", "_mta-sts.example.org")-q0
	b.ReportMetric(float64(fetches)/float64(b.N), "fetches/op")
	b.ReportMetric(float64(txt)/float64(b.N), "txt-lookups/op")
	if fetches != 0 || txt != 0 {
		b.Fatalf("a cached policy cost %d fetches and %d TXT lookups within one refresh interval", fetches, txt)
	}
}

// Each recipient's RCPT answer is final for this delivery: a mix of
// temporary and permanent refusals does not send anyone to the next MX
// host, whatever the recipients' order.
func TestDirectRcptRefusalsStay(t *testing.T) {
	for _, order := range [][]string{{"ann@example.org", "bob@example.org"}, {"bob@example.org", "ann@example.org"}} {
		e := newMXEnv(t)
		e.res.MX("example.org", dns.MX{Host: "mx1.example.org", Pref: 10}, dns.MX{Host: "mx2.example.org", Pref: 20})
		e.mx("mx1.example.org", "192.0.2.10", mailsectest.Config{RcptReply: map[string]*mailsec.Reply{
			"ann@example.org": {Code: 450, Text: "mailbox busy"},
			"bob@example.org": {Code: 550, Text: "no such user"},
		}})
		s2 := e.mx("mx2.example.org", "192.0.2.20", mailsectest.Config{})
		res, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, order...))
		if err == nil {
			t.Fatal("accepted")
		}
		if s2.Transactions() != 0 {
			t.Fatalf("order %v: the next MX host was asked to overrule mx1's answers", order)
		}
		for _, r := range res.Recipients {
			want := r.Address == "ann@example.org"
			if mailsec.IsTemporary(r.Err) != want {
				t.Errorf("order %v: %s temporary = %v", order, r.Address, !want)
			}
		}
	}
}

// The application's own certificate checks in TLSConfig stay in force.
func TestSubmissionKeepsApplicationVerifyConnection(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := &transport.Submission{Addr: srv.Addr, ServerName: "localhost", TLSConfig: &tls.Config{
		RootCAs: srv.CA.Pool(),
		VerifyConnection: func(tls.ConnectionState) error {
			return errors.New("refused by the application's issuer rule")
		},
	}}
	defer tr.Close()
	_, err := tr.Deliver(context.Background(), delivery(mailsec.Security{}, "ann@example.org"))
	if err == nil || !strings.Contains(err.Error(), "issuer rule") {
		t.Fatalf("err = %v", err)
	}
	if srv.Transactions() != 0 {
		t.Fatal("delivered past the application's check")
	}
}
