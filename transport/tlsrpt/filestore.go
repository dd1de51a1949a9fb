package tlsrpt

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/mailsec/mailsec"
)

// Bounds of a FileStore.
const (
	// DefaultMaxFileCounts is the default of FileStore.MaxCounts.
	DefaultMaxFileCounts = 100000
	// maxFileSize bounds the file a FileStore reads.
	maxFileSize = 256 << 20
)

// ErrStoreFull: a Store holds as many counts as it may; Add added none.
var ErrStoreFull = errors.New("tlsrpt: store full")

// StoreError reports a Store that failed, naming its file.
type StoreError struct {
	Path string
	Op   string // "reading", "writing"
	Err  error
}

func (e *StoreError) Error() string {
	return "tlsrpt: " + e.Op + " the store " + e.Path + ": " + e.Err.Error()
}

func (e *StoreError) Unwrap() error { return e.Err }

// Temporary reports whether trying again may help: not for a full store
// or a file that does not parse.
func (e *StoreError) Temporary() bool {
	var se *json.SyntaxError
	return !errors.Is(e.Err, ErrStoreFull) && !errors.As(e.Err, &se)
}

// FileStore is a Store in one file, for an application without an
// outbox: every change rewrites the file, through a temporary file in the
// same directory that is synced and renamed over it, so that a crash
// leaves the old content or the new, never a mix. The file is created
// readable by its owner alone; it holds the recipient domains, MX hosts
// and counts that the reports carry, and no message content or address.
//
// It is safe for concurrent use within one process. Processes must not
// share a file: instances that share their counts use the outbox's
// database (package outbox).
type FileStore struct {
	// MaxCounts bounds the counts kept; zero means DefaultMaxFileCounts.
	// An Add that would go beyond it adds nothing and fails with an error
	// matching ErrStoreFull.
	MaxCounts int

	path string
	mu   sync.Mutex
}

// fileData is the file's JSON.
type fileData struct {
	Version int         `json:"version"`
	Counts  []fileCount `json:"counts"`
	Done    []fileDone  `json:"done"`
}

type fileCount struct {
	Day    int64  `json:"day"` // days since 1970-01-01
	Domain string `json:"domain"`
	Key    string `json:"key"`
	N      int64  `json:"n"`
}

type fileDone struct {
	Day    int64  `json:"day"`
	Domain string `json:"domain"`
}

// NewFileStore returns the store in the file at path, which is created at
// the first change. It fails with a *mailsec.ConfigError when path is
// empty or names a directory, and with a *StoreError when an existing
// file cannot be read or parsed.
func NewFileStore(path string) (*FileStore, error) {
	if path == "" {
		return nil, &mailsec.ConfigError{Field: "tlsrpt FileStore path", Reason: "empty: name the file that keeps the counts"}
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, &mailsec.ConfigError{Field: "tlsrpt FileStore path", Value: path, Reason: "a directory, not a file"}
	}
	s := &FileStore{path: path}
	if _, err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *FileStore) load() (*fileData, error) {
	f, err := os.Open(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return &fileData{Version: 1}, nil
	}
	if err != nil {
		return nil, &StoreError{Path: s.path, Op: "reading", Err: err}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, &StoreError{Path: s.path, Op: "reading", Err: err}
	}
	if len(b) > maxFileSize {
		return nil, &StoreError{Path: s.path, Op: "reading", Err: fmt.Errorf("%w: larger than %d octets", ErrStoreFull, maxFileSize)}
	}
	var d fileData
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, &StoreError{Path: s.path, Op: "reading", Err: err}
	}
	if d.Version != 1 {
		return nil, &StoreError{Path: s.path, Op: "reading", Err: &json.SyntaxError{}}
	}
	return &d, nil
}

// save writes d to a temporary file, syncs it, renames it over the file
// and syncs the directory.
func (s *FileStore) save(d *fileData) error {
	b, err := json.Marshal(d)
	if err != nil {
		return &StoreError{Path: s.path, Op: "writing", Err: err}
	}
	dir := filepath.Dir(s.path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(s.path)+".*")
	if err != nil {
		return &StoreError{Path: s.path, Op: "writing", Err: err}
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return &StoreError{Path: s.path, Op: "writing", Err: err}
	}
	if _, err := f.Write(b); err != nil {
		return &StoreError{Path: s.path, Op: "writing", Err: err}
	}
	if err := f.Sync(); err != nil {
		return &StoreError{Path: s.path, Op: "writing", Err: err}
	}
	if err := f.Close(); err != nil {
		return &StoreError{Path: s.path, Op: "writing", Err: err}
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return &StoreError{Path: s.path, Op: "writing", Err: err}
	}
	ok = true
	if dh, err := os.Open(dir); err == nil {
		_ = dh.Sync()
		_ = dh.Close()
	}
	return nil
}

// change applies fn to the file's content and writes it back when fn
// succeeds.
func (s *FileStore) change(ctx context.Context, fn func(d *fileData) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.load()
	if err != nil {
		return err
	}
	if err := fn(d); err != nil {
		return err
	}
	return s.save(d)
}

func (s *FileStore) read(ctx context.Context) (*fileData, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.load()
}

// Add implements Store.
func (s *FileStore) Add(ctx context.Context, counts []Count) error {
	return s.change(ctx, func(d *fileData) error {
		type key struct {
			day         int64
			domain, key string
		}
		idx := make(map[key]int, len(d.Counts))
		for i, c := range d.Counts {
			idx[key{c.Day, c.Domain, c.Key}] = i
		}
		for _, c := range counts {
			if c.N <= 0 {
				continue
			}
			k := key{dayNumber(c.Day), c.Domain, c.Key}
			if i, ok := idx[k]; ok {
				d.Counts[i].N += c.N
				continue
			}
			if len(d.Counts) >= limit(s.MaxCounts, DefaultMaxFileCounts) {
				return &StoreError{Path: s.path, Op: "writing", Err: fmt.Errorf("%w: %d counts", ErrStoreFull, len(d.Counts))}
			}
			idx[k] = len(d.Counts)
			d.Counts = append(d.Counts, fileCount{Day: k.day, Domain: k.domain, Key: k.key, N: c.N})
		}
		return nil
	})
}

// Pending implements Store.
func (s *FileStore) Pending(ctx context.Context, before time.Time) ([]DayDomain, error) {
	d, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	done := map[fileDone]bool{}
	for _, x := range d.Done {
		done[x] = true
	}
	seen := map[fileDone]bool{}
	var out []DayDomain
	for _, c := range d.Counts {
		k := fileDone{c.Day, c.Domain}
		if c.Day >= dayNumber(before) || done[k] || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, DayDomain{Day: dayStart(c.Day), Domain: c.Domain})
	}
	slices.SortFunc(out, func(x, y DayDomain) int {
		return cmp.Or(x.Day.Compare(y.Day), cmp.Compare(x.Domain, y.Domain))
	})
	return out, nil
}

// Counts implements Store.
func (s *FileStore) Counts(ctx context.Context, day time.Time, domain string) ([]Count, error) {
	d, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	n := dayNumber(day)
	var out []Count
	for _, c := range d.Counts {
		if c.Day == n && c.Domain == domain {
			out = append(out, Count{Day: dayStart(c.Day), Domain: c.Domain, Key: c.Key, N: c.N})
		}
	}
	return out, nil
}

// MarkDone implements Store.
func (s *FileStore) MarkDone(ctx context.Context, day time.Time, domain string) error {
	return s.change(ctx, func(d *fileData) error {
		k := fileDone{dayNumber(day), domain}
		if !slices.Contains(d.Done, k) {
			d.Done = append(d.Done, k)
		}
		return nil
	})
}

// Forget implements Store.
func (s *FileStore) Forget(ctx context.Context, before time.Time) error {
	n := dayNumber(before)
	return s.change(ctx, func(d *fileData) error {
		d.Counts = slices.DeleteFunc(d.Counts, func(c fileCount) bool { return c.Day < n })
		d.Done = slices.DeleteFunc(d.Done, func(x fileDone) bool { return x.Day < n })
		return nil
	})
}
