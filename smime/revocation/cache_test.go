package revocation

import (
	"testing"
	"time"
)

func TestCacheBounds(t *testing.T) {
	now := time.Now()
	later := now.Add(time.Hour)
	c := newCache(3, 100)
	for _, k := range []string{"a", "b", "c"} {
		c.put(k, k, 10, later)
	}
	c.get("a", now) // a is now the most recently used
	c.put("d", "d", 10, later)
	if _, ok := c.get("b", now); ok {
		t.Error("b, the least recently used, was kept beyond 3 entries")
	}
	for _, k := range []string{"a", "c", "d"} {
		if v, ok := c.get(k, now); !ok || v != k {
			t.Errorf("%s: %v, %v", k, v, ok)
		}
	}
	c.put("big", "big", 80, later)
	if n, b := c.len(); b > 100 || n > 3 {
		t.Errorf("%d entries, %d bytes: over the bounds", n, b)
	}
	if _, ok := c.get("big", now); !ok {
		t.Error("the newest entry was dropped")
	}
	c.put("huge", "huge", 101, later)
	if _, ok := c.get("huge", now); ok {
		t.Error("an entry larger than the cache was stored")
	}
	if _, ok := c.get("big", later); ok {
		t.Error("an entry was returned at its expiry")
	}
	if _, ok := c.get("a", now); ok {
		t.Error("a, then the least recently used, was kept beyond 100 bytes")
	}
	if n, b := c.len(); n != 2 || b != 20 {
		t.Errorf("%d entries, %d bytes; want c and d, 20 bytes", n, b)
	}
	c.put("x", 1, 10, later)
	c.put("x", 2, 20, later)
	if v, _ := c.get("x", now); v != 2 {
		t.Errorf("replaced entry: %v", v)
	}
	var nilCache *cache
	nilCache.put("x", 1, 1, later)
	if _, ok := nilCache.get("x", now); ok {
		t.Error("a nil cache returned an entry")
	}
}
