package pgp_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
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
		wkd := &pgp.WKD{Client: srv.Client(), URLs: urls}
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
	base := pgp.WKD{Client: srv.Client(), URLs: urls, MaxSize: 4 << 10, Timeout: 300 * time.Millisecond, TTL: -1}
	for addr, want := range map[string]string{
		"slow@example.org":     "deadline",
		"redirect@example.org": "HTTPS only",
		"big@example.org":      "larger than",
		"other@example.org":    "no key found",
		"junk@example.org":     "corrupt",
	} {
		wkd := &pgp.WKD{Client: base.Client, URLs: base.URLs, MaxSize: base.MaxSize, Timeout: base.Timeout, TTL: base.TTL}
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
	wkd := &pgp.WKD{Client: srv.Client(), URLs: urls, MaxEntries: 1}
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
	sender, err := mailsec.NewSender(rt, &mailsec.Options{Policy: mailsec.PreferProtection(mailsec.DefaultPolicy()), Protector: p})
	if err != nil {
		t.Fatal(err)
	}
	_, err = sender.Send(context.Background(), &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Subject: "s", Text: "t"})
	if err == nil || !mailsec.IsTemporary(err) || len(rt.Deliveries()) != 0 {
		t.Fatalf("prefer with a reset lookup: %v (temporary %v), %d deliveries", err, mailsec.IsTemporary(err), len(rt.Deliveries()))
	}
}
