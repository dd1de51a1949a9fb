package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// aLongTimeAgo is a deadline in the past, used to interrupt blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// ctxConn lets a context bound every read and write on a connection that
// other layers (the session's reply timeouts, crypto/tls) also set
// deadlines on. The effective deadline is the earlier of the one those
// layers asked for and the bound context's; when the context is cancelled,
// pending and future I/O fail at once.
type ctxConn struct {
	net.Conn

	// The fields up to mu are used only by the goroutine that owns the
	// session.

	// raw reads the socket without waiting, when the connection offers
	// it (TCP on Unix); nil otherwise.
	raw *socketReader
	// poll makes Read return at once: what has arrived, or errWouldBlock.
	poll bool
	// noWait, with poll, leaves a connection that cannot be read without
	// waiting (raw is nil) unread: Read returns errWouldBlock at once.
	noWait bool
	// tls follows the TLS records the server sends, once TLS has started.
	tls recordTracker

	mu     sync.Mutex
	gen    uint64    // incremented by bind and unbind; stale callbacks check it
	ctxDL  time.Time // deadline of the bound context
	done   bool      // the bound context has ended
	readDL time.Time // deadline requested through SetDeadline/SetReadDeadline
	writDL time.Time // deadline requested through SetDeadline/SetWriteDeadline
}

// newCtxConn wraps a connection the dialer returned.
func newCtxConn(c net.Conn) *ctxConn {
	return &ctxConn{Conn: c, raw: newSocketReader(c)}
}

// Read reads from the connection, without waiting in poll mode.
func (c *ctxConn) Read(p []byte) (int, error) {
	var n int
	var err error
	if c.poll {
		n, err = c.readNow(p)
	} else {
		n, err = c.Conn.Read(p)
	}
	if c.tls.on && n > 0 {
		c.tls.observe(p[:n])
	}
	return n, err
}

// readNow returns what has arrived, or errWouldBlock if nothing has,
// without waiting: through the socket itself when the connection offers
// it, else by a read that gives up after briefWait (a deadline already in
// the past would not look at the connection at all).
func (c *ctxConn) readNow(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.raw != nil {
		return c.raw.readNow(p)
	}
	if c.noWait {
		return 0, errWouldBlock
	}
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return 0, os.ErrDeadlineExceeded
	}
	dl := time.Now().Add(briefWait)
	if !c.ctxDL.IsZero() && c.ctxDL.Before(dl) {
		dl = c.ctxDL
	}
	_ = c.Conn.SetReadDeadline(dl)
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.applyLocked()
	c.mu.Unlock()
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, errWouldBlock
	}
	return n, err
}

// briefWait is how long a connection that cannot be read without waiting
// (one from a custom Dialer that is not a socket) is given to show that
// something has arrived.
const briefWait = time.Millisecond

// errWouldBlock is what a poll-mode Read returns when nothing has arrived.
// It is a temporary net.Error, so crypto/tls passes it up without marking
// the connection broken.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "nothing has arrived" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// recordTracker follows TLS record boundaries in what the server sends.
// crypto/tls reads ahead of what it decrypts, so a record the server has
// begun to send sits where no reader of the TLS connection can see it;
// the tracker knows it is there. It also keeps the first bytes of the
// server's handshake, which say whether the server refused every version
// this side offers.
type recordTracker struct {
	on     bool
	hdr    [5]byte
	hdrN   int
	left   int      // bytes of the current record's body still to come
	first  [11]byte // the server's first bytes: a record header and the start of its body
	firstN int
}

func (t *recordTracker) observe(p []byte) {
	if t.firstN < len(t.first) {
		t.firstN += copy(t.first[t.firstN:], p)
	}
	for len(p) > 0 {
		if t.left > 0 {
			k := min(t.left, len(p))
			t.left -= k
			p = p[k:]
			continue
		}
		k := copy(t.hdr[t.hdrN:], p)
		t.hdrN += k
		p = p[k:]
		if t.hdrN == len(t.hdr) {
			t.left = int(t.hdr[3])<<8 | int(t.hdr[4])
			t.hdrN = 0
		}
	}
}

// partial reports a record that has begun to arrive and is not complete.
func (t *recordTracker) partial() bool { return t.on && (t.left > 0 || t.hdrN > 0) }

// TLS record and message types (RFC 8446 section 5.1, B.3).
const (
	recordAlert          = 21
	recordHandshake      = 22
	handshakeServerHello = 2
	alertProtocolVersion = 70
)

// oldVersion reports whether the server's first handshake bytes refuse
// TLS 1.2 and later: a ServerHello choosing an older version (a TLS 1.3
// ServerHello always says 1.2 there), or a protocol_version alert in
// answer to the ClientHello. vers is the version the server chose, if it
// chose one.
func (t *recordTracker) oldVersion() (vers uint16, old bool) {
	f := t.first[:t.firstN]
	switch {
	case len(f) >= 7 && f[0] == recordAlert && f[6] == alertProtocolVersion:
		return 0, true
	case len(f) >= 11 && f[0] == recordHandshake && f[5] == handshakeServerHello:
		v := uint16(f[9])<<8 | uint16(f[10])
		return v, v < tls.VersionTLS12
	}
	return 0, false
}

// bind makes ctx govern the connection until the returned function is
// called.
func (c *ctxConn) bind(ctx context.Context) (unbind func()) {
	_, hasDL := ctx.Deadline()
	if ctx.Done() == nil && !hasDL {
		// A context that can never end needs no watching.
		return func() {}
	}
	c.mu.Lock()
	c.gen++
	gen := c.gen
	c.ctxDL, _ = ctx.Deadline()
	c.done = false
	c.applyLocked()
	c.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.gen == gen {
			c.done = true
			c.applyLocked()
		}
	})
	return func() {
		stop()
		c.mu.Lock()
		c.gen++
		c.ctxDL, c.done = time.Time{}, false
		c.applyLocked()
		c.mu.Unlock()
	}
}

func (c *ctxConn) applyLocked() {
	eff := func(op time.Time) time.Time {
		switch {
		case c.done:
			return aLongTimeAgo
		case c.ctxDL.IsZero():
			return op
		case op.IsZero() || c.ctxDL.Before(op):
			return c.ctxDL
		}
		return op
	}
	_ = c.Conn.SetReadDeadline(eff(c.readDL))
	_ = c.Conn.SetWriteDeadline(eff(c.writDL))
}

func (c *ctxConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDL, c.writDL = t, t
	c.applyLocked()
	return nil
}

func (c *ctxConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDL = t
	c.applyLocked()
	return nil
}

func (c *ctxConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writDL = t
	c.applyLocked()
	return nil
}

// ctxErr returns the context error that explains err, if any: the
// context's own error once it has ended, or DeadlineExceeded when err is a
// timeout and the context's deadline has passed (the connection's timer can
// fire a moment before the context's).
func ctxErr(ctx context.Context, err error) error {
	if e := ctx.Err(); e != nil {
		return e
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl.Add(-50*time.Millisecond)) {
			return context.DeadlineExceeded
		}
	}
	return nil
}
