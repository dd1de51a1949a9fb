// Package netguard decides which IP addresses the library connects to on
// a stranger's say-so, and holds to it where the connection is made.
//
// A recipient domain is attacker-chosen input (a sign-up form takes any
// address), and so are the names its DNS hands out: MX hosts, the
// MTA-STS policy host, the Web Key Directory hosts. Without a guard, a
// domain whose MX is 127.0.0.1 or 169.254.169.254 turns the library into
// a client of services that trust the local network: a cloud metadata
// endpoint, an internal SMTP relay, an admin interface. [Reason] says
// whether an address is one the library may reach by default (global
// unicast), and the dial wrappers apply it to the address actually
// connected to, so that neither a second DNS answer nor a dialer that
// resolves names itself can lead elsewhere.
//
// The package is a leaf: it imports nothing of the library but the
// internal typednil helper, and callers turn an [*Error] into the
// library's typed error with the host name.
package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"

	"github.com/mailsec/mailsec/internal/typednil"
)

// Error reports a connection refused because its address is not a
// global unicast address.
type Error struct {
	// Addr is the address refused; invalid when the connection's peer
	// address was not an IP address at all.
	Addr netip.Addr
	// Reason says what kind of address it is ("loopback", "private
	// (RFC 1918)", ...).
	Reason string
}

func (e *Error) Error() string {
	a := "a peer without an IP address"
	if e.Addr.IsValid() {
		a = e.Addr.String()
	}
	return "refused to connect to " + a + " (" + e.Reason + "): not a global unicast address"
}

type prefixReason struct {
	p      netip.Prefix
	reason string
}

func pr(s, reason string) prefixReason {
	return prefixReason{p: netip.MustParsePrefix(s), reason: reason}
}

// v4Special lists the IPv4 blocks of the IANA special-purpose address
// registry (RFC 6890 and its updates) that are not globally reachable,
// with the class-E and multicast space.
var v4Special = []prefixReason{
	pr("0.0.0.0/8", "\"this network\" (0.0.0.0/8)"),
	pr("10.0.0.0/8", "private (RFC 1918)"),
	pr("100.64.0.0/10", "shared address space (carrier-grade NAT, RFC 6598)"),
	pr("127.0.0.0/8", "loopback"),
	pr("169.254.0.0/16", "link-local (cloud metadata services live at 169.254.169.254)"),
	pr("172.16.0.0/12", "private (RFC 1918)"),
	pr("192.0.0.0/24", "IETF protocol assignments (192.0.0.0/24)"),
	pr("192.0.2.0/24", "documentation (TEST-NET-1)"),
	pr("192.88.99.0/24", "6to4 relay anycast (deprecated, RFC 7526)"),
	pr("192.168.0.0/16", "private (RFC 1918)"),
	pr("198.18.0.0/15", "benchmarking (RFC 2544)"),
	pr("198.51.100.0/24", "documentation (TEST-NET-2)"),
	pr("203.0.113.0/24", "documentation (TEST-NET-3)"),
	pr("224.0.0.0/4", "multicast"),
	pr("255.255.255.255/32", "broadcast"),
	pr("240.0.0.0/4", "reserved (240.0.0.0/4)"),
}

// v6Special lists the blocks inside 2000::/3 (the only IPv6 space
// allocated for global unicast) that are not globally reachable, or that
// embed an IPv4 address checked on its own.
var v6Special = []prefixReason{
	pr("2001:db8::/32", "documentation (2001:db8::/32)"),
	pr("3fff::/20", "documentation (3fff::/20)"),
}

// v6GlobalInIETF are the globally reachable blocks of 2001::/23 (IETF
// protocol assignments), which is refused otherwise (Teredo, 2001::/32,
// among them).
var v6GlobalInIETF = []netip.Prefix{
	netip.MustParsePrefix("2001:1::1/128"),
	netip.MustParsePrefix("2001:1::2/128"),
	netip.MustParsePrefix("2001:3::/32"),
	netip.MustParsePrefix("2001:4:112::/48"),
}

var (
	global6     = netip.MustParsePrefix("2000::/3")
	ietf6       = netip.MustParsePrefix("2001::/23")
	sixToFour   = netip.MustParsePrefix("2002::/16")
	nat64       = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local  = netip.MustParsePrefix("64:ff9b:1::/48")
	uniqueLocal = netip.MustParsePrefix("fc00::/7")
	siteLocal   = netip.MustParsePrefix("fec0::/10")
)

// Reason returns why a is not an address the library connects to by
// default, or "" when it is a global unicast address.
//
// Refused are, for IPv4: 0.0.0.0/8, 10/8, 100.64/10 (CGNAT), 127/8,
// 169.254/16 (link-local, the cloud metadata address among them), 172.16/12,
// 192.0.0/24, the documentation ranges 192.0.2/24, 198.51.100/24 and
// 203.0.113/24, 192.88.99/24, 192.168/16, 198.18/15, multicast 224/4,
// 240/4 and the broadcast address. For IPv6: everything outside 2000::/3
// (the unspecified address, loopback, IPv4-compatible, link-local,
// site-local, unique local fc00::/7, multicast, discard-only), the
// documentation ranges 2001:db8::/32 and 3fff::/20, and 2001::/23 but for
// its few global blocks (Teredo, 2001::/32, is refused). An IPv4 address
// carried in IPv6 is judged as IPv4: IPv4-mapped (::ffff:0:0/96), 6to4
// (2002::/16) and the NAT64 well-known prefix (64:ff9b::/96); the local
// NAT64 prefix 64:ff9b:1::/48 is refused.
func Reason(a netip.Addr) string {
	if !a.IsValid() {
		return "not an IP address"
	}
	a = a.WithZone("")
	if a.Is4In6() {
		if r := Reason(a.Unmap()); r != "" {
			return r + ", IPv4-mapped"
		}
		return ""
	}
	if a.Is4() {
		for _, s := range v4Special {
			if s.p.Contains(a) {
				return s.reason
			}
		}
		return ""
	}
	b := a.As16()
	switch {
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast():
		return "multicast"
	case uniqueLocal.Contains(a):
		return "unique local (fc00::/7)"
	case siteLocal.Contains(a):
		return "site-local (deprecated)"
	case nat64.Contains(a):
		v4 := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		if r := Reason(v4); r != "" {
			return r + ", in NAT64 64:ff9b::/96"
		}
		return ""
	case nat64Local.Contains(a):
		return "local-use NAT64 (64:ff9b:1::/48)"
	case !global6.Contains(a):
		return "not global unicast (outside 2000::/3)"
	case sixToFour.Contains(a):
		v4 := netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
		if r := Reason(v4); r != "" {
			return r + ", in 6to4 2002::/16"
		}
		return ""
	case ietf6.Contains(a):
		for _, p := range v6GlobalInIETF {
			if p.Contains(a) {
				return ""
			}
		}
		return "IETF protocol assignments (2001::/23: Teredo, benchmarking, ORCHID)"
	}
	for _, s := range v6Special {
		if s.p.Contains(a) {
			return s.reason
		}
	}
	return ""
}

// Check returns an *Error when a is not a global unicast address.
func Check(a netip.Addr) error {
	if r := Reason(a); r != "" {
		return &Error{Addr: a.WithZone(""), Reason: r}
	}
	return nil
}

// checkAddrString checks an "ip:port" address as the operating system
// is about to connect to it.
func checkAddrString(address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &Error{Reason: "not an IP address and port: " + address}
	}
	return Check(ap.Addr())
}

// Control is a net.Dialer Control function that refuses to connect to an
// address that is not global unicast. It runs after the name was resolved
// and before the connect system call, on the address connected to.
func Control(network, address string, _ syscall.RawConn) error {
	return checkAddrString(address)
}

// DialFunc opens a connection, like (*net.Dialer).DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// NetDialer returns a dial function of a copy of d (nil: a zero
// net.Dialer) whose every connection attempt is first checked by Control,
// after d's own Control or ControlContext, if any, has run.
func NetDialer(d *net.Dialer) DialFunc {
	var nd net.Dialer
	if d != nil {
		nd = *d
	}
	ctl, ctlCtx := nd.Control, nd.ControlContext
	nd.Control = nil
	nd.ControlContext = func(ctx context.Context, network, address string, c syscall.RawConn) error {
		switch {
		case ctlCtx != nil:
			if err := ctlCtx(ctx, network, address, c); err != nil {
				return err
			}
		case ctl != nil:
			if err := ctl(network, address, c); err != nil {
				return err
			}
		}
		return checkAddrString(address)
	}
	return nd.DialContext
}

// Dial wraps any dial function: an address given as an IP literal is
// checked before dial is called, and the connection's peer address is
// checked once it is open; a connection to a refused address, or one
// whose peer address is not an IP address, is closed and refused. A
// dialer that connects through a proxy reports the proxy's address, so
// it is the proxy that is checked.
func Dial(dial DialFunc) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			if a, err := netip.ParseAddr(host); err == nil {
				if err := Check(a); err != nil {
					return nil, &net.OpError{Op: "dial", Net: network, Err: err}
				}
			}
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if err := CheckConn(c); err != nil {
			_ = c.Close()
			return nil, &net.OpError{Op: "dial", Net: network, Err: err}
		}
		return c, nil
	}
}

// CheckConn checks the peer address of an open connection.
func CheckConn(c net.Conn) error {
	ra := c.RemoteAddr()
	if typednil.Is(ra) {
		// Nil, or a nil *net.TCPAddr, whose methods would panic.
		return &Error{Reason: "no peer address"}
	}
	if ta, ok := ra.(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return Check(a.Unmap())
	}
	ap, err := netip.ParseAddrPort(ra.String())
	if err != nil {
		return &Error{Reason: "peer address " + ra.Network() + " " + ra.String() + " is not an IP address"}
	}
	return Check(ap.Addr())
}

// As returns the *Error in err's chain, if any.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
