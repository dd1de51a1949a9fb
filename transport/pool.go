package transport

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mailsec/mailsec"
)

// ErrClosed is returned by Deliver after Close.
var ErrClosed = errors.New("mailsec/transport: transport closed")

// pool keeps sessions for reuse, keyed by the security requirement they
// were established for, with at most max open at once. A Submission has
// one; a Direct one per MX host (see directPools).
type pool struct {
	host        string // for errors
	max         int
	maxMessages int
	idleTimeout time.Duration
	probeAfter  time.Duration
	logger      *slog.Logger

	mu      sync.Mutex
	open    int                   // sessions open: idle, in use or being dialled
	idle    map[string][]*session // by key, most recently used last
	waiters []chan struct{}
	closed  bool
	wg      sync.WaitGroup // idle-timeout closers
}

func poolKey(sec mailsec.Security) string {
	var b strings.Builder
	b.WriteString(sec.Level.String())
	for _, p := range sec.Pins {
		b.WriteByte('|')
		b.WriteString(p.String())
	}
	return b.String()
}

// dialFunc establishes a new session for a pool key.
type dialFunc func(ctx context.Context, key string) (*session, error)

// get returns a session ready for a transaction under the requirement key
// names: an idle one made for the same key, checked, or else a new one from
// dial. fresh reports that dial made it.
func (p *pool) get(ctx context.Context, key string, dial dialFunc) (s *session, fresh bool, err error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, false, ErrClosed
		}
		if s := p.popIdleLocked(key); s != nil {
			p.mu.Unlock()
			if err := s.check(ctx, p.probeAfter); err != nil {
				p.discard(s, false)
				if ctx.Err() != nil {
					return nil, false, &mailsec.NetworkError{Host: s.host, Op: "health check", Err: ctx.Err()}
				}
				continue
			}
			return s, false, nil
		}
		var evict *session
		if p.open >= p.max {
			evict = p.popAnyIdleLocked()
			if evict == nil {
				ch := make(chan struct{})
				p.waiters = append(p.waiters, ch)
				p.mu.Unlock()
				select {
				case <-ch:
					continue
				case <-ctx.Done():
					p.mu.Lock()
					if i := indexOf(p.waiters, ch); i >= 0 {
						p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
					} else {
						// Woken and cancelled at once: pass the wake-up on.
						p.wakeLocked()
					}
					p.mu.Unlock()
					return nil, false, &mailsec.NetworkError{Host: p.host, Op: "waiting for a free connection", Err: ctx.Err()}
				}
			}
			p.open-- // the evicted one; the new one is counted below
		}
		p.open++
		p.mu.Unlock()
		if evict != nil {
			evict.close(true)
		}
		s, err := dial(ctx, key)
		if err != nil {
			p.mu.Lock()
			p.open--
			p.wakeLocked()
			p.mu.Unlock()
			return nil, false, err
		}
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			// Close ran while this session was being established.
			p.discard(s, true)
			return nil, false, ErrClosed
		}
		if p.logger != nil {
			p.logger.LogAttrs(ctx, slog.LevelDebug, "mailsec session established",
				slog.String("host", s.state.Host), slog.String("addr", s.state.Addr),
				slog.String("tls", s.state.TLSVersion), slog.String("verification", string(s.state.Verification)),
				slog.String("sasl", s.state.SASLMechanism))
		}
		return s, true, nil
	}
}

func indexOf(chs []chan struct{}, ch chan struct{}) int {
	for i, c := range chs {
		if c == ch {
			return i
		}
	}
	return -1
}

func (p *pool) popIdleLocked(key string) *session {
	for {
		l := p.idle[key]
		if len(l) == 0 {
			return nil
		}
		s := l[len(l)-1]
		p.idle[key] = l[:len(l)-1]
		p.stopTimerLocked(s)
		if time.Since(s.lastUsed) >= p.idleTimeout {
			// Its timer was about to close it; do it now (no QUIT, which
			// would block while holding the lock).
			p.open--
			s.close(false)
			continue
		}
		return s
	}
}

func (p *pool) popAnyIdleLocked() *session {
	var oldest *session
	var oldestKey string
	for k, l := range p.idle {
		if len(l) > 0 && (oldest == nil || l[0].lastUsed.Before(oldest.lastUsed)) {
			oldest, oldestKey = l[0], k
		}
	}
	if oldest != nil {
		p.idle[oldestKey] = p.idle[oldestKey][1:]
		p.stopTimerLocked(oldest)
	}
	return oldest
}

// stopTimerLocked stops an idle session's timer. When the timer has
// already fired, its callback finds the session gone from the idle list and
// does nothing.
func (p *pool) stopTimerLocked(s *session) {
	if s.idleTimer.Stop() {
		p.wg.Done()
	}
}

// put returns a session after a transaction.
func (p *pool) put(s *session, healthy bool) {
	s.lastUsed = time.Now()
	p.mu.Lock()
	if !healthy || p.closed || s.messages >= p.maxMessages {
		p.mu.Unlock()
		p.discard(s, healthy)
		return
	}
	p.idle[s.key] = append(p.idle[s.key], s)
	// One count in wg per armed timer: the callback or a successful Stop
	// releases it, so close can wait for callbacks in flight.
	p.wg.Add(1)
	if s.idleTimer == nil {
		s.idleTimer = time.AfterFunc(p.idleTimeout, func() { p.expire(s) })
	} else {
		s.idleTimer.Reset(p.idleTimeout)
	}
	p.wakeLocked()
	p.mu.Unlock()
}

// expire closes s if it is still idle when its timer fires.
func (p *pool) expire(s *session) {
	defer p.wg.Done()
	p.mu.Lock()
	l := p.idle[s.key]
	i := slices.Index(l, s)
	if i < 0 {
		p.mu.Unlock()
		return
	}
	p.idle[s.key] = slices.Delete(l, i, i+1)
	p.open--
	p.wakeLocked()
	p.mu.Unlock()
	s.close(true)
}

// discard closes a session and frees its slot.
func (p *pool) discard(s *session, polite bool) {
	s.close(polite)
	p.mu.Lock()
	p.open--
	p.wakeLocked()
	p.mu.Unlock()
}

func (p *pool) wakeLocked() {
	if len(p.waiters) > 0 {
		close(p.waiters[0])
		p.waiters = p.waiters[1:]
	}
}

func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	var idle []*session
	for k, l := range p.idle {
		for _, s := range l {
			p.stopTimerLocked(s)
			idle = append(idle, s)
		}
		delete(p.idle, k)
	}
	p.open -= len(idle)
	for len(p.waiters) > 0 {
		p.wakeLocked()
	}
	p.mu.Unlock()
	for _, s := range idle {
		s.close(true)
	}
	p.wg.Wait()
}
