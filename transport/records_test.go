package transport_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// Replies that arrive together but in TLS records of their own. crypto/tls
// hands over one record per read and keeps the rest, already received, to
// itself: a client that looks only at its own read buffer sees one reply
// where the server sent two, and takes the second for the answer to its
// next command.

// coalescingConn holds what is written until flush, so that several TLS
// records leave in one TCP write.
type coalescingConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *coalescingConn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = c.Conn.Write(c.buf.Bytes())
	c.buf.Reset()
}

// recordServer is an implicit-TLS SMTP server that writes each reply as a
// TLS record of its own, and the replies to one command in one TCP write.
type recordServer struct {
	addr string
	ca   *mailsectest.CA

	mu   sync.Mutex
	cmds map[int][]string // commands received, by connection (1-based)
	n    int
}

// newRecordServer starts a recordServer. answer returns the replies to a
// command of connection conn (its verb; "." for the end of the message),
// or nil for the usual single reply.
func newRecordServer(t *testing.T, answer func(conn int, verb string) []string) *recordServer {
	t.Helper()
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(mailsectest.CertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rs := &recordServer{addr: ln.Addr().String(), ca: ca, cmds: map[int][]string{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			rs.mu.Lock()
			rs.n++
			id := rs.n
			rs.mu.Unlock()
			wg.Go(func() {
				defer raw.Close()
				rs.serve(raw, id, &cert, answer)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return rs
}

func (rs *recordServer) serve(raw net.Conn, id int, cert *tls.Certificate, answer func(int, string) []string) {
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	// The handshake writes straight through; replies are coalesced.
	cc := &coalescingConn{Conn: raw}
	direct := true
	tc := tls.Server(writeThrough{cc, &direct}, &tls.Config{Certificates: []tls.Certificate{*cert}})
	if err := tc.Handshake(); err != nil {
		return
	}
	direct = false
	reply := func(replies ...string) {
		for _, r := range replies {
			_, _ = tc.Write([]byte(r + "\r\n"))
		}
		cc.flush()
	}
	reply("220 records ESMTP")
	r := bufio.NewReader(tc)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(strings.SplitN(cmd, " ", 2)[0])
		rs.mu.Lock()
		rs.cmds[id] = append(rs.cmds[id], cmd)
		rs.mu.Unlock()
		if verb == "DATA" {
			if a := answer(id, verb); a != nil {
				reply(a...)
				if !strings.HasPrefix(a[0], "354") {
					continue
				}
			} else {
				reply("354 go ahead")
			}
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			verb = "."
		}
		if a := answer(id, verb); a != nil {
			reply(a...)
			continue
		}
		switch verb {
		case "EHLO":
			reply("250-records", "250 8BITMIME")
		case ".":
			reply("250 2.0.0 Ok: queued as R" + string(rune('0'+id)))
		case "QUIT":
			reply("221 2.0.0 Bye")
			return
		default:
			reply("250 2.0.0 OK")
		}
	}
}

// writeThrough writes to the coalescing connection's socket directly while
// *direct is set (the handshake), and into its buffer otherwise.
type writeThrough struct {
	*coalescingConn
	direct *bool
}

func (w writeThrough) Write(p []byte) (int, error) {
	if *w.direct {
		return w.coalescingConn.Conn.Write(p)
	}
	return w.coalescingConn.Write(p)
}

// transport returns a Submission for the server; with socket false its
// connections are not sockets (a custom Dialer's), which the session cannot
// read without waiting.
func (rs *recordServer) transport(socket bool) *transport.Submission {
	tr := &transport.Submission{Addr: rs.addr, Mode: transport.ImplicitTLS, ServerName: "localhost",
		TLSConfig: &tls.Config{RootCAs: rs.ca.Pool()}, LocalName: "client.test"}
	if !socket {
		tr.Dialer = wrappingDialer{}
	}
	return tr
}

// wrappingDialer dials TCP and hides the socket behind a plain net.Conn.
type wrappingDialer struct{}

func (wrappingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return struct{ net.Conn }{c}, nil
}

func (rs *recordServer) commands(conn int) []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]string(nil), rs.cmds[conn]...)
}

func (rs *recordServer) connections() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.n
}

// Two replies to the end of the message, one TLS record each: its verdict
// is unknown, as when they share a record, and the next message gets its
// own on a new session.
func TestTwoRepliesToTheEndInTwoRecords(t *testing.T) {
	for _, socket := range []bool{true, false} {
		t.Run(fmt.Sprintf("socket=%v", socket), func(t *testing.T) {
			rs := newRecordServer(t, func(conn int, verb string) []string {
				if verb == "." && conn == 1 {
					return []string{"250 2.0.0 Ok: queued as A", "550 5.7.1 rejected after all"}
				}
				return nil
			})
			tr := rs.transport(socket)
			d, _ := canaryDelivery(t)
			res, err := deliver(t, tr, d)
			assertUnsolicited(t, res, err)
			res, err = deliver(t, tr, d)
			assertOwnVerdict(t, res, err, "R2")
			if rs.connections() != 2 {
				t.Fatalf("%d connections", rs.connections())
			}
		})
	}
}

// A second reply to MAIL in a TLS record of its own must not become the
// answer to RCPT: the session ends before RCPT is sent.
func TestSecondReplyToMailInItsOwnRecord(t *testing.T) {
	for _, socket := range []bool{true, false} {
		t.Run(fmt.Sprintf("socket=%v", socket), func(t *testing.T) {
			rs := newRecordServer(t, func(conn int, verb string) []string {
				if verb == "MAIL" && conn == 1 {
					return []string{"250 2.1.0 Sender OK", "250 2.1.5 Recipient OK, before it was named"}
				}
				return nil
			})
			tr := rs.transport(socket)
			d, _ := canaryDelivery(t)
			res, err := deliver(t, tr, d)
			assertUnsolicited(t, res, err)
			for _, c := range rs.commands(1) {
				if strings.HasPrefix(c, "RCPT") {
					t.Fatalf("RCPT sent after a second reply to MAIL: %q", rs.commands(1))
				}
			}
			res, err = deliver(t, tr, d)
			assertOwnVerdict(t, res, err, "R2")
		})
	}
}
