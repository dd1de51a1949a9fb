// Package submitbench holds the submission benchmarks that compare
// mailsec with the clients an application would otherwise use, on the same
// work in the same process: the same ~2 KB text message, sent to the same
// in-process STARTTLS sink (mailsectest, discarding what it receives),
// over TLS verified against the sink's CA.
//
// The benchmark functions live here, outside a _test.go file, so that both
// `go test -bench` (bench_test.go in the module root wraps them) and the
// ratios program (cmd/ratios, which runs them with testing.Benchmark) use
// the very same code.
//
// Every benchmark reports "msgs/s" (b.N divided by the timed duration) and
// "cpu-µs/msg" (the CPU time the whole process, client and sink, used in
// the timed part, per message; where the platform can say), and fails
// unless the sink counted at least b.N MAIL commands while it ran.
package submitbench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/wneessen/go-mail"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bench/internal/cputime"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// The message every benchmark sends: one author, one recipient, a fixed
// subject and Body. The addresses are only envelope and header text; the
// sink accepts anything.
const (
	FromName = "Example App"
	FromAddr = "noreply@example.com"
	To       = "ann@example.org"
	Subject  = "Your account summary for this week"

	// Concurrency is the number of goroutines that call Send at once in
	// Mailsec64.
	Concurrency = 64
	// BatchSize is the number of messages GoMailBatch sends per connection.
	BatchSize = 100

	serverName = "localhost" // the name the sink's certificate is issued for
	bodyBytes  = 1800        // with the headers, each client's message is about 2 KB
)

// Body is the text body every benchmark sends: plain ASCII prose in lines
// of at most 72 characters, generated once from a fixed seed, so every run
// of every benchmark sends the same bytes of body.
var Body = makeBody(bodyBytes)

// Raw is the complete message, headers and body with CRLF line endings,
// that GoSMTPReuse writes after DATA: what mailsec and go-mail build for
// each message, built here once (fixed Date and Message-ID).
var Raw = makeRaw()

// makeBody returns about n bytes of deterministic text: words drawn by a
// fixed-seed xorshift generator, sentences of 6 to 17 words, lines wrapped
// at 72 columns, a blank line between paragraphs of 5 lines, ending in a
// newline.
func makeBody(n int) string {
	words := strings.Fields(`account activity summary week invoice payment
		received thank you for your order shipment tracking number delivery
		estimated update password security notice sign in device location
		browser settings preferences notification team support contact reply
		question receipt total amount balance statement period review details
		schedule reminder appointment confirmed change cancel renew plan
		subscription storage usage limit report export download available
		link expires hours please ignore this message if you did not request`)
	x := uint32(2463534242)
	rnd := func(k int) int {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		return int(x % uint32(k))
	}
	var b strings.Builder
	line, lines := 0, 0
	left := 0 // words left in the sentence
	for b.Len() < n {
		w := words[rnd(len(words))]
		if left == 0 {
			w = strings.ToUpper(w[:1]) + w[1:]
			left = 6 + rnd(12)
		}
		left--
		if left == 0 {
			w += "."
		}
		if line > 0 && line+1+len(w) > 72 {
			b.WriteByte('\n')
			line = 0
			lines++
			if lines%5 == 0 {
				b.WriteByte('\n')
			}
		}
		if line > 0 {
			b.WriteByte(' ')
			line++
		}
		b.WriteString(w)
		line += len(w)
	}
	if left > 0 {
		b.WriteByte('.')
	}
	b.WriteByte('\n')
	return b.String()
}

func makeRaw() []byte {
	var b bytes.Buffer
	b.WriteString("From: " + FromName + " <" + FromAddr + ">\r\n")
	b.WriteString("To: <" + To + ">\r\n")
	b.WriteString("Subject: " + Subject + "\r\n")
	b.WriteString("Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n")
	b.WriteString("Message-ID: <20060102150405.0123456789abcdef@example.com>\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	b.WriteString("Content-Transfer-Encoding: 7bit\r\n")
	b.WriteString("\r\n")
	b.WriteString(strings.ReplaceAll(Body, "\n", "\r\n"))
	return b.Bytes()
}

// MailsecMessage returns the message as a mailsec.Message. Date and
// Message-ID are left to the Sender, as an application would.
func MailsecMessage() *mailsec.Message {
	return &mailsec.Message{
		From:    FromName + " <" + FromAddr + ">",
		To:      []string{To},
		Subject: Subject,
		Text:    Body,
	}
}

// GoMailMessage returns the message as a go-mail Msg, built the way an
// application builds one per message.
func GoMailMessage() (*mail.Msg, error) {
	m := mail.NewMsg()
	if err := m.FromFormat(FromName, FromAddr); err != nil {
		return nil, err
	}
	if err := m.To(To); err != nil {
		return nil, err
	}
	m.Subject(Subject)
	m.SetBodyString(mail.TypeTextPlain, Body)
	return m, nil
}

// Env is the shared state of the benchmarks: one sink for every benchmark
// in the process.
type Env struct {
	// Sink is the in-process STARTTLS server (mailsectest, Discard: true).
	Sink *mailsectest.Server

	host string
	port int

	mu      sync.Mutex
	lastErr error
}

// Start starts the sink.
func Start() (*Env, error) {
	srv, err := mailsectest.Start(mailsectest.Config{Discard: true})
	if err != nil {
		return nil, err
	}
	host, p, err := net.SplitHostPort(srv.Addr)
	if err != nil {
		_ = srv.Close()
		return nil, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		_ = srv.Close()
		return nil, err
	}
	return &Env{Sink: srv, host: host, port: port}, nil
}

// Close stops the sink.
func (e *Env) Close() error { return e.Sink.Close() }

// TakeError returns, and forgets, the reason the last failed benchmark
// gave. testing.Benchmark discards a benchmark's log, so a program that
// runs them that way asks here why a result is empty.
func (e *Env) TakeError() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	err := e.lastErr
	e.lastErr = nil
	return err
}

func (e *Env) fatal(b *testing.B, err error) {
	b.Helper()
	e.mu.Lock()
	e.lastErr = err
	e.mu.Unlock()
	b.Fatal(err)
}

// TLSConfig returns a client configuration that trusts only the sink's CA
// and verifies its certificate for "localhost".
func (e *Env) TLSConfig() *tls.Config {
	return &tls.Config{
		RootCAs:    e.Sink.CA.Pool(),
		ServerName: serverName,
		MinVersion: tls.VersionTLS12,
	}
}

// Case is one benchmark.
type Case struct {
	Name string
	F    func(*testing.B)
}

// Pool holds the transport.Submission pool settings Mailsec uses. The
// zero value keeps the library's defaults (MaxConns 8, MaxMessagesPerConn
// 100).
type Pool struct {
	MaxConns           int
	MaxMessagesPerConn int
}

func (p Pool) apply(t *transport.Submission) {
	t.MaxConns = p.MaxConns
	t.MaxMessagesPerConn = p.MaxMessagesPerConn
}

// String describes the settings, "defaults" for the zero value.
func (p Pool) String() string {
	var parts []string
	if p.MaxConns > 0 {
		parts = append(parts, "MaxConns="+strconv.Itoa(p.MaxConns))
	}
	if p.MaxMessagesPerConn > 0 {
		parts = append(parts, "MaxMessagesPerConn="+strconv.Itoa(p.MaxMessagesPerConn))
	}
	if len(parts) == 0 {
		return "defaults"
	}
	return strings.Join(parts, ", ")
}

// Cases returns the four benchmarks, in the order the ratios table shows
// them, with pool settings p for Mailsec64.
func (e *Env) Cases(p Pool) []Case {
	return []Case{
		{"Mailsec64", e.Mailsec(Concurrency, p)},
		{"GoSMTPReuse", e.GoSMTPReuse},
		{"GoMailPerMessage", e.GoMailPerMessage},
		{"GoMailBatch", e.GoMailBatch},
	}
}

// mark is where a benchmark's timed part started.
type mark struct {
	transactions int
	cpu          time.Duration
	cpuOK        bool
}

// start is called after a benchmark's set-up: it notes the sink's count
// and the CPU time used so far, and starts the clock.
func (e *Env) start(b *testing.B) mark {
	b.ReportAllocs()
	m := mark{transactions: e.Sink.Transactions()}
	m.cpu, m.cpuOK = cputime.Process()
	b.ResetTimer()
	return m
}

// finish stops the clock, checks that the sink saw at least b.N MAIL
// commands since start, and reports msgs/s and cpu-µs/msg.
func (e *Env) finish(b *testing.B, m mark) {
	b.Helper()
	b.StopTimer()
	cpu, cpuOK := cputime.Process()
	if got := e.Sink.Transactions() - m.transactions; got < b.N {
		e.fatal(b, fmt.Errorf("the sink counted %d MAIL commands, want at least b.N = %d", got, b.N))
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if cpuOK && m.cpuOK {
		b.ReportMetric((cpu-m.cpu).Seconds()*1e6/float64(b.N), "cpu-µs/msg")
	}
}

// Mailsec returns a benchmark in which workers goroutines share one
// mailsec.Sender over the sink's submission transport (STARTTLS, verified
// against the sink's CA, pool settings p) and call Send until b.N
// messages have gone, each to one recipient.
//
// Before the clock starts, one Send per worker fills the pool, as it is
// filled in an application that has been running: the benchmark measures
// steady-state throughput, connection reuse included (sessions are still
// replaced every MaxMessagesPerConn messages, inside the timing).
func (e *Env) Mailsec(workers int, p Pool) func(*testing.B) {
	return func(b *testing.B) {
		t := e.Sink.Transport()
		p.apply(t)
		s, err := mailsec.NewSender(t, nil)
		if err != nil {
			e.fatal(b, err)
		}
		defer t.Close()
		ctx := context.Background()
		m := MailsecMessage() // read, never modified, by Send: safe to share
		send := func() error {
			rec, err := s.Send(ctx, m)
			if err != nil {
				return err
			}
			if len(rec.Recipients) != 1 || !rec.Recipients[0].Accepted {
				return fmt.Errorf("receipt without an accepted recipient: %+v", rec.Recipients)
			}
			return nil
		}
		run := func(n int64) error {
			var next atomic.Int64
			var mu sync.Mutex
			var first error
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for next.Add(1) <= n {
						if err := send(); err != nil {
							mu.Lock()
							if first == nil {
								first = err
							}
							mu.Unlock()
							next.Store(n) // stop the others
							return
						}
					}
				})
			}
			wg.Wait()
			return first
		}
		if err := run(int64(workers)); err != nil {
			e.fatal(b, fmt.Errorf("warm-up: %w", err))
		}

		before := e.start(b)
		if err := run(int64(b.N)); err != nil {
			e.fatal(b, err)
		}
		e.finish(b, before)
	}
}

// GoSMTPReuse is the floor: a bare go-smtp client on one STARTTLS
// connection (verified against the sink's CA), dialled before the clock
// starts, sending b.N messages one after another: MAIL, RCPT, DATA, the
// pre-built Raw bytes, end of data.
func (e *Env) GoSMTPReuse(b *testing.B) {
	c, err := smtp.DialStartTLS(e.Sink.Addr, e.TLSConfig())
	if err != nil {
		e.fatal(b, err)
	}
	defer c.Close()
	if _, ok := c.TLSConnectionState(); !ok {
		e.fatal(b, errors.New("go-smtp: no TLS after STARTTLS"))
	}

	before := e.start(b)
	for range b.N {
		if err := c.Mail(FromAddr, nil); err != nil {
			e.fatal(b, err)
		}
		if err := c.Rcpt(To, nil); err != nil {
			e.fatal(b, err)
		}
		w, err := c.Data()
		if err != nil {
			e.fatal(b, err)
		}
		if _, err := w.Write(Raw); err != nil {
			e.fatal(b, err)
		}
		if err := w.Close(); err != nil {
			e.fatal(b, err)
		}
	}
	e.finish(b, before)
	_ = c.Quit()
}

// goMailClient returns a go-mail client for the sink with mandatory,
// verified STARTTLS: what a handler builds.
func (e *Env) goMailClient() (*mail.Client, error) {
	return mail.NewClient(e.host,
		mail.WithPort(e.port),
		mail.WithTLSPolicy(mail.TLSMandatory),
		mail.WithTLSConfig(e.TLSConfig()),
	)
}

// GoMailPerMessage is what a web handler does with go-mail today: for
// every message, build the Msg, a new Client, and DialAndSend it (connect,
// STARTTLS, full handshake, EHLO, send, QUIT), one message after another.
func (e *Env) GoMailPerMessage(b *testing.B) {
	before := e.start(b)
	for range b.N {
		m, err := GoMailMessage()
		if err != nil {
			e.fatal(b, err)
		}
		c, err := e.goMailClient()
		if err != nil {
			e.fatal(b, err)
		}
		if err := c.DialAndSend(m); err != nil {
			e.fatal(b, err)
		}
	}
	e.finish(b, before)
}

// GoMailBatch is go-mail at its best: one Client, and DialAndSend with
// BatchSize messages at a time, so each connection (and handshake) carries
// BatchSize messages, sent one after another.
func (e *Env) GoMailBatch(b *testing.B) {
	c, err := e.goMailClient()
	if err != nil {
		e.fatal(b, err)
	}
	msgs := make([]*mail.Msg, 0, BatchSize)

	before := e.start(b)
	for left := b.N; left > 0; {
		msgs = msgs[:0]
		for range min(left, BatchSize) {
			m, err := GoMailMessage()
			if err != nil {
				e.fatal(b, err)
			}
			msgs = append(msgs, m)
		}
		if err := c.DialAndSend(msgs...); err != nil {
			e.fatal(b, err)
		}
		left -= len(msgs)
	}
	e.finish(b, before)
}

// MessageSizes returns the size in bytes of the message (headers and
// body, CRLF line endings) as each client builds it: mailsec (through a
// recording transport), go-mail and the pre-built Raw that go-smtp sends.
func MessageSizes() (mailsecSize, goMailSize, rawSize int, err error) {
	rt := &mailsectest.RecordingTransport{}
	s, err := mailsec.NewSender(rt, nil)
	if err != nil {
		return 0, 0, 0, err
	}
	if _, err := s.Send(context.Background(), MailsecMessage()); err != nil {
		return 0, 0, 0, err
	}
	d := rt.Deliveries()
	if len(d) != 1 {
		return 0, 0, 0, fmt.Errorf("mailsec made %d deliveries, want 1", len(d))
	}
	m, err := GoMailMessage()
	if err != nil {
		return 0, 0, 0, err
	}
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		return 0, 0, 0, err
	}
	return len(d[0].Data), buf.Len(), len(Raw), nil
}
