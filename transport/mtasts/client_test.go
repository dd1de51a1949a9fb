package mtasts_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/transport/mtasts"
)

func TestLookupFetchesPolicy(t *testing.T) {
	for _, mode := range []mtasts.Mode{mtasts.Enforce, mtasts.Testing, mtasts.None} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t)
			var mx []string
			if mode != mtasts.None {
				mx = []string{"mx1.example.com", "*.backup.example.net"}
			}
			e.srv.set(servePolicy(policyText(mode, 86400, mx...)))
			r := e.lookup(t, e.c)
			if r.Err != nil || r.Policy == nil {
				t.Fatalf("Lookup = %+v", r)
			}
			if r.Policy.Mode != mode || r.Policy.MaxAge != 86400 || !slices.Equal(r.Policy.MX, mx) {
				t.Errorf("policy %+v", r.Policy)
			}
			now := e.clock.Now()
			if r.ID != "one" || r.Cached || !r.Fetched.Equal(now) || !r.Expires.Equal(now.Add(24*time.Hour)) {
				t.Errorf("result %+v", r)
			}
			// RFC 8461 §3.3: the well-known URL on mta-sts.<domain>, port 443.
			if !slices.Equal(e.srv.hosts, []string{"mta-sts.example.com/.well-known/mta-sts.txt"}) ||
				!slices.Equal(e.srv.dials, []string{testPolicyAddr + ":443"}) {
				t.Errorf("requests %q, dials %q", e.srv.hosts, e.srv.dials)
			}
		})
	}
}

// checkFetchFailure checks that Lookup reports a failed fetch in
// Result.Err with the TLS-RPT type, and no policy.
func checkFetchFailure(t *testing.T, e *env, wantType string, wantIs error) *mtasts.Error {
	t.Helper()
	r := e.lookup(t, e.c)
	if r.Policy != nil {
		t.Fatalf("policy %+v despite a failed fetch", r.Policy)
	}
	var se *mtasts.Error
	if !errors.As(r.Err, &se) {
		t.Fatalf("Err = %v, want *mtasts.Error", r.Err)
	}
	if se.ResultType() != wantType || se.Domain != testDomain {
		t.Errorf("Err = %v (type %s, domain %s), want type %s", se, se.ResultType(), se.Domain, wantType)
	}
	if wantIs != nil && !errors.Is(r.Err, wantIs) {
		t.Errorf("Err = %v, want it to match %v", r.Err, wantIs)
	}
	if got := se.Temporary(); got != (wantType == mtasts.ResultFetchError) {
		t.Errorf("Temporary() = %v for %s", got, wantType)
	}
	return se
}

func TestLookupFetchFailures(t *testing.T) {
	good := policyText(mtasts.Enforce, weekPolicy, "mx.example.com")
	for name, tc := range map[string]struct {
		h      http.HandlerFunc
		typ    string
		target error
	}{
		"redirect": {func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://mta-sts.example.com/other.txt", http.StatusFound)
		}, mtasts.ResultFetchError, mtasts.ErrRedirect},
		"permanent redirect": {func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/.well-known/mta-sts.txt?again", http.StatusPermanentRedirect)
		}, mtasts.ResultFetchError, mtasts.ErrRedirect},
		"404": {http.NotFound, mtasts.ResultFetchError, mtasts.ErrHTTPStatus},
		"204": {func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }, mtasts.ResultFetchError, mtasts.ErrHTTPStatus},
		"text/html": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte(good))
		}, mtasts.ResultFetchError, mtasts.ErrContentType},
		"no content type": {func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			w.Write([]byte(good))
		}, mtasts.ResultFetchError, mtasts.ErrContentType},
		"oversized with length": {servePolicy(good + strings.Repeat("x: y\n", mtasts.MaxPolicySize/5)), mtasts.ResultFetchError, mtasts.ErrPolicyTooLarge},
		"oversized chunked": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(good))
			w.(http.Flusher).Flush() // no Content-Length
			for range mtasts.MaxPolicySize / 1024 {
				w.Write([]byte(strings.Repeat("a: b\n", 205)))
			}
		}, mtasts.ResultFetchError, mtasts.ErrPolicyTooLarge},
		"malformed policy": {servePolicy("version: STSv1\nmode: enforce\nmax_age: 600\n"), mtasts.ResultPolicyInvalid, nil},
		"html page":        {servePolicy("<html>hello</html>"), mtasts.ResultPolicyInvalid, nil},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.srv.set(tc.h)
			checkFetchFailure(t, e, tc.typ, tc.target)
			if n := e.srv.fetches.Load(); n != 1 {
				t.Errorf("%d requests; redirects must not be followed", n)
			}
		})
	}
}

func TestLookupSlowServer(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	defer close(release)
	e.srv.set(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	e.c.Timeout = 300 * time.Millisecond
	start := time.Now()
	se := checkFetchFailure(t, e, mtasts.ResultFetchError, nil)
	if !errors.Is(se, context.DeadlineExceeded) {
		t.Errorf("Err = %v, want a deadline", se)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Lookup took %v with a 300ms Timeout", d)
	}
}

func TestLookupWebPKI(t *testing.T) {
	t.Run("wrong name", func(t *testing.T) {
		e := newEnv(t)
		e.srv = newSTSServer(t, e.ca.leaf(t, "mta-sts.example.org", "example.com"), servePolicy(policyText(mtasts.Enforce, 600, "mx.example.com")))
		e.c = e.client(nil)
		checkFetchFailure(t, e, mtasts.ResultWebPKIInvalid, nil)
		if n := e.srv.fetches.Load(); n != 0 {
			t.Errorf("%d requests sent over an unverified connection", n)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		e := newEnv(t)
		other := newTestCA(t)
		e.srv = newSTSServer(t, other.leaf(t, "mta-sts.example.com"), servePolicy(policyText(mtasts.Enforce, 600, "mx.example.com")))
		e.c = e.client(nil)
		checkFetchFailure(t, e, mtasts.ResultWebPKIInvalid, nil)
	})
	t.Run("InsecureSkipVerify ignored", func(t *testing.T) {
		e := newEnv(t)
		other := newTestCA(t)
		e.srv = newSTSServer(t, other.leaf(t, "mta-sts.example.com"), servePolicy(policyText(mtasts.Enforce, 600, "mx.example.com")))
		e.c = e.client(nil)
		e.c.TLSConfig.InsecureSkipVerify = true
		e.c.TLSConfig.ServerName = "mta-sts.example.com"
		checkFetchFailure(t, e, mtasts.ResultWebPKIInvalid, nil)
	})
	t.Run("ServerName ignored", func(t *testing.T) {
		// A base config naming another host must not make the
		// certificate of that host acceptable for this domain.
		e := newEnv(t)
		e.srv = newSTSServer(t, e.ca.leaf(t, "smarthost.example.net"), servePolicy(policyText(mtasts.Enforce, 600, "mx.example.com")))
		e.c = e.client(nil)
		e.c.TLSConfig.ServerName = "smarthost.example.net"
		checkFetchFailure(t, e, mtasts.ResultWebPKIInvalid, nil)
	})
}

func TestLookupNoRecord(t *testing.T) {
	for name, recs := range map[string][]string{
		"NXDOMAIN":        nil,
		"two records":     {"v=STSv1; id=one;", "v=STSv1; id=two;"},
		"other TXT only":  {"v=spf1 -all"},
		"malformed id":    {"v=STSv1; id=not-alnum;"},
		"version missing": {"id=one;"},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.res.TXT(testTXT, recs...)
			r := e.lookup(t, e.c)
			if r.Policy != nil || r.Err != nil {
				t.Errorf("Lookup = %+v, want no policy and no error", r)
			}
			if n := e.srv.fetches.Load(); n != 0 {
				t.Errorf("%d policy fetches without a valid record", n)
			}
		})
	}
}

func TestLookupDNSFailure(t *testing.T) {
	e := newEnv(t)
	e.res.Fail("TXT", testTXT, &dns.Error{Name: testTXT, Type: "TXT", Kind: dns.ServerFailure})
	se := checkFetchFailure(t, e, mtasts.ResultFetchError, nil)
	var de *dns.Error
	if !errors.As(se, &de) || de.Kind != dns.ServerFailure {
		t.Errorf("Err = %v, want the DNS error", se)
	}
	if n := e.srv.fetches.Load(); n != 0 {
		t.Errorf("%d fetches", n)
	}
}

func TestLookupInput(t *testing.T) {
	e := newEnv(t)
	for _, bad := range []string{"", ".", "a..b", "../etc", "exa mple.com", "192.0.2.1", "a/b.example", "-a.example", "x\x00.example"} {
		r, err := e.c.Lookup(context.Background(), bad)
		var ve *mailsec.ValidationError
		if !errors.As(err, &ve) || r != nil {
			t.Errorf("Lookup(%q) = %+v, %v; want a *mailsec.ValidationError", bad, r, err)
		}
	}
	if n := e.res.Lookups(); n != 0 {
		t.Errorf("%d lookups for invalid names", n)
	}

	// Case, a final dot and U-labels name the same A-label domain.
	if r, err := e.c.Lookup(context.Background(), "EXAMPLE.Com."); err != nil || r.Policy == nil || r.Cached {
		t.Fatalf("Lookup = %+v, %v", r, err)
	}
	if r, err := e.c.Lookup(context.Background(), "example.com"); err != nil || !r.Cached {
		t.Fatalf("second Lookup = %+v, %v; want the cached policy", r, err)
	}
	e.res.TXT("_mta-sts.xn--bcher-kva.example", "v=STSv1; id=u;")
	if r, err := e.c.Lookup(context.Background(), "Bücher.example"); err != nil || r.Policy == nil || r.ID != "u" {
		t.Fatalf("Lookup(U-label) = %+v, %v", r, err)
	}
	if got := e.srv.hosts[len(e.srv.hosts)-1]; got != "mta-sts.xn--bcher-kva.example/.well-known/mta-sts.txt" {
		t.Errorf("fetched %s", got)
	}

	// A domain too long for "_mta-sts." to fit has no policy.
	long := strings.Repeat(strings.Repeat("a", 60)+".", 5)[:246] + "e"
	if r, err := e.c.Lookup(context.Background(), long); err != nil || r.Policy != nil || r.Err != nil {
		t.Errorf("Lookup(long) = %+v, %v", r, err)
	}

	var nilRes mtasts.Client
	if _, err := nilRes.Lookup(context.Background(), "example.com"); !errors.Is(err, mailsec.ErrConfig) {
		t.Errorf("Lookup without Resolver: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.c.Lookup(ctx, "example.org"); !errors.Is(err, context.Canceled) {
		t.Errorf("Lookup with a canceled context: %v", err)
	}
}

func TestCachedPolicyNoHTTPS(t *testing.T) {
	e := newEnv(t)
	first := e.lookup(t, e.c)
	if first.Policy == nil || first.Cached {
		t.Fatalf("first Lookup = %+v", first)
	}
	for i := range 50 {
		e.clock.Advance(time.Minute / 2)
		r := e.lookup(t, e.c)
		if r.Policy == nil || !r.Cached || r.Err != nil || r.ID != "one" || !r.Fetched.Equal(first.Fetched) {
			t.Fatalf("Lookup %d = %+v", i, r)
		}
	}
	if n := e.srv.fetches.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
	if n := e.res.Queries("TXT", testTXT); n != 1 {
		t.Errorf("%d TXT lookups within the refresh interval, want 1", n)
	}
}

func TestRefreshInterval(t *testing.T) {
	e := newEnv(t)
	e.c.RefreshInterval = time.Hour
	e.lookup(t, e.c) // at minute 0
	for range 200 {
		e.clock.Advance(time.Minute)
		if r := e.lookup(t, e.c); r.Policy == nil || !r.Cached {
			t.Fatalf("Lookup = %+v", r)
		}
	}
	// Checks at minutes 0, 60, 120 and 180.
	if n := e.res.Queries("TXT", testTXT); n != 4 {
		t.Errorf("%d TXT lookups in 200 minutes at one per hour, want 4", n)
	}
	if n := e.srv.fetches.Load(); n != 1 {
		t.Errorf("%d fetches with an unchanged id, want 1", n)
	}

	// The default interval is one hour too.
	e2 := newEnv(t)
	e2.lookup(t, e2.c)
	e2.clock.Advance(59 * time.Minute)
	e2.lookup(t, e2.c)
	if n := e2.res.Queries("TXT", testTXT); n != 1 {
		t.Errorf("%d TXT lookups before the default interval", n)
	}
	e2.clock.Advance(time.Minute)
	e2.lookup(t, e2.c)
	if n := e2.res.Queries("TXT", testTXT); n != 2 {
		t.Errorf("%d TXT lookups after the default interval", n)
	}
}

func TestNewIDRefetches(t *testing.T) {
	e := newEnv(t)
	e.lookup(t, e.c)
	e.res.TXT(testTXT, "v=STSv1; id=two;")
	e.srv.set(servePolicy(policyText(mtasts.Testing, 3600, "mx2.example.com")))

	e.clock.Advance(30 * time.Minute) // not yet checked again
	if r := e.lookup(t, e.c); r.ID != "one" || r.Policy.Mode != mtasts.Enforce {
		t.Fatalf("Lookup within the interval = %+v", r)
	}
	e.clock.Advance(30 * time.Minute)
	r := e.lookup(t, e.c)
	if r.ID != "two" || r.Cached || r.Err != nil || r.Policy.Mode != mtasts.Testing || !slices.Equal(r.Policy.MX, []string{"mx2.example.com"}) {
		t.Fatalf("Lookup after the id changed = %+v", r)
	}
	if !r.Expires.Equal(e.clock.Now().Add(time.Hour)) {
		t.Errorf("Expires %v, want an hour from the new fetch", r.Expires)
	}
	if n := e.srv.fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
	// The new policy replaced the old one in the cache.
	if r := e.lookup(t, e.c); r.ID != "two" || !r.Cached {
		t.Errorf("next Lookup = %+v", r)
	}
}

func TestRefreshFailureKeepsPolicy(t *testing.T) {
	for name, breakIt := range map[string]func(*env){
		"fetch fails": func(e *env) {
			e.res.TXT(testTXT, "v=STSv1; id=two;")
			e.srv.set(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "oops", 500) })
		},
		"invalid new policy": func(e *env) {
			e.res.TXT(testTXT, "v=STSv1; id=two;")
			e.srv.set(servePolicy("version: STSv1\nmode: enforce\n"))
		},
		"TXT lookup fails": func(e *env) {
			e.res.Fail("TXT", testTXT, &dns.Error{Name: testTXT, Type: "TXT", Kind: dns.Timeout})
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			first := e.lookup(t, e.c)
			breakIt(e)
			e.clock.Advance(2 * time.Hour)
			r := e.lookup(t, e.c)
			if r.Policy == nil || r.ID != "one" || r.Policy.Mode != mtasts.Enforce || !r.Expires.Equal(first.Expires) {
				t.Fatalf("Lookup = %+v; want the cached policy", r)
			}
			var se *mtasts.Error
			if !errors.As(r.Err, &se) {
				t.Fatalf("Err = %v, want *mtasts.Error", r.Err)
			}
			// The failed check counts: no new lookup within the interval.
			before := e.res.Queries("TXT", testTXT)
			e.clock.Advance(time.Minute)
			if r := e.lookup(t, e.c); r.Policy == nil || r.Err != nil {
				t.Errorf("Lookup after = %+v", r)
			}
			if n := e.res.Queries("TXT", testTXT); n != before {
				t.Errorf("TXT looked up again within the interval after a failure")
			}
		})
	}
}

func TestRecordGoneKeepsPolicyUntilExpiry(t *testing.T) {
	e := newEnv(t)
	e.srv.set(servePolicy(policyText(mtasts.Enforce, 86400, "mx.example.com")))
	first := e.lookup(t, e.c)
	e.res.TXT(testTXT) // NXDOMAIN
	e.clock.Advance(2 * time.Hour)
	r := e.lookup(t, e.c)
	if r.Policy == nil || r.ID != "one" || !errors.Is(r.Err, mtasts.ErrRecordRemoved) {
		t.Fatalf("Lookup after the record went = %+v", r)
	}
	e.clock.Advance(21 * time.Hour) // 23h: still in force
	if r := e.lookup(t, e.c); r.Policy == nil || !errors.Is(r.Err, mtasts.ErrRecordRemoved) {
		t.Fatalf("Lookup before expiry = %+v", r)
	}
	e.clock.Advance(time.Hour) // exactly max_age after the fetch
	if !e.clock.Now().Equal(first.Expires) {
		t.Fatalf("clock %v, expiry %v", e.clock.Now(), first.Expires)
	}
	if r := e.lookup(t, e.c); r.Policy != nil || r.Err != nil {
		t.Fatalf("Lookup at expiry = %+v, want no policy", r)
	}
	if _, err := mtasts.ClientCache(e.c).Get(context.Background(), testDomain); !errors.Is(err, mtasts.ErrCacheMiss) {
		t.Errorf("expired entry still cached: %v", err)
	}
	if n := e.srv.fetches.Load(); n != 1 {
		t.Errorf("%d fetches", n)
	}

	// Two v=STSv1 records are no valid record either.
	e2 := newEnv(t)
	e2.lookup(t, e2.c)
	e2.res.TXT(testTXT, "v=STSv1; id=one;", "v=STSv1; id=two;")
	e2.clock.Advance(2 * time.Hour)
	if r := e2.lookup(t, e2.c); r.Policy == nil || !errors.Is(r.Err, mtasts.ErrRecordRemoved) || !errors.Is(r.Err, mtasts.ErrNoRecord) {
		t.Fatalf("Lookup with two records = %+v", r)
	}
}

func TestRetiredPolicy(t *testing.T) {
	// RFC 8461 §8.3: mode none, then the record goes; no failure to report.
	e := newEnv(t)
	e.srv.set(servePolicy(policyText(mtasts.None, 86400)))
	if r := e.lookup(t, e.c); r.Policy == nil || r.Policy.Mode != mtasts.None {
		t.Fatalf("Lookup = %+v", r)
	}
	e.res.TXT(testTXT)
	e.clock.Advance(2 * time.Hour)
	if r := e.lookup(t, e.c); r.Policy != nil || r.Err != nil {
		t.Fatalf("Lookup after the record went = %+v", r)
	}
	if _, err := mtasts.ClientCache(e.c).Get(context.Background(), testDomain); !errors.Is(err, mtasts.ErrCacheMiss) {
		t.Errorf("retired policy still cached: %v", err)
	}
}

func TestProactiveRefresh(t *testing.T) {
	e := newEnv(t)
	e.srv.set(servePolicy(policyText(mtasts.Enforce, 86400, "mx.example.com")))
	e.lookup(t, e.c)
	e.clock.Advance(11 * time.Hour)
	if r := e.lookup(t, e.c); !r.Cached || e.srv.fetches.Load() != 1 {
		t.Fatalf("Lookup before half the lifetime fetched again: %+v", r)
	}
	e.clock.Advance(2 * time.Hour) // 13h of 24h
	r := e.lookup(t, e.c)
	if r.Cached || e.srv.fetches.Load() != 2 || !r.Expires.Equal(e.clock.Now().Add(24*time.Hour)) {
		t.Fatalf("Lookup past half the lifetime = %+v, %d fetches", r, e.srv.fetches.Load())
	}
}

func TestConcurrentFirstLookups(t *testing.T) {
	e := newEnv(t)
	// Hold the response until every caller has started.
	gate := make(chan struct{})
	e.srv.set(func(w http.ResponseWriter, r *http.Request) {
		<-gate
		servePolicy(policyText(mtasts.Enforce, weekPolicy, "mx.example.com"))(w, r)
	})
	const n = 100
	var wg, started sync.WaitGroup
	results := make([]*mtasts.Result, n)
	errs := make([]error, n)
	started.Add(n)
	for i := range n {
		wg.Go(func() {
			started.Done()
			results[i], errs[i] = e.c.Lookup(context.Background(), testDomain)
		})
	}
	started.Wait()
	time.Sleep(50 * time.Millisecond)
	close(gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || results[i].Policy == nil || results[i].ID != "one" {
			t.Fatalf("Lookup %d = %+v, %v", i, results[i], errs[i])
		}
	}
	// Each caller has its own copy of the policy.
	results[0].Policy.MX[0] = "evil.example"
	if results[1].Policy.MX[0] != "mx.example.com" {
		t.Error("callers share one mtasts.Policy")
	}
	if f, l := e.srv.fetches.Load(), e.res.Queries("TXT", testTXT); f != 1 || l != 1 {
		t.Errorf("%d concurrent first Lookups caused %d fetches and %d TXT lookups, want 1 and 1", n, f, l)
	}
}

func TestSharedFetchSurvivesFirstCallerCancel(t *testing.T) {
	e := newEnv(t)
	arrived := make(chan struct{}, 1)
	gate := make(chan struct{})
	e.srv.set(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-gate
		servePolicy(policyText(mtasts.Enforce, weekPolicy, "mx.example.com"))(w, r)
	})
	ctx, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := e.c.Lookup(ctx, testDomain)
		firstErr <- err
	}()
	<-arrived // the shared fetch is under way
	second := make(chan *mtasts.Result, 1)
	go func() {
		r, _ := e.c.Lookup(context.Background(), testDomain)
		second <- r
	}()
	cancel()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled caller got %v", err)
	}
	close(gate)
	if r := <-second; r == nil || r.Policy == nil || r.Err != nil {
		t.Fatalf("second caller got %+v after the first canceled", r)
	}
	if n := e.srv.fetches.Load(); n != 1 {
		t.Errorf("%d fetches", n)
	}
}

func BenchmarkLookupCached(b *testing.B) {
	e := newEnv(b)
	e.c.Now = nil // real clock, default refresh interval
	ctx := context.Background()
	if r, err := e.c.Lookup(ctx, testDomain); err != nil || r.Policy == nil {
		b.Fatal(r, err)
	}
	before := e.srv.fetches.Load()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r, err := e.c.Lookup(ctx, testDomain); err != nil || r.Policy == nil {
				b.Error(r, err)
				return
			}
		}
	})
	b.StopTimer()
	fetches := e.srv.fetches.Load() - before
	b.ReportMetric(float64(fetches)/float64(b.N), "fetches/op")
	if fetches != 0 {
		b.Fatalf("a cached policy was fetched %d times", fetches)
	}
}

// A failed fetch for a domain without a cached policy is remembered for
// FailureBackoff: later Lookups answer at once with the same failure, and
// fetch again only when the back-off has passed.
func TestFailureBackoff(t *testing.T) {
	e := newEnv(t)
	e.srv.set(http.NotFound)
	first := e.lookup(t, e.c)
	if first.Policy != nil || first.Err == nil {
		t.Fatalf("first = %+v", first)
	}
	for range 5 {
		r := e.lookup(t, e.c)
		if r.Policy != nil || !errors.Is(r.Err, mtasts.ErrHTTPStatus) {
			t.Fatalf("within the back-off: %+v", r)
		}
	}
	if n, q := e.srv.fetches.Load(), e.res.Queries("TXT", testTXT); n != 1 || q != 1 {
		t.Fatalf("%d fetches and %d TXT lookups within the back-off, want 1 and 1", n, q)
	}
	e.srv.set(servePolicy(policyText(mtasts.Enforce, weekPolicy, "mx.example.com")))
	e.clock.Advance(mtasts.DefaultFailureBackoff + time.Second)
	if r := e.lookup(t, e.c); r.Policy == nil || r.Err != nil {
		t.Fatalf("after the back-off: %+v", r)
	}
	if n := e.srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}

	// A negative back-off remembers nothing.
	e2 := newEnv(t)
	e2.srv.set(http.NotFound)
	c := e2.client(nil)
	c.FailureBackoff = -1
	for range 3 {
		e2.lookup(t, c)
	}
	if n := e2.srv.fetches.Load(); n != 3 {
		t.Fatalf("%d fetches with no back-off, want 3", n)
	}
}
