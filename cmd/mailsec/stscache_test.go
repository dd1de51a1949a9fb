package main

import (
	"os"
	"path/filepath"
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
