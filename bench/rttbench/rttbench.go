// Package rttbench measures how many round trips each client waits for per
// message: every client talks to an in-process go-smtp server (mailsectest,
// which offers PIPELINING and CHUNKING, as Postfix does) through the same
// delay proxy (Proxy: 10 ms round-trip time by default, 5 ms each way,
// TCP handshake included), and each case reports its wall time per
// message in round-trip times, and the client flights the proxy counted
// per message.
//
// Warm cases send one message after another from one goroutine on a
// session opened before the clock starts. Cold cases open a new
// connection for every message (connect, greeting, TLS, EHLO, the
// transaction) with nothing cached: no pooled session, no TLS session
// ticket. In every case the clock runs until the server has accepted the
// message; ending the session (QUIT) is not timed, for any client.
//
// The functions live here, outside a _test.go file, so that `go test
// -bench` (rtt_test.go in the module root) and the rtt program (cmd/rtt)
// run the same code.
package rttbench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/wneessen/go-mail"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bench/submitbench"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// DefaultRTT is the round-trip time the project's targets are stated for.
const DefaultRTT = 10 * time.Millisecond

// Sink is one server and the delay proxy in front of it.
type Sink struct {
	Server *mailsectest.Server
	Proxy  *Proxy
	// Implicit says the server speaks TLS from the first byte (port 465
	// style); else it offers STARTTLS (port 587 style).
	Implicit bool
}

// Env holds a STARTTLS sink and an implicit-TLS sink, each behind its own
// proxy with the same delay; every client of a mode goes through that
// mode's proxy.
type Env struct {
	StartTLS, ImplicitTLS Sink
}

// Start starts the two servers and their proxies, with the given
// round-trip time.
func Start(rtt time.Duration) (*Env, error) {
	e := &Env{}
	for _, s := range []*Sink{&e.StartTLS, &e.ImplicitTLS} {
		s.Implicit = s == &e.ImplicitTLS
		srv, err := mailsectest.Start(mailsectest.Config{Discard: true, ImplicitTLS: s.Implicit})
		if err != nil {
			_ = e.Close()
			return nil, err
		}
		s.Server = srv
		p, err := NewProxy(srv.Addr, rtt/2)
		if err != nil {
			_ = e.Close()
			return nil, err
		}
		s.Proxy = p
	}
	return e, nil
}

// Close stops the proxies and the servers.
func (e *Env) Close() error {
	var errs []error
	for _, s := range []*Sink{&e.StartTLS, &e.ImplicitTLS} {
		if s.Proxy != nil {
			errs = append(errs, s.Proxy.Close())
		}
		if s.Server != nil {
			errs = append(errs, s.Server.Close())
		}
	}
	return errors.Join(errs...)
}

// TLSConfig returns a client configuration that trusts only the sink's CA
// and verifies its certificate for "localhost".
func (s *Sink) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.Server.CA.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// Result is what one case measured.
type Result struct {
	Msgs    int           // messages sent in the timed part
	Wall    time.Duration // the timed part: until each message was accepted
	Flights int           // client flights the proxy counted in the timed part
	Turns   int           // server turns the proxy counted in the timed part
	Conns   int           // connections the proxy accepted in the timed part
	RTT     time.Duration // the proxy's round-trip time
}

// RTTsPerMsg is the wall time per message in round-trip times: what an
// application waits for each message, in units of the network's latency.
func (r Result) RTTsPerMsg() float64 {
	return r.Wall.Seconds() / float64(r.Msgs) / r.RTT.Seconds()
}

// RoundTripsPerMsg is the round trips per message the proxy counted: the
// server turns the client waited for (Proxy.Turns), plus one per new
// connection for its TCP handshake. It does not depend on timing, nor on
// the CPU either side spends.
func (r Result) RoundTripsPerMsg() float64 { return float64(r.Turns+r.Conns) / float64(r.Msgs) }

// FlightsPerMsg is the client flights per message the proxy counted.
func (r Result) FlightsPerMsg() float64 { return float64(r.Flights) / float64(r.Msgs) }

// Case is one client in one situation.
type Case struct {
	Name string
	// Target is the most round trips per message the project accepts; 0
	// for the clients that are only reported.
	Target float64
	// Run sends n messages and measures them.
	Run func(ctx context.Context, n int) (Result, error)
}

// idleFirst makes run wait until the proxy in front of s relays no
// connection before it starts, so one case's end is never counted in
// the next.
func idleFirst(s *Sink, run func(context.Context, int) (Result, error)) func(context.Context, int) (Result, error) {
	return func(ctx context.Context, n int) (Result, error) {
		if err := s.Proxy.WaitIdle(ctx); err != nil {
			return Result{}, err
		}
		return run(ctx, n)
	}
}

// Cases returns every case, mailsec's first in each group.
func (e *Env) Cases() []Case {
	st, it := &e.StartTLS, &e.ImplicitTLS
	return []Case{
		{"mailsec warm", 1.2, idleFirst(st, st.MailsecWarm)},
		{"go-smtp warm", 0, idleFirst(st, st.GoSMTPWarm)},
		{"go-mail warm", 0, idleFirst(st, st.GoMailWarm)},
		{"mailsec cold STARTTLS", 7, idleFirst(st, st.MailsecCold)},
		{"go-smtp cold STARTTLS", 0, idleFirst(st, st.GoSMTPCold)},
		{"go-mail cold STARTTLS", 0, idleFirst(st, st.GoMailCold)},
		{"mailsec cold implicit TLS", 5, idleFirst(it, it.MailsecCold)},
		{"go-smtp cold implicit TLS", 0, idleFirst(it, it.GoSMTPCold)},
		{"go-mail cold implicit TLS", 0, idleFirst(it, it.GoMailCold)},
	}
}

// meter measures a timed part of a case.
type meter struct {
	s       *Sink
	res     Result
	started time.Time
	flights int
	turns   int
	conns   int
	txns    int
	running bool
}

func (s *Sink) meter() *meter {
	return &meter{s: s, res: Result{RTT: s.Proxy.RTT()}, txns: s.Server.Transactions()}
}

// start starts (or resumes) the clock.
func (m *meter) start() {
	m.flights, m.turns, m.conns = m.s.Proxy.Flights(), m.s.Proxy.Turns(), m.s.Proxy.Connections()
	m.started = time.Now()
	m.running = true
}

// startCold waits until the proxy relays no connection (the previous
// message's has ended), then starts the clock.
func (m *meter) startCold(ctx context.Context) error {
	if err := m.s.Proxy.WaitIdle(ctx); err != nil {
		return err
	}
	m.start()
	return nil
}

// stop stops the clock after one message.
func (m *meter) stop() {
	m.res.Wall += time.Since(m.started)
	m.res.Flights += m.s.Proxy.Flights() - m.flights
	m.res.Turns += m.s.Proxy.Turns() - m.turns
	m.res.Conns += m.s.Proxy.Connections() - m.conns
	m.res.Msgs++
	m.running = false
}

// result checks that the server counted a transaction for each message.
func (m *meter) result(n int) (Result, error) {
	if m.res.Msgs != n {
		return m.res, fmt.Errorf("measured %d messages, want %d", m.res.Msgs, n)
	}
	if got := m.s.Server.Transactions() - m.txns; got < n {
		return m.res, fmt.Errorf("the server counted %d MAIL commands, want at least %d", got, n)
	}
	return m.res, nil
}

func (s *Sink) submission() *transport.Submission {
	t := s.Server.Transport()
	t.Addr = s.Proxy.Addr
	return t
}

func sendMailsec(ctx context.Context, snd *mailsec.Sender, m *mailsec.Message) error {
	rec, err := snd.Send(ctx, m)
	if err != nil {
		return err
	}
	if len(rec.Recipients) != 1 || !rec.Recipients[0].Accepted {
		return fmt.Errorf("receipt without an accepted recipient: %+v", rec.Recipients)
	}
	return nil
}

// MailsecWarm sends n messages with one mailsec.Sender from one
// goroutine, on the session a first, untimed Send opened.
func (s *Sink) MailsecWarm(ctx context.Context, n int) (Result, error) {
	t := s.submission()
	defer t.Close()
	snd, err := mailsec.NewSender(t, nil)
	if err != nil {
		return Result{}, err
	}
	msg := submitbench.MailsecMessage()
	if err := sendMailsec(ctx, snd, msg); err != nil {
		return Result{}, fmt.Errorf("warm-up: %w", err)
	}
	m := s.meter()
	for range n {
		m.start()
		if err := sendMailsec(ctx, snd, msg); err != nil {
			return Result{}, err
		}
		m.stop()
	}
	return m.result(n)
}

// MailsecCold sends n messages, each with a new transport.Submission and
// Sender: a new connection and a full TLS handshake per message.
func (s *Sink) MailsecCold(ctx context.Context, n int) (Result, error) {
	msg := submitbench.MailsecMessage()
	m := s.meter()
	for range n {
		t := s.submission()
		snd, err := mailsec.NewSender(t, nil)
		if err != nil {
			return Result{}, err
		}
		if err := m.startCold(ctx); err != nil {
			return Result{}, err
		}
		err = sendMailsec(ctx, snd, msg)
		if err == nil {
			m.stop()
		}
		_ = t.Close()
		if err != nil {
			return Result{}, err
		}
	}
	return m.result(n)
}

// dialGoSMTP opens a go-smtp client session: STARTTLS or implicit TLS,
// verified against the sink's CA.
func (s *Sink) dialGoSMTP() (*smtp.Client, error) {
	var c *smtp.Client
	var err error
	if s.Implicit {
		c, err = smtp.DialTLS(s.Proxy.Addr, s.TLSConfig())
	} else {
		c, err = smtp.DialStartTLS(s.Proxy.Addr, s.TLSConfig())
	}
	if err != nil {
		return nil, err
	}
	if _, ok := c.TLSConnectionState(); !ok {
		_ = c.Close()
		return nil, errors.New("go-smtp: no TLS")
	}
	return c, nil
}

// goSMTPSend is one transaction with go-smtp's client: MAIL, RCPT, DATA,
// the pre-built message, end of data, each waiting for its reply.
func goSMTPSend(c *smtp.Client) error {
	if err := c.Mail(submitbench.FromAddr, nil); err != nil {
		return err
	}
	if err := c.Rcpt(submitbench.To, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(submitbench.Raw); err != nil {
		return err
	}
	return w.Close()
}

// GoSMTPWarm sends n messages with a bare go-smtp client on one
// connection (dialled, and used for one message, before the clock starts).
func (s *Sink) GoSMTPWarm(_ context.Context, n int) (Result, error) {
	c, err := s.dialGoSMTP()
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	if err := goSMTPSend(c); err != nil {
		return Result{}, fmt.Errorf("warm-up: %w", err)
	}
	m := s.meter()
	for range n {
		m.start()
		if err := goSMTPSend(c); err != nil {
			return Result{}, err
		}
		m.stop()
	}
	_ = c.Quit()
	return m.result(n)
}

// GoSMTPCold sends n messages with go-smtp, dialling for each.
func (s *Sink) GoSMTPCold(ctx context.Context, n int) (Result, error) {
	m := s.meter()
	for range n {
		if err := m.startCold(ctx); err != nil {
			return Result{}, err
		}
		c, err := s.dialGoSMTP()
		if err != nil {
			return Result{}, err
		}
		err = goSMTPSend(c)
		if err == nil {
			m.stop()
			err = c.Quit()
		}
		_ = c.Close()
		if err != nil {
			return Result{}, err
		}
	}
	return m.result(n)
}

// goMailClient returns a go-mail client for the sink, through the proxy,
// with mandatory verified STARTTLS or implicit TLS.
func (s *Sink) goMailClient() (*mail.Client, error) {
	host, p, err := net.SplitHostPort(s.Proxy.Addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return nil, err
	}
	opts := []mail.Option{mail.WithPort(port), mail.WithTLSConfig(s.TLSConfig())}
	if s.Implicit {
		opts = append(opts, mail.WithSSL())
	} else {
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	}
	return mail.NewClient(host, opts...)
}

// GoMailWarm sends n messages, each a new mail.Msg, with one go-mail
// client on one connection (dialled before the clock starts).
func (s *Sink) GoMailWarm(ctx context.Context, n int) (Result, error) {
	c, err := s.goMailClient()
	if err != nil {
		return Result{}, err
	}
	if err := c.DialWithContext(ctx); err != nil {
		return Result{}, err
	}
	defer c.Close()
	send := func() error {
		msg, err := submitbench.GoMailMessage()
		if err != nil {
			return err
		}
		return c.Send(msg)
	}
	if err := send(); err != nil {
		return Result{}, fmt.Errorf("warm-up: %w", err)
	}
	m := s.meter()
	for range n {
		m.start()
		if err := send(); err != nil {
			return Result{}, err
		}
		m.stop()
	}
	return m.result(n)
}

// GoMailCold sends n messages with go-mail, a new client and connection
// for each: DialWithContext and Send, timed; Close (QUIT), not timed.
func (s *Sink) GoMailCold(ctx context.Context, n int) (Result, error) {
	m := s.meter()
	for range n {
		msg, err := submitbench.GoMailMessage()
		if err != nil {
			return Result{}, err
		}
		c, err := s.goMailClient()
		if err != nil {
			return Result{}, err
		}
		if err := m.startCold(ctx); err != nil {
			return Result{}, err
		}
		if err := c.DialWithContext(ctx); err != nil {
			return Result{}, err
		}
		err = c.Send(msg)
		if err == nil {
			m.stop()
		}
		_ = c.Close()
		if err != nil {
			return Result{}, err
		}
	}
	return m.result(n)
}
