package rttbench

import (
	"context"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP relay to one server that adds a fixed one-way delay in
// each direction, so that the client and the server see a round-trip time
// of twice that delay, and counts the client's flights.
//
// A flight is a run of bytes from the client with no byte from the server
// delivered to the client in between: every flight after the first on a
// connection is one the client sent after hearing from the server, so a
// client that waits for each reply sends one flight per command, and a
// client that pipelines a whole transaction sends one for all of it. The
// relay works below TLS, so a TLS handshake's flights count too. This is
// the counting of the root module's internal/flighttest, which a separate
// module cannot import.
//
// The delay is a delay line, not a pause: every chunk is passed on one
// delay after it was read, however many chunks are in flight, as on a real
// link. A connection's TCP handshake is modelled too: the proxy connects to
// the server one and a half round trips after it accepted the client (the
// client's SYN, the SYN-ACK, the ACK), so the server's greeting reaches the
// client two round trips after it connected, as across a real network.
// (The client's own connect returns at once, a round trip early; bytes it
// sends before then wait for the server connection, so a ClientHello sent
// at once on implicit TLS still reaches the server when it would.)
type Proxy struct {
	// Addr is the address clients connect to: "127.0.0.1:port".
	Addr string

	target string
	delay  time.Duration
	ln     net.Listener
	wg     sync.WaitGroup

	mu      sync.Mutex
	flights int
	turns   int
	conns   int
	open    map[net.Conn]struct{}
	idle    chan struct{} // closed, and replaced, whenever open becomes empty
}

// NewProxy starts a proxy to target with the given one-way delay (the
// round-trip time is twice that). Close it when done.
func NewProxy(target string, oneWay time.Duration) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, delay: oneWay, ln: ln, open: map[net.Conn]struct{}{}, idle: make(chan struct{})}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// RTT returns the round-trip time the proxy adds.
func (p *Proxy) RTT() time.Duration { return 2 * p.delay }

// Flights returns the number of client flights so far, on every
// connection.
func (p *Proxy) Flights() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flights
}

// Turns returns the number of server turns so far, on every connection: a
// turn is a run of bytes from the server delivered to the client with no
// byte from the client in between, the first on a connection included
// (a greeting the client waited for). Each is a round trip the client
// waited for, once the connection is open; a connection's TCP handshake
// is one more.
func (p *Proxy) Turns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.turns
}

// Connections returns the number of connections accepted so far.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns
}

// Close stops accepting, closes every relayed connection and waits for
// the relays to end.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.open {
		_ = c.Close()
	}
	p.open = nil // refuse connections accepted or dialled from now on
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open == nil {
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.open)
	for _, c := range cs {
		delete(p.open, c)
	}
	if n > 0 && len(p.open) == 0 {
		close(p.idle)
		p.idle = make(chan struct{})
	}
}

// WaitIdle waits until no connection is being relayed, so that the bytes
// that end one connection (QUIT, a TLS close_notify) are not counted in
// what comes next.
func (p *Proxy) WaitIdle(ctx context.Context) error {
	for {
		p.mu.Lock()
		n, ch := len(p.open), p.idle
		p.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		accepted := time.Now()
		if !p.track(c) {
			_ = c.Close()
			return
		}
		p.mu.Lock()
		p.conns++
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.relay(c, accepted)
		}()
	}
}

// relay serves one client connection c, accepted at accepted.
func (p *Proxy) relay(c net.Conn, accepted time.Time) {
	r := &conn{p: p, serverSpoke: true, clientSpoke: true}
	toServer := make(chan chunk, 256)
	// Read the client from the start: its bytes are stamped when they
	// arrive, and counted as flights then.
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(toServer)
		r.read(c, toServer, true)
	}()
	// The server sees the connection once the TCP handshake would have
	// reached it: 3 one-way delays after the client's SYN.
	time.Sleep(time.Until(accepted.Add(3 * p.delay)))
	s, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(s) {
		_ = c.Close()
		p.untrack(c)
		for range toServer {
		}
		if s != nil {
			_ = s.Close()
		}
		return
	}
	toClient := make(chan chunk, 256)
	var both sync.WaitGroup
	both.Go(func() {
		defer close(toClient)
		r.read(s, toClient, false)
	})
	both.Go(func() { r.write(c, toClient, false) })
	r.write(s, toServer, true)
	both.Wait()
	_ = c.Close()
	_ = s.Close()
	p.untrack(c, s)
}

// chunk is what one read returned, and when it is due at the other end.
type chunk struct {
	b   []byte
	due time.Time
}

// conn is one relayed connection's state.
type conn struct {
	p *Proxy
	// serverSpoke is set when bytes from the server have been delivered
	// to the client since the client's last bytes: the client's next
	// bytes begin a flight. Guarded by p.mu.
	serverSpoke bool
	// clientSpoke is set when bytes from the client have been read since
	// the server's bytes were last delivered, and at the start: the
	// server's next bytes begin a turn. Guarded by p.mu.
	clientSpoke bool
}

// read reads src until it ends, stamping each chunk with its due time.
func (r *conn) read(src net.Conn, out chan<- chunk, fromClient bool) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if fromClient {
				r.p.mu.Lock()
				if r.serverSpoke {
					r.p.flights++
					r.serverSpoke = false
				}
				r.clientSpoke = true
				r.p.mu.Unlock()
			}
			out <- chunk{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(r.p.delay)}
		}
		if err != nil {
			return
		}
	}
}

// write passes each chunk to dst when it is due; on an error it drains in
// so the reader is never blocked.
func (r *conn) write(dst net.Conn, in <-chan chunk, fromClient bool) {
	ok := true
	for ch := range in {
		if !ok {
			continue
		}
		time.Sleep(time.Until(ch.due))
		if !fromClient {
			// Marked before the write: once the client has the bytes, it
			// may answer at once.
			r.p.mu.Lock()
			r.serverSpoke = true
			if r.clientSpoke {
				r.p.turns++
				r.clientSpoke = false
			}
			r.p.mu.Unlock()
		}
		if _, err := dst.Write(ch.b); err != nil {
			ok = false
			_ = dst.Close()
		}
	}
	// The source ended: pass the end on.
	if tc, isTCP := dst.(*net.TCPConn); isTCP && ok {
		_ = tc.CloseWrite()
	}
}
