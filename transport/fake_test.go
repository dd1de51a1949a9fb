package transport_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec/mailsectest"
)

// fake is a scripted SMTP server for protocol corner cases that a
// well-behaved server never produces. It records every byte the client
// sends on the wire (wire) and, after TLS, the decrypted stream (plain).
type fake struct {
	t    testing.TB
	ln   net.Listener
	ca   *mailsectest.CA
	cert tls.Certificate
	opts fakeOpts
	wg   sync.WaitGroup // accept loop and handlers

	mu     sync.Mutex
	wire   []byte
	plain  []byte
	conns  int
	active int
	ehlos  int // EHLOs after TLS
	mails  int
	cmds   []string                    // commands seen, in order, across connections
	counts map[string]int              // hook events seen, by verb
	dots   int                         // DATA terminators (and BDAT LAST chunks) received
	chunks []string                    // BDAT chunks received, in order
	states map[int]tls.ConnectionState // each connection's TLS, by number
}

type fakeOpts struct {
	silent       bool   // never greet
	implicitTLS  bool   // handshake first
	greeting     string // default "220 fake ESMTP"
	preTLSExt    []string
	postTLSExt   []string // default: "PIPELINING", "8BITMIME"
	startTLSResp string   // default "220 2.0.0 Ready"
	inject       string   // written right after the STARTTLS reply, in the same write
	injectLater  string   // written 100ms after the STARTTLS reply, instead of a handshake
	closeAfter   int      // close the connection after this many accepted messages
	mailReply    string   // reply to MAIL instead of 250
	limit421     int      // after this many accepted messages, answer MAIL with 421 and close
	rejectMails  int      // answer the first this many MAILs (across connections) with 550
	failEHLO     int      // answer the n-th EHLO after TLS (across connections, 1-based) with 451
	hugeEHLO     bool     // answer EHLO after TLS with a 2 MiB reply
	hangup       bool     // close the connection as soon as the client sends anything
	preTLSEHLO   string   // reply to EHLO before TLS instead of the capability list
	dataDelay    time.Duration
	// hook, when set, is offered each event of the session after TLS
	// before the fake answers it: the verbs EHLO, AUTH, MAIL, RCPT, DATA,
	// NOOP, RSET, BDAT (after its chunk was read; the command line is
	// the event's line), "BODY" (the first line of a message's content: no
	// reply is due) and "." (the end of the content). It returns true when
	// it has answered (or chosen not to) itself.
	hook func(verb string, c *fakeConn) bool
}

// fakeConn is what a hook sees of one connection.
type fakeConn struct {
	f    *fake
	r    *bufio.Reader
	w    func(string)
	line string // the command line, or the body line for "BODY"
	n    int    // how many times the event has happened, across connections (1-based)
	conn int    // the connection's number (1-based)
	// hangup closes the connection.
	hangup func()
}

// readLine reads one line the client sent, without its line ending.
func (c *fakeConn) readLine() (string, error) {
	l, err := c.r.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

// tlsState is the server's side of the connection's TLS session.
func (c *fakeConn) tlsState() tls.ConnectionState {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	return c.f.states[c.conn]
}

// event offers an event to the hook.
func (f *fake) event(id int, verb, line string, r *bufio.Reader, w func(string), hangup func()) bool {
	if f.opts.hook == nil {
		return false
	}
	f.mu.Lock()
	if f.counts == nil {
		f.counts = map[string]int{}
	}
	f.counts[verb]++
	n := f.counts[verb]
	f.mu.Unlock()
	return f.opts.hook(verb, &fakeConn{f: f, r: r, w: w, line: line, n: n, conn: id, hangup: hangup})
}

func newFake(t testing.TB, o fakeOpts) *fake {
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
	if o.greeting == "" {
		o.greeting = "220 fake ESMTP"
	}
	if o.startTLSResp == "" {
		o.startTLSResp = "220 2.0.0 Ready to start TLS"
	}
	if o.postTLSExt == nil {
		o.postTLSExt = []string{"PIPELINING", "8BITMIME"}
	}
	f := &fake{t: t, ln: ln, ca: ca, cert: cert, opts: o}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(func() {
		ln.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fake) addr() string { return f.ln.Addr().String() }

func (f *fake) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns++
		f.active++
		id := f.conns
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() {
				c.Close()
				f.mu.Lock()
				f.active--
				f.mu.Unlock()
			}()
			f.handle(&wireConn{Conn: c, f: f}, id)
		}()
	}
}

// wireConn records what the client sends.
type wireConn struct {
	net.Conn
	f *fake
}

func (w *wireConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	w.f.mu.Lock()
	w.f.wire = append(w.f.wire, p[:n]...)
	w.f.mu.Unlock()
	return n, err
}

type plainConn struct {
	net.Conn
	f *fake
}

func (p *plainConn) Read(b []byte) (int, error) {
	n, err := p.Conn.Read(b)
	p.f.mu.Lock()
	p.f.plain = append(p.f.plain, b[:n]...)
	p.f.mu.Unlock()
	return n, err
}

func (f *fake) handle(raw net.Conn, id int) {
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	if f.opts.silent {
		_, _ = io.Copy(io.Discard, raw)
		return
	}
	if f.opts.hangup {
		_, _ = raw.Read(make([]byte, 1))
		return
	}
	var conn net.Conn = raw
	tlsOn := false
	startTLS := func() bool {
		tc := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{f.cert}})
		if err := tc.Handshake(); err != nil {
			return false
		}
		conn, tlsOn = &plainConn{Conn: tc, f: f}, true
		f.mu.Lock()
		if f.states == nil {
			f.states = map[int]tls.ConnectionState{}
		}
		f.states[id] = tc.ConnectionState()
		f.mu.Unlock()
		return true
	}
	if f.opts.implicitTLS && !startTLS() {
		return
	}
	r := bufio.NewReader(conn)
	w := func(s string) { _, _ = io.WriteString(conn, s) }
	hangup := func() { _ = raw.Close() }
	w(f.opts.greeting + "\r\n")
	accepted := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(strings.SplitN(cmd, " ", 2)[0])
		f.mu.Lock()
		f.cmds = append(f.cmds, cmd)
		f.mu.Unlock()
		if tlsOn && verb != "QUIT" && verb != "DATA" && verb != "BDAT" && f.event(id, verb, cmd, r, w, hangup) {
			continue
		}
		switch verb {
		case "EHLO":
			if !tlsOn && f.opts.preTLSEHLO != "" {
				w(f.opts.preTLSEHLO + "\r\n")
				continue
			}
			ext := f.opts.preTLSExt
			if tlsOn {
				ext = f.opts.postTLSExt
				f.mu.Lock()
				f.ehlos++
				n := f.ehlos
				f.mu.Unlock()
				if n == f.opts.failEHLO {
					w("451 4.3.2 try again later\r\n")
					continue
				}
				if f.opts.hugeEHLO {
					for range 2 << 10 {
						w("250-" + strings.Repeat("X", 1020) + "\r\n")
					}
				}
			}
			lines := append([]string{"fake"}, ext...)
			for i, l := range lines {
				sep := "-"
				if i == len(lines)-1 {
					sep = " "
				}
				w("250" + sep + l + "\r\n")
			}
		case "STARTTLS":
			w(f.opts.startTLSResp + "\r\n" + f.opts.inject)
			if !strings.HasPrefix(f.opts.startTLSResp, "220") {
				continue
			}
			if f.opts.injectLater != "" {
				time.Sleep(100 * time.Millisecond)
				w(f.opts.injectLater)
				_, _ = io.Copy(io.Discard, raw)
				return
			}
			if !startTLS() {
				return
			}
			r = bufio.NewReader(conn)
		case "AUTH":
			w("235 2.7.0 OK\r\n")
		case "MAIL":
			f.mu.Lock()
			f.mails++
			reject := f.mails <= f.opts.rejectMails
			f.mu.Unlock()
			if reject {
				w("550 5.7.1 not now\r\n")
				continue
			}
			if f.opts.limit421 > 0 && accepted >= f.opts.limit421 {
				w("421 4.7.0 Too many messages for this session\r\n")
				return
			}
			if f.opts.mailReply != "" {
				w(f.opts.mailReply + "\r\n")
				continue
			}
			w("250 2.0.0 OK\r\n")
		case "RCPT", "RSET", "NOOP":
			w("250 2.0.0 OK\r\n")
		case "DATA":
			if !f.event(id, "DATA", cmd, r, w, hangup) {
				w("354 go ahead\r\n")
			}
			first := true
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				if first {
					first = false
					f.event(id, "BODY", l, r, w, hangup)
				}
			}
			f.mu.Lock()
			f.dots++
			f.mu.Unlock()
			time.Sleep(f.opts.dataDelay)
			accepted++
			if f.event(id, ".", ".", r, w, hangup) {
				continue
			}
			w("250 2.0.0 Ok: queued as FAKE" + string(rune('0'+accepted)) + "\r\n")
			if f.opts.closeAfter > 0 && accepted >= f.opts.closeAfter {
				return
			}
		case "BDAT":
			// RFC 3030: the chunk follows the command, whatever the reply.
			var size int
			var last string
			if n, _ := fmt.Sscanf(cmd[len("BDAT "):], "%d %s", &size, &last); n < 1 || size < 0 {
				w("501 5.5.4 bad BDAT\r\n")
				return
			}
			chunk := make([]byte, size)
			if _, err := io.ReadFull(r, chunk); err != nil {
				return
			}
			f.mu.Lock()
			f.chunks = append(f.chunks, string(chunk))
			f.mu.Unlock()
			if f.event(id, "BDAT", cmd, r, w, hangup) {
				continue
			}
			if !strings.EqualFold(last, "LAST") {
				w("250 2.0.0 " + strconv.Itoa(size) + " octets received\r\n")
				continue
			}
			f.mu.Lock()
			f.dots++
			f.mu.Unlock()
			accepted++
			if f.event(id, ".", ".", r, w, hangup) {
				continue
			}
			w("250 2.0.0 Ok: queued as FAKE" + string(rune('0'+accepted)) + "\r\n")
			if f.opts.closeAfter > 0 && accepted >= f.opts.closeAfter {
				return
			}
		case "QUIT":
			w("221 2.0.0 Bye\r\n")
			return
		default:
			w("502 5.5.2 unknown\r\n")
		}
	}
}

// settle waits until the client has hung up and every handler has read
// all it was sent, so that what was recorded is complete.
func (f *fake) settle() {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		active := f.active
		f.mu.Unlock()
		if active == 0 {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("fake: %d connections still open", active)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (f *fake) wireBytes() []byte {
	f.settle()
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Clone(f.wire)
}

func (f *fake) plainBytes() []byte {
	f.settle()
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Clone(f.plain)
}

func (f *fake) commands() []string {
	f.settle()
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

// events counts the hook events of one verb the fake has seen.
func (f *fake) events(verb string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[verb]
}

// bdatChunks returns the BDAT chunks the fake received.
func (f *fake) bdatChunks() []string {
	f.settle()
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.chunks...)
}

// terminators counts the DATA terminators the fake received.
func (f *fake) terminators() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dots
}

func (f *fake) connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

// transactions counts the MAIL commands the fake received.
func (f *fake) transactions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mails
}
