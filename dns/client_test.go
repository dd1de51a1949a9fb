package dns

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/net/dns/dnsmessage"
)

// dnsTestServer is a DNS server on 127.0.0.1, UDP and TCP on one port,
// that answers each query with what its handler returns (nothing when
// the handler returns nil).
type dnsTestServer struct {
	addr string

	mu      sync.Mutex
	handler func(q *mdns.Msg, network string) *mdns.Msg
	queries []dnsTestQuery
}

type dnsTestQuery struct {
	msg     *mdns.Msg
	network string
}

func startDNSServer(t testing.TB, handler func(q *mdns.Msg, network string) *mdns.Msg) *dnsTestServer {
	t.Helper()
	s := &dnsTestServer{handler: handler}
	var pc net.PacketConn
	var ln net.Listener
	for range 20 {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("no free port for UDP and TCP")
	}
	s.addr = pc.LocalAddr().String()
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		network := w.RemoteAddr().Network()
		s.mu.Lock()
		s.queries = append(s.queries, dnsTestQuery{q, network})
		handler := s.handler
		s.mu.Unlock()
		if resp := handler(q, network); resp != nil {
			w.WriteMsg(resp)
		}
	})
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return s
}

func (s *dnsTestServer) count(network string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, q := range s.queries {
		if network == "" || q.network == network {
			n++
		}
	}
	return n
}

func (s *dnsTestServer) last() dnsTestQuery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[len(s.queries)-1]
}

// dnsReply answers q with rcode, the AD bit and the records given in zone
// file syntax.
func dnsReply(t testing.TB, q *mdns.Msg, rcode int, ad bool, rrs ...string) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetRcode(q, rcode)
	m.RecursionAvailable = true
	m.AuthenticatedData = ad
	for _, s := range rrs {
		rr, err := mdns.NewRR(s)
		if err != nil {
			t.Errorf("record %q: %v", s, err)
			continue
		}
		m.Answer = append(m.Answer, rr)
	}
	return m
}

// dnsZone answers from a fixed set of records (zone file syntax) with the
// AD bit ad: NXDOMAIN for names it has nothing at, NODATA for other types.
func dnsZone(t testing.TB, ad bool, zone ...string) func(q *mdns.Msg, network string) *mdns.Msg {
	var rrs []mdns.RR
	for _, s := range zone {
		rr, err := mdns.NewRR(s)
		if err != nil {
			t.Fatalf("record %q: %v", s, err)
		}
		rrs = append(rrs, rr)
	}
	return func(q *mdns.Msg, _ string) *mdns.Msg {
		m := new(mdns.Msg)
		m.SetReply(q)
		m.AuthenticatedData = ad
		// Follow CNAMEs as a recursive resolver does; a loop ends after
		// ten hops with NOERROR and the chain.
		name := q.Question[0].Name
		for range 10 {
			exists, next := false, ""
			for _, rr := range rrs {
				if !strings.EqualFold(rr.Header().Name, name) {
					continue
				}
				exists = true
				if rr.Header().Rrtype == q.Question[0].Qtype {
					m.Answer = append(m.Answer, rr)
				} else if c, ok := rr.(*mdns.CNAME); ok {
					m.Answer = append(m.Answer, rr)
					next = c.Target
				}
			}
			if !exists {
				m.Rcode = mdns.RcodeNameError
			}
			if next == "" {
				break
			}
			name = next
		}
		return m
	}
}

// pack is m in wire form.
func pack(t testing.TB, m *mdns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func errorOf(t *testing.T, err error) *Error {
	t.Helper()
	var de *Error
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T) is not a *Error", err, err)
	}
	return de
}

func TestClientMX(t *testing.T) {
	srv := startDNSServer(t, dnsZone(t, true,
		"example.org. 300 IN MX 20 MX2.Example.ORG.",
		"example.org. 300 IN MX 10 mx1.example.org.",
		"example.org. 300 IN RRSIG MX 13 2 300 20300101000000 20200101000000 12345 example.org. AAAA",
	))
	r := &Client{Servers: []string{srv.addr}}
	ans, err := r.LookupMX(context.Background(), "Example.Org.")
	if err != nil {
		t.Fatal(err)
	}
	want := Answer[MX]{Records: []MX{{"mx2.example.org", 20}, {"mx1.example.org", 10}}, Authentic: true, Name: "example.org"}
	if !slices.Equal(ans.Records, want.Records) || ans.Authentic != want.Authentic || ans.Name != want.Name {
		t.Errorf("got %+v, want %+v", ans, want)
	}

	// The query asks for recursion and validation, with EDNS0 DO.
	q := srv.last()
	if q.network != "udp" {
		t.Errorf("asked over %s, want udp", q.network)
	}
	if !q.msg.RecursionDesired || !q.msg.AuthenticatedData {
		t.Errorf("query RD=%v AD=%v, want both", q.msg.RecursionDesired, q.msg.AuthenticatedData)
	}
	opt := q.msg.IsEdns0()
	if opt == nil || !opt.Do() || opt.UDPSize() != 1232 {
		t.Errorf("query EDNS0 %v, want DO and UDP size 1232", opt)
	}
	if got := q.msg.Question[0]; got.Name != "example.org." || got.Qtype != mdns.TypeMX {
		t.Errorf("question %v", got)
	}
}

func TestClientADBit(t *testing.T) {
	// From a loopback server, the answer is Authentic exactly when AD is set.
	for _, ad := range []bool{true, false} {
		srv := startDNSServer(t, dnsZone(t, ad, "example.org. 300 IN TXT \"v=spf1 -all\""))
		r := &Client{Servers: []string{srv.addr}}
		ans, err := r.LookupTXT(context.Background(), "example.org")
		if err != nil {
			t.Fatal(err)
		}
		if ans.Authentic != ad {
			t.Errorf("AD=%v: Authentic=%v", ad, ans.Authentic)
		}
		_, err = r.LookupTXT(context.Background(), "nx.example.org")
		if de := errorOf(t, err); de.Kind != NXDomain || de.Authentic != ad {
			t.Errorf("AD=%v: denial %+v", ad, de)
		}
	}
}

func TestClientTrust(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:53":          true,
		"127.0.0.53:53":         true,
		"[::1]:53":              true,
		"[::ffff:127.0.0.1]:53": true,
		"127.0.0.1":             true,
		"192.0.2.1:53":          false,
		"10.0.0.1:53":           false,
		"[2001:db8::1]:53":      false,
		"[::]:53":               false,
		"0.0.0.0:53":            false,
		"localhost:53":          false, // resolving the name is itself a lookup
		"resolver.example:53":   false,
		"":                      false,
		"garbage":               false,
	} {
		if got := trusted(addr); got != want {
			t.Errorf("trusted(%q) = %v, want %v", addr, got, want)
		}
		if !(&Client{TrustAD: true}).trustsAD(addr) {
			t.Errorf("TrustAD does not trust %q", addr)
		}
		if got := (&Client{}).trustsAD(addr); got != want {
			t.Errorf("trustsAD(%q) without TrustAD = %v, want %v", addr, got, want)
		}
	}

	// An untrusted server's AD bit makes neither answers nor denials
	// Authentic.
	q := new(mdns.Msg).SetQuestion("example.org.", mdns.TypeMX)
	resp := dnsReply(t, q, mdns.RcodeSuccess, true, "example.org. 300 IN MX 10 mx.example.org.")
	ans, err := answer(pack(t, resp), "example.org.", dnsmessage.TypeMX, false, toMX)
	if err != nil || ans.Authentic || len(ans.Records) != 1 {
		t.Errorf("untrusted answer: %+v, %v", ans, err)
	}
	ans, err = answer(pack(t, resp), "example.org.", dnsmessage.TypeMX, true, toMX)
	if err != nil || !ans.Authentic {
		t.Errorf("trusted answer: %+v, %v", ans, err)
	}
	for _, rcode := range []int{mdns.RcodeNameError, mdns.RcodeSuccess} {
		resp := dnsReply(t, q, rcode, true)
		_, err := answer(pack(t, resp), "example.org.", dnsmessage.TypeMX, false, toMX)
		if de := errorOf(t, err); de.Authentic || !IsNotFound(err) {
			t.Errorf("untrusted denial %s: %+v", mdns.RcodeToString[rcode], de)
		}
	}
}

func TestClientRcodes(t *testing.T) {
	for _, tc := range []struct {
		rcode     int
		ad        bool
		kind      Kind
		temporary bool
		is        error
	}{
		{mdns.RcodeNameError, true, NXDomain, false, ErrNXDomain},
		{mdns.RcodeNameError, false, NXDomain, false, ErrNXDomain},
		{mdns.RcodeSuccess, true, NoRecords, false, ErrNoRecords},
		{mdns.RcodeServerFailure, false, ServerFailure, true, nil},
		{mdns.RcodeRefused, false, Refused, true, nil},
		{mdns.RcodeNotImplemented, false, Refused, true, nil},
		{mdns.RcodeFormatError, false, Refused, true, nil},
	} {
		srv := startDNSServer(t, func(q *mdns.Msg, _ string) *mdns.Msg { return dnsReply(t, q, tc.rcode, tc.ad) })
		r := &Client{Servers: []string{srv.addr}}
		_, err := r.LookupTLSA(context.Background(), "_25._tcp.mx.example.org")
		de := errorOf(t, err)
		name := mdns.RcodeToString[tc.rcode]
		if de.Kind != tc.kind || de.Temporary() != tc.temporary || de.Authentic != tc.ad {
			t.Errorf("%s: got kind %v temporary %v authentic %v", name, de.Kind, de.Temporary(), de.Authentic)
		}
		if de.Name != "_25._tcp.mx.example.org" || de.Type != "TLSA" || de.Server != srv.addr {
			t.Errorf("%s: error names %q %q %q", name, de.Name, de.Type, de.Server)
		}
		for _, target := range []error{ErrNXDomain, ErrNoRecords} {
			if errors.Is(err, target) != (target == tc.is) {
				t.Errorf("%s: errors.Is(%v) = %v", name, target, !(target == tc.is))
			}
		}
		if IsNotFound(err) == tc.temporary {
			t.Errorf("%s: IsNotFound = %v", name, IsNotFound(err))
		}
		var tmp interface{ Temporary() bool }
		if !errors.As(err, &tmp) || tmp.Temporary() != tc.temporary {
			t.Errorf("%s: Temporary() through errors.As", name)
		}
		if !strings.Contains(err.Error(), "_25._tcp.mx.example.org") {
			t.Errorf("%s: error %q does not name the record", name, err)
		}
	}
}

// silentServer returns the address of a UDP socket that reads nothing.
func silentServer(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func TestClientTimeout(t *testing.T) {
	addr := silentServer(t)

	// The per-query Timeout.
	r := &Client{Servers: []string{addr}, Timeout: 200 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := r.LookupMX(ctx, "example.org")
	if de := errorOf(t, err); de.Kind != Timeout || !de.Temporary() {
		t.Errorf("got %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v with a 200ms timeout", d)
	}

	// The context deadline bounds the lookup, however long Timeout is.
	r = &Client{Servers: []string{addr, addr}, Timeout: time.Minute}
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = r.LookupMX(ctx, "example.org")
	if de := errorOf(t, err); de.Kind != Timeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want a timeout from the context", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v with a 300ms context deadline", d)
	}

	// Cancellation ends a pending query at once.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	_, err = r.LookupIP(ctx, "example.org")
	if de := errorOf(t, err); de.Kind != Timeout || !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want cancellation", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to notice cancellation", d)
	}
}

func TestClientNetworkError(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	r := &Client{Servers: []string{addr}, Timeout: 20 * time.Second}
	start := time.Now()
	_, err = r.LookupMX(context.Background(), "example.org")
	if de := errorOf(t, err); de.Kind != Unreachable || !de.Temporary() || de.Server != addr {
		t.Errorf("got %v, want a network error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v: port unreachable not noticed", d)
	}
}

func TestClientTruncated(t *testing.T) {
	srv := startDNSServer(t, func(q *mdns.Msg, network string) *mdns.Msg {
		if network == "udp" {
			m := dnsReply(t, q, mdns.RcodeSuccess, true, "example.org. 300 IN TXT \"partial\"")
			m.Truncated = true
			return m
		}
		return dnsReply(t, q, mdns.RcodeSuccess, true,
			"example.org. 300 IN TXT \"first\"",
			"example.org. 300 IN TXT \"second\"")
	})
	r := &Client{Servers: []string{srv.addr}}
	ans, err := r.LookupTXT(context.Background(), "example.org")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ans.Records, []string{"first", "second"}) || !ans.Authentic {
		t.Errorf("got %+v, want the TCP answer", ans)
	}
	if srv.count("udp") != 1 || srv.count("tcp") != 1 {
		t.Errorf("udp %d, tcp %d queries; want one each", srv.count("udp"), srv.count("tcp"))
	}

	// Truncated over TCP too: malformed.
	srv = startDNSServer(t, func(q *mdns.Msg, network string) *mdns.Msg {
		m := dnsReply(t, q, mdns.RcodeSuccess, true)
		m.Truncated = true
		return m
	})
	r = &Client{Servers: []string{srv.addr}}
	_, err = r.LookupTXT(context.Background(), "example.org")
	if de := errorOf(t, err); de.Kind != Malformed {
		t.Errorf("got %v, want malformed", err)
	}
}

func TestClientCNAME(t *testing.T) {
	zone := []string{
		"alias.example.org. 300 IN CNAME Alias2.Example.NET.",
		"alias2.example.net. 300 IN CNAME mail.example.com.",
		"mail.example.com. 300 IN MX 10 mx.example.com.",
		"mail.example.com. 300 IN A 192.0.2.1",
		"loop1.example.org. 300 IN CNAME loop2.example.org.",
		"loop2.example.org. 300 IN CNAME loop1.example.org.",
		"dangling.example.org. 300 IN CNAME gone.example.org.",
	}
	srv := startDNSServer(t, dnsZone(t, true, zone...))
	r := &Client{Servers: []string{srv.addr}}
	ctx := context.Background()
	ans, err := r.LookupMX(ctx, "alias.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if ans.Name != "mail.example.com" || !ans.Authentic || !slices.Equal(ans.Records, []MX{{"mx.example.com", 10}}) {
		t.Errorf("got %+v", ans)
	}
	// The target exists, without records of the type.
	_, err = r.LookupTXT(ctx, "alias.example.org")
	if !errors.Is(err, ErrNoRecords) {
		t.Errorf("TXT through CNAME: %v, want NODATA", err)
	}
	// The target does not exist.
	_, err = r.LookupMX(ctx, "dangling.example.org")
	if !errors.Is(err, ErrNXDomain) {
		t.Errorf("dangling CNAME: %v, want NXDOMAIN", err)
	}
	// A loop is malformed (and temporary), not followed forever.
	_, err = r.LookupMX(ctx, "loop1.example.org")
	if de := errorOf(t, err); de.Kind != Malformed {
		t.Errorf("CNAME loop: %v", err)
	}

	// Authentic only if the whole response had AD.
	srv = startDNSServer(t, dnsZone(t, false, zone...))
	r = &Client{Servers: []string{srv.addr}}
	ans, err = r.LookupMX(ctx, "alias.example.org")
	if err != nil || ans.Authentic || ans.Name != "mail.example.com" {
		t.Errorf("without AD: %+v, %v", ans, err)
	}

	// Records of other owners in the answer section are ignored, and two
	// different CNAMEs at one owner are malformed.
	q := new(mdns.Msg).SetQuestion("a.example.org.", mdns.TypeMX)
	resp := dnsReply(t, q, mdns.RcodeSuccess, true,
		"other.example.org. 300 IN MX 10 evil.example.",
		"a.example.org. 300 IN CNAME b.example.org.",
		"b.example.org. 300 IN MX 10 good.example.")
	ans, err = answer(pack(t, resp), "a.example.org.", dnsmessage.TypeMX, true, toMX)
	if err != nil || !slices.Equal(ans.Records, []MX{{"good.example", 10}}) {
		t.Errorf("got %+v, %v", ans, err)
	}
	resp.Answer = append(resp.Answer, dnsReply(t, q, 0, false, "a.example.org. 300 IN CNAME c.example.org.").Answer...)
	if _, err = answer(pack(t, resp), "a.example.org.", dnsmessage.TypeMX, true, toMX); errorOf(t, err).Kind != Malformed {
		t.Errorf("two CNAMEs: %v", err)
	}
}

func TestClientNullMX(t *testing.T) {
	srv := startDNSServer(t, dnsZone(t, true, "example.org. 300 IN MX 0 ."))
	r := &Client{Servers: []string{srv.addr}}
	ans, err := r.LookupMX(context.Background(), "example.org")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ans.Records, []MX{{Host: "", Pref: 0}}) {
		t.Errorf("null MX: %+v", ans.Records)
	}
}

func TestClientTLSA(t *testing.T) {
	const hash = "8d02536c887482bc34ff54e41d2ba659bf85b341a0a20afadb5813dcfbcf286d"
	srv := startDNSServer(t, dnsZone(t, true,
		"_25._tcp.mx.example.org. 300 IN TLSA 3 1 1 "+hash,
		"_25._tcp.mx.example.org. 300 IN TLSA 2 0 2 "+strings.Repeat("AB", 64),
	))
	r := &Client{Servers: []string{srv.addr}}
	ans, err := r.LookupTLSA(context.Background(), "_25._TCP.mx.example.org.")
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Records) != 2 || ans.Name != "_25._tcp.mx.example.org" || !ans.Authentic {
		t.Fatalf("got %+v", ans)
	}
	ee, ta := ans.Records[0], ans.Records[1]
	if ee.Usage != 3 || ee.Selector != 1 || ee.MatchingType != 1 || len(ee.Data) != 32 || ee.String() != "3 1 1 "+hash {
		t.Errorf("DANE-EE record %v", ee)
	}
	if ta.Usage != 2 || ta.Selector != 0 || ta.MatchingType != 2 || !bytes.Equal(ta.Data, bytes.Repeat([]byte{0xab}, 64)) {
		t.Errorf("DANE-TA record %v", ta)
	}
}

func TestClientTXT(t *testing.T) {
	// Character-strings are joined without separators, and every octet,
	// quotes, backslashes and non-printable ones included, comes back as
	// it was on the wire.
	srv := startDNSServer(t, func(q *mdns.Msg, _ string) *mdns.Msg {
		m := dnsReply(t, q, mdns.RcodeSuccess, true)
		hdr := mdns.RR_Header{Name: q.Question[0].Name, Rrtype: mdns.TypeTXT, Class: mdns.ClassINET, Ttl: 300}
		m.Answer = append(m.Answer,
			&mdns.TXT{Hdr: hdr, Txt: []string{"v=STSv1; ", "id=2024"}},
			&mdns.TXT{Hdr: hdr, Txt: []string{`a\"b\\c\009d\255`}},
			&mdns.TXT{Hdr: hdr, Txt: []string{""}},
		)
		return m
	})
	r := &Client{Servers: []string{srv.addr}}
	ans, err := r.LookupTXT(context.Background(), "_mta-sts.example.org")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"v=STSv1; id=2024", "a\"b\\c\td\xff", ""}
	if !slices.Equal(ans.Records, want) {
		t.Errorf("got %q, want %q", ans.Records, want)
	}
}

func TestClientIP(t *testing.T) {
	zone := []string{
		"both.example.org. 300 IN A 192.0.2.1",
		"both.example.org. 300 IN AAAA 2001:db8::1",
		"v4.example.org. 300 IN A 192.0.2.2",
		"v6.example.org. 300 IN AAAA 2001:db8::2",
		"none.example.org. 300 IN MX 10 mx.example.org.",
		"alias.example.org. 300 IN CNAME both.example.org.",
	}
	srv := startDNSServer(t, dnsZone(t, true, zone...))
	r := &Client{Servers: []string{srv.addr}}
	ctx := context.Background()
	for name, want := range map[string][]netip.Addr{
		"both.example.org":  {netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
		"v4.example.org":    {netip.MustParseAddr("192.0.2.2")},
		"v6.example.org":    {netip.MustParseAddr("2001:db8::2")},
		"alias.example.org": {netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
	} {
		ans, err := r.LookupIP(ctx, name)
		if err != nil || !slices.Equal(ans.Records, want) || !ans.Authentic {
			t.Errorf("%s: got %+v, %v; want %v", name, ans, err, want)
		}
		if name == "alias.example.org" && ans.Name != "both.example.org" {
			t.Errorf("%s: Name %q", name, ans.Name)
		}
	}
	if !r.mustIP(t, "both.example.org")[0].Is4() {
		t.Error("A record not a 4-byte address")
	}
	_, err := r.LookupIP(ctx, "none.example.org")
	if de := errorOf(t, err); de.Kind != NoRecords || de.Type != "A/AAAA" || !de.Authentic || de.Name != "none.example.org" {
		t.Errorf("no addresses: %+v", de)
	}
	_, err = r.LookupIP(ctx, "nx.example.org")
	if de := errorOf(t, err); de.Kind != NXDomain || !de.Authentic {
		t.Errorf("no name: %+v", de)
	}

	// Authentic only if both answers are.
	srv = startDNSServer(t, func(q *mdns.Msg, network string) *mdns.Msg {
		return dnsZone(t, q.Question[0].Qtype == mdns.TypeA, zone...)(q, network)
	})
	r = &Client{Servers: []string{srv.addr}}
	for _, name := range []string{"both.example.org", "v4.example.org", "v6.example.org"} {
		if ans, err := r.LookupIP(ctx, name); err != nil || ans.Authentic {
			t.Errorf("%s with AAAA not validated: %+v, %v", name, ans, err)
		}
	}

	// A temporary failure of either type fails the lookup: half an
	// address set is not the set.
	for _, failing := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		srv = startDNSServer(t, func(q *mdns.Msg, network string) *mdns.Msg {
			if q.Question[0].Qtype == failing {
				return dnsReply(t, q, mdns.RcodeServerFailure, false)
			}
			return dnsZone(t, true, zone...)(q, network)
		})
		r = &Client{Servers: []string{srv.addr}}
		ans, err := r.LookupIP(ctx, "both.example.org")
		de := errorOf(t, err)
		if de.Kind != ServerFailure || de.Type != mdns.TypeToString[failing] || len(ans.Records) != 0 {
			t.Errorf("%s SERVFAIL: %+v, %+v", mdns.TypeToString[failing], ans, de)
		}
	}
}

func (r *Client) mustIP(t *testing.T, name string) []netip.Addr {
	t.Helper()
	ans, err := r.LookupIP(context.Background(), name)
	if err != nil || len(ans.Records) == 0 {
		t.Fatalf("%s: %v", name, err)
	}
	return ans.Records
}

func TestClientNextServer(t *testing.T) {
	good := startDNSServer(t, dnsZone(t, true, "example.org. 300 IN MX 10 mx.example.org."))
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		first    func(q *mdns.Msg, network string) *mdns.Msg
		nextUsed bool
		kind     Kind // of the error, when the next server is not used
	}{
		{"SERVFAIL", func(q *mdns.Msg, _ string) *mdns.Msg { return dnsReply(t, q, mdns.RcodeServerFailure, false) }, true, 0},
		{"REFUSED", func(q *mdns.Msg, _ string) *mdns.Msg { return dnsReply(t, q, mdns.RcodeRefused, false) }, true, 0},
		{"no answer", func(q *mdns.Msg, _ string) *mdns.Msg { return nil }, true, 0},
		{"other question", func(q *mdns.Msg, _ string) *mdns.Msg {
			m := dnsReply(t, q, mdns.RcodeSuccess, true, "evil.example. 300 IN MX 10 mx.evil.example.")
			m.Question[0].Name = "evil.example."
			return m
		}, true, 0},
		{"NXDOMAIN", func(q *mdns.Msg, _ string) *mdns.Msg { return dnsReply(t, q, mdns.RcodeNameError, true) }, false, NXDomain},
		{"NODATA", func(q *mdns.Msg, _ string) *mdns.Msg { return dnsReply(t, q, mdns.RcodeSuccess, true) }, false, NoRecords},
	} {
		before := good.count("")
		first := startDNSServer(t, tc.first)
		r := &Client{Servers: []string{first.addr, good.addr}, Timeout: 300 * time.Millisecond}
		ans, err := r.LookupMX(ctx, "example.org")
		if first.count("") != 1 {
			t.Errorf("%s: first server asked %d times", tc.name, first.count(""))
		}
		if used := good.count("") > before; used != tc.nextUsed {
			t.Errorf("%s: next server used: %v", tc.name, used)
		}
		if tc.nextUsed {
			if err != nil || len(ans.Records) != 1 {
				t.Errorf("%s: %+v, %v", tc.name, ans, err)
			}
		} else if de := errorOf(t, err); de.Kind != tc.kind || de.Server != first.addr {
			t.Errorf("%s: %v", tc.name, err)
		}
	}

	// When every server fails, the last failure is reported.
	bad := startDNSServer(t, func(q *mdns.Msg, _ string) *mdns.Msg { return dnsReply(t, q, mdns.RcodeServerFailure, false) })
	refusing := startDNSServer(t, func(q *mdns.Msg, _ string) *mdns.Msg { return dnsReply(t, q, mdns.RcodeRefused, false) })
	r := &Client{Servers: []string{bad.addr, refusing.addr}}
	_, err := r.LookupMX(ctx, "example.org")
	if de := errorOf(t, err); de.Kind != Refused || de.Server != refusing.addr || bad.count("") != 1 {
		t.Errorf("all failing: %v", err)
	}
}

func TestClientMalformed(t *testing.T) {
	q := new(mdns.Msg).SetQuestion("example.org.", mdns.TypeMX)
	good := dnsReply(t, q, mdns.RcodeSuccess, true, "example.org. 300 IN MX 10 mx.example.org.")
	for name, mutate := range map[string]func(m *mdns.Msg){
		"other name":   func(m *mdns.Msg) { m.Question[0].Name = "example.net." },
		"other type":   func(m *mdns.Msg) { m.Question[0].Qtype = mdns.TypeTXT },
		"other class":  func(m *mdns.Msg) { m.Question[0].Qclass = mdns.ClassCHAOS },
		"no question":  func(m *mdns.Msg) { m.Question = nil },
		"two":          func(m *mdns.Msg) { m.Question = append(m.Question, m.Question[0]) },
		"not response": func(m *mdns.Msg) { m.Response = false },
		"opcode":       func(m *mdns.Msg) { m.Opcode = mdns.OpcodeNotify },
	} {
		srv := startDNSServer(t, func(q *mdns.Msg, _ string) *mdns.Msg {
			m := good.Copy()
			m.Id = q.Id
			mutate(m)
			return m
		})
		r := &Client{Servers: []string{srv.addr}}
		_, err := r.LookupMX(context.Background(), "example.org")
		if de := errorOf(t, err); de.Kind != Malformed || !de.Temporary() {
			t.Errorf("%s: %v, want malformed", name, err)
		}
	}
}

// The RCODE's upper bits travel in the OPT record: a BADVERS answer has
// NOERROR in its header, and must not be read as "no records".
func TestClientExtendedRcode(t *testing.T) {
	q := new(mdns.Msg).SetQuestion("example.org.", mdns.TypeTLSA)
	m := new(mdns.Msg)
	m.SetReply(q)
	m.AuthenticatedData = true
	m.SetEdns0(1232, true)
	m.Rcode = mdns.RcodeBadVers
	wire := pack(t, m)
	if rc := wire[3] & 0x0f; rc != 0 {
		t.Fatalf("header RCODE %d, want 0 with BADVERS in the OPT record", rc)
	}
	_, err := answer(wire, "example.org.", typeTLSA, true, toTLSA)
	if de := errorOf(t, err); de.Kind != Refused || IsNotFound(err) || !strings.Contains(err.Error(), "BADVERS") {
		t.Errorf("BADVERS read as %v", err)
	}
}

// Names from the network are compared octet by octet, ASCII letters
// without regard to case, and come back escaped: the Kelvin sign, which
// Unicode folds to "k", is not a "k", and a space or a control in an MX
// host name does not reach the caller as such.
func TestClientNamesFromTheNetwork(t *testing.T) {
	q := new(mdns.Msg).SetQuestion("kample.org.", mdns.TypeMX)
	kelvin := `\226\132\170ample.org.` // U+212A KELVIN SIGN, then "ample.org."
	resp := dnsReply(t, q, mdns.RcodeSuccess, true, kelvin+" 300 IN MX 10 evil.example.")
	ans, err := answer(pack(t, resp), "kample.org.", dnsmessage.TypeMX, true, toMX)
	if !errors.Is(err, ErrNoRecords) {
		t.Errorf("a record at %s answered kample.org: %+v, %v", kelvin, ans, err)
	}
	resp.Question[0].Name = kelvin
	if _, err := answer(pack(t, resp), "kample.org.", dnsmessage.TypeMX, true, toMX); errorOf(t, err).Kind != Malformed {
		t.Errorf("the answer to %s taken for one to kample.org: %v", kelvin, err)
	}

	q = new(mdns.Msg).SetQuestion("example.org.", mdns.TypeMX)
	resp = dnsReply(t, q, mdns.RcodeSuccess, true,
		`example.org. 300 IN MX 10 MX\032One.Example.`,
		`example.org. 300 IN MX 20 a\010b\\c\"d.example.`,
		`example.org. 300 IN MX 30 \255.example.`)
	ans, err = answer(pack(t, resp), "example.org.", dnsmessage.TypeMX, true, toMX)
	want := []MX{{`mx\032one.example`, 10}, {`a\010b\\c\"d.example`, 20}, {`\255.example`, 30}}
	if err != nil || !slices.Equal(ans.Records, want) {
		t.Errorf("got %+v, %v; want %+v", ans.Records, err, want)
	}
}

// TestClientWire checks the handling of raw datagrams: answers with
// another ID are skipped, garbage with the right ID is malformed.
func TestClientWire(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(mdns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			spoof := dnsReply(t, q, mdns.RcodeSuccess, true, "example.org. 300 IN MX 10 evil.example.")
			spoof.Id = q.Id + 1
			wire, _ := spoof.Pack()
			pc.WriteTo(wire, from)
			if q.Question[0].Qtype == mdns.TypeTXT {
				garbage := []byte{0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xff, 0xff}
				binary.BigEndian.PutUint16(garbage, q.Id)
				pc.WriteTo(garbage, from)
				continue
			}
			wire, _ = dnsReply(t, q, mdns.RcodeSuccess, true, "example.org. 300 IN MX 10 good.example.").Pack()
			pc.WriteTo(wire, from)
		}
	}()
	r := &Client{Servers: []string{pc.LocalAddr().String()}, Timeout: 2 * time.Second}
	ans, err := r.LookupMX(context.Background(), "example.org")
	if err != nil || !slices.Equal(ans.Records, []MX{{"good.example", 10}}) {
		t.Errorf("got %+v, %v", ans, err)
	}
	_, err = r.LookupTXT(context.Background(), "example.org")
	if de := errorOf(t, err); de.Kind != Malformed {
		t.Errorf("garbage: %v", err)
	}
}

func TestClientInvalidName(t *testing.T) {
	srv := startDNSServer(t, dnsZone(t, true, "example.org. 300 IN MX 10 mx.example.org."))
	r := &Client{Servers: []string{srv.addr}}
	ctx := context.Background()
	for _, name := range []string{
		"", ".", "..", "example..org", ".example.org", "exa mple.org", "example.org\n", "ex\\.ample.org",
		"ex\\046ample.org", "bücher.example", "example.org/", "*.example.org", "a@example.org",
		strings.Repeat("a", 64) + ".example.org", strings.Repeat("abcdefghi.", 26) + "org",
	} {
		_, err1 := r.LookupMX(ctx, name)
		_, err2 := r.LookupIP(ctx, name)
		_, err3 := r.LookupTXT(ctx, name)
		_, err4 := r.LookupTLSA(ctx, name)
		for _, err := range []error{err1, err2, err3, err4} {
			var de *Error
			if !errors.As(err, &de) || de.Kind != InvalidName || de.Name != name {
				t.Errorf("%q: %v (%T), want an *Error of kind InvalidName", name, err, err)
			}
			if IsNotFound(err) || de != nil && de.Temporary() {
				t.Errorf("%q: error %v is not-found or temporary", name, err)
			}
		}
	}
	if n := srv.count(""); n != 0 {
		t.Errorf("%d queries sent for invalid names", n)
	}
	for _, name := range []string{"example.org", "EXAMPLE.ORG.", "_25._tcp.mx.example.org", "xn--bcher-kva.example", "a-b.c_d.example", strings.Repeat("a", 63) + ".example.org"} {
		if _, err := checkName(name, "MX"); err != nil {
			t.Errorf("%q refused: %v", name, err)
		}
	}
}

func TestClientResolvConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	conf := "# comment\nsearch example.org\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions edns0\n"
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := resolvConf(path), []string{"192.0.2.53:53", "[2001:db8::53]:53"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	loopback := []string{"127.0.0.1:53", "[::1]:53"}
	if got := resolvConf(filepath.Join(dir, "missing")); !slices.Equal(got, loopback) {
		t.Errorf("missing file: %q", got)
	}
	os.WriteFile(path, []byte("search example.org\n"), 0o644)
	if got := resolvConf(path); !slices.Equal(got, loopback) {
		t.Errorf("no nameserver: %q", got)
	}

	// Servers take precedence; an IP address without a port means port 53.
	r := &Client{Servers: []string{"192.0.2.1"}}
	if got := r.servers(); !slices.Equal(got, []string{"192.0.2.1"}) {
		t.Errorf("servers() = %q", got)
	}
	for in, want := range map[string]string{"192.0.2.1": "192.0.2.1:53", "2001:db8::1": "[2001:db8::1]:53", "192.0.2.1:5353": "192.0.2.1:5353", "[::1]:53": "[::1]:53"} {
		if got := serverAddr(in); got != want {
			t.Errorf("serverAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// A nil *Client is a Resolver without a resolver to ask: every lookup
// fails with a typed error, none panics.
func TestClientNil(t *testing.T) {
	var r *Client
	ctx := context.Background()
	for typ, lookup := range map[string]func() error{
		"MX":     func() error { _, err := r.LookupMX(ctx, "example.org"); return err },
		"A/AAAA": func() error { _, err := r.LookupIP(ctx, "example.org"); return err },
		"TXT":    func() error { _, err := r.LookupTXT(ctx, "example.org"); return err },
		"TLSA":   func() error { _, err := r.LookupTLSA(ctx, "_25._tcp.example.org"); return err },
	} {
		var err error
		func() {
			defer func() {
				if v := recover(); v != nil {
					t.Fatalf("%s lookup through a nil *Client panicked: %v", typ, v)
				}
			}()
			err = lookup()
		}()
		if de := errorOf(t, err); de.Kind != Unreachable || de.Type != typ || !strings.Contains(err.Error(), "nil *dns.Client") || IsNotFound(err) {
			t.Errorf("%s: %v", typ, err)
		}
	}
}

func TestClientConcurrent(t *testing.T) {
	srv := startDNSServer(t, dnsZone(t, true,
		"example.org. 300 IN MX 10 mx.example.org.",
		"mx.example.org. 300 IN A 192.0.2.1",
	))
	r := &Client{Servers: []string{srv.addr}}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := r.LookupMX(context.Background(), "example.org"); err != nil {
				t.Error(err)
			}
			if _, err := r.LookupIP(context.Background(), "mx.example.org"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// FuzzAnswer reads arbitrary bytes as a response and turns it into an
// answer of every type, as a lookup does.
func FuzzAnswer(f *testing.F) {
	q := new(mdns.Msg).SetQuestion("example.org.", mdns.TypeMX)
	for _, rrs := range [][]string{
		{"example.org. 300 IN MX 10 mx.example.org."},
		{"example.org. 300 IN MX 0 ."},
		{"example.org. 300 IN CNAME a.example.org.", "a.example.org. 300 IN CNAME example.org."},
		{"example.org. 300 IN TXT \"a\\\"b\" \"\\255\""},
		{"example.org. 300 IN TLSA 3 1 1 abcdef"},
		{"example.org. 300 IN A 192.0.2.1", "example.org. 300 IN AAAA 2001:db8::1"},
	} {
		m := dnsReply(f, q, mdns.RcodeSuccess, true, rrs...)
		if wire, err := m.Pack(); err == nil {
			f.Add(wire)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			return
		}
		// Ask the question the response claims to answer, when it is a
		// name a lookup could ask for, to get past the question check.
		fqdn := "example.org."
		var p dnsmessage.Parser
		if _, err := p.Start(data); err == nil {
			if q, err := p.Question(); err == nil {
				if n, err := checkName(q.Name.String(), "MX"); err == nil {
					fqdn = n
				}
			}
		}
		// canonical: lower case, printable ASCII, no spaces.
		canonical := func(what, name string) {
			for i := 0; i < len(name); i++ {
				if c := name[i]; c <= ' ' || c >= 0x7f || 'A' <= c && c <= 'Z' {
					t.Errorf("%s %q not in canonical form", what, name)
					return
				}
			}
		}
		check := func(name string, err error) {
			if err == nil {
				canonical("Name", name)
				return
			}
			var de *Error
			if !errors.As(err, &de) || de.Kind < NXDomain || de.Kind > Malformed {
				t.Errorf("error %v is not a *Error of a known kind", err)
			}
		}
		a1, err := answer(data, fqdn, dnsmessage.TypeMX, true, toMX)
		check(a1.Name, err)
		for _, mx := range a1.Records {
			canonical("MX host", mx.Host)
		}
		a2, err := answer(data, fqdn, dnsmessage.TypeTXT, true, toTXT)
		check(a2.Name, err)
		a3, err := answer(data, fqdn, typeTLSA, false, toTLSA)
		check(a3.Name, err)
		if a3.Authentic {
			t.Error("Authentic without trust")
		}
		a4, err := answer(data, fqdn, dnsmessage.TypeA, true, toAddr)
		check(a4.Name, err)
		a5, err := answer(data, fqdn, dnsmessage.TypeAAAA, true, toAddr)
		check(a5.Name, err)
		for _, a := range a4.Records {
			if !a.Is4() {
				t.Errorf("A record %v", a)
			}
		}
		for _, a := range a5.Records {
			if !a.Is6() {
				t.Errorf("AAAA record %v", a)
			}
		}
	})
}
