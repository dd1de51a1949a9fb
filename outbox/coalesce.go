package outbox

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"time"
)

// coalescer gathers the calls of concurrent callers into groups, each run
// by one goroutine, without waiting for a timer: a caller that finds
// fewer than atOnce groups running leads one, made of up to maxGroup of
// the oldest calls pending; the calls that arrive meanwhile form the next
// group, led by a goroutine of its own once a group ends. The groups of
// SQLite's writes (groupCommit), of Postgres's reads and records
// (pgGroup) and of Postgres's Enqueues (pgEnqueueGroup) are led so.
type coalescer[C comparable] struct {
	atOnce int // groups running at once at most; 0 is 1
	// yield has a leader let the goroutines that are ready to run add
	// their calls before it takes its group (runtime.Gosched, no timer):
	// calls made at the same moment (the runs of the jobs River fetched
	// together, their records, concurrent Enqueues) join one group, where
	// without it the first would run alone and the others wait for it.
	// The groups on Postgres (reads, records, Enqueues) yield so.
	yield bool

	mu      sync.Mutex
	pending []C
	leaders int // groups running
}

// maxGroup bounds the calls of one group, so that River's own statements,
// waiting for a connection, are not held up long.
const maxGroup = 64

// add queues call; when the caller leads, it runs a group with run before
// returning. run must wake the group's callers.
func (c *coalescer[C]) add(call C, run func(calls []C)) {
	c.mu.Lock()
	c.pending = append(c.pending, call)
	lead := c.leaders < max(c.atOnce, 1)
	if lead {
		c.leaders++
	}
	c.mu.Unlock()
	if lead {
		c.lead(run)
	}
}

// lead runs one group, then hands the calls that arrived meanwhile to a
// goroutine of their own, or gives up its place.
func (c *coalescer[C]) lead(run func(calls []C)) {
	if c.yield {
		runtime.Gosched()
	}
	c.mu.Lock()
	n := min(len(c.pending), maxGroup)
	calls := c.pending[:n:n]
	c.pending = c.pending[n:]
	c.mu.Unlock()
	// Deferred, so that a panic in run does not keep the place for ever.
	defer func() {
		c.mu.Lock()
		if len(c.pending) == 0 {
			c.leaders--
		} else {
			go c.lead(run)
		}
		c.mu.Unlock()
	}()
	if n > 0 { // none when the calls pending were withdrawn
		run(calls)
	}
}

// wait waits until done is closed, the call's group having run, and
// reports false; or, when ctx ends while the call still waits for a group
// to take it, withdraws the call and reports true: it will not run. Once
// a group has taken it, wait waits for the group whatever ctx does, so
// that nothing its caller was told failed is committed.
func (c *coalescer[C]) wait(ctx context.Context, call C, done <-chan struct{}) (withdrawn bool) {
	select {
	case <-done:
		return false
	case <-ctx.Done():
	}
	c.mu.Lock()
	i := slices.Index(c.pending, call)
	if i >= 0 {
		c.pending = slices.Delete(c.pending, i, i+1)
	}
	c.mu.Unlock()
	if i >= 0 {
		return true
	}
	<-done
	return false
}

// latestDeadline is the latest of the deadlines of ctxs, the deadline of
// work done for all of them; ok is false when one of them has none.
func latestDeadline(ctxs ...context.Context) (latest time.Time, ok bool) {
	for _, ctx := range ctxs {
		d, has := ctx.Deadline()
		if !has {
			return time.Time{}, false
		}
		if d.After(latest) {
			latest = d
		}
	}
	return latest, len(ctxs) > 0
}
