package transport

import (
	"crypto/tls"
	"slices"
	"strconv"
	"strings"
)

// TLS session resumption
//
// A transport keeps the TLS sessions (tickets) its servers issue, so that
// a new connection to a server it has spoken to resumes one instead of
// running a full handshake: the server signs nothing and this side
// verifies no chain, which is most of the CPU a new session costs. A
// resumed session is never taken on trust:
//
//   - Sessions are kept per transport and stored under the server name and
//     the whole requirement they were established under (the mode, pins,
//     TLSA records, reference names, the label the Receipt gives), so a
//     session established under one requirement is never offered under
//     another. The application's tls.Config.ClientSessionCache is not used:
//     it would share sessions across requirements.
//   - crypto/tls (Go 1.21 and later) checks a cached session again before
//     offering it when it verifies chains itself (WebPKI): the cached
//     chains must still verify against the configuration's roots, at its
//     time, for the server name. Where this package verifies instead
//     (pins, DANE, the recipient domain), it does so in VerifyConnection,
//     which crypto/tls calls for resumed sessions too, with the cached
//     certificates; and checkHandshake checks the result once more.
//   - VerifyPeerCertificate is not called on resumption. An application
//     that sets it in the base configuration (where a WebPKI session keeps
//     it) gets no resumption, so its check runs on every session.
//
// A resumed TLS 1.3 handshake takes as many round trips as a full one; what
// it saves is the signature and the chain verification.

// sessionCacheSize bounds the sessions a transport keeps: one per server
// name and requirement.
const sessionCacheSize = 256

// sessionCache holds the TLS sessions of one transport.
type sessionCache struct {
	store tls.ClientSessionCache
}

// newSessionCache returns a transport's session cache, or nil when the
// base configuration disables session tickets.
func newSessionCache(base *tls.Config) *sessionCache {
	if base != nil && base.SessionTicketsDisabled {
		return nil
	}
	return &sessionCache{store: tls.NewLRUClientSessionCache(sessionCacheSize)}
}

// scoped returns the session cache for a handshake under pol with cfg,
// the configuration pol produced: nil (no resumption) when c is nil or cfg
// has a check crypto/tls skips on resumption.
func (c *sessionCache) scoped(pol *tlsPolicy, cfg *tls.Config) tls.ClientSessionCache {
	if c == nil || cfg.SessionTicketsDisabled || cfg.VerifyPeerCertificate != nil {
		return nil
	}
	return &scopedCache{store: c.store, prefix: pol.resumptionKey()}
}

// scopedCache stores sessions under a requirement's key. crypto/tls asks
// for the server name; the requirement is put in front of it.
type scopedCache struct {
	store  tls.ClientSessionCache
	prefix string
}

func (s *scopedCache) Get(key string) (*tls.ClientSessionState, bool) {
	return s.store.Get(s.prefix + key)
}

func (s *scopedCache) Put(key string, cs *tls.ClientSessionState) {
	s.store.Put(s.prefix+key, cs)
}

// resumptionKey names everything a session under p is checked against,
// so that only sessions established under the same requirement share it.
func (p *tlsPolicy) resumptionKey() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(int(p.mode)))
	b.WriteByte(0)
	b.WriteString(string(p.label))
	b.WriteByte(0)
	pins := make([]string, len(p.pins))
	for i, pin := range p.pins {
		pins[i] = pin.String()
	}
	slices.Sort(pins)
	b.WriteString(strings.Join(pins, ","))
	b.WriteByte(0)
	tlsa := make([]string, len(p.tlsa))
	for i, r := range p.tlsa {
		tlsa[i] = r.String()
	}
	slices.Sort(tlsa)
	b.WriteString(strings.Join(tlsa, ","))
	b.WriteByte(0)
	b.WriteString(strings.Join(p.names, ","))
	b.WriteByte(0)
	return b.String()
}
