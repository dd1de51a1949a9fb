package hostdial_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/hostdial"
	"github.com/mailsec/mailsec/internal/netguard"
	"github.com/mailsec/mailsec/mailsectest"
)

// recorder is a Dial function that records the addresses asked for and
// fails for those in fail (with the error given), connecting the others
// to one end of a pipe.
type recorder struct {
	mu    sync.Mutex
	dials []string
	fail  map[string]error
}

func (r *recorder) dial(_ context.Context, _, addr string) (net.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dials = append(r.dials, addr)
	if err, ok := r.fail[addr]; ok {
		return nil, err
	}
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

// addressError is the error a caller makes of a refusal.
func addressError(host string, e *netguard.Error) error {
	return &mailsec.AddressError{Host: host, Addr: e.Addr, Reason: e.Reason}
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// Addresses that are not global unicast are refused without a dial and
// do not count against MaxAddrs; the others are tried in the order the
// Resolver gave them, at most MaxAddrs of them.
func TestRefusesNonGlobalAndBoundsAttempts(t *testing.T) {
	res := mailsectest.NewResolver()
	res.IP("keys.example.org", addrs("127.0.0.1", "10.0.0.1", "169.254.169.254", "192.0.2.1", "198.51.100.1", "203.0.113.1", "8.8.8.8", "8.8.4.4", "1.1.1.1")...)
	refused := errors.New("connection refused")
	rec := &recorder{fail: map[string]error{"8.8.8.8:443": refused, "8.8.4.4:443": refused, "1.1.1.1:443": refused}}
	d := &hostdial.Dialer{Refused: addressError, Resolver: res, Dial: rec.dial, MaxAddrs: 2}
	_, err := d.DialContext(context.Background(), "tcp", "keys.example.org:443")
	if want := []string{"8.8.8.8:443", "8.8.4.4:443"}; !slices.Equal(rec.dials, want) {
		t.Errorf("dialled %q, want %q", rec.dials, want)
	}
	var ae *mailsec.AddressError
	if !errors.As(err, &ae) || ae.Host != "keys.example.org" || ae.Addr != netip.MustParseAddr("127.0.0.1") || !errors.Is(err, refused) {
		t.Errorf("err = %v, want the refusals (an AddressError for keys.example.org first) and the dial errors", err)
	}
	if n := strings.Count(err.Error(), "not a global unicast address"); n != 6 {
		t.Errorf("%d addresses reported refused, want 6: %v", n, err)
	}

	// AllowPrivate: every address may be dialled, still at most MaxAddrs.
	rec = &recorder{fail: map[string]error{"127.0.0.1:443": refused}}
	d = &hostdial.Dialer{Refused: addressError, Resolver: res, Dial: rec.dial, MaxAddrs: 2, AllowPrivate: true}
	c, err := d.DialContext(context.Background(), "tcp", "keys.example.org:443")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if want := []string{"127.0.0.1:443", "10.0.0.1:443"}; !slices.Equal(rec.dials, want) {
		t.Errorf("with AllowPrivate, dialled %q, want %q", rec.dials, want)
	}
}

// A refusal by the Dial function's own guard (a dialer that connected
// somewhere else) becomes an AddressError naming the host.
func TestGuardErrorNamesTheHost(t *testing.T) {
	res := mailsectest.NewResolver()
	res.IP("mta-sts.example.org", addrs("8.8.8.8")...)
	rec := &recorder{fail: map[string]error{"8.8.8.8:443": &netguard.Error{Addr: netip.MustParseAddr("127.0.0.1"), Reason: "loopback"}}}
	d := &hostdial.Dialer{Refused: addressError, Resolver: res, Dial: rec.dial, MaxAddrs: 4}
	_, err := d.DialContext(context.Background(), "tcp", "mta-sts.example.org:443")
	var ae *mailsec.AddressError
	if !errors.As(err, &ae) || ae.Host != "mta-sts.example.org" || ae.Addr != netip.MustParseAddr("127.0.0.1") || ae.Reason != "loopback" {
		t.Fatalf("err = %v, want an AddressError for mta-sts.example.org at 127.0.0.1", err)
	}
}

// Names are resolved through the Resolver only: its errors come back as
// they are, and an answer without addresses is "no records".
func TestResolverErrors(t *testing.T) {
	res := mailsectest.NewResolver()
	rec := &recorder{}
	d := &hostdial.Dialer{Refused: addressError, Resolver: res, Dial: rec.dial, MaxAddrs: 4}
	_, err := d.DialContext(context.Background(), "tcp", "localhost:443")
	if !errors.Is(err, dns.ErrNXDomain) || len(rec.dials) != 0 {
		t.Errorf("a name the Resolver does not know: %v, dialled %q", err, rec.dials)
	}
	res.Fail("IP", "broken.example", &dns.Error{Kind: dns.ServerFailure})
	_, err = d.DialContext(context.Background(), "tcp", "broken.example:443")
	var de *dns.Error
	if !errors.As(err, &de) || de.Kind != dns.ServerFailure || de.Name != "broken.example" {
		t.Errorf("SERVFAIL: %v", err)
	}
	d.Resolver = emptyIP{res}
	_, err = d.DialContext(context.Background(), "tcp", "empty.example:443")
	if !errors.Is(err, dns.ErrNoRecords) {
		t.Errorf("no addresses: %v", err)
	}
	if _, err := d.DialContext(context.Background(), "tcp", "no port"); err == nil {
		t.Error("an address without a port was accepted")
	}
}

// emptyIP answers every address lookup with no records and no error.
type emptyIP struct{ *mailsectest.Resolver }

func (emptyIP) LookupIP(context.Context, string) (dns.Answer[netip.Addr], error) {
	return dns.Answer[netip.Addr]{}, nil
}

// panicIP panics when asked for addresses.
type panicIP struct{ *mailsectest.Resolver }

func (panicIP) LookupIP(context.Context, string) (dns.Answer[netip.Addr], error) {
	panic("resolver bug")
}

// A panic in the Resolver or the Dial function, which run in net/http's
// goroutines, is returned as the error Panicked makes of it.
func TestPanicsBecomeErrors(t *testing.T) {
	panicked := func(addr string, v any) error { return fmt.Errorf("%s: panicked: %v", addr, v) }
	d := &hostdial.Dialer{Refused: addressError, Resolver: panicIP{mailsectest.NewResolver()}, Dial: (&recorder{}).dial, MaxAddrs: 4, Panicked: panicked}
	if _, err := d.DialContext(context.Background(), "tcp", "keys.example.org:443"); err == nil || err.Error() != "keys.example.org:443: panicked: resolver bug" {
		t.Errorf("Resolver panic: %v", err)
	}
	res := mailsectest.NewResolver()
	res.IP("keys.example.org", addrs("8.8.8.8")...)
	d = &hostdial.Dialer{Refused: addressError, Resolver: res, MaxAddrs: 4, Panicked: panicked,
		Dial: func(context.Context, string, string) (net.Conn, error) { panic("dialer bug") }}
	if _, err := d.DialContext(context.Background(), "tcp", "keys.example.org:443"); err == nil || !strings.Contains(err.Error(), "dialer bug") {
		t.Errorf("Dial panic: %v", err)
	}
}

// Once the context ends, no further address is tried.
func TestStopsWhenTheContextEnds(t *testing.T) {
	res := mailsectest.NewResolver()
	res.IP("keys.example.org", addrs("8.8.8.8", "8.8.4.4")...)
	ctx, cancel := context.WithCancel(context.Background())
	var dials int
	d := &hostdial.Dialer{Refused: addressError, Resolver: res, MaxAddrs: 4, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		dials++
		cancel()
		return nil, ctx.Err()
	}}
	_, err := d.DialContext(ctx, "tcp", "keys.example.org:443")
	if dials != 1 || !errors.Is(err, context.Canceled) {
		t.Errorf("%d dials, err %v", dials, err)
	}
}
