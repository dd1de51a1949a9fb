package mtasts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ErrCacheMiss is returned by a Cache's Get when it holds nothing for the
// domain.
var ErrCacheMiss = errors.New("mtasts: cache miss")

// ErrUnsafeCache is returned, wrapped, by DirCache.Check for a directory,
// and by DirCache.Get for a file, that someone other than the current
// user may have written: one owned by another user, or writable by its
// group or by others. A Client treats such a file as absent (and logs it).
var ErrUnsafeCache = errors.New("mtasts: cache writable by someone other than the current user")

// Cache stores fetched policies between Lookups and, if it is persistent,
// across restarts. Keys are domains in the form Client.Lookup uses: A-labels,
// lower case, without the final dot. Values are opaque to the Cache.
//
// Get returns ErrCacheMiss when it holds nothing for the domain; any other
// error is treated as a miss too, and logged. Put and Delete errors are
// logged and otherwise ignored: a policy that could not be stored is fetched
// again later. Implementations must be safe for concurrent use.
//
// What a Cache holds is security state: a policy in enforce mode protects
// deliveries to its domain for as long as it is cached, even when an
// attacker hides the domain's TXT record or its policy server (RFC 8461
// §10.2). A Cache that forgets, or that another party can write to, weakens
// that protection.
type Cache interface {
	Get(ctx context.Context, domain string) ([]byte, error)
	Put(ctx context.Context, domain string, data []byte) error
	Delete(ctx context.Context, domain string) error
}

// DefaultMemCacheEntries is the number of domains a MemCache holds when its
// MaxEntries is zero.
const DefaultMemCacheEntries = 10000

// MemCache is a Cache in memory, lost when the process ends. Its zero value
// is ready to use. It must not be copied after first use.
type MemCache struct {
	// MaxEntries bounds the number of domains held; when a Put would
	// exceed it, an arbitrary other entry is dropped. Zero means
	// DefaultMemCacheEntries.
	MaxEntries int

	mu sync.Mutex
	m  map[string][]byte
}

// Get returns a copy of what was stored for domain, or ErrCacheMiss.
func (c *MemCache) Get(ctx context.Context, domain string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.m[domain]
	if !ok {
		return nil, ErrCacheMiss
	}
	return append([]byte(nil), b...), nil
}

// Put stores a copy of data for domain.
func (c *MemCache) Put(ctx context.Context, domain string, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string][]byte)
	}
	if _, ok := c.m[domain]; !ok {
		limit := c.MaxEntries
		if limit <= 0 {
			limit = DefaultMemCacheEntries
		}
		for k := range c.m {
			if len(c.m) < limit {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[domain] = append([]byte(nil), data...)
	return nil
}

// Delete removes what was stored for domain, if anything.
func (c *MemCache) Delete(ctx context.Context, domain string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, domain)
	return nil
}

// maxCacheFile bounds what DirCache.Get reads: an entry holds at most a
// MaxPolicySize policy, which JSON escaping can make six times larger.
const maxCacheFile = 1 << 20

// DirCache is a Cache that keeps one file per domain in a directory, so
// that policies survive a restart. The directory is created (mode 0700) on
// the first Put; files are written with mode 0600 to a temporary file that
// is then renamed into place, so a reader, or a crash, never sees half a
// file. File names are the hex SHA-256 of the domain with ".json" appended:
// no domain, however odd, can name a file outside the directory.
//
// The directory must be writable only by the user that sends mail (see
// [Cache] on why the contents matter): Check says whether it is. On Unix
// systems Get ignores (reports an error for, which a Client logs and
// treats as a miss) a file that is a symbolic link, that another user
// owns, or that its group or others may write to. Several Clients, in one
// process or several, may share the directory.
type DirCache string

// Check returns an error wrapping ErrUnsafeCache when the directory
// exists and belongs to another user or is writable by its group or by
// others (as ssh refuses such a ~/.ssh): anyone who can write there can
// plant a policy in mode none for any domain. It returns an error
// wrapping fs.ErrNotExist when the directory does not exist, nil when
// only the current user can write to it. Outside Unix it checks only
// that the directory exists.
func (d DirCache) Check() error {
	fi, err := os.Stat(string(d))
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("mtasts: cache %s: not a directory", string(d))
	}
	if err := checkPrivate(fi); err != nil {
		return fmt.Errorf("mtasts: cache directory %s: %v: %w", string(d), err, ErrUnsafeCache)
	}
	return nil
}

// name returns the path of the file for domain.
func (d DirCache) name(domain string) string {
	sum := sha256.Sum256([]byte(domain))
	return filepath.Join(string(d), hex.EncodeToString(sum[:])+".json")
}

// Get reads the file for domain. A missing file, or one larger than any
// entry the Client writes, is ErrCacheMiss. A symbolic link, a file that
// is not a regular one, and (on Unix) one owned by another user or
// writable by its group or others is an error wrapping ErrUnsafeCache:
// not read, a miss to the Client, which logs it.
func (d DirCache) Get(ctx context.Context, domain string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name := d.name(domain)
	f, err := openCacheFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrCacheMiss
	}
	if err != nil {
		if fi, lerr := os.Lstat(name); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return nil, fmt.Errorf("mtasts: cache file %s: a symbolic link: %w", name, ErrUnsafeCache)
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("mtasts: cache file %s: not a regular file: %w", name, ErrUnsafeCache)
	}
	if err := checkPrivate(fi); err != nil {
		return nil, fmt.Errorf("mtasts: cache file %s: %v: %w", name, err, ErrUnsafeCache)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCacheFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCacheFile {
		return nil, ErrCacheMiss
	}
	return b, nil
}

// Put writes data for domain atomically: to a temporary file in the
// directory, synced, then renamed over the domain's file.
func (d DirCache) Put(ctx context.Context, domain string, data []byte) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return err
	}
	// CreateTemp makes the file with mode 0600.
	f, err := os.CreateTemp(string(d), ".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), d.name(domain))
}

// Delete removes the file for domain; a missing file is not an error.
func (d DirCache) Delete(ctx context.Context, domain string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := os.Remove(d.name(domain))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// entryVersion is the version of the stored entry format.
const entryVersion = 1

// entry is what the Client stores in a Cache for one domain.
type entry struct {
	Version int    `json:"version"`
	Domain  string `json:"domain"`
	ID      string `json:"id"`     // the TXT record id the policy was fetched under
	Policy  string `json:"policy"` // the policy file as fetched
	// Fetched is when the policy was fetched; Expires is Fetched plus its
	// max_age (RFC 8461 §3.2).
	Fetched time.Time `json:"fetched"`
	Expires time.Time `json:"expires"`
	// Checked is when the TXT record was last looked up, successfully or
	// not.
	Checked time.Time `json:"checked"`

	policy *Policy // parsed Policy, not stored
}

func (e *entry) marshal() []byte {
	b, _ := json.Marshal(e) // cannot fail: strings and times only
	return b
}

// decodeEntry parses a stored entry for domain. Anything unexpected (another
// version or domain, a policy or id that does not parse, an expiry beyond
// what the policy allows) makes it unusable: the caller treats it as a miss.
func decodeEntry(domain string, b []byte) (*entry, error) {
	var e entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, err
	}
	if e.Version != entryVersion || e.Domain != domain {
		return nil, errors.New("mtasts: cache entry of another version or domain")
	}
	if len(e.ID) < 1 || len(e.ID) > 32 || !isAlnum(e.ID) {
		return nil, errors.New("mtasts: cache entry with a malformed id")
	}
	p, err := ParsePolicy([]byte(e.Policy))
	if err != nil {
		return nil, err
	}
	if e.Fetched.IsZero() || e.Expires.Before(e.Fetched) || e.Expires.After(e.Fetched.Add(time.Duration(p.MaxAge)*time.Second)) {
		return nil, errors.New("mtasts: cache entry with impossible times")
	}
	e.policy = p
	return &e, nil
}
