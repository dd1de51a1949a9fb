package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReason(t *testing.T) {
	refused := []string{
		"0.0.0.0", "0.1.2.3", "10.0.0.1", "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.255.255.254",
		"169.254.169.254", "169.254.0.1", "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.2.10",
		"192.88.99.1", "192.168.1.1", "198.18.0.1", "198.19.255.255", "198.51.100.1", "203.0.113.5",
		"224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
		"::", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
		"fe80::1", "fe80::1%eth0", "fec0::1", "fc00::1", "fd12:3456::1", "ff02::1", "ff05::2",
		"100::1", "64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b:1::808:808",
		"2002:a00:1::1", "2002:7f00:1::", "2002:c0a8:101::1", "2001::1", "2001:0:4136:e378::1",
		"2001:2::1", "2001:10::1", "2001:db8::25", "3fff::1", "5f00::1", "4000::1",
	}
	for _, s := range refused {
		if r := Reason(netip.MustParseAddr(s)); r == "" {
			t.Errorf("%s: allowed, want refused", s)
		}
	}
	allowed := []string{
		"8.8.8.8", "1.1.1.1", "9.9.9.9", "100.63.255.255", "100.128.0.1", "172.15.255.255", "172.32.0.1",
		"192.0.1.1", "192.0.3.1", "192.169.0.1", "198.17.255.255", "198.20.0.1", "223.255.255.255",
		"::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2001:4860:4860::8888",
		"2a00:1450:4001:80b::200e", "2001:3::1", "2001:1::1", "2001:4:112::1",
	}
	for _, s := range allowed {
		if r := Reason(netip.MustParseAddr(s)); r != "" {
			t.Errorf("%s: refused (%s), want allowed", s, r)
		}
	}
	if Reason(netip.Addr{}) == "" {
		t.Error("the zero Addr is allowed")
	}
	if r := Reason(netip.MustParseAddr("::ffff:127.0.0.1")); !strings.Contains(r, "loopback") || !strings.Contains(r, "IPv4-mapped") {
		t.Errorf("mapped loopback reason %q", r)
	}
}

func listen(t *testing.T) (net.Listener, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return l, port
}

// The Control layer alone: a net.Dialer handed a name that resolves to
// loopback is stopped at the connect, after resolution.
func TestNetDialerChecksTheConnectedAddress(t *testing.T) {
	_, port := listen(t)
	var appControl int
	d := &net.Dialer{Timeout: 5 * time.Second, Control: func(network, address string, c syscall.RawConn) error {
		appControl++
		return nil
	}}
	dial := NetDialer(d)
	c, err := dial(context.Background(), "tcp4", "localhost:"+port)
	if err == nil {
		_ = c.Close()
		t.Fatal("connected to localhost")
	}
	e, ok := As(err)
	if !ok || e.Addr != netip.MustParseAddr("127.0.0.1") || !strings.Contains(e.Reason, "loopback") {
		t.Fatalf("err = %v, want a netguard.Error for 127.0.0.1", err)
	}
	if appControl == 0 {
		t.Fatal("the dialer's own Control was not run")
	}
	if d.Control == nil || d.ControlContext != nil {
		t.Fatal("the caller's dialer was modified")
	}
	// Without the guard the same dialer connects: the refusal above is
	// the guard's.
	c, err = d.DialContext(context.Background(), "tcp4", "localhost:"+port)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
}

// The connection layer alone: a dial function that ignores the address it
// is given and connects to loopback is caught by the peer address.
func TestDialChecksThePeer(t *testing.T) {
	_, port := listen(t)
	var nd net.Dialer
	sneaky := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nd.DialContext(ctx, "tcp", "127.0.0.1:"+port)
	}
	c, err := Dial(sneaky)(context.Background(), "tcp", "8.8.8.8:25")
	if err == nil {
		_ = c.Close()
		t.Fatal("connection to loopback kept")
	}
	if e, ok := As(err); !ok || e.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("err = %v", err)
	}
	// An IP literal is refused before the dial function runs.
	called := false
	_, err = Dial(func(ctx context.Context, network, addr string) (net.Conn, error) {
		called = true
		return nil, errors.New("dialled")
	})(context.Background(), "tcp", "[::ffff:169.254.169.254]:80")
	if called || err == nil {
		t.Fatalf("literal metadata address: called %v, err %v", called, err)
	}
	// A peer without an IP address is refused.
	a, b := net.Pipe()
	defer b.Close()
	_, err = Dial(func(context.Context, string, string) (net.Conn, error) { return a, nil })(context.Background(), "tcp", "mx.example:25")
	if _, ok := As(err); !ok {
		t.Fatalf("pipe peer: err = %v", err)
	}
}

func FuzzReason(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::ffff:10.0.0.1", "2002:a00:1::", "64:ff9b::7f00:1", "8.8.8.8"} {
		f.Add(netip.MustParseAddr(s).AsSlice())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		r := Reason(a)
		// The standard library's own classes are always refused.
		if (a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() ||
			a.IsInterfaceLocalMulticast() || a.IsLinkLocalMulticast()) && r == "" {
			t.Fatalf("%s allowed", a)
		}
		if a.Is4In6() && (Reason(a.Unmap()) == "") != (r == "") {
			t.Fatalf("%s judged apart from %s", a, a.Unmap())
		}
	})
}
