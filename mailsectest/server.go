package mailsectest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/transport"
)

// Config configures a test server. The zero value is a STARTTLS server
// for "localhost" that accepts any message without authentication.
type Config struct {
	// ImplicitTLS serves TLS from the first byte, like port 465. The
	// default is plaintext with STARTTLS, like port 587.
	ImplicitTLS bool
	// WithholdStartTLS makes a STARTTLS server not offer (nor accept)
	// STARTTLS, as an attacker stripping it would.
	WithholdStartTLS bool
	// Users, when set, requires AUTH with one of these user names and
	// passwords before MAIL (PLAIN, LOGIN, CRAM-MD5 and SCRAM-SHA-256,
	// offered only after TLS).
	Users map[string]string
	// Mechanisms restricts the AUTH mechanisms offered; empty offers all.
	Mechanisms []string
	// Tokens, when set, adds XOAUTH2 with these user names and bearer tokens.
	Tokens map[string]string
	// RequireTLS offers REQUIRETLS (after TLS), SMTPUTF8 offers SMTPUTF8,
	// DSN offers DSN.
	RequireTLS bool
	SMTPUTF8   bool
	DSN        bool
	// Certificate is presented instead of a fresh one for localhost and
	// 127.0.0.1 issued by the server's CA (use CA.Issue to make an expired
	// or wrong-name one).
	Certificate *tls.Certificate
	// MinVersion and MaxVersion bound the server's TLS versions (for
	// example tls.VersionTLS11 for both, an outdated server).
	MinVersion, MaxVersion uint16
	// MailReply, RcptReply and DataReply make MAIL, RCPT and the end of
	// DATA fail with the given reply. RcptReply is keyed by recipient
	// address.
	MailReply *mailsec.Reply
	RcptReply map[string]*mailsec.Reply
	DataReply *mailsec.Reply
	// Discard keeps no messages and no wire capture (for benchmarks).
	Discard bool
	// Hostname is the name in the greeting; default "localhost".
	Hostname string
}

// Message is one message the server accepted.
type Message struct {
	From       string
	To         []string
	RequireTLS bool   // MAIL carried REQUIRETLS
	SMTPUTF8   bool   // MAIL carried SMTPUTF8
	Body       string // BODY= parameter
	Return     string // DSN RET
	EnvelopeID string // DSN ENVID
	Notify     map[string][]string
	ORCPT      map[string]string
	// Data is the message as received, dot-stuffing removed, line
	// endings untouched.
	Data []byte
	// TLS is the session's TLS state; nil for a plaintext session.
	TLS *tls.ConnectionState
	// User is the authenticated user name, if any.
	User string
	// Helo is the EHLO name the client gave.
	Helo string
}

// Server is an in-process SMTP server on 127.0.0.1 with its own CA.
type Server struct {
	// Addr is "127.0.0.1:port".
	Addr string
	// CA issued the server's certificate; trust it with CA.Pool().
	CA  *CA
	cfg Config
	srv *smtp.Server

	tcp net.Listener // the listener clients connect to
	// With a transcript (not Discard): the shims between clients and
	// go-smtp, and the raw connections they serve.
	pipes  *pipeListener
	served chan struct{} // closed when go-smtp's Serve on pipes returns
	shims  sync.WaitGroup
	raws   map[net.Conn]struct{}
	outerC *tls.Config
	innerC *tls.Config

	mu           sync.Mutex
	messages     []Message
	transactions int
	wire         []byte
	transcripts  []*Transcript
	conns        int
	open         int
	closed       bool
}

// Start starts a server with cfg.
func Start(cfg Config) (*Server, error) {
	ca, err := NewCA()
	if err != nil {
		return nil, err
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	cert := cfg.Certificate
	if cert == nil {
		c, err := ca.Issue(CertOptions{})
		if err != nil {
			return nil, err
		}
		cert = &c
	}
	tlsCfg := &tls.Config{
		Certificates: []tls.Certificate{*cert},
		MinVersion:   cfg.MinVersion,
		MaxVersion:   cfg.MaxVersion,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: ln.Addr().String(), CA: ca, cfg: cfg, tcp: ln}
	srv := smtp.NewServer(&backend{s: s})
	srv.Domain = cfg.Hostname
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxMessageBytes = 256 << 20
	srv.MaxRecipients = 1000
	srv.EnableSMTPUTF8 = cfg.SMTPUTF8
	srv.EnableREQUIRETLS = cfg.RequireTLS
	srv.EnableDSN = cfg.DSN
	srv.ErrorLog = log.New(io.Discard, "", 0)
	s.srv = srv
	if cfg.Discard {
		// No transcript: go-smtp serves the clients' connections itself.
		var l net.Listener = &recordingListener{Listener: ln, s: s}
		switch {
		case cfg.ImplicitTLS:
			l = tls.NewListener(l, tlsCfg)
		case !cfg.WithholdStartTLS:
			srv.TLSConfig = tlsCfg
		}
		go func() { _ = srv.Serve(l) }()
		return s, nil
	}
	// With a transcript: go-smtp serves pipes from the shims, over TLS of
	// their own (see transcript.go).
	s.outerC = tlsCfg
	s.innerC = &tls.Config{InsecureSkipVerify: true} // the shim's own session with go-smtp, in process
	innerServer := &tls.Config{Certificates: []tls.Certificate{*cert}}
	if !cfg.ImplicitTLS && !cfg.WithholdStartTLS {
		srv.TLSConfig = innerServer
	}
	s.pipes = &pipeListener{addr: ln.Addr(), ch: make(chan net.Conn), done: make(chan struct{})}
	s.raws = map[net.Conn]struct{}{}
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		_ = srv.Serve(s.pipes)
	}()
	s.shims.Add(1)
	go func() {
		defer s.shims.Done()
		s.accept(innerServer)
	}()
	return s, nil
}

// accept starts a shim for each client connection.
func (s *Server) accept(innerServer *tls.Config) {
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		raw := &recordingConn{Conn: c, s: s}
		tr := &Transcript{}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns++
		s.open++
		s.transcripts = append(s.transcripts, tr)
		s.raws[raw] = struct{}{}
		s.shims.Add(1)
		s.mu.Unlock()
		sh := &shim{s: s, raw: raw, tr: tr, outerC: s.outerC, innerC: s.innerC, ended: make(chan struct{})}
		go func() {
			defer s.shims.Done()
			sh.run(s.pipes, s.cfg.ImplicitTLS, innerServer)
			s.mu.Lock()
			delete(s.raws, raw)
			s.open--
			s.mu.Unlock()
		}()
	}
}

// NewServer starts a server for a test and closes it when the test ends.
func NewServer(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := Start(cfg)
	if err != nil {
		tb.Fatalf("mailsectest: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// Close stops the server and closes its connections.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	raws := make([]net.Conn, 0, len(s.raws))
	for c := range s.raws {
		raws = append(raws, c)
	}
	s.mu.Unlock()
	if s.pipes == nil {
		return s.srv.Close()
	}
	_ = s.tcp.Close()
	for _, c := range raws {
		_ = c.Close()
	}
	// Every shim has closed its pipe, so go-smtp's handlers end by
	// themselves; wait for them rather than close their connections
	// under them (go-smtp's Close races with a STARTTLS in progress).
	s.shims.Wait()
	// Let Serve return before Shutdown waits for go-smtp's handlers: a
	// Serve still accepting would add to the WaitGroup Shutdown waits on.
	_ = s.pipes.Close()
	<-s.served
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
		return err
	}
	return nil
}

// Messages returns the messages accepted so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.messages)
}

// Transactions counts MAIL commands received, accepted or not.
func (s *Server) Transactions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transactions
}

// Connections counts TCP connections accepted.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// WaitIdle waits until every connection the server accepted has been
// closed, so that Wire and Messages hold all a client sent before hanging
// up. It fails after timeout.
func (s *Server) WaitIdle(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		open := s.open
		s.mu.Unlock()
		if open == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mailsectest: %d connections still open after %v", open, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Wire returns every byte clients sent, as it crossed the network, across
// all connections: after a TLS handshake that is ciphertext, so a client
// could send anything there without Wire showing it. To assert that a
// client did not send something, use Received or Transcripts, which hold
// what the server read after decryption. Call WaitIdle first to be sure
// the server has read everything a client sent before closing.
func (s *Server) Wire() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.wire)
}

// Transport returns a new submission transport for this server that
// trusts its CA and verifies its certificate for "localhost". Set Auth or
// other fields before first use.
func (s *Server) Transport() *transport.Submission {
	mode := transport.StartTLS
	if s.cfg.ImplicitTLS {
		mode = transport.ImplicitTLS
	}
	return &transport.Submission{
		Addr:       s.Addr,
		Mode:       mode,
		ServerName: "localhost",
		TLSConfig:  &tls.Config{RootCAs: s.CA.Pool()},
		LocalName:  "client.test",
	}
}

// recordingListener captures what clients send.
type recordingListener struct {
	net.Listener
	s *Server
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.mu.Lock()
	l.s.conns++
	l.s.open++
	l.s.mu.Unlock()
	return &recordingConn{Conn: c, s: l.s}, nil
}

// recordingConn captures what the client sends (unless the server
// discards) and, without a shim, counts open connections.
type recordingConn struct {
	net.Conn
	s      *Server
	closed sync.Once
}

// CloseWrite half-closes the connection, where it can be.
func (c *recordingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.s.cfg.Discard {
		c.s.mu.Lock()
		c.s.wire = append(c.s.wire, p[:n]...)
		c.s.mu.Unlock()
	}
	return n, err
}

func (c *recordingConn) Close() error {
	if c.s.pipes == nil {
		c.closed.Do(func() {
			c.s.mu.Lock()
			c.s.open--
			c.s.mu.Unlock()
		})
	}
	return c.Conn.Close()
}

type backend struct{ s *Server }

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{s: b.s, conn: c}, nil
}

type session struct {
	s    *Server
	conn *smtp.Conn
	user string
	msg  *Message
}

func smtpErr(r *mailsec.Reply) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.EnhancedCode), Message: r.Text}
	if r.EnhancedCode == (mailsec.EnhancedCode{}) {
		e.EnhancedCode = smtp.NoEnhancedCode
	}
	return e
}

func (s *session) AuthMechanisms() []string {
	var m []string
	if s.s.cfg.Users != nil {
		m = append(m, "SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN")
	}
	if s.s.cfg.Tokens != nil {
		m = append(m, "XOAUTH2")
	}
	if len(s.s.cfg.Mechanisms) > 0 {
		m = slices.DeleteFunc(m, func(x string) bool { return !slices.Contains(s.s.cfg.Mechanisms, x) })
	}
	return m
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if !slices.Contains(s.AuthMechanisms(), mech) {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	check := func(user, pass string) error {
		want, ok := s.s.cfg.Users[user]
		if !ok || want != pass {
			return smtp.ErrAuthFailed
		}
		s.user = user
		return nil
	}
	switch mech {
	case "PLAIN":
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return smtp.ErrAuthFailed
			}
			return check(user, pass)
		}), nil
	case "LOGIN":
		return &loginServer{check: check}, nil
	case "CRAM-MD5":
		return newCRAMMD5Server(s.s.cfg.Hostname, s.s.cfg.Users, &s.user), nil
	case "SCRAM-SHA-256":
		return newSCRAMServer(s.s.cfg.Users, &s.user)
	case "XOAUTH2":
		return &xoauth2Server{tokens: s.s.cfg.Tokens, user: &s.user}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.s.mu.Lock()
	s.s.transactions++
	s.s.mu.Unlock()
	if s.s.cfg.Users != nil && s.user == "" {
		return smtp.ErrAuthRequired
	}
	if r := s.s.cfg.MailReply; r != nil {
		return smtpErr(r)
	}
	m := &Message{From: from, Helo: s.conn.Hostname(), User: s.user, Notify: map[string][]string{}, ORCPT: map[string]string{}}
	if opts != nil {
		m.RequireTLS, m.SMTPUTF8, m.Body = opts.RequireTLS, opts.UTF8, string(opts.Body)
		m.Return, m.EnvelopeID = string(opts.Return), opts.EnvelopeID
	}
	m.TLS = clientTLS(s.conn.Conn())
	s.msg = m
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.msg == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL first"}
	}
	if r := s.s.cfg.RcptReply[to]; r != nil {
		return smtpErr(r)
	}
	s.msg.To = append(s.msg.To, to)
	if opts != nil {
		for _, n := range opts.Notify {
			s.msg.Notify[to] = append(s.msg.Notify[to], string(n))
		}
		if opts.OriginalRecipient != "" {
			s.msg.ORCPT[to] = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
		}
	}
	return nil
}

func (s *session) Data(r io.Reader) error {
	if s.msg == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL first"}
	}
	var data []byte
	var err error
	if s.s.cfg.Discard {
		_, err = io.Copy(io.Discard, r)
	} else {
		data, err = io.ReadAll(r)
	}
	if err != nil {
		return err
	}
	if rep := s.s.cfg.DataReply; rep != nil {
		return smtpErr(rep)
	}
	s.msg.Data = data
	s.s.mu.Lock()
	if !s.s.cfg.Discard {
		s.s.messages = append(s.s.messages, *s.msg)
	}
	s.s.mu.Unlock()
	s.msg = nil
	return nil
}

func (s *session) Reset()        { s.msg = nil }
func (s *session) Logout() error { return nil }

// Header returns the value of the first header field named name in a
// message's data, unfolded, without decoding.
func (m Message) Header(name string) string {
	head, _, _ := bytes.Cut(m.Data, []byte("\r\n\r\n"))
	var out string
	found := false
	for _, line := range strings.Split(string(head), "\r\n") {
		if found {
			if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
				out += line
				continue
			}
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			out, found = strings.TrimLeft(v, " \t"), true
		}
	}
	return out
}

// String summarises a message for test failure output.
func (m Message) String() string {
	return fmt.Sprintf("from=<%s> to=%v %d bytes", m.From, m.To, len(m.Data))
}

var errUnexpected = errors.New("mailsectest: unexpected SASL step")
