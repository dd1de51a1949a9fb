package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// aLongTimeAgo is a deadline in the past, used to interrupt blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// ctxConn lets a context bound every read and write on a connection that
// other layers (go-smtp, crypto/tls) also set deadlines on. The effective
// deadline is the earlier of the one those layers asked for and the bound
// context's; when the context is cancelled, pending and future I/O fail at
// once.
type ctxConn struct {
	net.Conn

	mu     sync.Mutex
	gen    uint64    // incremented by bind and unbind; stale callbacks check it
	ctxDL  time.Time // deadline of the bound context
	done   bool      // the bound context has ended
	readDL time.Time // deadline requested through SetDeadline/SetReadDeadline
	writDL time.Time // deadline requested through SetDeadline/SetWriteDeadline
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

// replayConn hands go-smtp's client a TLS connection established after
// STARTTLS. go-smtp's client always starts by reading a greeting, and has no
// exported way to run STARTTLS on a session it did not open, so the
// greeting the server sent at connection time is replayed to it; what it
// reads after that comes from the TLS connection.
type replayConn struct {
	net.Conn
	pending []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

// countingReader caps what the pre-TLS dialogue may read, so a server
// cannot make the client buffer without bound before TLS.
type cappedReader struct {
	r    io.Reader
	left int
}

var errPreTLSTooLong = errors.New("server sent more than 64 KiB before TLS")

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errPreTLSTooLong
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= n
	return n, err
}

// maxReply bounds one server reply after TLS. go-smtp (through
// net/textproto) reads a multi-line reply whole, without a limit.
const maxReply = 1 << 20

var errReplyTooLong = errors.New("server reply longer than 1 MiB")

// replyCap fails reads once the server has sent more than maxReply bytes
// since the client last wrote: no legitimate reply is that long.
type replyCap struct {
	net.Conn
	read int
}

func (r *replyCap) Read(p []byte) (int, error) {
	if r.read >= maxReply {
		return 0, errReplyTooLong
	}
	n, err := r.Conn.Read(p[:min(len(p), maxReply-r.read)])
	r.read += n
	return n, err
}

func (r *replyCap) Write(p []byte) (int, error) {
	r.read = 0
	return r.Conn.Write(p)
}
