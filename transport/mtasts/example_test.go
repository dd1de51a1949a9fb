package mtasts_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport/mtasts"
)

// policyServer starts an HTTPS server on loopback that serves policy as
// https://mta-sts.example.com/.well-known/mta-sts.txt (httptest's
// certificate is valid for *.example.com), and returns a Client that
// trusts it and connects every address to it.
func policyServer(policy string) (*mtasts.Client, func()) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, policy)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	// The domain's DNS: its MTA-STS record, and the policy host on
	// loopback, where the example's server listens.
	r := mailsectest.NewResolver()
	r.TXT("_mta-sts.example.com", "v=STSv1; id=20250101T000000;")
	r.IP("mta-sts.example.com", netip.MustParseAddr("127.0.0.1"))
	c := &mtasts.Client{
		Resolver:  r,
		TLSConfig: &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return new(net.Dialer).DialContext(ctx, network, srv.Listener.Addr().String())
		},
		Now: func() time.Time { return time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) },
		// Only because the example's server is on loopback: by default a
		// policy host at a loopback, private or link-local address is
		// not connected to.
		AllowPrivate: true,
	}
	return c, srv.Close
}

func ExampleClient_Lookup() {
	sts, stop := policyServer("version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.mx.example.net\nmax_age: 86400\n")
	defer stop()

	res, err := sts.Lookup(context.Background(), "example.com")
	if err != nil {
		log.Fatal(err) // invalid domain or canceled context only
	}
	if res.Err != nil {
		fmt.Println("report:", res.Err) // for TLS-RPT; delivery goes on
	}
	if res.Policy == nil || res.Policy.Mode == mtasts.None {
		fmt.Println("no MTA-STS policy: deliver as usual")
		return
	}
	fmt.Println("mode:", res.Policy.Mode, "id:", res.ID, "expires:", res.Expires.Format(time.RFC3339))
	for _, host := range []string{"mx1.example.com", "a.mx.example.net", "mx.attacker.example"} {
		fmt.Println(host, res.Policy.Matches(host))
	}
	// Output:
	// mode: enforce id: 20250101T000000 expires: 2025-06-02T12:00:00Z
	// mx1.example.com true
	// a.mx.example.net true
	// mx.attacker.example false
}

func ExampleClient_Lookup_noPolicy() {
	sts := &mtasts.Client{Resolver: mailsectest.NewResolver()} // no records at all
	res, err := sts.Lookup(context.Background(), "example.org")
	fmt.Println(res.Policy == nil, res.Err, err)
	// Output: true <nil> <nil>
}

func ExampleDirCache() {
	dir, err := os.MkdirTemp("", "mta-sts")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cache := mtasts.DirCache(filepath.Join(dir, "policies"))

	sts, stop := policyServer("version: STSv1\nmode: testing\nmx: mx1.example.com\nmax_age: 604800\n")
	defer stop()
	sts.Cache = cache
	res, err := sts.Lookup(context.Background(), "example.com")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("first:", res.Policy.Mode, "cached:", res.Cached)

	// After a restart, a new Client with the same directory needs no
	// HTTPS fetch, even while the policy server is unreachable.
	stop()
	restarted := &mtasts.Client{Resolver: sts.Resolver, Cache: cache, Now: sts.Now}
	res, err = restarted.Lookup(context.Background(), "example.com")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("after restart:", res.Policy.Mode, "cached:", res.Cached)
	// Output:
	// first: testing cached: false
	// after restart: testing cached: true
}

func ExampleMemCache() {
	// Clients sharing one MemCache share their policies; MaxEntries
	// bounds its memory.
	cache := &mtasts.MemCache{MaxEntries: 1000}
	sts, stop := policyServer("version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 604800\n")
	defer stop()
	sts.Cache = cache
	if _, err := sts.Lookup(context.Background(), "example.com"); err != nil {
		log.Fatal(err)
	}
	_, err := cache.Get(context.Background(), "example.com")
	fmt.Println("stored:", err == nil)
	_, err = cache.Get(context.Background(), "example.org")
	fmt.Println("miss:", errors.Is(err, mtasts.ErrCacheMiss))
	// Output:
	// stored: true
	// miss: true
}

func ExampleError() {
	sts, stop := policyServer("<html>not a policy</html>")
	defer stop()
	res, err := sts.Lookup(context.Background(), "example.com")
	if err != nil {
		log.Fatal(err)
	}
	var se *mtasts.Error
	if errors.As(res.Err, &se) {
		fmt.Println(res.Policy == nil, se.Domain, se.ResultType(), se.Temporary())
	}
	// Output: true example.com sts-policy-invalid false
}

func ExampleParsePolicy() {
	p, err := mtasts.ParsePolicy([]byte("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 604800\r\n"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Mode, p.MaxAge, p.MX)
	// Output: enforce 604800 [mail.example.com]
}

func ExampleSelectRecord() {
	rec, err := mtasts.SelectRecord([]string{"v=spf1 -all", "v=STSv1; id=20160831085700Z;"})
	fmt.Println(rec.ID, err)
	_, err = mtasts.SelectRecord([]string{"v=STSv1; id=a;", "v=STSv1; id=b;"})
	fmt.Println(errors.Is(err, mtasts.ErrNoRecord))
	// Output:
	// 20160831085700Z <nil>
	// true
}

func ExampleParseRecord() {
	rec, err := mtasts.ParseRecord("v=STSv1; id=20160831085700Z;")
	fmt.Println(rec.ID, err)
	// Output: 20160831085700Z <nil>
}

func ExamplePolicy_Matches() {
	p := &mtasts.Policy{Mode: mtasts.Enforce, MaxAge: 86400, MX: []string{"mail.example.com", "*.example.net"}}
	fmt.Println(p.Matches("MAIL.example.com."), p.Matches("mx1.example.net"), p.Matches("a.b.example.net"))
	// Output: true true false
}
