package mtasts_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/mailsec/mailsec/transport/mtasts"
)

func TestDirCacheSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	dir := mtasts.DirCache(filepath.Join(t.TempDir(), "sts"))
	c1 := e.client(dir)
	if r := e.lookup(t, c1); r.Policy == nil || r.Cached {
		t.Fatalf("first Lookup = %+v", r)
	}
	e.clock.Advance(10 * time.Minute)

	c2 := e.client(dir) // a new process
	r := e.lookup(t, c2)
	if r.Policy == nil || !r.Cached || r.ID != "one" || r.Policy.Mode != mtasts.Enforce {
		t.Fatalf("Lookup after restart = %+v", r)
	}
	if f, l := e.srv.fetches.Load(), e.res.Queries("TXT", testTXT); f != 1 || l != 1 {
		t.Errorf("after restart: %d fetches, %d TXT lookups; want 1 and 1", f, l)
	}
	// The policy survives a restart even when the attacker now hides the
	// record and the server.
	e.res.TXT(testTXT)
	e.srv.set(func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	e.clock.Advance(2 * time.Hour)
	c3 := e.client(dir)
	if r := e.lookup(t, c3); r.Policy == nil || r.Policy.Mode != mtasts.Enforce || !errors.Is(r.Err, mtasts.ErrRecordRemoved) {
		t.Fatalf("Lookup with the record hidden = %+v", r)
	}

	// Files: one per domain, mode 0600, in a 0700 directory, no leftovers.
	ents, err := os.ReadDir(string(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || !regexp.MustCompile(`^[0-9a-f]{64}\.json$`).MatchString(ents[0].Name()) {
		t.Fatalf("directory holds %v", ents)
	}
	fi, err := os.Stat(filepath.Join(string(dir), ents[0].Name()))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, %v", fi.Mode(), err)
	}
	di, err := os.Stat(string(dir))
	if err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, %v", di.Mode(), err)
	}
}

// A corrupt cache file is fetched again through a Client, and replaced.
func TestCorruptEntryRefetched(t *testing.T) {
	e := newEnv(t)
	dir := mtasts.DirCache(t.TempDir())
	ctx := context.Background()
	if err := dir.Put(ctx, testDomain, []byte(`{"version":1,"domain":"example.com","id":`)); err != nil {
		t.Fatal(err)
	}
	c := e.client(dir)
	if r := e.lookup(t, c); r.Policy == nil || r.Cached || r.Err != nil {
		t.Fatalf("Lookup over a corrupt entry = %+v", r)
	}
	if e.srv.fetches.Load() != 1 {
		t.Errorf("%d fetches", e.srv.fetches.Load())
	}
	b, err := dir.Get(ctx, testDomain)
	if err != nil {
		t.Fatal(err)
	}
	if err := mtasts.ValidEntry(testDomain, b); err != nil {
		t.Errorf("entry not replaced: %v", err)
	}
}
