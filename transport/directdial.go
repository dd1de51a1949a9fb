package transport

import (
	"context"
	"net"

	"github.com/mailsec/mailsec/internal/netguard"
)

// guardDialer makes d refuse addresses that are not global unicast at the
// moment of connecting: a *net.Dialer through a Control function on the
// address connected to, any other Dialer on the peer address of the
// connection it returns.
func guardDialer(d Dialer) Dialer {
	if nd, ok := d.(*net.Dialer); ok {
		return guardedDial(netguard.NetDialer(nd))
	}
	return guardedDial(netguard.Dial(d.DialContext))
}

type guardedDial netguard.DialFunc

func (f guardedDial) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}
