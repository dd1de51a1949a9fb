package outbox_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
	"github.com/mailsec/mailsec/transport"
)

// scriptServer is a raw SMTP server (STARTTLS, a certificate from a
// mailsectest CA) whose replies to RCPT and to the end of the content a
// test scripts per transaction. It records every transaction whose
// content it received in full.
type scriptServer struct {
	Addr string
	CA   *mailsectest.CA

	pipelining, chunking bool

	// rcpt returns the reply line to RCPT TO:<to> in transaction n (from
	// 1, counting MAIL commands); "" means "250 2.1.5 ok". "DROP" closes
	// the connection without a reply.
	rcpt func(n int, to string) string
	// end returns the reply to the end of the content of transaction n,
	// with the recipients accepted: "" means "250 2.0.0 queued"; "DROP"
	// closes the connection without a reply (replies not yet flushed
	// are discarded); "HANG" sends nothing until the client goes.
	end func(n int, rcpts []string, data []byte) string

	// dataCmd returns what to do with the DATA command of transaction n:
	// "" answers 354; "DROP" sends the replies so far and closes the
	// connection without answering DATA (nothing of the message sent).
	dataCmd func(n int) string

	// greet returns the greeting on connection n (from 1); "" means 220.
	greet func(n int) string
	// starttls returns the reply to STARTTLS on connection n; "" means
	// go ahead.
	starttls func(n int) string

	mu    sync.Mutex
	txns  []scriptTxn
	mail  int
	conns int
}

type scriptTxn struct {
	N     int
	Rcpts []string
	Data  []byte
}

func newScriptServer(t testing.TB) *scriptServer {
	t.Helper()
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return newScriptServerFor(t, ca)
}

// newScriptServerFor starts a server with a certificate from ca for the
// names given (localhost when none).
func newScriptServerFor(t testing.TB, ca *mailsectest.CA, names ...string) *scriptServer {
	t.Helper()
	cert, err := ca.Issue(mailsectest.CertOptions{DNSNames: names})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptServer{Addr: ln.Addr().String(), CA: ca}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	var conns sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				s.serve(c, cfg)
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return s
}

func (s *scriptServer) Transport() *transport.Submission {
	return &transport.Submission{Addr: s.Addr, Mode: transport.StartTLS, ServerName: "localhost",
		TLSConfig: &tls.Config{RootCAs: s.CA.Pool()}, LocalName: "client.test"}
}

// Txns returns the transactions whose content the server received.
func (s *scriptServer) Txns() []scriptTxn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]scriptTxn(nil), s.txns...)
}

// copiesFor counts the transactions whose content reached rcpt.
func (s *scriptServer) copiesFor(rcpt string) int {
	n := 0
	for _, tx := range s.Txns() {
		for _, r := range tx.Rcpts {
			if strings.EqualFold(r, rcpt) {
				n++
			}
		}
	}
	return n
}

func (s *scriptServer) serve(c net.Conn, cfg *tls.Config) {
	defer c.Close()
	var conn net.Conn = c
	br := bufio.NewReader(conn)
	bw := bufio.NewWriter(conn)
	tlsOn := false
	reply := func(line string) {
		_, _ = bw.WriteString(line + "\r\n")
	}
	flush := func() {
		if br.Buffered() == 0 {
			_ = bw.Flush()
		}
	}
	s.mu.Lock()
	s.conns++
	cn := s.conns
	s.mu.Unlock()
	if s.greet != nil {
		if g := s.greet(cn); g != "" {
			reply(g)
			_ = bw.Flush()
			return
		}
	}
	reply("220 localhost ESMTP script")
	_ = bw.Flush()
	var n int
	var rcpts []string
	inTxn := false
	for {
		flush()
		_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(line)
		if i := strings.IndexByte(verb, ' '); i >= 0 {
			verb = verb[:i]
		}
		switch verb {
		case "EHLO":
			ext := []string{"localhost", "8BITMIME", "ENHANCEDSTATUSCODES"}
			if !tlsOn {
				ext = append(ext, "STARTTLS")
			}
			if s.pipelining {
				ext = append(ext, "PIPELINING")
			}
			if s.chunking {
				ext = append(ext, "CHUNKING")
			}
			for i, e := range ext {
				sep := "-"
				if i == len(ext)-1 {
					sep = " "
				}
				reply("250" + sep + e)
			}
		case "STARTTLS":
			if s.starttls != nil {
				if r := s.starttls(cn); r != "" {
					reply(r)
					continue
				}
			}
			reply("220 2.0.0 go ahead")
			_ = bw.Flush()
			tc := tls.Server(c, cfg)
			if err := tc.Handshake(); err != nil {
				return
			}
			conn, tlsOn = tc, true
			br, bw = bufio.NewReader(conn), bufio.NewWriter(conn)
		case "MAIL":
			s.mu.Lock()
			s.mail++
			n = s.mail
			s.mu.Unlock()
			rcpts, inTxn = nil, true
			reply("250 2.1.0 ok")
		case "RCPT":
			to := line[strings.IndexByte(line, '<')+1 : strings.IndexByte(line, '>')]
			r := ""
			if s.rcpt != nil {
				r = s.rcpt(n, to)
			}
			if r == "DROP" {
				return
			}
			if r == "" {
				r = "250 2.1.5 ok"
			}
			if r[0] == '2' {
				rcpts = append(rcpts, to)
			}
			reply(r)
		case "DATA":
			if !inTxn || len(rcpts) == 0 {
				reply("503 5.5.1 no valid recipients")
				continue
			}
			if s.dataCmd != nil && s.dataCmd(n) == "DROP" {
				_ = bw.Flush()
				return
			}
			reply("354 go ahead")
			_ = bw.Flush()
			var data bytes.Buffer
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				l = strings.TrimPrefix(l, ".")
				data.WriteString(l)
			}
			if !s.finish(n, rcpts, data.Bytes(), conn, bw, reply) {
				return
			}
			inTxn = false
		case "BDAT":
			f := strings.Fields(line)
			size, _ := strconv.Atoi(f[1])
			buf := make([]byte, size)
			if _, err := io.ReadFull(br, buf); err != nil {
				return
			}
			last := len(f) > 2 && strings.EqualFold(f[2], "LAST")
			if !last {
				// Only single-chunk messages in these tests.
				reply("250 2.0.0 chunk ok")
				continue
			}
			if len(rcpts) == 0 {
				reply("554 5.5.1 no valid recipients")
				continue
			}
			if !s.finish(n, rcpts, buf, conn, bw, reply) {
				return
			}
			inTxn = false
		case "RSET":
			rcpts, inTxn = nil, false
			reply("250 2.0.0 ok")
		case "NOOP":
			reply("250 2.0.0 ok")
		case "QUIT":
			reply("221 2.0.0 bye")
			_ = bw.Flush()
			return
		default:
			reply("500 5.5.2 what")
		}
	}
}

// finish takes a complete message and answers it as the script says; it
// reports whether the session goes on.
func (s *scriptServer) finish(n int, rcpts []string, data []byte, conn net.Conn, bw *bufio.Writer, reply func(string)) bool {
	s.mu.Lock()
	s.txns = append(s.txns, scriptTxn{N: n, Rcpts: append([]string(nil), rcpts...), Data: append([]byte(nil), data...)})
	s.mu.Unlock()
	r := ""
	if s.end != nil {
		r = s.end(n, rcpts, data)
	}
	switch r {
	case "DROP":
		bw.Reset(io.Discard)
		return false
	case "HANG":
		bw.Reset(io.Discard)
		_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		_, _ = io.Copy(io.Discard, conn)
		return false
	case "":
		r = "250 2.0.0 queued as X" + strconv.Itoa(n)
	}
	reply(r)
	return true
}

// deliverScripted queues a message to the recipients to through an outbox
// on tr, with the options o (fast's defaults otherwise), and returns its
// Status once it has finished (or after 20 s).
func deliverScripted(t *testing.T, tr mailsec.Transport, o *outbox.Options, to ...string) *outbox.Status {
	t.Helper()
	ob, _ := openFile(t, newSender(t, tr, nil), fast(o), true)
	id, err := ob.Enqueue(context.Background(), scriptMsg(to...), nil)
	if err != nil {
		t.Fatal(err)
	}
	return waitFor(t, ob, id, "", 20*time.Second)
}

// scriptedDirect starts a scripted server for each MX host of each domain
// (hosts in preference order) and returns them by host name, with a
// Direct that finds them through a mock resolver and reaches them through
// mxDialer.
func scriptedDirect(t *testing.T, mx map[string][]string) (map[string]*scriptServer, *transport.Direct) {
	t.Helper()
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	res := mailsectest.NewResolver()
	servers, dial := map[string]*scriptServer{}, mxDialer{}
	for domain, hosts := range mx {
		var recs []dns.MX
		for i, host := range hosts {
			addr := netip.AddrFrom4([4]byte{192, 0, 2, byte(len(servers) + 1)})
			servers[host] = newScriptServerFor(t, ca, host)
			dial[addr.String()] = servers[host]
			res.IP(host, addr)
			recs = append(recs, dns.MX{Host: host, Pref: uint16(10 * (i + 1))})
		}
		res.MX(domain, recs...)
	}
	return servers, &transport.Direct{Resolver: res, TLSConfig: &tls.Config{RootCAs: ca.Pool()},
		Dialer: dial, LocalName: "sender.example", AllowPrivate: true}
}
