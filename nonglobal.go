package mailsec

import (
	"errors"
	"net/netip"
)

// ErrNonGlobalAddress matches an *AddressError: a connection to an address
// that is not global unicast (loopback, private, link-local, ...) was
// refused.
var ErrNonGlobalAddress = errors.New("mailsec: connection to a non-global address refused")

// AddressError reports a connection the library refused to make because
// the address a name led to is not a global unicast address: loopback,
// private, shared (CGNAT), link-local (the cloud metadata address
// 169.254.169.254 among them), unspecified, multicast, broadcast,
// reserved or documentation space, unique local or site-local IPv6, or an
// IPv4 address of those kinds inside IPv6 (IPv4-mapped, 6to4, NAT64).
// Direct delivery to MX hosts, the MTA-STS policy fetch and the Web Key
// Directory key fetch refuse such addresses by default, because the names
// that lead to them are chosen by whoever controls a recipient domain; an
// explicit AllowPrivate option on each lets them through. Nothing was sent
// to the address.
type AddressError struct {
	// Host is the name being connected to: the MX host, the policy host
	// ("mta-sts.<domain>") or the key server.
	Host string
	// Addr is the address refused; it is the zero Addr when the peer of
	// a connection a custom dialer opened had no IP address to check.
	Addr netip.Addr
	// Reason says what kind of address it is: "loopback", "private (RFC
	// 1918)", "link-local (...)".
	Reason string
}

func (e *AddressError) Error() string {
	a := "a peer without an IP address"
	if e.Addr.IsValid() {
		a = e.Addr.String()
	}
	return "mailsec: " + e.Host + ": refused to connect to " + a + " (" + e.Reason + "): not a global unicast address"
}

// Is matches ErrNonGlobalAddress.
func (e *AddressError) Is(target error) bool { return target == ErrNonGlobalAddress }

// Temporary is false: the same DNS answer leads to the same refusal.
func (e *AddressError) Temporary() bool { return false }
