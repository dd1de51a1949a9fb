package revocation

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/netguard"
)

// Defaults of the Options fields.
const (
	DefaultTimeout         = 10 * time.Second
	DefaultMaxResponseSize = 64 << 10
	DefaultMaxCRLSize      = 8 << 20
	DefaultCacheEntries    = 4096
	DefaultCacheBytes      = 64 << 20
	DefaultSkew            = 5 * time.Minute
)

// failureTTL is how long a fetch that got no answer is remembered, so
// that the sends of the next moments do not each wait for a responder
// that is down.
const failureTTL = 30 * time.Second

// failureSize is what a remembered failure counts in the cache.
const failureSize = 256

// maxURLs bounds the OCSP responders, and separately the CRL
// distribution points, tried for one certificate.
const maxURLs = 3

// NoncePolicy says what to do with the OCSP nonce (RFC 8954).
type NoncePolicy int

const (
	// NonceSend sends a nonce and, when the response echoes one,
	// requires it to be the one sent. A response without a nonce is
	// accepted within its validity window. The default.
	NonceSend NoncePolicy = iota
	// NonceRequire refuses responses that do not echo the nonce sent.
	// Most public responders serve pre-signed responses and echo none.
	NonceRequire
	// NonceOmit sends no nonce, for responders that refuse requests that
	// carry one.
	NonceOmit
)

// Options configures a Checker. A nil *Options means the zero value.
type Options struct {
	// Transport makes the HTTP requests. Nil means one with the settings
	// of http.DefaultTransport and no proxy. Unless AllowPrivate is set,
	// its connections are checked to be to global unicast addresses.
	Transport *http.Transport
	// AllowPrivate lets fetches connect to addresses that are not global
	// unicast (loopback, RFC 1918, link-local...). Set it for tests and
	// for in-house CAs whose responders live on the local network.
	AllowPrivate bool
	// Timeout bounds one fetch. Zero means DefaultTimeout.
	Timeout time.Duration
	// MaxResponseSize bounds an OCSP response in bytes; zero means
	// DefaultMaxResponseSize. MaxCRLSize bounds a CRL; zero means
	// DefaultMaxCRLSize.
	MaxResponseSize int64
	MaxCRLSize      int64
	// CacheEntries and CacheBytes bound the cache of answers; zero means
	// DefaultCacheEntries and DefaultCacheBytes. A negative CacheEntries
	// disables the cache.
	CacheEntries int
	CacheBytes   int64
	// Skew is the clock difference allowed when checking thisUpdate and
	// nextUpdate. Zero means DefaultSkew.
	Skew time.Duration
	// Nonce says whether OCSP requests carry a nonce and whether the
	// response must echo it.
	Nonce NoncePolicy
	// NoCRL skips CRLs: only OCSP is asked.
	NoCRL bool
	// Now returns the time answers are checked against. Nil means
	// time.Now.
	Now func() time.Time
	// Logger receives a debug record per fetch and a warning per
	// invalid answer. Nil means no logging.
	Logger *slog.Logger
}

// Checker checks certificates' revocation status. It is safe for
// concurrent use; make one and share it.
type Checker struct {
	client  *http.Client
	timeout time.Duration
	maxOCSP int64
	maxCRL  int64
	skew    time.Duration
	nonce   NoncePolicy
	noCRL   bool
	nowFunc func() time.Time
	log     *slog.Logger
	cache   *cache
	group   singleflight.Group
}

// New returns a Checker. It refuses (with a *mailsec.ConfigError) a
// Transport whose connections cannot be checked: one that sets the
// deprecated Dial or DialTLS hooks.
func New(o *Options) (*Checker, error) {
	if o == nil {
		o = &Options{}
	}
	c := &Checker{
		timeout: o.Timeout,
		maxOCSP: o.MaxResponseSize,
		maxCRL:  o.MaxCRLSize,
		skew:    o.Skew,
		nonce:   o.Nonce,
		noCRL:   o.NoCRL,
		nowFunc: o.Now,
		log:     o.Logger,
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.maxOCSP <= 0 {
		c.maxOCSP = DefaultMaxResponseSize
	}
	if c.maxCRL <= 0 {
		c.maxCRL = DefaultMaxCRLSize
	}
	if c.skew <= 0 {
		c.skew = DefaultSkew
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.nonce < NonceSend || c.nonce > NonceOmit {
		return nil, &mailsec.ConfigError{Field: "revocation.Options.Nonce", Value: fmt.Sprint(int(c.nonce)), Reason: "not a NoncePolicy"}
	}
	var t *http.Transport
	switch {
	case o.AllowPrivate && o.Transport != nil:
		t = o.Transport.Clone()
	case o.AllowPrivate:
		t = http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil
	default:
		var base http.RoundTripper // a nil *http.Transport must stay a nil interface
		if o.Transport != nil {
			base = o.Transport
		}
		var ok bool
		t, ok = netguard.HTTPTransport(base)
		if !ok {
			return nil, &mailsec.ConfigError{Field: "revocation.Options.Transport",
				Reason: "uses the Dial or DialTLS hooks, whose connections cannot be checked for non-global addresses; use DialContext"}
		}
	}
	c.client = &http.Client{Transport: t, CheckRedirect: checkRedirect}
	entries, bytes := o.CacheEntries, o.CacheBytes
	if entries == 0 {
		entries = DefaultCacheEntries
	}
	if bytes <= 0 {
		bytes = DefaultCacheBytes
	}
	if entries > 0 {
		c.cache = newCache(entries, bytes)
	}
	return c, nil
}

func (c *Checker) now() time.Time {
	if c.nowFunc != nil {
		return c.nowFunc()
	}
	return time.Now()
}

// Source names where a status came from.
type Source string

// The sources of a Status.
const (
	SourceOCSP Source = "OCSP"
	SourceCRL  Source = "CRL"
	// SourceNone: the certificate names neither an OCSP responder nor a
	// CRL distribution point, so its status cannot be checked. (One that
	// names only URLs this package does not fetch is an
	// *UnavailableError.)
	SourceNone Source = "none"
)

// Status is a certificate found not revoked, or one that cannot be
// checked (Source SourceNone).
type Status struct {
	// Subject and Serial identify the certificate.
	Subject string
	Serial  *big.Int
	// Source and URL say where the answer came from.
	Source Source
	URL    string
	// ProducedAt is when the answer was made: an OCSP response's
	// producedAt, a CRL's thisUpdate. NextUpdate is when a newer one is
	// due (zero when the OCSP response gives none).
	ProducedAt time.Time
	NextUpdate time.Time
	// Nonce reports that the OCSP response echoed the request's nonce.
	Nonce bool
	// Cached reports that the answer came from the cache.
	Cached bool
}

// String says in one sentence what was established, for a Receipt's
// notes: "certificate status good (OCSP, http://ocsp.example/, produced
// at 2026-01-02T03:04:05Z)".
func (s *Status) String() string {
	if s.Source == SourceNone {
		return "revocation not checked: " + namesNothing
	}
	return fmt.Sprintf("certificate status good (%s, %s, produced at %s)", s.Source, s.URL, s.ProducedAt.UTC().Format(time.RFC3339))
}

// namesNothing says why a certificate of Source SourceNone cannot be
// checked.
const namesNothing = "the certificate names no OCSP responder and no CRL distribution point"

// Error kinds, matched with errors.Is.
var (
	// ErrRevoked matches a *RevokedError.
	ErrRevoked = errors.New("revocation: certificate revoked")
	// ErrUnavailable matches an *UnavailableError.
	ErrUnavailable = errors.New("revocation: status unavailable")
)

// RevokedError reports a certificate its CA revoked. It is permanent.
type RevokedError struct {
	Subject   string   // the revoked certificate's subject
	Serial    *big.Int // and serial number
	Issuer    string   // its issuer's subject
	RevokedAt time.Time
	// Reason is the CRLReason code (RFC 5280 §5.3.1): 1 keyCompromise,
	// 2 cACompromise, 4 superseded...; 0 unspecified or not given.
	Reason int
	Source Source
	URL    string
}

func (e *RevokedError) Error() string {
	s := fmt.Sprintf("revocation: certificate %s (serial %s, issued by %s) was revoked", e.Subject, serialHex(e.Serial), e.Issuer)
	if !e.RevokedAt.IsZero() {
		s += " at " + e.RevokedAt.UTC().Format(time.RFC3339)
	}
	if e.Reason != 0 {
		s += " (" + reasonName(e.Reason) + ")"
	}
	return s + " according to " + string(e.Source) + " " + e.URL
}

// Is matches ErrRevoked.
func (e *RevokedError) Is(target error) bool { return target == ErrRevoked }

// Temporary is false: a revoked certificate stays revoked.
func (e *RevokedError) Temporary() bool { return false }

// UnavailableError reports that no source gave a usable answer for a
// certificate. Attempts holds one error per URL tried (a *FetchError or
// an *InvalidError), in order, then one *UnsupportedError per URL the
// certificate names that was not fetched. Attempts is empty when the
// certificate names nothing to ask (made so by a caller that refuses such
// a certificate; Check returns a Status of Source SourceNone for it).
type UnavailableError struct {
	Subject  string
	Serial   *big.Int
	Attempts []error
}

func (e *UnavailableError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "revocation: status of certificate %s (serial %s) unavailable", e.Subject, serialHex(e.Serial))
	if len(e.Attempts) == 0 {
		b.WriteString(": " + namesNothing)
	}
	for i, a := range e.Attempts {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(a.Error())
	}
	return b.String()
}

// Is matches ErrUnavailable.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// Unwrap returns the attempts' errors.
func (e *UnavailableError) Unwrap() []error { return e.Attempts }

// Temporary is true when a responder may answer later or a stale CRL
// may be replaced. It is false when the check was cancelled, when there
// was nothing to ask, and when every source was either refused by the
// address guard (a responder on a private address stays there) or not
// fetched (an *UnsupportedError: the certificate will not name another
// URL).
func (e *UnavailableError) Temporary() bool {
	for _, a := range e.Attempts {
		if errors.Is(a, context.Canceled) {
			return false
		}
	}
	for _, a := range e.Attempts {
		var ue *UnsupportedError
		if !errors.Is(a, mailsec.ErrNonGlobalAddress) && !errors.As(a, &ue) {
			return true
		}
	}
	return false
}

// UnsupportedError is a URL a certificate names that is not fetched:
// not an http URL (ldap://, https://...), or a CRL distribution point
// while Options.NoCRL is set. Asking again cannot help.
type UnsupportedError struct {
	Source Source
	URL    string
	Reason string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("%s %s: not fetched: %s", e.Source, e.URL, e.Reason)
}

// FetchError is a request to a responder or distribution point that got
// no answer: the connection failed or was refused (an *AddressError for
// an address that is not global unicast), the server replied with an
// HTTP error, or the answer was too large.
type FetchError struct {
	Source Source
	URL    string
	Err    error
}

func (e *FetchError) Error() string {
	return fmt.Sprintf("%s %s: %v", e.Source, e.URL, e.Err)
}

func (e *FetchError) Unwrap() error { return e.Err }

// InvalidError is an answer that cannot be relied on: it does not parse,
// its signature or its signer's authorisation does not verify, it is for
// another certificate, it is out of date, or it says "unknown".
type InvalidError struct {
	Source Source
	URL    string
	Reason string
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.Source, e.URL, e.Reason)
}

// Check establishes the revocation status of cert, issued by issuer:
// OCSP first, then CRLs (see the package documentation). It returns a
// *Status when cert is good, or (Source SourceNone) when it names no OCSP
// responder and no CRL distribution point at all; a *RevokedError when it
// is revoked; an *UnavailableError when no source gave a usable answer,
// also when cert names only URLs that are not fetched (LDAP or HTTPS
// ones, CRLs with Options.NoCRL), each listed as an *UnsupportedError.
func (c *Checker) Check(ctx context.Context, cert, issuer *x509.Certificate) (*Status, error) {
	if cert == nil || issuer == nil {
		return nil, errors.New("revocation: Check needs the certificate and its issuer")
	}
	ocspURLs, skippedOCSP := httpURLs(cert.OCSPServer)
	crlURLs, skippedCRL := httpURLs(cert.CRLDistributionPoints)
	var skipped []error
	for _, u := range skippedOCSP {
		skipped = append(skipped, &UnsupportedError{Source: SourceOCSP, URL: u, Reason: "only http URLs are fetched"})
	}
	if c.noCRL {
		for _, u := range crlURLs {
			skipped = append(skipped, &UnsupportedError{Source: SourceCRL, URL: u, Reason: "CRLs are not fetched (Options.NoCRL)"})
		}
		crlURLs = nil
	}
	for _, u := range skippedCRL {
		skipped = append(skipped, &UnsupportedError{Source: SourceCRL, URL: u, Reason: "only http URLs are fetched"})
	}
	if len(ocspURLs) == 0 && len(crlURLs) == 0 {
		if len(skipped) > 0 {
			return nil, &UnavailableError{Subject: cert.Subject.String(), Serial: cert.SerialNumber, Attempts: skipped}
		}
		return &Status{Subject: cert.Subject.String(), Serial: cert.SerialNumber, Source: SourceNone}, nil
	}
	var attempts []error
	for _, u := range ocspURLs {
		st, err := c.ocsp(ctx, u, cert, issuer)
		if err == nil {
			return st, nil
		}
		var re *RevokedError
		if errors.As(err, &re) {
			return nil, err
		}
		if ctx.Err() != nil {
			break
		}
		attempts = append(attempts, err)
	}
	for _, u := range crlURLs {
		if ctx.Err() != nil {
			break
		}
		st, err := c.crl(ctx, u, cert, issuer)
		if err == nil {
			return st, nil
		}
		var re *RevokedError
		if errors.As(err, &re) {
			return nil, err
		}
		if ctx.Err() != nil {
			break
		}
		attempts = append(attempts, err)
	}
	if err := ctx.Err(); err != nil {
		attempts = append(attempts, err)
	}
	attempts = append(attempts, skipped...)
	return nil, &UnavailableError{Subject: cert.Subject.String(), Serial: cert.SerialNumber, Attempts: attempts}
}

// fetchFailure is a remembered *FetchError.
type fetchFailure struct{ err error }

// remember caches err under key for failureTTL when it is a fetch that
// got no answer (not one the caller cancelled).
func (c *Checker) remember(key string, err error) {
	var fe *FetchError
	if errors.As(err, &fe) && !errors.Is(err, context.Canceled) {
		c.cache.put(key, fetchFailure{err}, failureSize, c.now().Add(failureTTL))
	}
}

// shared runs fetch once for all concurrent callers with the same key.
// The fetch runs without the first caller's cancellation (it has its own
// timeout), so that one caller giving up does not fail the others; each
// caller waits only as long as its own ctx allows.
func (c *Checker) shared(ctx context.Context, key string, fetch func(context.Context) (any, error)) (any, error) {
	ch := c.group.DoChan(key, func() (any, error) {
		return fetch(context.WithoutCancel(ctx))
	})
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// httpURLs returns the first maxURLs http URLs of us, and the first
// maxURLs others.
func httpURLs(us []string) (usable, other []string) {
	for _, u := range us {
		if len(u) > 7 && strings.EqualFold(u[:7], "http://") {
			if len(usable) < maxURLs {
				usable = append(usable, u)
			}
		} else if len(other) < maxURLs {
			other = append(other, u)
		}
	}
	return usable, other
}

// issuerKey identifies an issuer by its name and key, for cache keys.
func issuerKey(issuer *x509.Certificate) [32]byte {
	h := sha256.New()
	h.Write(issuer.RawSubject)
	h.Write(issuer.RawSubjectPublicKeyInfo)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func serialHex(n *big.Int) string {
	if n == nil {
		return "?"
	}
	return strings.ToUpper(n.Text(16))
}

// reasonName names a CRLReason code (RFC 5280 §5.3.1).
func reasonName(r int) string {
	names := map[int]string{1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged", 4: "superseded",
		5: "cessationOfOperation", 6: "certificateHold", 8: "removeFromCRL", 9: "privilegeWithdrawn", 10: "aACompromise"}
	if n, ok := names[r]; ok {
		return n
	}
	return fmt.Sprintf("reason %d", r)
}
