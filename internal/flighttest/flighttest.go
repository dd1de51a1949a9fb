// Package flighttest counts the round trips an SMTP client waits for, by
// counting, not timing: a TCP proxy between the client and a server that
// counts the client's flights. A flight is a run of bytes from the client
// with no byte from the server delivered to the client in between; every
// flight after the first on a connection is one the client sent after
// hearing from the server, so a client that waits for each reply sends
// one flight per command, and a client that pipelines a whole transaction
// sends one for all of it.
//
// The proxy works below TLS, on the bytes as they cross the network, so it
// counts a TLS handshake's flights too.
package flighttest

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy relays connections to one server and counts flights.
type Proxy struct {
	// Addr is the address clients connect to: "127.0.0.1:port".
	Addr string

	target string
	delay  time.Duration
	ln     net.Listener
	wg     sync.WaitGroup

	mu      sync.Mutex
	flights int
	conns   int
	open    map[net.Conn]struct{}
}

// Start starts a proxy to target that closes when tb's test ends. Each
// chunk the server sends is held for delay before it is passed on, so that
// a client's flight that the network splits (one write per TLS record, say)
// has reached the proxy whole before any reply that could make the client
// write again; zero passes replies on at once.
func Start(tb testing.TB, target string, delay time.Duration) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, delay: delay, ln: ln, open: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	tb.Cleanup(p.Close)
	return p
}

// Flights returns the number of client flights so far, on every
// connection.
func (p *Proxy) Flights() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flights
}

// Connections returns the number of connections accepted so far.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns
}

// Close stops accepting, closes every relayed connection and waits for
// the relays to end.
func (p *Proxy) Close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.open {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns++
		p.open[c], p.open[s] = struct{}{}, struct{}{}
		p.mu.Unlock()
		r := &relay{p: p, serverSpoke: true}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			r.pass(s, c, true)
		}()
		go func() {
			defer p.wg.Done()
			r.pass(c, s, false)
		}()
	}
}

// relay is one connection's pair of directions.
type relay struct {
	p *Proxy
	// serverSpoke is set when bytes from the server have been passed to
	// the client since the client's last bytes: the client's next bytes
	// begin a flight. Guarded by p.mu.
	serverSpoke bool
}

// pass copies from src to dst until either ends; fromClient says which
// direction it is.
func (r *relay) pass(dst, src net.Conn, fromClient bool) {
	defer func() {
		_ = dst.Close()
		_ = src.Close()
		r.p.mu.Lock()
		delete(r.p.open, dst)
		delete(r.p.open, src)
		r.p.mu.Unlock()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !fromClient && r.p.delay > 0 {
				time.Sleep(r.p.delay)
			}
			r.p.mu.Lock()
			switch {
			case fromClient && r.serverSpoke:
				r.p.flights++
				r.serverSpoke = false
			case !fromClient:
				r.serverSpoke = true
			}
			r.p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
