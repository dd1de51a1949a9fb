package mtasts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDirCacheAtomic(t *testing.T) {
	dir := DirCache(t.TempDir())
	ctx := context.Background()
	a := bytes.Repeat([]byte("a"), 256<<10)
	b := bytes.Repeat([]byte("b"), 300<<10)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 25 {
				v := a
				if (i+j)%2 == 1 {
					v = b
				}
				if err := dir.Put(ctx, "example.com", v); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	hits := 0
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		got, err := dir.Get(ctx, "example.com")
		if errors.Is(err, ErrCacheMiss) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
			t.Fatalf("read a partial or mixed file of %d bytes", len(got))
		}
		hits++
	}
	if hits == 0 {
		t.Fatal("no complete file read")
	}
	ents, _ := os.ReadDir(string(dir))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp") || !strings.HasSuffix(e.Name(), ".json") {
			t.Errorf("file %s left behind", e.Name())
		}
	}
	if len(ents) != 1 {
		t.Errorf("%d files for one domain", len(ents))
	}
}

func TestDirCacheOddKeys(t *testing.T) {
	parent := t.TempDir()
	dir := DirCache(filepath.Join(parent, "cache"))
	ctx := context.Background()
	keys := []string{"../../evil", "../outside.json", "/etc/passwd", "a/b", "..", ".", "", `C:\x`, "x\x00y", strings.Repeat("a", 5000), "EXAMPLE.com", "example.com"}
	for i, k := range keys {
		if err := dir.Put(ctx, k, []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
	}
	for i, k := range keys {
		got, err := dir.Get(ctx, k)
		if err != nil || string(got) != fmt.Sprint(i) {
			t.Errorf("Get(%q) = %q, %v", k, got, err)
		}
	}
	// Everything stays inside the directory, one file per key.
	if ents, _ := os.ReadDir(parent); len(ents) != 1 || ents[0].Name() != "cache" {
		t.Errorf("parent holds %v", ents)
	}
	ents, _ := os.ReadDir(string(dir))
	if len(ents) != len(keys) {
		t.Errorf("%d files for %d keys", len(ents), len(keys))
	}
	for _, k := range keys {
		if err := dir.Delete(ctx, k); err != nil {
			t.Errorf("Delete(%q): %v", k, err)
		}
		if _, err := dir.Get(ctx, k); !errors.Is(err, ErrCacheMiss) {
			t.Errorf("Get(%q) after Delete: %v", k, err)
		}
	}
	if err := dir.Delete(ctx, "never.example"); err != nil {
		t.Errorf("Delete of a missing entry: %v", err)
	}
	// A directory that does not exist yet is a miss.
	if _, err := DirCache(filepath.Join(parent, "none")).Get(ctx, "example.com"); !errors.Is(err, ErrCacheMiss) {
		t.Errorf("Get from a missing directory: %v", err)
	}
}

// entryDomain is the domain of the entries tested here.
const entryDomain = "example.com"

func TestCorruptEntryIsMiss(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	good := &entry{Version: entryVersion, Domain: entryDomain, ID: "one",
		Policy: PolicyText(Enforce, 3600, "mx.example.com"), Fetched: now, Expires: now.Add(time.Hour), Checked: now}
	if _, err := decodeEntry(entryDomain, good.marshal()); err != nil {
		t.Fatalf("good entry refused: %v", err)
	}
	mutate := func(f func(*entry)) []byte {
		e := *good
		f(&e)
		return e.marshal()
	}
	for name, b := range map[string][]byte{
		"garbage":        []byte("\x00\xff not json"),
		"empty":          nil,
		"truncated":      good.marshal()[:40],
		"null":           []byte("null"),
		"array":          []byte("[1,2]"),
		"other version":  mutate(func(e *entry) { e.Version = 2 }),
		"other domain":   mutate(func(e *entry) { e.Domain = "evil.example" }),
		"bad id":         mutate(func(e *entry) { e.ID = "a; id=b" }),
		"no id":          mutate(func(e *entry) { e.ID = "" }),
		"bad policy":     mutate(func(e *entry) { e.Policy = "mode: enforce" }),
		"expiry too far": mutate(func(e *entry) { e.Expires = now.Add(2 * time.Hour) }),
		"no fetch time":  mutate(func(e *entry) { e.Fetched = time.Time{} }),
		"expiry before":  mutate(func(e *entry) { e.Expires = now.Add(-time.Second) }),
	} {
		if e, err := decodeEntry(entryDomain, b); err == nil {
			t.Errorf("%s: accepted as %+v", name, e)
		}
	}
}

// An oversized file is a miss, not a huge read.
func TestDirCacheOversizedIsMiss(t *testing.T) {
	dir := DirCache(t.TempDir())
	ctx := context.Background()
	if err := os.WriteFile(dir.name(entryDomain), make([]byte, maxCacheFile+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dir.Get(ctx, entryDomain); !errors.Is(err, ErrCacheMiss) {
		t.Errorf("oversized file: %v", err)
	}
}

func TestMemCache(t *testing.T) {
	var m MemCache // zero value usable
	ctx := context.Background()
	if _, err := m.Get(ctx, "a"); !errors.Is(err, ErrCacheMiss) {
		t.Fatalf("empty Get: %v", err)
	}
	v := []byte("value")
	m.Put(ctx, "a", v)
	v[0] = 'X' // the cache keeps its own copy
	got, err := m.Get(ctx, "a")
	if err != nil || string(got) != "value" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	got[0] = 'Y'
	if again, _ := m.Get(ctx, "a"); string(again) != "value" {
		t.Errorf("Get returned the cache's own slice")
	}
	m.Delete(ctx, "a")
	if _, err := m.Get(ctx, "a"); !errors.Is(err, ErrCacheMiss) {
		t.Errorf("Get after Delete: %v", err)
	}

	small := MemCache{MaxEntries: 3}
	for i := range 10 {
		small.Put(ctx, fmt.Sprint(i), []byte{byte(i)})
		small.Put(ctx, fmt.Sprint(i), []byte{byte(i)}) // replacing does not evict
	}
	if n := len(small.m); n != 3 {
		t.Errorf("%d entries with MaxEntries 3", n)
	}
	if got, err := small.Get(ctx, "9"); err != nil || got[0] != 9 {
		t.Errorf("latest entry evicted: %v", err)
	}
	var def MemCache
	for i := range DefaultMemCacheEntries + 5 {
		def.Put(ctx, fmt.Sprint(i), nil)
	}
	if n := len(def.m); n != DefaultMemCacheEntries {
		t.Errorf("%d entries with the default bound", n)
	}
}

func FuzzDecodeEntry(f *testing.F) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	good := &entry{Version: entryVersion, Domain: entryDomain, ID: "one",
		Policy: PolicyText(Enforce, 3600, "mx.example.com"), Fetched: now, Expires: now.Add(time.Hour), Checked: now}
	f.Add(good.marshal())
	f.Add([]byte(`{"version":1,"domain":"example.com","id":"x","policy":"version: STSv1\nmode: none\nmax_age: 0\n","fetched":"2030-01-01T00:00:00Z","expires":"2030-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > maxCacheFile {
			return
		}
		e, err := decodeEntry(entryDomain, b)
		if err != nil {
			return
		}
		if e.Domain != entryDomain || e.policy == nil || e.Expires.Before(e.Fetched) ||
			e.Expires.After(e.Fetched.Add(time.Duration(e.policy.MaxAge)*time.Second)) {
			t.Fatalf("accepted an inconsistent entry: %+v", e)
		}
		// What was accepted survives a round trip.
		if again, err := decodeEntry(entryDomain, e.marshal()); err != nil || again.ID != e.ID || again.Policy != e.Policy {
			t.Fatalf("round trip: %+v, %v", again, err)
		}
	})
}
