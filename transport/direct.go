package transport

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/idna"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/netguard"
	"github.com/mailsec/mailsec/internal/syntax"
	"github.com/mailsec/mailsec/internal/typednil"
	"github.com/mailsec/mailsec/transport/mtasts"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

// Direct is a mailsec.Transport that delivers to each recipient domain's
// MX hosts itself, without a smarthost, and defends the hop the way RFC
// 7672 (DANE), RFC 8461 (MTA-STS) and RFC 8689 (REQUIRETLS) describe. Set
// its fields, then use it; do not change them afterwards. It is safe for
// concurrent use.
//
// What each delivery's mailsec.Security level means here is documented on
// the levels; the default, mailsec.Verified, is: DANE when the MX host has
// usable DNSSEC-authenticated TLSA records, else the domain's MTA-STS
// policy when it is in enforce mode, else a certificate that verifies for
// the MX host name; nothing is sent to a host that meets none of them.
// Every MX host skipped, and why, is recorded in the Receipt's connection
// notes; a recipient no host took keeps every host and address tried, with
// what was seen there (the certificate's key, the TLSA records, the
// MTA-STS policy), as its mailsec.Failure's attempts.
//
// A host that fails a delivery for now (no connection, a 4xx to MAIL or to
// the message) leaves it to the next; one whose verdict on the message was
// lost (OutcomeUnknown: the connection broke after the end of the message
// went out, or the server's replies came out of turn) ends the delivery
// there, as temporary, since that host may
// have the message and another would make a second copy. Each recipient's
// own RCPT answer is final for the delivery.
//
// Sessions are kept for reuse, as a Submission keeps them: a delivery to
// an MX host that Direct already has an idle session with takes that
// session, without a new TCP connection, TLS handshake or EHLO, when, and
// only when, the delivery's requirement for that host is the one the
// session was established under: the same recipient domain, MX host and
// address, the same name sent as SNI and checked, the same level and what
// it made of the host (DANE with the same TLSA records and names, the
// domain's MTA-STS policy with the same id and text, WebPKI for the MX host
// name, the same pins), and the same REQUIRETLS and TLS-Required: No. The
// DNS and the MTA-STS policy are consulted for every delivery as before;
// a change in either leads to a new session, and the old one is left to
// its idle timeout. A reused session's Receipt shows Reused and the same
// evidence (verification, certificate key, TLSA record, policy) as when it
// was established; it is counted against MaxSessions as a new one is, and
// reported for TLS reporting once, when it was established. MaxConnsPerHost,
// MaxMessagesPerConn, IdleTimeout and HealthCheckAfter bound the sessions
// as Submission's fields of the same names do; Close closes the idle ones.
type Direct struct {
	// Resolver looks up MX, address, TXT and TLSA records. Required. DANE
	// and REQUIRETLS rest on its Authentic bit: use a dns.Client
	// pointed at a validating resolver on the same host.
	Resolver dns.Resolver
	// MTASTS discovers, fetches and caches MTA-STS policies. Nil means a
	// client using Resolver, TLSConfig, Dialer and AllowPrivate with an
	// in-memory cache (policies are then fetched again after a restart;
	// give it an mtasts.DirCache to keep them). A client given here must
	// share Direct's configuration, or Validate and every delivery fail
	// with a *mailsec.ConfigError: the same Resolver (every name of a
	// delivery is resolved through one resolver), the same TLSConfig
	// pointer, or both nil (one trust configuration for MX hosts and
	// policy hosts: a private CA that vouches for the MX hosts vouches for
	// the policy host too), and the same AllowPrivate.
	MTASTS *mtasts.Client
	// TLSConfig is the base TLS configuration (RootCAs for the WebPKI).
	// Nil means system roots. Verification follows each delivery's level
	// whatever it says.
	TLSConfig *tls.Config
	// LocalName is the EHLO name; it should be this host's public name
	// with matching forward and reverse DNS. Empty means the machine's
	// host name if it is a valid domain name, else "localhost".
	LocalName string
	// Dialer opens TCP connections, to MX hosts and, when MTASTS is nil,
	// to MTA-STS policy hosts. Nil means a net.Dialer with a 30-second
	// timeout.
	Dialer Dialer
	// AllowPrivate lets Direct connect to addresses that are not global
	// unicast: loopback, private (RFC 1918), shared (100.64.0.0/10),
	// link-local (169.254.169.254, the cloud metadata address, among
	// them), unspecified, multicast, broadcast, reserved and
	// documentation ranges, unique local and site-local IPv6, and IPv4
	// addresses of those kinds inside IPv6 (IPv4-mapped, 6to4, NAT64).
	// By default an MX host or policy host that resolves to one is not
	// connected to (a *mailsec.AddressError, permanent), because a
	// recipient domain, and so its DNS, is chosen by whoever fills in an
	// address form. The check is made on the address the connection is
	// actually made to: a net.Dialer's Control function, or, for another
	// Dialer, the connection's peer address (a Dialer that goes through a
	// proxy is checked on the proxy's address, so such a proxy must
	// refuse these destinations itself). Set it for tests and for
	// deployments whose MX hosts are internal.
	AllowPrivate bool
	// MaxMXHosts bounds the MX hosts considered for one recipient
	// domain in one delivery, in preference order; the others are not
	// looked up. Zero means DefaultMaxMXHosts.
	MaxMXHosts int
	// MaxAddresses bounds the connection attempts for one recipient
	// domain in one delivery, across its MX hosts and their addresses
	// (Postfix's smtp_mx_address_limit). Addresses refused as not
	// global do not count; nothing is dialled for them. Zero means
	// DefaultMaxAddresses.
	MaxAddresses int
	// MaxSessions bounds the SMTP sessions (connections that got through
	// the greeting, EHLO and TLS) for one recipient domain in one
	// delivery (Postfix's smtp_mx_session_limit). Zero means
	// DefaultMaxSessions.
	MaxSessions int
	// MaxConnsPerHost bounds the sessions open at once with one MX host,
	// across deliveries and requirements; a delivery waits (within its
	// context) for a free one. Zero means DefaultMaxConnsPerHost.
	MaxConnsPerHost int
	// MaxMessagesPerConn closes a session after this many messages. Zero
	// means 1000.
	MaxMessagesPerConn int
	// IdleTimeout closes a session left unused this long. Zero means 30s.
	IdleTimeout time.Duration
	// HealthCheckAfter makes an idle session answer NOOP before reuse once
	// it has been idle this long. Zero means 2s.
	HealthCheckAfter time.Duration
	// Port is the SMTP port on MX hosts. Zero means 25; other values are
	// for tests.
	Port int
	// Reports, when set, receives the outcome of every TLS session and
	// policy failure for TLS reporting (RFC 8460); a *tlsrpt.Aggregator
	// fits.
	Reports interface{ Record(tlsrpt.Result) }
	// DialTimeout bounds establishing one session (connect, greeting,
	// STARTTLS, handshake, EHLO) even when the context has no deadline.
	// Zero means one minute.
	DialTimeout time.Duration
	// Logger receives debug records about routes and sessions. Nil means
	// none.
	Logger *slog.Logger
	// Now is the clock for DANE-TA and domain-certificate checks. Nil
	// means time.Now.
	Now func() time.Time

	once        sync.Once
	initErr     error
	sts         *mtasts.Client
	localName   string
	dialer      Dialer
	port        string
	timeout     time.Duration
	maxHosts    int
	maxAddrs    int
	maxSessions int
	pools       *directPools
	sessions    *sessionCache // TLS sessions to resume, per requirement (resume.go)
}

// Defaults for Direct's limits. A recipient domain can publish any number
// of MX hosts, and each any number of addresses: without limits one
// message to a domain with a thousand MX records makes a thousand
// connection attempts. The address and session limits are Postfix's
// defaults (smtp_mx_address_limit, smtp_mx_session_limit); ten MX hosts
// is more than large providers publish (they use a few names with many
// addresses behind them).
const (
	DefaultMaxMXHosts   = 10
	DefaultMaxAddresses = 5
	DefaultMaxSessions  = 2
)

// ErrNullMX reports a domain that publishes a null MX (RFC 7505): it
// accepts no mail, and no connection is attempted.
var ErrNullMX = errors.New("transport: the domain accepts no mail (null MX, RFC 7505)")

// DomainError reports that a delivery reached none of a domain's MX
// hosts, or that the domain has no route at all. It unwraps to the
// failure of each host tried, in order.
type DomainError struct {
	Domain string
	Errs   []error
}

func (e *DomainError) Error() string {
	var b strings.Builder
	b.WriteString("mailsec: ")
	b.WriteString(e.Domain)
	b.WriteString(": no MX host took the delivery")
	for _, err := range e.Errs {
		b.WriteString("; ")
		b.WriteString(err.Error())
	}
	return b.String()
}

func (e *DomainError) Unwrap() []error { return e.Errs }

// Temporary reports whether a later attempt may succeed: when any host
// failed for a temporary reason (a network error, a 4xx reply, a DNS
// failure) or for a TLS or policy failure. Unlike submission to a server
// the application configured, a failed TLS session with a recipient's MX
// host is deferred, not bounced: it may be an attack that ends, or a
// policy about to be updated (RFC 8461 §5, RFC 7672 §2.2). REQUIRETLS
// failures, a null MX and permanent replies are final.
func (e *DomainError) Temporary() bool {
	return slices.ContainsFunc(e.Errs, func(err error) bool {
		var se *mailsec.SecurityError
		if errors.As(err, &se) {
			return !errors.Is(se, mailsec.ErrRequireTLS) && !errors.Is(se, errLevel)
		}
		return mailsec.IsTemporary(err)
	})
}

// Validate checks the configuration without connecting, and returns the
// *mailsec.ConfigError that names the field at fault; Deliver and Check
// return the same error until the configuration is fixed.
// mailsec.NewSender calls it.
func (t *Direct) Validate() error { return t.init() }

func (t *Direct) init() error {
	t.once.Do(func() { t.initErr = t.setup() })
	return t.initErr
}

func (t *Direct) setup() error {
	if t.Resolver == nil {
		return configError("Direct.Resolver", "", "a resolver is required: a *dns.Client pointed at a validating resolver on this host")
	}
	// A nil pointer in an interface field is not the field left nil: its
	// methods would panic in the middle of a delivery.
	for _, f := range []struct {
		name, want string
		v          any
	}{
		{"Direct.Resolver", "a resolver is required", t.Resolver},
		{"Direct.Dialer", "leave the field nil for a net.Dialer", t.Dialer},
		{"Direct.Reports", "leave the field nil for no reports", t.Reports},
	} {
		if f.v != nil && typednil.Is(f.v) {
			return configError(f.name, fmt.Sprintf("%T", f.v), "a nil pointer or func; "+f.want)
		}
	}
	name, err := localName("Direct.LocalName", t.LocalName)
	if err != nil {
		return err
	}
	t.localName = name
	t.dialer = t.Dialer
	if t.dialer == nil {
		t.dialer = &net.Dialer{Timeout: 30 * time.Second}
	}
	t.port = "25"
	if t.Port != 0 {
		if t.Port < 0 || t.Port > 65535 {
			return configError("Direct.Port", strconv.Itoa(t.Port), "not a port number")
		}
		t.port = strconv.Itoa(t.Port)
	}
	if t.DialTimeout < 0 {
		return configError("Direct.DialTimeout", t.DialTimeout.String(), "negative; zero means one minute")
	}
	t.timeout = positiveDur(t.DialTimeout, time.Minute)
	for _, l := range []struct {
		field string
		v     int
		def   int
		to    *int
	}{
		{"Direct.MaxMXHosts", t.MaxMXHosts, DefaultMaxMXHosts, &t.maxHosts},
		{"Direct.MaxAddresses", t.MaxAddresses, DefaultMaxAddresses, &t.maxAddrs},
		{"Direct.MaxSessions", t.MaxSessions, DefaultMaxSessions, &t.maxSessions},
	} {
		if l.v < 0 {
			return configError(l.field, strconv.Itoa(l.v), "negative; zero means the default")
		}
		*l.to = cmp.Or(l.v, l.def)
	}
	for _, l := range []struct {
		field string
		v     int64
	}{
		{"Direct.MaxConnsPerHost", int64(t.MaxConnsPerHost)},
		{"Direct.MaxMessagesPerConn", int64(t.MaxMessagesPerConn)},
		{"Direct.IdleTimeout", int64(t.IdleTimeout)},
		{"Direct.HealthCheckAfter", int64(t.HealthCheckAfter)},
	} {
		if l.v < 0 {
			return configError(l.field, strconv.FormatInt(l.v, 10), "negative; zero means the default")
		}
	}
	t.sessions = newSessionCache(t.TLSConfig)
	t.pools = &directPools{
		max:         positive(t.MaxConnsPerHost, DefaultMaxConnsPerHost),
		maxMessages: positive(t.MaxMessagesPerConn, 1000),
		idleTimeout: positiveDur(t.IdleTimeout, 30*time.Second),
		probeAfter:  positiveDur(t.HealthCheckAfter, 2*time.Second),
		logger:      t.Logger,
		byHost:      map[string]*hostPool{},
	}
	if !t.AllowPrivate {
		t.dialer = guardDialer(t.dialer)
	}
	t.sts = t.MTASTS
	if t.sts == nil {
		// The policy host is reached the way MX hosts are: through
		// Resolver, with TLSConfig's roots, over the same (guarded)
		// dialer.
		t.sts = &mtasts.Client{Resolver: t.Resolver, TLSConfig: t.TLSConfig, Logger: t.Logger,
			AllowPrivate: t.AllowPrivate, DialContext: t.dialer.DialContext}
	} else if err := t.checkMTASTS(); err != nil {
		return err
	}
	return nil
}

// checkMTASTS refuses an MTA-STS client whose resolver, trust or address
// rule differs from Direct's: the policy would then be looked up, fetched
// or trusted differently from the MX hosts it governs.
func (t *Direct) checkMTASTS() error {
	c := t.MTASTS
	switch {
	case !sameResolver(c.Resolver, t.Resolver):
		return configError("Direct.MTASTS.Resolver", "", "must be Direct.Resolver: every name of a delivery is resolved through one resolver")
	case c.TLSConfig != t.TLSConfig:
		return configError("Direct.MTASTS.TLSConfig", "", "must be Direct.TLSConfig (the same *tls.Config, or both nil): one trust configuration for MX hosts and policy hosts")
	case c.AllowPrivate != t.AllowPrivate:
		return configError("Direct.MTASTS.AllowPrivate", strconv.FormatBool(c.AllowPrivate), "must be Direct.AllowPrivate: policy hosts and MX hosts are held to one address rule")
	}
	return nil
}

// sameResolver reports whether a and b are the same resolver, without
// panicking on an implementation whose dynamic type is not comparable.
func sameResolver(a, b dns.Resolver) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() != vb.Type() || !va.Comparable() {
		return false
	}
	return va.Equal(vb)
}

// localName returns the EHLO name to use for a configured one, in the
// named field.
func localName(field, configured string) (string, error) {
	name := configured
	if name == "" {
		name = "localhost"
		if h, err := os.Hostname(); err == nil {
			if _, ok := syntax.Hostname(h); ok {
				name = h
			}
		}
	}
	if reason, ok := syntax.EHLOName(name); !ok {
		return "", configError(field, name, "not a valid EHLO name: "+reason)
	}
	return name, nil
}

func (t *Direct) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// Close closes the sessions kept for reuse and makes later Deliver calls
// fail with ErrClosed. Sessions in use are closed when their delivery
// ends.

func (t *Direct) Close() error {
	if err := t.init(); err != nil {
		return nil
	}
	t.pools.close()
	return nil
}

// Deliver implements mailsec.Transport. Recipients are grouped by domain;
// each domain is one transaction with one of its MX hosts. With more than
// one domain, every recipient's result carries its own session.
func (t *Direct) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	if err := t.init(); err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if t.pools.isClosed() {
		return nil, ErrClosed
	}
	if d.RequireTLS && d.TLSRequiredNo {
		return nil, invalid("Delivery", "", "REQUIRETLS and TLS-Required: No exclude each other (RFC 8689 §5)")
	}
	var order []string
	byDomain := map[string][]int{}
	for i, to := range d.To {
		dom, err := domainOf(to)
		if err != nil {
			return nil, err
		}
		if _, ok := byDomain[dom]; !ok {
			order = append(order, dom)
		}
		byDomain[dom] = append(byDomain[dom], i)
	}

	res := &mailsec.DeliveryResult{Recipients: make([]mailsec.RecipientResult, len(d.To))}
	var errs []error
	accepted := 0
	for _, dom := range order {
		idx := byDomain[dom]
		rcpts := make([]string, len(idx))
		for j, i := range idx {
			rcpts[j] = d.To[i]
		}
		dr, err := t.deliverDomain(ctx, d, dom, rcpts)
		if len(order) == 1 {
			if dr != nil {
				res.Connection, res.Reply = dr.Connection, dr.Reply
			}
		}
		// Each recipient's result carries its domain's session, and the
		// reply that session's transaction ended with.
		for j, i := range idx {
			rr := dr.Recipient(j, err)
			rr.Address = d.To[i]
			res.Recipients[i] = rr
			if rr.Accepted {
				accepted++
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if accepted > 0 {
		return res, nil
	}
	if len(errs) == 1 {
		return res, errs[0]
	}
	if len(errs) == 0 {
		// Every domain ended without an error and without an accepted
		// recipient: each recipient's result says why.
		for i := range res.Recipients {
			if res.Recipients[i].Err != nil {
				errs = append(errs, res.Recipients[i].Err)
			}
		}
		if len(errs) == 0 {
			return res, &DomainError{Domain: order[0], Errs: []error{errors.New("no recipient was accepted")}}
		}
	}
	return res, errors.Join(errs...)
}

// domainOf returns the A-label form of an address's domain.
func domainOf(addr string) (string, error) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return "", invalid("To", addr, "no domain")
	}
	dom, err := idna.Lookup.ToASCII(strings.TrimSuffix(addr[at+1:], "."))
	if err != nil || dom == "" || strings.HasPrefix(dom, "[") {
		return "", invalid("To", addr, "the domain is not one direct delivery can route to")
	}
	return strings.ToLower(dom), nil
}

// domainState is what one domain's delivery has learnt so far.
type domainState struct {
	domain   string
	level    mailsec.SecurityLevel
	route    route
	sts      *mtasts.Result
	enforce  bool
	testing  bool
	notes    []string
	attempts []error
	// tried is the Receipt's record of every MX host and address tried,
	// in order, with what was seen: the attempts a recipient that was
	// not accepted keeps. hostNotes marks the notes that say the same
	// of a host in words.
	tried     []mailsec.Attempt
	hostNotes map[int]bool
	// stsFailure is the failed MTA-STS discovery or fetch that left the
	// domain without a policy: the outcome each session is reported with
	// (RFC 8460 counts one result per session).
	stsFailure *tlsrpt.Result
	reported   bool // a session's result went to Reports
	dialled    int  // connection attempts, for MaxAddresses
	sessions   int  // sessions established, for MaxSessions
}

// note records a line for the Receipt's connection notes. Notes carry
// names and text from DNS and from peers, so they are cleaned.
func (ds *domainState) note(s string) { ds.notes = append(ds.notes, syntax.PeerText(s)) }

// attempt is the Receipt's record of a try at host that ended in err: at
// addr (empty when no connection was tried), under hp (nil when the host
// was refused before its requirement was known), where the server
// presented a certificate with key pin (zero when none was seen). It
// carries the evidence the requirement rested on: the TLSA records the
// certificate had to match, the MTA-STS policy that refused the host or
// set the requirement. Names, policies and errors come from DNS and from
// peers, so they are cleaned.
func (ds *domainState) attempt(host, addr string, hp *hostPlan, pin mailsec.Pin, err error) mailsec.Attempt {
	a := mailsec.Attempt{Host: syntax.PeerText(host), Addr: addr, PeerPin: pin, Error: syntax.PeerText(err.Error())}
	if hp != nil {
		a.Policy = hp.policy
		a.TLSA = slices.Clone(hp.tlsa)
	}
	if (hp != nil && hp.policy == "mta-sts" || errors.Is(err, errMXNotInPolicy)) && ds.sts != nil && ds.sts.Policy != nil {
		for _, l := range stsLines(ds.sts.Policy) {
			a.MTASTS = append(a.MTASTS, syntax.PeerText(l))
		}
	}
	return a
}

// try records an attempt at host that ended in err, for every recipient
// the domain's delivery fails (see attempt).
func (ds *domainState) try(host, addr string, hp *hostPlan, pin mailsec.Pin, err error) {
	ds.tried = append(ds.tried, ds.attempt(host, addr, hp, pin, err))
}

// failed is the result for rcpts when no MX host took the delivery and no
// session carried it: each recipient keeps every attempt, and the notes
// that the attempts do not already say.
func (ds *domainState) failed(rcpts []string) *mailsec.DeliveryResult {
	var notes []string
	for i, n := range ds.notes {
		if !ds.hostNotes[i] {
			notes = append(notes, n)
		}
	}
	res := &mailsec.DeliveryResult{Recipients: make([]mailsec.RecipientResult, len(rcpts))}
	for i, to := range rcpts {
		res.Recipients[i] = mailsec.RecipientResult{Address: to, Attempts: slices.Clip(ds.tried), Notes: slices.Clip(notes)}
	}
	return res
}

// ended completes the result of a transaction with host at addr, the
// last one tried, whose certificate had key pin: each recipient it did not
// accept keeps the attempts before it and this one, ended in its own
// refusal or in err, the delivery's.
func (ds *domainState) ended(res *mailsec.DeliveryResult, host, addr string, hp *hostPlan, pin mailsec.Pin, err error) {
	if res == nil {
		return
	}
	for i := range res.Recipients {
		r := &res.Recipients[i]
		if r.Accepted && err == nil {
			continue
		}
		why := r.Err
		if why == nil {
			why = err
		}
		if why == nil {
			continue
		}
		r.Attempts = append(slices.Clip(ds.tried), ds.attempt(host, addr, hp, pin, why))
	}
}

// deliverDomain delivers d to rcpts, all in domain.
func (t *Direct) deliverDomain(ctx context.Context, d *mailsec.Delivery, domain string, rcpts []string) (*mailsec.DeliveryResult, error) {
	ds := &domainState{domain: domain, level: d.Security.Level}
	if d.RequireTLS && neverAuthenticates(ds.level) {
		return nil, refuse(domain, errRequireTLS,
			"REQUIRETLS needs verified TLS; the level for this domain is "+ds.level.String()+" (5.7.30)", nil)
	}
	rt, err := t.gatherRoute(ctx, domain)
	if err != nil {
		return nil, &DomainError{Domain: domain, Errs: []error{err}}
	}
	ds.route = rt
	if rt.implicit {
		ds.note(domain + ": no MX records; the domain itself is the mail host (RFC 5321 §5.1)")
	}

	if rt.beyond > 0 {
		ds.note(fmt.Sprintf("%s: %d more MX hosts not considered (at most %d per delivery)", domain, rt.beyond, t.maxHosts))
	}

	if wantsMTASTS(d) {
		if err := t.gatherPolicy(ctx, ds); err != nil {
			return nil, &DomainError{Domain: domain, Errs: []error{err}}
		}
	}
	if d.TLSRequiredNo {
		ds.note("TLS-Required: No: the domain's DANE and MTA-STS policies are not applied (RFC 8689 §5); TLS is still required, without authentication")
	}
	defer func() {
		// A policy failure with no session to carry it is reported once
		// on its own.
		if ds.stsFailure != nil && !ds.reported {
			t.report(ds, *ds.stsFailure)
		}
	}()

	// tx is the last transaction that failed in a way another host may
	// not (a 4xx reply, a dropped connection): the session the Receipt
	// names when no host takes the delivery.
	var tx *mailsec.DeliveryResult
	var txErr error
	for _, host := range rt.hosts {
		if ds.dialled >= t.maxAddrs || ds.sessions >= t.maxSessions {
			ds.note(fmt.Sprintf("%s: not tried: the limit of %d connection attempts and %d sessions per delivery was reached", host, t.maxAddrs, t.maxSessions))
			continue
		}
		res, err, final := t.tryHost(ctx, d, ds, host, rcpts)
		if err == nil || final {
			if res != nil && res.Connection != nil {
				res.Connection.Notes = append(slices.Clip(ds.notes), res.Connection.Notes...)
			}
			return res, err
		}
		if res != nil && res.Connection != nil {
			tx, txErr = res, err
		}
		ds.attempts = append(ds.attempts, err)
		if ds.hostNotes == nil {
			ds.hostNotes = map[int]bool{}
		}
		ds.hostNotes[len(ds.notes)] = true
		ds.note(host + ": " + err.Error())
		if ctx.Err() != nil {
			break
		}
	}
	derr := &DomainError{Domain: domain, Errs: ds.attempts}
	if tx == nil {
		return ds.failed(rcpts), derr
	}
	// A session carried, or began to carry, the message and no host
	// took it: the recipients' results name that session and the reply
	// that ended the transaction, and fail with the domain's error.
	tx.Connection.Notes = append(slices.Clip(ds.notes), tx.Connection.Notes...)
	var reply *mailsec.Reply
	var se *mailsec.SMTPError
	if errors.As(txErr, &se) {
		reply = se.Reply()
	}
	for i := range tx.Recipients {
		r := &tx.Recipients[i]
		if r.Err == nil {
			r.Accepted, r.Err, r.Reply = false, derr, reply
		}
		r.Attempts = slices.Clip(ds.tried)
	}
	return tx, derr
}

// tryHost delivers to one MX host. final reports that the outcome must
// not lead to the next host (success, a permanent reply, a content
// failure). A transaction that failed for now comes with its result.
func (t *Direct) tryHost(ctx context.Context, d *mailsec.Delivery, ds *domainState, host string, rcpts []string) (res *mailsec.DeliveryResult, err error, final bool) {
	mx, err := t.gatherHost(ctx, ds, host, wantsTLSA(d))
	var hp *hostPlan
	if err == nil {
		hp, err = requirement(d.Security, host, &mxHop{mx: mx, ds: ds, requireTLS: d.RequireTLS, tlsRequiredNo: d.TLSRequiredNo, now: t.Now})
	}
	if err != nil {
		// Skipped without a connection.
		t.reportRefusal(ds, host, err)
		ds.try(host, "", hp, mailsec.Pin{}, err)
		return nil, err, false
	}
	if hp.note != "" {
		ds.note(hp.note)
	}
	var lastErr error
	for _, ip := range mx.addrs {
		addr := net.JoinHostPort(ip.Unmap().String(), t.port)
		if !t.AllowPrivate {
			if r := netguard.Reason(ip); r != "" {
				// Nothing is dialled: the attempt is not counted.
				lastErr = &mailsec.AddressError{Host: host, Addr: ip.WithZone(""), Reason: r}
				ds.try(host, addr, hp, mailsec.Pin{}, lastErr)
				continue
			}
		}
		if ds.dialled >= t.maxAddrs || ds.sessions >= t.maxSessions {
			ds.note(fmt.Sprintf("%s: address %s not tried: the limit of %d connection attempts and %d sessions per delivery was reached", host, ip, t.maxAddrs, t.maxSessions))
			break
		}
		dc := &dialConfig{
			addr:       addr,
			serverName: hp.serverName,
			localName:  t.localName,
			tlsConfig:  t.TLSConfig,
			dialer:     t.dialer,
			timeout:    t.timeout,
			sessions:   t.sessions,
		}
		var seen contact
		dial := func(ctx context.Context, key string) (*session, error) {
			ds.dialled++
			return dc.dial(ctx, hp.pol, key, &seen)
		}
		one := *d
		one.To = rcpts
		res, state, fresh, err := t.transactAt(ctx, ds, host, directKey(d, ds, host, addr, hp), hp.policy, &one, dial)
		if state == nil {
			if errors.Is(err, ErrClosed) {
				return nil, err, true
			}
			if ge, ok := netguard.As(err); ok {
				// The connection reached, or was about to reach, an
				// address the guard refuses (a Dialer that went
				// elsewhere, or a name resolved again).
				lastErr = &mailsec.AddressError{Host: host, Addr: ge.Addr, Reason: ge.Reason}
				ds.try(host, addr, hp, seen.pin, lastErr)
				continue
			}
			t.reportSession(ds, hp, host, ip, nil, err)
			ds.try(host, addr, hp, seen.pin, err)
			var ne *mailsec.NetworkError
			if errors.As(err, &ne) {
				lastErr = err
				continue // another address of the same host may answer
			}
			return nil, err, false
		}
		if fresh {
			t.reportSession(ds, hp, host, ip, state, err)
		} else {
			// A reused session was reported when it was established
			// (RFC 8460 counts sessions, not messages).
			ds.reported = true
		}
		if t.Logger != nil {
			t.Logger.LogAttrs(ctx, slog.LevelDebug, "mailsec: direct session", slog.String("domain", ds.domain),
				slog.String("mx", host), slog.String("addr", dc.addr), slog.String("policy", hp.policy),
				slog.String("verification", string(state.Verification)), slog.Bool("reused", !fresh), slog.Any("err", err))
		}
		if err == nil {
			ds.ended(res, host, addr, hp, state.PeerPin, nil)
			return res, nil, true
		}
		var se *mailsec.SMTPError
		final := false
		switch {
		case res != nil && everyRcptRefused(res):
			// Each recipient has its own answer, temporary or permanent;
			// another MX host is not asked to overrule it.
			final = true
		case errors.Is(err, mailsec.ErrRequireTLS), errors.Is(err, mailsec.ErrUnsupported):
			// Another MX host may offer what this one lacks.
			ds.try(host, addr, hp, state.PeerPin, err)
			return nil, err, false
		case errors.As(err, &se) && !se.Temporary():
			final = true
		case errors.Is(err, mailsec.ErrContent), ctx.Err() != nil:
			final = true
		case OutcomeUnknown(err):
			// This host may have taken the message: another one would
			// leave a second copy.
			final = true
		}
		if final {
			ds.ended(res, host, addr, hp, state.PeerPin, err)
			return res, err, true
		}
		// A temporary failure of the transaction: another host may
		// take the message; res names this session if none does.
		ds.try(host, addr, hp, state.PeerPin, err)
		return res, err, false
	}
	if lastErr == nil {
		lastErr = &mailsec.NetworkError{Host: host, Op: "dial", Err: errors.New("no addresses")}
		if len(mx.addrs) == 0 {
			ds.try(host, "", hp, mailsec.Pin{}, lastErr)
		}
	}
	return nil, lastErr, false
}

// transactAt runs d's transaction with host on a session for key: one
// kept from an earlier delivery under the same requirement, or a new one
// from dial, which then becomes the policy's (named in the Receipt). A
// reused session found stale before anything was sent (the server closed
// it, or answers 421) is replaced with another, as Submission does. state
// is the session's state after the transaction, nil when no session was
// had (err says why); fresh reports a session dial made, counted for
// MaxSessions as a reused one is.
func (t *Direct) transactAt(ctx context.Context, ds *domainState, host, key, policy string, d *mailsec.Delivery, dial dialFunc) (
	res *mailsec.DeliveryResult, state *mailsec.ConnectionState, fresh bool, err error) {
	hpool, err := t.pools.acquire(host)
	if err != nil {
		return nil, nil, false, err
	}
	defer t.pools.release(hpool)
	for attempt := 0; ; attempt++ {
		var s *session
		s, fresh, err = hpool.get(ctx, key, dial)
		if err != nil {
			return nil, nil, false, err
		}
		if fresh {
			s.state.Domain = ds.domain
			s.state.Policy = policy
		}
		ds.sessions++
		st := s.state
		res, err = transactPooled(ctx, hpool.pool, s, d)
		var retry *errRetry
		if errors.As(err, &retry) {
			if attempt < 2 {
				// The stale session is not counted.
				ds.sessions--
				continue
			}
			err = retry.err
		}
		return res, &st, fresh, err
	}
}

// transactPooled runs one transaction on s and returns s to p, also when
// the content writer panics (a Delivery built by hand whose Content
// panics): the session, now mid-DATA, is then dropped and its slot freed
// before the panic goes on.
func transactPooled(ctx context.Context, p *pool, s *session, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	done := false
	defer func() {
		if !done {
			p.put(s, false)
		}
	}()
	res, healthy, err := s.transact(ctx, d)
	done = true
	p.put(s, healthy)
	return res, err
}

// everyRcptRefused reports a transaction that ended because the server
// refused every recipient at RCPT.
func everyRcptRefused(res *mailsec.DeliveryResult) bool {
	for _, r := range res.Recipients {
		if r.Reply == nil || r.Err == nil {
			return false
		}
	}
	return len(res.Recipients) > 0
}
