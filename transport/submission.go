package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/syntax"
	"github.com/mailsec/mailsec/internal/typednil"
)

// Mode selects how TLS starts on a submission connection.
type Mode int

// TLS modes.
const (
	// Auto is implicit TLS on port 465 and STARTTLS on any other port.
	Auto Mode = iota
	// ImplicitTLS starts TLS as soon as TCP connects (RFC 8314, port 465).
	ImplicitTLS
	// StartTLS upgrades with STARTTLS (RFC 3207, port 587); TLS is
	// mandatory, never opportunistic.
	StartTLS
)

// ParseMode reads "auto", "implicit" or "starttls".
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{Auto, ImplicitTLS, StartTLS} {
		if m.String() == s {
			return m, nil
		}
	}
	return Auto, invalid("mode", s, `must be "auto", "implicit" or "starttls"`)
}

// MarshalText implements encoding.TextMarshaler.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler, for configuration files.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	if err == nil {
		*m = v
	}
	return err
}

func (m Mode) String() string {
	switch m {
	case Auto:
		return "auto"
	case ImplicitTLS:
		return "implicit"
	case StartTLS:
		return "starttls"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Dialer opens network connections; *net.Dialer implements it.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Submission is a mailsec.Transport that submits to one smarthost. Set its
// fields, then use it; do not change them afterwards. It is safe for
// concurrent use. Zero and nil fields mean the documented defaults, each of
// which is the secure choice.
type Submission struct {
	// Addr is the server's "host:port". Required.
	Addr string
	// Mode selects implicit TLS or STARTTLS. Auto (the zero value) means
	// implicit TLS on port 465, STARTTLS elsewhere.
	Mode Mode
	// ServerName is the name the certificate must be valid for. Empty
	// means the host part of Addr.
	ServerName string
	// TLSConfig is the base TLS configuration (RootCAs, client
	// certificates). Nil means system roots. Whatever it says, TLS 1.2 is
	// the minimum and verification follows each delivery's
	// mailsec.Security: InsecureSkipVerify here never weakens a Verified
	// delivery.
	//
	// New sessions resume earlier TLS sessions with the server (tickets
	// kept by the Submission, per security requirement; its
	// ClientSessionCache is not used), each checked again against the
	// requirement, unless SessionTicketsDisabled is set, or
	// VerifyPeerCertificate, which crypto/tls does not call on resumption.
	TLSConfig *tls.Config
	// Auth holds SMTP AUTH credentials; nil means no authentication.
	Auth *Auth
	// LocalName is the EHLO name. Empty means the machine's host name if it
	// is a valid domain name, else "localhost".
	LocalName string
	// Dialer opens TCP connections. Nil means a net.Dialer.
	Dialer Dialer
	// MaxConns bounds the sessions open at once; Deliver waits (within its
	// context) for a free one. Zero means 8.
	MaxConns int
	// MaxMessagesPerConn closes a session after this many messages. Zero
	// means 1000. (A server that limits messages per connection and says
	// so with 421, or drops the connection, costs nothing: the delivery
	// moves to a fresh session.)
	MaxMessagesPerConn int
	// IdleTimeout closes a session left unused this long. Zero means 30s.
	IdleTimeout time.Duration
	// HealthCheckAfter makes an idle session answer NOOP before reuse once
	// it has been idle this long. Zero means 2s.
	HealthCheckAfter time.Duration
	// DialTimeout bounds establishing a session (connecting, greeting,
	// STARTTLS, TLS handshake, EHLO, AUTH) even when the context has no
	// deadline. Zero means one minute.
	DialTimeout time.Duration
	// Logger receives debug records about sessions (never credentials).
	// Nil means none.
	Logger *slog.Logger

	once    sync.Once
	initErr error
	dc      *dialConfig
	pool    *pool
}

// Validate checks the configuration (address, mode, EHLO name,
// credentials, dialer, limits: none may be negative) without connecting,
// and returns the *mailsec.ConfigError that names the field at fault;
// Deliver returns the same error until the configuration is fixed.
// mailsec.NewSender calls it, so that a Sender is never built around a
// Submission that cannot work.
func (t *Submission) Validate() error { return t.init() }

func (t *Submission) init() error {
	t.once.Do(func() { t.initErr = t.setup() })
	return t.initErr
}

func (t *Submission) setup() error {
	if t.Addr == "" {
		return configError("Submission.Addr", "", `empty: set it to the smarthost's host and port, such as "smtp.example.com:465"`)
	}
	host, port, err := net.SplitHostPort(t.Addr)
	if err != nil || host == "" || port == "" {
		return configError("Submission.Addr", t.Addr, `must be host:port, such as "smtp.example.com:465" (implicit TLS) or "smtp.example.com:587" (STARTTLS)`)
	}
	dc := &dialConfig{addr: t.Addr, tlsConfig: t.TLSConfig, auth: t.Auth, dialer: t.Dialer, sessions: newSessionCache(t.TLSConfig)}
	dc.serverName = t.ServerName
	if dc.serverName == "" && t.TLSConfig != nil {
		dc.serverName = t.TLSConfig.ServerName
	}
	if dc.serverName == "" {
		dc.serverName = host
	}
	switch t.Mode {
	case Auto:
		n, err := net.LookupPort("tcp", port)
		dc.implicit = err == nil && n == 465
	case ImplicitTLS:
		dc.implicit = true
	case StartTLS:
	default:
		return configError("Submission.Mode", t.Mode.String(), "unknown mode: use Auto, ImplicitTLS or StartTLS")
	}
	name, err := localName("Submission.LocalName", t.LocalName)
	if err != nil {
		return err
	}
	for _, l := range []struct {
		field string
		v     int64
	}{
		{"Submission.MaxConns", int64(t.MaxConns)},
		{"Submission.MaxMessagesPerConn", int64(t.MaxMessagesPerConn)},
		{"Submission.IdleTimeout", int64(t.IdleTimeout)},
		{"Submission.HealthCheckAfter", int64(t.HealthCheckAfter)},
		{"Submission.DialTimeout", int64(t.DialTimeout)},
	} {
		if l.v < 0 {
			return configError(l.field, strconv.FormatInt(l.v, 10), "negative; zero means the default")
		}
	}
	dc.localName = name
	if t.Auth != nil {
		if err := t.Auth.validate(); err != nil {
			return err
		}
	}
	switch {
	case dc.dialer == nil:
		dc.dialer = &net.Dialer{Timeout: 30 * time.Second}
	case typednil.Is(dc.dialer):
		return configError("Submission.Dialer", "", "a nil pointer: leave the field nil for the default dialer")
	}
	dc.timeout = positiveDur(t.DialTimeout, time.Minute)
	t.dc = dc
	t.pool = &pool{
		host:        dc.serverName,
		max:         positive(t.MaxConns, 8),
		maxMessages: positive(t.MaxMessagesPerConn, 1000),
		idleTimeout: positiveDur(t.IdleTimeout, 30*time.Second),
		probeAfter:  positiveDur(t.HealthCheckAfter, 2*time.Second),
		idle:        map[string][]*session{},
		logger:      t.Logger,
	}
	return nil
}

func positive(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func positiveDur(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

// SharedTransaction reports that a Submission hands every delivery to its
// smarthost in one transaction, whatever the recipients' domains, so
// that a mailsec.Sender may give it the recipients of several domains in
// one delivery (see mailsec.Transport). They then share one ENVID, which
// only the smarthost sees in the envelope; the smarthost's own relaying
// decides what each domain's servers receive.
func (t *Submission) SharedTransaction() bool { return true }

// Deliver implements mailsec.Transport.
func (t *Submission) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	if err := t.init(); err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	host := t.dc.serverName
	if _, err := requirement(d.Security, host, nil); err != nil {
		return nil, err
	}
	switch {
	case d.RequireTLS && neverAuthenticates(d.Security.Level):
		return nil, refuse(host, errRequireTLS,
			"REQUIRETLS needs a verified TLS session; the requirement is "+d.Security.Level.String(), nil)
	case d.Security.Level == mailsec.Plaintext && t.Auth != nil && !t.dc.implicit:
		return nil, refuse(host, errPlaintextAuth, "credentials are never sent without TLS", nil)
	}

	key := poolKey(d.Security)
	for attempt := 0; ; attempt++ {
		var seen contact
		s, _, err := t.pool.get(ctx, key, func(ctx context.Context, key string) (*session, error) {
			hp, err := requirement(d.Security, host, nil)
			if err != nil {
				return nil, err
			}
			return t.dc.dial(ctx, hp.pol, key, &seen)
		})
		if err != nil {
			return t.unreached(d, &seen, err), err
		}
		res, err := t.transact(ctx, s, d)
		var retry *errRetry
		if errors.As(err, &retry) {
			if attempt < 2 {
				continue
			}
			err = retry.err
		}
		return res, err
	}
}

// unreached is the result of a delivery for which no session could be
// established: when a connection was tried, each recipient's one attempt,
// with what was seen of the server.
func (t *Submission) unreached(d *mailsec.Delivery, seen *contact, err error) *mailsec.DeliveryResult {
	if seen.addr == "" {
		return nil
	}
	a := []mailsec.Attempt{{Host: t.dc.serverName, Addr: seen.addr, PeerPin: seen.pin, Error: syntax.PeerText(err.Error())}}
	res := &mailsec.DeliveryResult{Recipients: make([]mailsec.RecipientResult, len(d.To))}
	for i, to := range d.To {
		res.Recipients[i] = mailsec.RecipientResult{Address: to, Attempts: a}
	}
	return res
}

// transact runs one transaction on s and returns s to the pool, also when
// the content writer panics (an application's reader, say): the session,
// now mid-DATA, is then dropped and its slot freed before the panic goes on.
func (t *Submission) transact(ctx context.Context, s *session, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	done := false
	defer func() {
		if !done {
			t.pool.put(s, false)
		}
	}()
	res, healthy, err := s.transact(ctx, d)
	done = true
	t.pool.put(s, healthy)
	return res, err
}

// Close closes idle sessions and makes later Deliver calls fail. Sessions
// in use are closed when their delivery ends.
func (t *Submission) Close() error {
	if err := t.init(); err != nil {
		return nil
	}
	t.pool.close()
	return nil
}
