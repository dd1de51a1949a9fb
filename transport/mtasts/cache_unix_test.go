//go:build unix

package mtasts_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport/mtasts"
)

// plantedEntry is a cache entry that says domain publishes mode none,
// for a year: what someone who can write to the directory would plant.
// It has the entry format of cache.go.
func plantedEntry(domain string) []byte {
	now := time.Now()
	b, _ := json.Marshal(map[string]any{
		"version": 1, "domain": domain, "id": "20260101",
		"policy":  mtasts.PolicyText(mtasts.None, 31557600),
		"fetched": now, "expires": now.Add(31557600 * time.Second), "checked": now,
	})
	return b
}

// entryName is the name of domain's file in dir.
func entryName(dir mtasts.DirCache, domain string) string {
	sum := sha256.Sum256([]byte(domain))
	return filepath.Join(string(dir), hex.EncodeToString(sum[:])+".json")
}

// A file that someone other than the user may have written (another
// user's, one its group or others may write to, a symbolic link, a FIFO)
// is not read: Get fails with mtasts.ErrUnsafeCache, and a mtasts.Client that finds it
// looks the policy up afresh instead of using it.
func TestDirCacheIgnoresFilesOthersCouldWrite(t *testing.T) {
	const domain = "bank.example"
	ctx := context.Background()
	cases := map[string]func(t *testing.T, name string){
		"group writable": func(t *testing.T, name string) { chmod(t, name, 0o620) },
		"world writable": func(t *testing.T, name string) { chmod(t, name, 0o606) },
		"another user's": func(t *testing.T, name string) {
			if os.Geteuid() != 0 {
				t.Skip("giving a file to another user needs root")
			}
			if err := os.Chown(name, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		},
		"symbolic link": func(t *testing.T, name string) {
			target := filepath.Join(t.TempDir(), "elsewhere.json")
			if err := os.Rename(name, target); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, name); err != nil {
				t.Fatal(err)
			}
		},
		"fifo": func(t *testing.T, name string) {
			if err := os.Remove(name); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mkfifo(name, 0o600); err != nil {
				t.Fatal(err)
			}
		},
	}
	for label, plant := range cases {
		t.Run(label, func(t *testing.T) {
			dir := mtasts.DirCache(t.TempDir())
			name := entryName(dir, domain)
			if err := os.WriteFile(name, plantedEntry(domain), 0o600); err != nil {
				t.Fatal(err)
			}
			plant(t, name)
			b, err := dir.Get(ctx, domain)
			if !errors.Is(err, mtasts.ErrUnsafeCache) {
				t.Fatalf("Get = %q, %v; want mtasts.ErrUnsafeCache", b, err)
			}
			if b != nil {
				t.Errorf("Get returned %d bytes with its error", len(b))
			}

			// A mtasts.Client does not use it: the TXT record's id matches the
			// planted entry's, so only a fetch (which fails here: there
			// is no policy server) could replace it.
			r := mailsectest.NewResolver()
			r.TXT("_mta-sts."+domain, "v=STSv1; id=20260101")
			c := &mtasts.Client{Resolver: r, Cache: dir}
			res, err := c.Lookup(ctx, domain)
			if err == nil && res.Policy != nil && res.Policy.Mode == mtasts.None {
				t.Errorf("planted policy used: mode %q, cached %v", res.Policy.Mode, res.Cached)
			}
		})
	}

	// The user's own file, mode 0600, is read.
	dir := mtasts.DirCache(t.TempDir())
	if err := os.WriteFile(entryName(dir, domain), plantedEntry(domain), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dir.Get(ctx, domain); err != nil {
		t.Errorf("the user's own entry: %v", err)
	}
}

// Check refuses a directory others may write to or that belongs to
// another user, and accepts the user's own 0700 one.
func TestDirCacheCheck(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		d := filepath.Join(base, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		chmod(t, d, mode)
		return d
	}
	if err := mtasts.DirCache(mk("private", 0o700)).Check(); err != nil {
		t.Errorf("0700 directory: %v", err)
	}
	if err := mtasts.DirCache(mk("readable", 0o755)).Check(); err != nil {
		t.Errorf("0755 directory: %v", err)
	}
	for _, c := range []struct {
		name string
		mode os.FileMode
	}{{"world", 0o777}, {"group", 0o770}, {"sticky", 0o1777}} {
		d := mk(c.name, c.mode)
		if err := mtasts.DirCache(d).Check(); !errors.Is(err, mtasts.ErrUnsafeCache) {
			t.Errorf("mode %v directory: %v; want mtasts.ErrUnsafeCache", c.mode, err)
		}
	}
	if os.Geteuid() == 0 {
		d := mk("theirs", 0o700)
		if err := os.Chown(d, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := mtasts.DirCache(d).Check(); !errors.Is(err, mtasts.ErrUnsafeCache) {
			t.Errorf("another user's directory: %v; want mtasts.ErrUnsafeCache", err)
		}
	}
	if err := mtasts.DirCache(filepath.Join(base, "missing")).Check(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing directory: %v; want fs.ErrNotExist", err)
	}
}

func chmod(t *testing.T, name string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
}
