package outbox_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// holdStage is where a holdServer holds a transaction.
type holdStage int

const (
	// holdNone holds nothing.
	holdNone holdStage = iota
	// holdBeforeData holds the reply to RCPT: the client has not sent
	// DATA, the server has nothing of the message.
	holdBeforeData
	// holdEndOfData holds the reply to the end of the message: the server
	// has taken the whole message (it counts as received, as a Postfix
	// that committed its queue file before replying), the client has not
	// had the 250.
	holdEndOfData
)

// holdServer is an SMTP server (STARTTLS, a certificate for localhost
// issued by a mailsectest CA) that can hold the first transactions it
// sees at a chosen stage, so that a test can kill the client there; and
// that counts the messages it takes by Message-ID.
type holdServer struct {
	Addr string
	CA   *mailsectest.CA

	stage   holdStage
	delay   time.Duration // after taking each message, before the 250
	held    chan string   // a held transaction's first recipient, as it is held
	release chan struct{} // closed to let held transactions go on

	mu       sync.Mutex
	toHold   int
	byRcpt   map[string]holdStage // holds once the transaction to each, where given
	received map[string]int       // Message-ID (without <>) -> times taken
	total    int
}

// newHoldServer starts a server that holds the first n transactions at
// stage, and delays every 250 to the end of a message by delay.
func newHoldServer(t testing.TB, stage holdStage, n int, delay time.Duration) *holdServer {
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
	h := &holdServer{Addr: ln.Addr().String(), CA: ca, stage: stage, toHold: n, delay: delay,
		held: make(chan string, 100), release: make(chan struct{}), received: map[string]int{}}
	srv := smtp.NewServer(h)
	srv.Domain = "localhost"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxRecipients = 100
	srv.MaxMessageBytes = 32 << 20
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go func() { _ = srv.Serve(ln) }()
	var once sync.Once
	t.Cleanup(func() {
		h.Release()
		once.Do(func() { _ = srv.Close() })
	})
	return h
}

// Release lets every held transaction, and every later one, go on.
func (h *holdServer) Release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.release:
	default:
		close(h.release)
	}
	h.toHold = 0
	h.byRcpt = nil
}

// waitHeld waits until a transaction is held and returns its first
// recipient.
func (h *holdServer) waitHeld(t testing.TB) string {
	t.Helper()
	select {
	case rcpt := <-h.held:
		return rcpt
	case <-time.After(30 * time.Second):
		t.Fatal("no transaction held within 30s")
		return ""
	}
}

// holdNext makes the server hold the next transaction at stage.
func (h *holdServer) holdNext(stage holdStage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stage, h.toHold = stage, 1
}

// holdFor makes the server hold the first transaction to each of the
// recipients given, at the stage given, besides those newHoldServer
// said.
func (h *holdServer) holdFor(stages map[string]holdStage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byRcpt = stages
}

// hold holds the transaction if it is one of those to hold.
func (h *holdServer) hold(stage holdStage, rcpt string) bool {
	h.mu.Lock()
	switch {
	case h.byRcpt[rcpt] == stage && stage != holdNone:
		delete(h.byRcpt, rcpt)
	case h.stage == stage && h.toHold > 0:
		h.toHold--
	default:
		h.mu.Unlock()
		return false
	}
	h.mu.Unlock()
	h.held <- rcpt
	<-h.release
	return true
}

// Received returns how many times each Message-ID was taken.
func (h *holdServer) Received() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.received))
	for k, v := range h.received {
		out[k] = v
	}
	return out
}

// Total counts the messages taken.
func (h *holdServer) Total() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total
}

func (h *holdServer) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &holdSession{h: h}, nil
}

type holdSession struct {
	h    *holdServer
	rcpt []string
}

func (s *holdSession) Reset()        { s.rcpt = nil }
func (s *holdSession) Logout() error { return nil }

func (s *holdSession) Mail(string, *smtp.MailOptions) error { return nil }

func (s *holdSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpt = append(s.rcpt, to)
	if s.h.hold(holdBeforeData, to) {
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "held"}
	}
	return nil
}

func (s *holdSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.h.mu.Lock()
	s.h.received[messageID(data)]++
	s.h.total++
	s.h.mu.Unlock()
	if len(s.rcpt) > 0 {
		s.h.hold(holdEndOfData, s.rcpt[0])
	}
	if s.h.delay > 0 {
		time.Sleep(s.h.delay)
	}
	return nil
}

// messageID returns a raw message's Message-ID without its angle
// brackets, "" when it has none.
func messageID(raw []byte) string {
	raw = bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return ""
	}
	return bareID(m.Header.Get("Message-Id"))
}

func bareID(id string) string {
	return strings.Trim(strings.TrimSpace(id), "<>")
}

// Transport returns a transport to the server that trusts its CA.
func (h *holdServer) Transport() *transport.Submission {
	return &transport.Submission{Addr: h.Addr, Mode: transport.StartTLS, ServerName: "localhost",
		TLSConfig: &tls.Config{RootCAs: h.CA.Pool()}, LocalName: "client.test"}
}
