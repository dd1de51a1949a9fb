package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mailsec/mailsec/transport/mtasts"
)

// maxCachedPolicies bounds the MTA-STS policies send -mx and queue run
// keep on disk, as mtasts.MemCache bounds those in memory: one file per
// recipient domain, each at most about 1 MiB (mtasts.DirCache's bound).
const maxCachedPolicies = mtasts.DefaultMemCacheEntries

// boundedDirCache is an mtasts.DirCache that holds at most max files:
// after a Put that goes beyond, the policies written longest ago are
// removed, as a MemCache forgets its least recently stored entries.
type boundedDirCache struct {
	mtasts.DirCache
	max int
}

// Put stores data for domain, then removes the oldest entries beyond
// the bound. Failing to remove one does not fail the Put: the policy is
// stored.
func (c boundedDirCache) Put(ctx context.Context, domain string, data []byte) error {
	if err := c.DirCache.Put(ctx, domain, data); err != nil {
		return err
	}
	entries, err := os.ReadDir(string(c.DirCache))
	if err != nil {
		return nil
	}
	type file struct {
		name string
		mod  time.Time
	}
	var files []file
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		files = append(files, file{e.Name(), fi.ModTime()})
	}
	if len(files) <= c.max {
		return nil
	}
	slices.SortFunc(files, func(a, b file) int { return a.mod.Compare(b.mod) })
	for _, f := range files[:len(files)-c.max] {
		_ = os.Remove(filepath.Join(string(c.DirCache), f.name))
	}
	return nil
}
