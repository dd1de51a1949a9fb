package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/idna"
	"golang.org/x/sync/singleflight"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/hostdial"
	"github.com/mailsec/mailsec/internal/netguard"
	"github.com/mailsec/mailsec/internal/syntax"
	"github.com/mailsec/mailsec/internal/typednil"
)

// Defaults for the Client's zero fields.
const (
	DefaultTimeout         = 30 * time.Second
	DefaultRefreshInterval = time.Hour
)

// TLS-RPT result types (RFC 8460 §4.3.1) of the failures an *Error reports.
const (
	// ResultFetchError: the policy could not be retrieved (DNS failure,
	// unreachable server, redirect, HTTP status other than 200, wrong
	// media type, oversized body, time limit).
	ResultFetchError = "sts-policy-fetch-error"
	// ResultPolicyInvalid: the policy was retrieved but does not parse.
	ResultPolicyInvalid = "sts-policy-invalid"
	// ResultWebPKIInvalid: the policy server's certificate is not valid
	// for "mta-sts.<domain>" under WebPKI.
	ResultWebPKIInvalid = "sts-webpki-invalid"
)

// Causes an *Error wraps, for errors.Is.
var (
	// ErrRedirect: the policy server answered with a redirect, which
	// senders must not follow (RFC 8461 §3.3).
	ErrRedirect = errors.New("mtasts: policy server answered with a redirect")
	// ErrHTTPStatus: the policy server answered with a status other than
	// 200 OK (RFC 8461 §3.3).
	ErrHTTPStatus = errors.New("mtasts: policy server answered with a status other than 200")
	// ErrContentType: the policy was not served as text/plain (RFC 8461
	// §3.2).
	ErrContentType = errors.New("mtasts: policy not served as text/plain")
	// ErrPolicyTooLarge: the policy is larger than MaxPolicySize.
	ErrPolicyTooLarge = errors.New("mtasts: policy larger than 64 KiB")
	// ErrRecordRemoved: the domain's "_mta-sts" TXT record is gone or no
	// longer valid while a policy fetched under it is still cached; the
	// cached policy stays in force until it expires (RFC 8461 §5.1).
	ErrRecordRemoved = errors.New("mtasts: TXT record removed while a policy is cached")
)

// Error reports a failure to discover, fetch or parse a domain's policy.
// It arrives in Result.Err, never as Lookup's error: it does not stop
// delivery by itself.
type Error struct {
	Domain string // the policy domain, as an A-label
	// Type is the TLS-RPT result type: ResultFetchError,
	// ResultPolicyInvalid or ResultWebPKIInvalid.
	Type string
	Err  error // the cause
}

func (e *Error) Error() string {
	// The cause may quote the policy server (a TLS alert, a certificate's
	// names): cleaned like all text from a peer.
	return "mtasts: policy of " + e.Domain + " (" + e.Type + "): " + syntax.PeerText(e.Err.Error())
}

func (e *Error) Unwrap() error { return e.Err }

// ResultType returns the TLS-RPT result type (RFC 8460 §4.3.1).
func (e *Error) ResultType() string { return e.Type }

// Temporary reports whether trying again later may succeed without the
// domain changing anything: true for fetch errors (network, DNS, HTTP),
// false for an invalid policy or certificate.
func (e *Error) Temporary() bool { return e.Type == ResultFetchError }

// Result is the outcome of a Lookup.
type Result struct {
	// Policy is the policy in force, nil if the domain has no (usable)
	// policy: deliver as without MTA-STS. A policy in mode none is
	// returned as such; treat it as no policy.
	Policy *Policy
	// ID is the TXT record id the policy was fetched under.
	ID string
	// Fetched is when the policy was fetched; Expires is when it stops
	// being used (Fetched plus its max_age).
	Fetched, Expires time.Time
	// Cached is set when the policy was served from the cache without an
	// HTTPS fetch.
	Cached bool
	// Err is a discovery or fetch failure that did not stop delivery: the
	// domain's record exists but its policy could not be fetched or was
	// invalid (Policy is nil), or a refresh failed or the record
	// disappeared and the cached policy is kept (Policy is not nil). It is
	// an *Error, for reporting; its ResultType method gives the TLS-RPT
	// result type.
	Err error
}

// Client discovers, fetches and caches MTA-STS policies (RFC 8461 §3, §5).
// Its zero fields mean the documented, secure defaults; Resolver is
// required. A Client is safe for concurrent use; its fields must not be
// changed, nor the Client copied, after the first Lookup.
type Client struct {
	// Resolver looks up the "_mta-sts" TXT records and the addresses of
	// the policy host "mta-sts.<domain>"; the system's resolver is never
	// asked, so a policy published only in Resolver's view is found.
	// Required.
	Resolver dns.Resolver
	// Cache keeps policies between Lookups. Nil means an in-memory
	// MemCache owned by the Client: policies are then lost on restart,
	// and the first delivery after it trusts whatever the network says
	// (RFC 8461 §10.2). Use a DirCache to keep them.
	Cache Cache
	// TLSConfig is the base TLS configuration for policy fetches, for
	// example to set RootCAs in tests (nil RootCAs means the system's).
	// Whatever it says, the server certificate is verified for
	// "mta-sts.<domain>" (InsecureSkipVerify and ServerName are
	// overridden) and TLS 1.2 is the minimum.
	TLSConfig *tls.Config
	// DialContext opens the TCP connections for policy fetches, to the
	// addresses Resolver gave for the policy host (an "ip:port"; the
	// certificate is still verified for "mta-sts.<domain>"). Nil means a
	// net.Dialer. No HTTP proxy is ever used.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// AllowPrivate lets policy fetches connect to addresses that are not
	// global unicast (loopback, private, link-local, the cloud metadata
	// address 169.254.169.254, ...; see mailsec.AddressError). By default
	// a policy host that resolves to one is not connected to, checked on
	// the address of the connection itself (a net.Dialer's Control
	// function, or the peer address of what DialContext returns), and
	// the fetch fails with a *mailsec.AddressError inside the Result's
	// Err: a recipient domain's DNS must not make this host a client of
	// services on its own network. Set it for tests and internal
	// deployments.
	AllowPrivate bool
	// Timeout bounds the TXT lookup and policy fetch of one Lookup
	// together. Zero means DefaultTimeout.
	Timeout time.Duration
	// RefreshInterval is how often the TXT record id of a cached policy is
	// checked: at most once per interval and domain. Zero means
	// DefaultRefreshInterval.
	RefreshInterval time.Duration
	// FailureBackoff is how long a failed TXT lookup or policy fetch for
	// a domain without a cached policy is remembered: Lookups in that
	// time return the same failure at once, instead of each making the
	// message wait for the fetch again (a policy server that is down, or
	// made slow by an attacker, would otherwise delay every message to
	// the domain by up to Timeout). Zero means DefaultFailureBackoff; a
	// negative value remembers nothing. A domain with a cached policy
	// needs none: a failed refresh keeps the policy, checked again after
	// RefreshInterval.
	FailureBackoff time.Duration
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Logger receives fetch failures and cache errors. Nil means no
	// logging.
	Logger *slog.Logger

	once  sync.Once
	http  *http.Client
	dial  netguard.DialFunc // to one address
	mem   *MemCache
	group singleflight.Group

	failMu sync.Mutex
	failed map[string]failure // by domain, bounded by maxFailures
}

// DefaultFailureBackoff is Client.FailureBackoff's default.
const DefaultFailureBackoff = 5 * time.Minute

// maxFailures bounds the failures a Client remembers.
const maxFailures = 10000

// failure is a remembered failed discovery or fetch.
type failure struct {
	until time.Time
	err   error
}

// remembered returns the failure remembered for d, if it is still in
// force.
func (c *Client) remembered(d string, now time.Time) error {
	c.failMu.Lock()
	defer c.failMu.Unlock()
	f, ok := c.failed[d]
	if !ok {
		return nil
	}
	if !now.Before(f.until) || now.Before(f.until.Add(-c.failureBackoff())) {
		delete(c.failed, d)
		return nil
	}
	return f.err
}

// remember notes a failure for d.
func (c *Client) remember(d string, err error, now time.Time) {
	b := c.failureBackoff()
	if b <= 0 {
		return
	}
	c.failMu.Lock()
	defer c.failMu.Unlock()
	if c.failed == nil {
		c.failed = map[string]failure{}
	}
	if len(c.failed) >= maxFailures {
		for k, f := range c.failed {
			if !now.Before(f.until) {
				delete(c.failed, k)
			}
		}
		if len(c.failed) >= maxFailures {
			return
		}
	}
	c.failed[d] = failure{until: now.Add(b), err: err}
}

func (c *Client) forget(d string) {
	c.failMu.Lock()
	defer c.failMu.Unlock()
	delete(c.failed, d)
}

func (c *Client) failureBackoff() time.Duration {
	if c.FailureBackoff == 0 {
		return DefaultFailureBackoff
	}
	return c.FailureBackoff
}

func (c *Client) init() {
	c.once.Do(func() {
		c.mem = new(MemCache)
		cfg := new(tls.Config)
		if c.TLSConfig != nil {
			cfg = c.TLSConfig.Clone()
		}
		// RFC 8461 §3.3: the policy host must present a certificate
		// valid for its name under WebPKI. The HTTP transport sets
		// ServerName to the host of each request.
		cfg.InsecureSkipVerify = false
		cfg.ServerName = ""
		cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS12)
		if cfg.MaxVersion != 0 && cfg.MaxVersion < tls.VersionTLS12 {
			cfg.MaxVersion = 0
		}
		c.dial = c.DialContext
		switch {
		case c.AllowPrivate && c.dial == nil:
			c.dial = new(net.Dialer).DialContext
		case c.dial == nil:
			c.dial = netguard.NetDialer(nil)
		case !c.AllowPrivate:
			c.dial = netguard.Dial(c.dial)
		}
		// The policy host is resolved through Resolver and dialled at
		// at most maxPolicyAddrs of its addresses; unless AllowPrivate,
		// non-global ones are refused before dialling, and c.dial checks
		// the connection.
		policyHost := &hostdial.Dialer{Resolver: c.Resolver, Dial: c.dial, AllowPrivate: c.AllowPrivate,
			MaxAddrs: maxPolicyAddrs, Refused: addressError,
			Panicked: func(_ string, v any) error { return &panicked{v: v} }}
		c.http = &http.Client{
			Transport: &http.Transport{
				Proxy:                  nil,
				DialContext:            policyHost.DialContext,
				TLSClientConfig:        cfg,
				DisableKeepAlives:      true,
				DisableCompression:     true,
				MaxResponseHeaderBytes: 64 << 10,
			},
			// RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed";
			// the 3xx response comes back and is refused below.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	})
}

// maxPolicyAddrs bounds the addresses of a policy host one fetch tries.
const maxPolicyAddrs = 4

// addressError is a connection to host refused by the address guard.
func addressError(host string, e *netguard.Error) error {
	return &mailsec.AddressError{Host: host, Addr: e.Addr, Reason: e.Reason}
}

func (c *Client) cache() Cache {
	if c.Cache != nil {
		return c.Cache
	}
	return c.mem
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

func (c *Client) refreshInterval() time.Duration {
	if c.RefreshInterval > 0 {
		return c.RefreshInterval
	}
	return DefaultRefreshInterval
}

func (c *Client) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Lookup returns the MTA-STS policy in force for domain (a recipient
// domain, U-label or A-label), following RFC 8461 §5.1:
//
//   - a cached, unexpired policy is used without HTTPS; its TXT record id
//     is checked at most once per RefreshInterval, and a new id, or a
//     policy past half its lifetime, is fetched again;
//   - when that check or fetch fails, or the record has gone, the cached
//     policy stays in force until it expires, and Result.Err says why;
//   - without a cached policy, no valid record (none, or more than one
//     "v=STSv1" record) means Policy nil and Err nil; a record whose
//     policy cannot be fetched or parsed means Policy nil and Err set.
//
// Concurrent Lookups of one domain share one TXT lookup and one fetch,
// which the first caller's cancellation does not stop; Timeout bounds it.
// Lookup returns an error only when domain is not a domain name (a
// *mailsec.ValidationError), when Resolver is nil or Resolver or Cache a
// nil pointer (a *mailsec.ConfigError), when ctx ends first (a
// *mailsec.NetworkError that names the policy host and matches the
// context's error), or when the Resolver, Cache, DialContext or Now
// panicked (the panic, as an error; nothing is remembered of it).
func (c *Client) Lookup(ctx context.Context, domain string) (_ *Result, err error) {
	defer func() {
		// The Cache is read here, in the caller's goroutine.
		if v := recover(); v != nil {
			err = &panicked{v: v}
		}
	}()
	if c.Resolver == nil {
		return nil, &mailsec.ConfigError{Field: "mtasts.Client.Resolver", Reason: "nil: a Resolver is required"}
	}
	// A nil pointer in an interface field is not the field left nil: its
	// methods would panic.
	if typednil.Is(c.Resolver) {
		return nil, &mailsec.ConfigError{Field: "mtasts.Client.Resolver", Value: fmt.Sprintf("%T", c.Resolver), Reason: "a nil pointer: a Resolver is required"}
	}
	if c.Cache != nil && typednil.Is(c.Cache) {
		return nil, &mailsec.ConfigError{Field: "mtasts.Client.Cache", Value: fmt.Sprintf("%T", c.Cache), Reason: "a nil pointer; leave the field nil for an in-memory cache"}
	}
	d, err := normalize(domain)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, lookupEnded(d, err)
	}
	// The policy host and the TXT name must themselves be domain names
	// (at most 253 octets); a longer domain cannot have a policy.
	if len("_mta-sts.")+len(d) > 253 {
		return &Result{}, nil
	}
	c.init()

	e := c.load(ctx, d)
	if e != nil && c.fresh(e, c.now()) {
		return e.result(true, nil), nil
	}
	if e == nil {
		if err := c.remembered(d, c.now()); err != nil {
			return &Result{Err: err}, nil
		}
	}
	ch := c.group.DoChan(d, func() (v any, err error) {
		// This runs in a goroutine of its own: a panic in the Resolver,
		// the Cache or the clock would take the process down.
		defer func() {
			if p := recover(); p != nil {
				v, err = nil, &panicked{v: p}
			}
		}()
		// The shared call outlives the first caller's cancellation
		// but not the Client's time limit.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout())
		defer cancel()
		res := c.refresh(fctx, d)
		var pe *panicked
		if errors.As(res.Err, &pe) {
			return nil, pe
		}
		return res, nil
	})
	select {
	case <-ctx.Done():
		return nil, lookupEnded(d, ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		res := *r.Val.(*Result)
		if res.Policy != nil {
			p := *res.Policy
			p.MX = slices.Clone(p.MX)
			res.Policy = &p
		}
		return &res, nil
	}
}

// panicked is a panic in what the Client calls (its Resolver, Cache,
// DialContext or clock), as an error: Lookup returns it rather than let
// it end the process from a goroutine no caller can recover.
type panicked struct{ v any }

func (p *panicked) Error() string {
	return syntax.PeerText(fmt.Sprintf("mtasts: the policy lookup panicked (in the Resolver, Cache, DialContext or clock): %v", p.v))
}

// lookupEnded is Lookup's error when ctx ended first: it names the policy
// host and matches the context's error.
func lookupEnded(d string, err error) error {
	return &mailsec.NetworkError{Host: "mta-sts." + d, Op: "MTA-STS policy lookup", Err: err}
}

// normalize returns domain as a lower-case A-label name without the final
// dot, or a *mailsec.ValidationError.
func normalize(domain string) (string, error) {
	d := strings.TrimSuffix(domain, ".")
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", invalidDomain(domain, "not a valid domain name: "+err.Error())
	}
	a = strings.ToLower(a)
	if reason, ok := syntax.Hostname(a); !ok {
		return "", invalidDomain(domain, reason)
	}
	if _, err := netip.ParseAddr(a); err == nil {
		return "", invalidDomain(domain, "an IP address, not a domain name")
	}
	return a, nil
}

// invalidDomain reports a domain argument that is not a domain name.
func invalidDomain(domain, reason string) error {
	return &mailsec.ValidationError{Field: "domain", Value: domain, Reason: reason}
}

// fresh reports whether e may be used without looking up the TXT record.
func (c *Client) fresh(e *entry, now time.Time) bool {
	return now.Before(e.Expires) && !now.Before(e.Checked) && now.Sub(e.Checked) < c.refreshInterval()
}

// load returns the cached entry for d, expired or not, or nil.
func (c *Client) load(ctx context.Context, d string) *entry {
	b, err := c.cache().Get(ctx, d)
	if err != nil {
		if !errors.Is(err, ErrCacheMiss) {
			c.logger().WarnContext(ctx, "mtasts: cache read failed", "domain", d, "err", err)
		}
		return nil
	}
	e, err := decodeEntry(d, b)
	if err != nil {
		c.logger().WarnContext(ctx, "mtasts: unusable cache entry ignored", "domain", d, "err", err)
		return nil
	}
	return e
}

func (c *Client) store(ctx context.Context, e *entry) {
	// Storing must not fail because the fetch used up the time limit.
	if err := c.cache().Put(context.WithoutCancel(ctx), e.Domain, e.marshal()); err != nil {
		c.logger().WarnContext(ctx, "mtasts: cache write failed", "domain", e.Domain, "err", err)
	}
}

func (e *entry) result(cached bool, err error) *Result {
	return &Result{Policy: e.policy, ID: e.ID, Fetched: e.Fetched, Expires: e.Expires, Cached: cached, Err: err}
}

// refresh checks the TXT record of d and fetches its policy when needed
// (RFC 8461 §5.1). It runs once at a time per domain.
func (c *Client) refresh(ctx context.Context, d string) *Result {
	now := c.now()
	log := c.logger().With("domain", d)
	// A call that just finished may have refreshed the entry.
	e := c.load(ctx, d)
	if e != nil && c.fresh(e, now) {
		return e.result(true, nil)
	}
	if e != nil && !now.Before(e.Expires) {
		// RFC 8461 §5.1: an expired policy is not used.
		if err := c.cache().Delete(context.WithoutCancel(ctx), d); err != nil {
			log.WarnContext(ctx, "mtasts: cache delete failed", "err", err)
		}
		e = nil
	}
	keep := func(err error) *Result {
		e.Checked = now
		c.store(ctx, e)
		log.WarnContext(ctx, "mtasts: keeping the cached policy", "id", e.ID, "expires", e.Expires, "err", err)
		return e.result(true, err)
	}

	// RFC 8461 §3.1: exactly one TXT record starting with "v=STSv1".
	ans, err := c.Resolver.LookupTXT(ctx, "_mta-sts."+d)
	var rec Record
	if err == nil {
		rec, err = SelectRecord(ans.Records)
		if err != nil && !errors.Is(err, ErrNoRecord) {
			err = fmt.Errorf("%w: %w", ErrNoRecord, err)
		}
	}
	switch {
	case err != nil && (dns.IsNotFound(err) || errors.Is(err, ErrNoRecord)):
		// No valid record: no policy, unless one is cached (§5.1).
		if e == nil {
			return &Result{}
		}
		if e.policy.Mode == None {
			// A domain retiring MTA-STS publishes mode none, then
			// removes the record (RFC 8461 §8.3): nothing to report.
			if err := c.cache().Delete(context.WithoutCancel(ctx), d); err != nil {
				log.WarnContext(ctx, "mtasts: cache delete failed", "err", err)
			}
			return &Result{}
		}
		return keep(&Error{Domain: d, Type: ResultFetchError, Err: fmt.Errorf("%w: %w", ErrRecordRemoved, err)})
	case err != nil:
		ferr := &Error{Domain: d, Type: ResultFetchError, Err: err}
		if e == nil {
			log.WarnContext(ctx, "mtasts: TXT lookup failed", "err", err)
			c.remember(d, ferr, now)
			return &Result{Err: ferr}
		}
		return keep(ferr)
	case e != nil && rec.ID == e.ID && now.Before(e.Fetched.Add(e.Expires.Sub(e.Fetched)/2)):
		// Unchanged id: the cached policy is current. Past half its
		// lifetime it is fetched again below, so that an attacker who
		// blocks the fetch only when it expires cannot remove it
		// (RFC 8461 §10.2).
		e.Checked = now
		c.store(ctx, e)
		return e.result(true, nil)
	}

	text, p, ferr := c.fetch(ctx, d)
	if ferr != nil {
		if errors.As(ferr, new(*panicked)) {
			// Not the domain's doing: neither remembered nor a reason
			// to keep a cached policy. Lookup returns it as its error.
			return &Result{Err: ferr}
		}
		if e == nil {
			log.WarnContext(ctx, "mtasts: policy fetch failed", "id", rec.ID, "err", ferr)
			c.remember(d, ferr, now)
			return &Result{Err: ferr}
		}
		return keep(ferr)
	}
	// RFC 8461 §3.2, §5.1: the new policy replaces the cached one and
	// may be cached for max_age seconds from now.
	n := &entry{
		Version: entryVersion,
		Domain:  d,
		ID:      rec.ID,
		Policy:  text,
		Fetched: now,
		Expires: now.Add(time.Duration(p.MaxAge) * time.Second),
		Checked: now,
		policy:  p,
	}
	c.store(ctx, n)
	c.forget(d)
	log.DebugContext(ctx, "mtasts: policy fetched", "id", n.ID, "mode", p.Mode, "expires", n.Expires)
	return n.result(false, nil)
}

// fetch retrieves and parses the policy of d (RFC 8461 §3.3). Every
// error is an *Error.
func (c *Client) fetch(ctx context.Context, d string) (string, *Policy, error) {
	fail := func(typ string, err error) (string, *Policy, error) {
		return "", nil, &Error{Domain: d, Type: typ, Err: err}
	}
	url := "https://mta-sts." + d + "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fail(ResultFetchError, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if webPKIError(err) {
			return fail(ResultWebPKIInvalid, err)
		}
		return fail(ResultFetchError, err)
	}
	defer resp.Body.Close()
	switch {
	// The status line and the headers are the server's text: cleaned
	// before they enter an error (and so a Receipt or a log record).
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fail(ResultFetchError, fmt.Errorf("%w: %s to %q", ErrRedirect, syntax.PeerText(resp.Status), syntax.PeerText(resp.Header.Get("Location"))))
	case resp.StatusCode != http.StatusOK:
		return fail(ResultFetchError, fmt.Errorf("%w: %s", ErrHTTPStatus, syntax.PeerText(resp.Status)))
	}
	// RFC 8461 §3.2: "media type ... text/plain"; parameters such as
	// charset are allowed.
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return fail(ResultFetchError, fmt.Errorf("%w: %q", ErrContentType, syntax.PeerText(resp.Header.Get("Content-Type"))))
	}
	if resp.ContentLength > MaxPolicySize {
		return fail(ResultFetchError, ErrPolicyTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return fail(ResultFetchError, fmt.Errorf("reading %s: %w", url, err))
	}
	if len(body) > MaxPolicySize {
		return fail(ResultFetchError, ErrPolicyTooLarge)
	}
	p, err := ParsePolicy(body)
	if err != nil {
		return fail(ResultPolicyInvalid, err)
	}
	return string(body), p, nil
}

// webPKIError reports whether err is a failure to verify the policy
// server's certificate.
func webPKIError(err error) bool {
	var (
		ve *tls.CertificateVerificationError
		ua x509.UnknownAuthorityError
		he x509.HostnameError
		ci x509.CertificateInvalidError
	)
	return errors.As(err, &ve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}
