// Package hostdial connects to a server by name at the addresses a
// dns.Resolver gives for it, for the HTTPS clients whose server names a
// recipient domain chooses: the MTA-STS policy host ("mta-sts.<domain>")
// and the Web Key Directory hosts. Resolving through the Resolver, rather
// than letting net/http ask the system, keeps every name of one delivery
// in one view of the DNS (a test zone, a split-horizon resolver); the
// TLS certificate is still checked for the server's name by the caller's
// HTTP transport.
//
// Unless AllowPrivate is set, an address that is not global unicast is
// refused before anything is dialled (the Dial function given must check
// the connection again, for addresses a custom dialer reaches some other
// way), and at most MaxAddrs addresses are tried, so that a name with a
// hundred addresses costs a few connection attempts.
//
// The package imports nothing of the library above the dns package and the
// internal netguard: callers turn a refusal into their typed error
// (Refused).
package hostdial

import (
	"context"
	"errors"
	"net"

	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/netguard"
)

// Dialer connects to "host:port" addresses by resolving host through
// Resolver. Its DialContext fits http.Transport.DialContext. The fields
// are set once; a Dialer is safe for concurrent use.
type Dialer struct {
	// Resolver gives the host's addresses. Required.
	Resolver dns.Resolver
	// Dial connects to one "ip:port" address. Unless AllowPrivate, it
	// must refuse non-global addresses itself (netguard.NetDialer or
	// netguard.Dial), with a *netguard.Error.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// AllowPrivate lets addresses that are not global unicast through.
	AllowPrivate bool
	// MaxAddrs bounds the addresses dialled per connection; addresses
	// refused as not global do not count. It must be positive.
	MaxAddrs int
	// Refused turns the refusal of a non-global address of host, before
	// dialling or by Dial's guard, into the error reported for it (the
	// library's *mailsec.AddressError).
	Refused func(host string, e *netguard.Error) error
	// Panicked turns a panic in Resolver or Dial into the error
	// DialContext returns: DialContext runs in goroutines of net/http's,
	// where a panic would take the process down.
	Panicked func(addr string, v any) error
}

// DialContext connects to addr ("host:port") at the first of host's
// addresses that answers. A refused address is reported as Refused makes
// it; with several failures the error joins them all, in the order tried. A host without addresses is a *dns.Error matching
// dns.ErrNoRecords.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (conn net.Conn, err error) {
	defer func() {
		if v := recover(); v != nil {
			conn, err = nil, d.Panicked(addr, v)
		}
	}()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ans, err := d.Resolver.LookupIP(ctx, host)
	if err != nil {
		return nil, err
	}
	var errs []error
	tried := 0
	for _, ip := range ans.Records {
		if !d.AllowPrivate {
			if r := netguard.Reason(ip); r != "" {
				errs = append(errs, d.Refused(host, &netguard.Error{Addr: ip.WithZone(""), Reason: r}))
				continue
			}
		}
		if tried == d.MaxAddrs {
			break
		}
		tried++
		c, err := d.Dial(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		if ge, ok := netguard.As(err); ok {
			// The dialer reached, or was about to reach, an address the
			// guard refuses.
			err = d.Refused(host, ge)
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, &dns.Error{Name: host, Type: "A/AAAA", Kind: dns.NoRecords}
	}
	return nil, errors.Join(errs...)
}
