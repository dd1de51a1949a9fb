package revocation

import (
	"container/list"
	"sync"
	"time"
)

// cache holds answers until they expire, bounded in entries and in
// bytes; the least recently used entries are dropped first.
type cache struct {
	mu         sync.Mutex
	maxEntries int
	maxBytes   int64
	bytes      int64
	lru        *list.List // of *cacheEntry, most recently used first
	byKey      map[string]*list.Element
}

type cacheEntry struct {
	key     string
	value   any
	size    int64
	expires time.Time
}

func newCache(maxEntries int, maxBytes int64) *cache {
	return &cache{maxEntries: maxEntries, maxBytes: maxBytes, lru: list.New(), byKey: map[string]*list.Element{}}
}

// get returns the value under key unless it expired by now.
func (c *cache) get(key string, now time.Time) (any, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.remove(el)
		return nil, false
	}
	c.lru.MoveToFront(el)
	return e.value, true
}

// put stores value until expires, counting size bytes. A value larger
// than the whole cache is not stored.
func (c *cache) put(key string, value any, size int64, expires time.Time) {
	if c == nil || size > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		c.remove(el)
	}
	c.byKey[key] = c.lru.PushFront(&cacheEntry{key: key, value: value, size: size, expires: expires})
	c.bytes += size
	for c.lru.Len() > c.maxEntries || c.bytes > c.maxBytes {
		c.remove(c.lru.Back())
	}
}

func (c *cache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*cacheEntry)
	delete(c.byKey, e.key)
	c.bytes -= e.size
}

// len returns the number of entries and their bytes.
func (c *cache) len() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.bytes
}
