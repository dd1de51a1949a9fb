package mailsectest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// Transcript is what one connection carried, as the server's SMTP layer
// read and wrote it: plaintext before TLS, decrypted after. An assertion
// that a client never sent something (a canary, RCPT, a password in any
// encoding) belongs here, not on Wire, which after the handshake holds
// only ciphertext and so would pass whatever the client sent.
type Transcript struct {
	// Received is every byte the server read from the client, in order.
	// On a connection whose TLS handshake failed that includes what the
	// client sent in the handshake's place and after it, as it was sent.
	Received []byte
	// Sent is every byte the server wrote to the client, in order.
	Sent []byte
	// TLS reports that a TLS handshake with the client completed.
	TLS bool
	// ReceivedBeforeTLS counts the bytes at the start of Received that
	// arrived before TLS (all of them on a connection without TLS).
	ReceivedBeforeTLS int
}

// String shows a transcript in test failure output.
func (t Transcript) String() string {
	n := min(max(t.ReceivedBeforeTLS, 0), len(t.Received))
	return fmt.Sprintf("{TLS: %v, received before TLS: %q, after: %q, sent: %q}",
		t.TLS, t.Received[:n], t.Received[n:], t.Sent)
}

// Transcripts returns one Transcript per connection accepted so far, in
// the order they were accepted. A server with Discard set keeps none. Call
// WaitIdle first to be sure a connection's transcript is complete.
func (s *Server) Transcripts() []Transcript {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Transcript, len(s.transcripts))
	for i, t := range s.transcripts {
		out[i] = Transcript{Received: bytes.Clone(t.Received), Sent: bytes.Clone(t.Sent), TLS: t.TLS, ReceivedBeforeTLS: t.ReceivedBeforeTLS}
		if !t.TLS {
			out[i].ReceivedBeforeTLS = len(t.Received)
		}
	}
	return out
}

// Received returns every byte clients sent, on every connection, as the
// server's SMTP layer read it: decrypted after TLS (see Transcript). A
// server with Discard set keeps nothing. Call WaitIdle first.
func (s *Server) Received() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []byte
	for _, t := range s.transcripts {
		out = append(out, t.Received...)
	}
	return out
}

// How the transcript is taken. go-smtp's server runs STARTTLS itself on
// the net.Conn it is given and reads through a tls.Conn it keeps to
// itself, and it recognises TLS only by that *tls.Conn: no wrapper above
// or below it sees the decrypted stream. So the server ends the client's
// TLS itself (the shim below: the certificate, versions and STARTTLS the
// client sees are the shim's) and talks to go-smtp over an in-process
// pipe that carries a TLS session of its own wherever the client's has
// one. The shim records each direction in between.

// shim relays one client connection to go-smtp.
type shim struct {
	s      *Server
	raw    net.Conn      // the client's connection
	outer  *tls.Conn     // TLS with the client, once established
	pipe   net.Conn      // the shim's end of the pipe to go-smtp
	tr     *Transcript   // guarded by s.mu
	outerC *tls.Config   // what the client handshakes with
	innerC *tls.Config   // the shim's client side towards go-smtp
	ended  chan struct{} // closed when both directions have ended
}

// pipeEnd is go-smtp's end of the pipe; it reports the client's
// addresses and leads back to the shim.
type pipeEnd struct {
	net.Conn
	sh *shim
}

func (p *pipeEnd) RemoteAddr() net.Addr { return p.sh.raw.RemoteAddr() }
func (p *pipeEnd) LocalAddr() net.Addr  { return p.sh.raw.LocalAddr() }

// clientTLS returns the TLS state the client saw on the connection
// go-smtp reads from, or nil without TLS.
func clientTLS(c net.Conn) *tls.ConnectionState {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	if pe, ok := tc.NetConn().(*pipeEnd); ok {
		pe.sh.s.mu.Lock()
		outer := pe.sh.outer
		pe.sh.s.mu.Unlock()
		if outer == nil {
			return nil
		}
		cs := outer.ConnectionState()
		return &cs
	}
	cs := tc.ConnectionState()
	return &cs
}

// pipeListener hands go-smtp its ends of the pipes.
type pipeListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return l.addr }

// offer passes c to go-smtp, unless the server is closing.
func (l *pipeListener) offer(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

// run relays the connection until both sides are done.
func (sh *shim) run(l *pipeListener, implicit bool, innerServer *tls.Config) {
	defer close(sh.ended)
	defer sh.raw.Close()
	theirs, ours := net.Pipe()
	sh.pipe = ours
	defer ours.Close()
	var goSide net.Conn = &pipeEnd{Conn: theirs, sh: sh}

	if implicit {
		tap := &handshakeTap{Conn: sh.raw, r: sh.raw}
		outer := tls.Server(tap, sh.outerC)
		if err := outer.Handshake(); err != nil {
			sh.handshakeFailed(tap)
			return
		}
		tap.stop()
		sh.setOuter(outer)
		if !l.offer(tls.Server(goSide, innerServer)) {
			return
		}
		inner := tls.Client(ours, sh.innerC)
		if err := inner.Handshake(); err != nil {
			return
		}
		sh.relay(outer, inner)
		return
	}
	if !l.offer(goSide) {
		return
	}
	fromClient, fromServer, ok := sh.plaintext()
	if !ok {
		return
	}
	// STARTTLS accepted: the client's handshake, then the shim's with
	// go-smtp, which is waiting for it on the pipe.
	tap := &handshakeTap{Conn: sh.raw, r: fromClient}
	outer := tls.Server(tap, sh.outerC)
	if err := outer.Handshake(); err != nil {
		sh.handshakeFailed(tap)
		return
	}
	tap.stop()
	sh.setOuter(outer)
	inner := tls.Client(&bufferedConn{Conn: ours, r: fromServer}, sh.innerC)
	if err := inner.Handshake(); err != nil {
		return
	}
	sh.relay(outer, inner)
}

func (sh *shim) setOuter(outer *tls.Conn) {
	sh.s.mu.Lock()
	sh.outer = outer
	sh.tr.TLS = true
	sh.tr.ReceivedBeforeTLS = len(sh.tr.Received)
	sh.s.mu.Unlock()
}

func (sh *shim) record(received bool, p []byte) {
	sh.s.mu.Lock()
	if received {
		sh.tr.Received = append(sh.tr.Received, p...)
	} else {
		sh.tr.Sent = append(sh.tr.Sent, p...)
	}
	sh.s.mu.Unlock()
}

// plaintext relays the session before TLS, a line at a time, until
// go-smtp accepts STARTTLS (ok: the readers hold what follows, the start
// of each side's handshake) or either side ends it.
func (sh *shim) plaintext() (fromClient, fromServer *bufio.Reader, ok bool) {
	fromClient = bufio.NewReader(sh.raw)
	fromServer = bufio.NewReader(sh.pipe)
	verdict := make(chan bool, 1) // the reply to STARTTLS: 220 or not
	var mu sync.Mutex
	pending := false // a STARTTLS awaits its reply
	upgraded := make(chan bool, 1)

	// go-smtp to the client.
	go func() {
		for {
			line, err := fromServer.ReadBytes('\n')
			// Whether this line answers STARTTLS is decided before the
			// client sees it (and may send its next command).
			last := len(line) < 4 || line[3] != '-'
			mu.Lock()
			answer := pending && last && err == nil
			if answer {
				pending = false
			}
			mu.Unlock()
			if len(line) > 0 {
				sh.record(false, line)
				if _, werr := sh.raw.Write(line); werr != nil && err == nil {
					err = werr
				}
			}
			if err != nil {
				sh.serverDone()
				select {
				case verdict <- false:
				default:
				}
				upgraded <- false
				return
			}
			if answer {
				up := bytes.HasPrefix(line, []byte("220"))
				verdict <- up
				if up {
					upgraded <- true
					return
				}
			}
		}
	}()
	// The client to go-smtp, here. Once go-smtp is gone, what the client
	// sends is still read and recorded, until it stops (or serverDone's
	// deadline).
	relaying := true
	for {
		line, err := fromClient.ReadBytes('\n')
		if len(line) > 0 {
			sh.record(true, line)
			isStartTLS := strings.EqualFold(strings.TrimRight(string(line), "\r\n"), "STARTTLS")
			if relaying && isStartTLS {
				mu.Lock()
				pending = true
				mu.Unlock()
			}
			if relaying {
				if _, werr := sh.pipe.Write(line); werr != nil {
					relaying = false
				}
			}
			if relaying && isStartTLS {
				if <-verdict {
					return fromClient, fromServer, <-upgraded
				}
			}
		}
		if err != nil {
			_ = sh.pipe.Close()
			<-upgraded
			return nil, nil, false
		}
	}
}

// serverDone handles go-smtp's end of the session (or a client that can no
// longer be written to): the client is told, given a little time to finish
// what it was sending, and go-smtp's side is closed.
func (sh *shim) serverDone() {
	_ = closeWrite(sh.raw)
	_ = sh.raw.SetReadDeadline(time.Now().Add(2 * time.Second))
	_ = sh.pipe.Close()
}

// closeWrite half-closes c where it can (TCP), else closes it.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// relay copies both ways under TLS, recording what it copies.
func (sh *shim) relay(outer, inner *tls.Conn) {
	var wg sync.WaitGroup
	wg.Go(func() {
		sh.copy(inner, outer, true)
		// The client is done: so is go-smtp.
		_ = sh.pipe.Close()
	})
	sh.copy(outer, inner, false)
	_ = outer.CloseWrite()
	sh.serverDone()
	wg.Wait()
}

// copy copies src to dst and records it as received from the client (or
// sent by the server). What the client sends is read and recorded to its
// end, also once it can no longer be passed on.
func (sh *shim) copy(dst io.Writer, src io.Reader, received bool) {
	buf := make([]byte, 32<<10)
	relaying := true
	for {
		n, err := src.Read(buf)
		if n > 0 {
			sh.record(received, buf[:n])
			if relaying {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					if !received {
						return
					}
					relaying = false
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// handshakeTap is the client's connection as the shim's TLS server reads
// it: it keeps what the handshake read until stop, so that a handshake
// that fails can leave in the transcript what the client sent in its place.
type handshakeTap struct {
	net.Conn
	r       io.Reader
	kept    []byte
	stopped bool
}

func (h *handshakeTap) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if !h.stopped {
		h.kept = append(h.kept, p[:n]...)
	}
	return n, err
}

// stop ends the keeping: the handshake succeeded, and what it read was TLS.
func (h *handshakeTap) stop() { h.stopped, h.kept = true, nil }

// handshakeFailed records as received what the client sent where its TLS
// handshake should have been (plaintext after the 220 to STARTTLS or on an
// implicit-TLS port, a ClientHello and an alert), then, after telling the
// client the server is done, whatever it still sends until it stops: a
// client that goes on in clear after a failed handshake shows in the
// transcript.
func (sh *shim) handshakeFailed(tap *handshakeTap) {
	sh.record(true, tap.kept)
	tap.stop()
	sh.serverDone()
	sh.copy(io.Discard, tap, true)
}

// bufferedConn reads what a bufio.Reader holds before the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }
