package pgp

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"golang.org/x/sync/singleflight"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/hostdial"
	"github.com/mailsec/mailsec/internal/netguard"
	"github.com/mailsec/mailsec/internal/syntax"
	"github.com/mailsec/mailsec/internal/typednil"
)

// WKD finds keys in the recipient domain's OpenPGP Web Key Directory
// (draft-koch-openpgp-webkey-service): the advanced method
// (https://openpgpkey.DOMAIN/.well-known/openpgpkey/DOMAIN/hu/HASH) first,
// then the direct method (https://DOMAIN/.well-known/openpgpkey/hu/HASH).
// Only HTTPS is used, redirects included; responses are capped in size and
// time; only keys with a user ID for the address are returned; results
// (found or not) are cached, up to MaxEntries addresses, and concurrent
// lookups of one address share one fetch. "Not found" is a 404 from both
// methods, or a domain that does not exist in DNS; any other failure (a
// timeout, a reset connection, a certificate that does not verify) is an
// error (a *WKDError), which the Sender treats as temporary and never as
// "no key". The key servers' names come from the recipient's domain, so
// by default no connection is made to an address that is not global
// unicast (loopback, private, link-local, the cloud metadata address
// 169.254.169.254, ...; see mailsec.AddressError), checked on each
// connection, redirects included. The zero value is ready to use and
// safe for concurrent use.
type WKD struct {
	// Client fetches the keys. Nil means a client with the system roots
	// and Timeout. Redirects to anything but HTTPS are refused either way.
	// Unless AllowPrivate is set, its Transport must be nil or an
	// *http.Transport, whose connections are then checked (no proxy is
	// used: it would be the only address checked); the same holds when
	// Resolver is set.
	Client *http.Client
	// Resolver, when set, resolves the key servers' names instead of the
	// system's resolver (the same one as direct delivery's, say), and
	// the connections go to the addresses it gives. A name it does not
	// know is "not found".
	Resolver dns.Resolver
	// AllowPrivate lets lookups connect to addresses that are not global
	// unicast. Set it for tests and internal key servers.
	AllowPrivate bool
	// Timeout bounds one lookup (both methods). Zero means 10 seconds.
	Timeout time.Duration
	// MaxSize caps a response body. Zero means 256 KiB.
	MaxSize int64
	// TTL is how long a result stays cached. Zero means one hour; a
	// negative value disables the cache.
	TTL time.Duration
	// URLs returns the URLs to try for addr, in order. Nil means
	// WKDURLs. Tests point it at a local HTTPS server.
	URLs func(addr string) ([]string, error)
	// MaxEntries bounds the cache. Zero means 10000 addresses.
	MaxEntries int

	mu     sync.Mutex
	cache  map[string]wkdEntry
	flight singleflight.Group
}

type wkdEntry struct {
	keys    []*openpgp.Entity
	expires time.Time
}

// WKDURLs returns the advanced and direct method URLs for addr.
func WKDURLs(addr string) ([]string, error) {
	local, domain, ok := strings.Cut(addr, "@")
	if !ok || local == "" || domain == "" || strings.ContainsAny(addr, "/?#\\ \t\r\n") || strings.Contains(domain, "@") {
		return nil, fmt.Errorf("pgp: WKD: not an address: %q", addr)
	}
	domain = foldAddr(domain)
	h := WKDHash(local)
	l := url.QueryEscape(local)
	return []string{
		"https://openpgpkey." + domain + "/.well-known/openpgpkey/" + domain + "/hu/" + h + "?l=" + l,
		"https://" + domain + "/.well-known/openpgpkey/hu/" + h + "?l=" + l,
	}, nil
}

// WKDHash is the z-base-32 encoded SHA-1 of the ASCII-lowercased local
// part, as gpg-wks-client --print-wkd-hash prints it.
func WKDHash(local string) string {
	sum := sha1.Sum([]byte(foldAddr(local)))
	const alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"
	var out strings.Builder
	var acc uint32
	bits := 0
	for _, b := range sum {
		acc = acc<<8 | uint32(b)
		bits += 8
		for bits >= 5 {
			out.WriteByte(alphabet[(acc>>(bits-5))&31])
			bits -= 5
		}
	}
	if bits > 0 {
		out.WriteByte(alphabet[(acc<<(5-bits))&31])
	}
	return out.String()
}

// Lookup implements KeySource.
func (w *WKD) Lookup(ctx context.Context, addr string) ([]*openpgp.Entity, error) {
	key := foldAddr(addr)
	ttl := w.TTL
	if ttl == 0 {
		ttl = time.Hour
	}
	if ttl > 0 {
		w.mu.Lock()
		e, ok := w.cache[key]
		w.mu.Unlock()
		if ok && time.Now().Before(e.expires) {
			if len(e.keys) == 0 {
				return nil, ErrKeyNotFound
			}
			return append([]*openpgp.Entity(nil), e.keys...), nil
		}
	}
	v, err, _ := w.flight.Do(key, func() (any, error) {
		keys, err := w.fetch(ctx, addr)
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			return nil, err // network trouble is not cached
		}
		if ttl > 0 {
			w.store(key, wkdEntry{keys: keys, expires: time.Now().Add(ttl)})
		}
		return keys, nil
	})
	if err != nil {
		return nil, err
	}
	keys := v.([]*openpgp.Entity)
	if len(keys) == 0 {
		return nil, ErrKeyNotFound
	}
	return append([]*openpgp.Entity(nil), keys...), nil
}

// store caches e, first dropping expired entries, and then arbitrary
// ones, when the cache is full.
func (w *WKD) store(key string, e wkdEntry) {
	max := w.MaxEntries
	if max <= 0 {
		max = 10000
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cache == nil {
		w.cache = map[string]wkdEntry{}
	}
	if len(w.cache) >= max {
		now := time.Now()
		for k, old := range w.cache {
			if now.After(old.expires) {
				delete(w.cache, k)
			}
		}
		for k := range w.cache {
			if len(w.cache) < max {
				break
			}
			delete(w.cache, k)
		}
	}
	w.cache[key] = e
}

func (w *WKD) fetch(ctx context.Context, addr string) ([]*openpgp.Entity, error) {
	urls := WKDURLs
	if w.URLs != nil {
		urls = w.URLs
	}
	list, err := urls(addr)
	if err != nil {
		var ve *mailsec.ValidationError
		if errors.As(err, &ve) {
			return nil, err
		}
		return nil, &mailsec.ValidationError{Field: "WKD address", Value: addr, Reason: syntax.PeerText(err.Error())}
	}
	timeout := w.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client, err := w.client(timeout)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, u := range list {
		keys, err := w.get(ctx, client, u, addr)
		if err == nil {
			return keys, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	notFound := true
	for _, e := range errs {
		var ne *net.DNSError
		notFound = notFound && (errors.Is(e, ErrKeyNotFound) || errors.As(e, &ne) && ne.IsNotFound || dns.IsNotFound(e))
	}
	if notFound {
		return nil, ErrKeyNotFound
	}
	return nil, &WKDError{Addr: addr, Errs: errs}
}

// WKDError reports a Web Key Directory lookup that failed for another
// reason than "no key": a network failure, a certificate that does not
// verify, an HTTP status other than 200 or 404, a key server at an
// address that is not global unicast (a *mailsec.AddressError). It
// unwraps to the failure of each URL tried.
type WKDError struct {
	Addr string // the address whose key was looked up
	Errs []error
}

func (e *WKDError) Error() string {
	var b strings.Builder
	b.WriteString("pgp: WKD lookup for ")
	b.WriteString(e.Addr)
	for i, err := range e.Errs {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		// Errors may quote what a server said: cleaned.
		b.WriteString(syntax.PeerText(err.Error()))
	}
	return b.String()
}

func (e *WKDError) Unwrap() []error { return e.Errs }

// Temporary reports whether a later lookup may succeed: when any URL
// failed for a reason other than a refused address.
func (e *WKDError) Temporary() bool {
	for _, err := range e.Errs {
		if !errors.Is(err, mailsec.ErrNonGlobalAddress) {
			return true
		}
	}
	return false
}

// Validate checks the configuration without connecting: Client and
// Resolver must not hold nil pointers, and unless AllowPrivate is set (or
// with a Resolver) Client's Transport must be an *http.Transport whose
// connections can be checked. It returns a *mailsec.ConfigError, as every
// Lookup does until the configuration is fixed; New calls it.
func (w *WKD) Validate() error {
	_, err := w.client(0)
	return err
}

func (w *WKD) client(timeout time.Duration) (*http.Client, error) {
	c := http.Client{Timeout: timeout}
	if w.Client != nil {
		c = *w.Client
	}
	// A nil pointer in an interface field is not the field left nil: its
	// methods would panic, the Resolver's in a goroutine of net/http's.
	if c.Transport != nil && typednil.Is(c.Transport) {
		return nil, configError("WKD.Client.Transport", fmt.Sprintf("%T", c.Transport), "a nil pointer; leave the field nil for the default transport")
	}
	if w.Resolver != nil && typednil.Is(w.Resolver) {
		return nil, configError("WKD.Resolver", fmt.Sprintf("%T", w.Resolver), "a nil pointer; leave the field nil for the system's resolver")
	}
	if !w.AllowPrivate || w.Resolver != nil {
		t, err := w.transport(c.Transport)
		if err != nil {
			return nil, err
		}
		c.Transport = t
	}
	next := c.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" {
			return fmt.Errorf("pgp: WKD: redirect to %s refused: HTTPS only", req.URL.Scheme)
		}
		if len(via) >= 5 {
			return errors.New("pgp: WKD: too many redirects")
		}
		if next != nil {
			return next(req, via)
		}
		return nil
	}
	return &c, nil
}

// addressError is a connection to host refused by the address guard.
func addressError(host string, e *netguard.Error) error {
	return &mailsec.AddressError{Host: host, Addr: e.Addr, Reason: e.Reason}
}

// maxKeyServerAddrs bounds the addresses of one key server a request
// tries when Resolver gives them.
const maxKeyServerAddrs = 4

// transport is base made to check every connection (unless AllowPrivate)
// and to resolve names through Resolver (when set).
func (w *WKD) transport(base http.RoundTripper) (*http.Transport, error) {
	var t *http.Transport
	switch b := base.(type) {
	case nil:
		if w.AllowPrivate {
			t = http.DefaultTransport.(*http.Transport).Clone()
		} else {
			// A net.Dialer whose Control function checks each address
			// before the connect.
			t, _ = netguard.HTTPTransport(nil)
		}
	case *http.Transport:
		t = b.Clone()
		if !w.AllowPrivate {
			g, ok := netguard.HTTPTransport(t)
			if !ok {
				return nil, configError("WKD.Client.Transport", "", "uses the Dial or DialTLS hooks, whose connections cannot be checked; use DialContext")
			}
			t = g
		}
	default:
		return nil, configError("WKD.Client.Transport", "", "not an *http.Transport, so its connections cannot be checked for non-global addresses or routed through Resolver; use one, or set AllowPrivate and no Resolver")
	}
	if w.Resolver == nil {
		return t, nil
	}
	dial := t.DialContext
	if dial == nil {
		dial = new(net.Dialer).DialContext
	}
	t.Proxy = nil // names go through Resolver, not a proxy's
	// dial refuses non-global addresses unless AllowPrivate.
	t.DialContext = (&hostdial.Dialer{Resolver: w.Resolver, Dial: dial, AllowPrivate: w.AllowPrivate, MaxAddrs: maxKeyServerAddrs,
		Refused: addressError,
		Panicked: func(addr string, v any) error {
			return fmt.Errorf("pgp: WKD: resolving and connecting to %s panicked: %v", addr, v)
		}}).DialContext
	return t, nil
}

func (w *WKD) get(ctx context.Context, c *http.Client, u, addr string) ([]*openpgp.Entity, error) {
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme != "https" {
		return nil, fmt.Errorf("pgp: WKD: %q refused: HTTPS only", u)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		if ge, ok := netguard.As(err); ok {
			host := pu.Hostname()
			var ue *url.Error
			if errors.As(err, &ue) {
				if p, perr := url.Parse(ue.URL); perr == nil {
					host = p.Hostname() // a redirect's target
				}
			}
			return nil, addressError(host, ge)
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, ErrKeyNotFound
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pgp: WKD: %s: HTTP %d", pu.Host, resp.StatusCode)
	}
	max := w.MaxSize
	if max <= 0 {
		max = 256 << 10
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("pgp: WKD: %s: %w", pu.Host, err)
	}
	if int64(len(body)) > max {
		return nil, fmt.Errorf("pgp: WKD: %s: response larger than %d bytes", pu.Host, max)
	}
	return ParseWKDResponse(body, addr)
}

// ParseWKDResponse parses a WKD response body (binary or armored keys)
// and keeps only the keys with a user ID for addr; with none it returns
// ErrKeyNotFound. WKD.Lookup uses it; it is exported for applications that
// fetch keys their own way.
func ParseWKDResponse(body []byte, addr string) ([]*openpgp.Entity, error) {
	kr, err := ReadKeyRing(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	es, _ := kr.Lookup(context.Background(), addr)
	if len(es) == 0 {
		return nil, ErrKeyNotFound
	}
	return es, nil
}
