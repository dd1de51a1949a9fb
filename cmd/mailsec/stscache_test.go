package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec/transport/mtasts"
)

// The policy cache on disk keeps at most its bound of files, the newest.
func TestBoundedDirCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mta-sts")
	c := boundedDirCache{mtasts.DirCache(dir), 3}
	domains := []string{"a.example", "b.example", "c.example", "d.example", "e.example"}
	for i, d := range domains {
		if err := c.Put(t.Context(), d, []byte(`{"domain":"`+d+`"}`)); err != nil {
			t.Fatal(err)
		}
		// Distinct modification times, oldest first, whatever the
		// file system's clock resolution.
		when := time.Now().Add(time.Duration(i-len(domains)) * time.Hour)
		files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil && time.Since(fi.ModTime()) < time.Minute {
				if err := os.Chtimes(f, when, when); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) != 3 {
		t.Fatalf("%d files, want 3", len(files))
	}
	for i, d := range domains {
		_, err := c.Get(t.Context(), d)
		if kept := err == nil; kept != (i >= 2) {
			t.Errorf("%s: kept %v, want %v (err %v)", d, kept, i >= 2, err)
		}
	}
}

// A -mta-sts-cache directory that another user could write to (one that
// anybody may write to, as a squatted /tmp/mta-sts; a group-writable one;
// another user's) is refused with a usage error that names it and says
// what to do; the user's own 0700 directory, and a missing one (created
// 0700), are used.
func TestPolicyCacheRefusesSharedDirectory(t *testing.T) {
	e := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }}
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		d := filepath.Join(base, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
		return d
	}
	refused := map[string]string{
		"world writable": mk("world", 0o777),
		"sticky /tmp":    mk("sticky", 0o1777),
		"group writable": mk("group", 0o770),
	}
	if os.Geteuid() == 0 {
		d := mk("theirs", 0o700)
		if err := os.Chown(d, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		refused["another user's"] = d
	}
	for label, dir := range refused {
		o := &deliveryOptions{mx: true, stsCache: dir}
		cache, err := o.policyCache(e)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("%s: policyCache = %v, %v; want a usage error", label, cache, err)
			continue
		}
		if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "chmod go-w") {
			t.Errorf("%s: %q does not name the directory and what to do", label, err)
		}
	}

	// The default directory is checked too.
	home := mk("home", 0o700)
	shared := filepath.Join(home, ".cache", "mailsec", "mta-sts")
	if err := os.MkdirAll(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	eh := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(k string) string {
		if k == "HOME" {
			return home
		}
		return ""
	}}
	if c, err := (&deliveryOptions{mx: true}).policyCache(eh); err == nil || !strings.Contains(err.Error(), shared) {
		t.Errorf("shared default directory: policyCache = %v, %v; want a usage error naming %s", c, err, shared)
	}

	for label, dir := range map[string]string{"private": mk("private", 0o700), "missing": filepath.Join(base, "new", "mta-sts")} {
		cache, err := (&deliveryOptions{mx: true, stsCache: dir}).policyCache(e)
		if err != nil || cache == nil {
			t.Errorf("%s: policyCache = %v, %v", label, cache, err)
			continue
		}
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v; want a 0700 directory", label, fi, err)
		}
	}
}
