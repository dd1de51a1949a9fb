package netguard

import (
	"net"
	"net/http"
	"time"
)

// HTTPTransport returns a transport whose every connection is checked as
// Dial checks it: a clone of base, or with base nil a transport with the
// settings of http.DefaultTransport. It uses no proxy, since a proxy
// would be the only address checked. ok is false when base is a
// RoundTripper other than an *http.Transport, or one that sets the
// deprecated Dial or DialTLS hooks: its connections cannot be checked.
func HTTPTransport(base http.RoundTripper) (t *http.Transport, ok bool) {
	switch b := base.(type) {
	case nil:
		d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
		t = &http.Transport{
			DialContext:           NetDialer(d),
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
		return t, true
	case *http.Transport:
		t = b.Clone()
	default:
		return nil, false
	}
	t.Proxy = nil
	t.OnProxyConnectResponse = nil
	if deprecatedDial(t) {
		// Transport.Dial and Transport.DialTLS carry no context; a
		// transport that uses them is not one this package rewrites.
		return nil, false
	}
	if t.DialContext != nil {
		t.DialContext = Dial(t.DialContext)
	} else {
		t.DialContext = NetDialer(&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second})
	}
	if t.DialTLSContext != nil {
		t.DialTLSContext = Dial(t.DialTLSContext)
	}
	return t, true
}

// deprecatedDial reports whether t sets one of the dial hooks without a
// context, which net/http would still call.
func deprecatedDial(t *http.Transport) bool {
	//lint:ignore SA1019 read only to refuse a transport that sets it
	return t.Dial != nil || t.DialTLS != nil
}
