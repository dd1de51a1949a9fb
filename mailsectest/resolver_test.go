package mailsectest_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
)

var _ dns.Resolver = (*mailsectest.Resolver)(nil)

func dnsError(t *testing.T, err error) *dns.Error {
	t.Helper()
	var de *dns.Error
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T) is not a *dns.Error", err, err)
	}
	return de
}

func TestResolverRecords(t *testing.T) {
	r := mailsectest.NewResolver()
	ctx := context.Background()
	r.MX("Example.ORG.", dns.MX{Host: "MX1.example.org.", Pref: 10}, dns.MX{Host: "mx2.example.org", Pref: 20})
	r.IP("mx1.example.org", netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"))
	r.TXT("_mta-sts.example.org", "v=STSv1; id=1")
	r.TLSA("_25._tcp.mx1.example.org", dns.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{1, 2, 3}})

	// Any case, with or without the final dot.
	for _, name := range []string{"example.org", "EXAMPLE.org.", "example.ORG"} {
		mx, err := r.LookupMX(ctx, name)
		want := []dns.MX{{Host: "mx1.example.org", Pref: 10}, {Host: "mx2.example.org", Pref: 20}}
		if err != nil || !slices.Equal(mx.Records, want) || mx.Name != "example.org" || mx.Authentic {
			t.Errorf("MX %s: %+v, %v", name, mx, err)
		}
	}
	ip, err := r.LookupIP(ctx, "mx1.example.org.")
	if err != nil || len(ip.Records) != 2 || ip.Records[1] != netip.MustParseAddr("2001:db8::1") {
		t.Errorf("IP: %+v, %v", ip, err)
	}
	txt, err := r.LookupTXT(ctx, "_MTA-STS.example.org")
	if err != nil || !slices.Equal(txt.Records, []string{"v=STSv1; id=1"}) {
		t.Errorf("TXT: %+v, %v", txt, err)
	}
	tlsa, err := r.LookupTLSA(ctx, "_25._tcp.mx1.example.org")
	if err != nil || len(tlsa.Records) != 1 || tlsa.Records[0].String() != "3 1 1 010203" {
		t.Errorf("TLSA: %+v, %v", tlsa, err)
	}

	// Setting again replaces; setting none removes.
	r.MX("example.org", dns.MX{Host: "", Pref: 0})
	if mx, err := r.LookupMX(ctx, "example.org"); err != nil || !slices.Equal(mx.Records, []dns.MX{{}}) {
		t.Errorf("null MX: %+v, %v", mx, err)
	}
	r.MX("example.org")
	if _, err := r.LookupMX(ctx, "example.org"); !errors.Is(err, dns.ErrNoRecords) {
		t.Errorf("MX removed: %v, want NODATA (the name has TXT records below it)", err)
	}
}

func TestResolverNotFound(t *testing.T) {
	r := mailsectest.NewResolver()
	ctx := context.Background()
	r.TXT("example.org", "hello")
	r.TLSA("_25._tcp.mx.example.net", dns.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{1}})

	_, err := r.LookupMX(ctx, "example.org")
	de := dnsError(t, err)
	if de.Kind != dns.NoRecords || de.Name != "example.org" || de.Type != "MX" || de.Temporary() || !dns.IsNotFound(err) {
		t.Errorf("NODATA: %+v", de)
	}
	_, err = r.LookupIP(ctx, "Nx.Example.org.")
	de = dnsError(t, err)
	if de.Kind != dns.NXDomain || de.Name != "nx.example.org" || de.Type != "A/AAAA" || !errors.Is(err, dns.ErrNXDomain) {
		t.Errorf("NXDOMAIN: %+v", de)
	}
	// An empty non-terminal exists (RFC 8020).
	if _, err := r.LookupTXT(ctx, "_tcp.mx.example.net"); !errors.Is(err, dns.ErrNoRecords) {
		t.Errorf("empty non-terminal: %v", err)
	}
	if _, err := r.LookupTXT(ctx, "ample.org"); !errors.Is(err, dns.ErrNXDomain) {
		t.Errorf("suffix that is not a parent: %v", err)
	}
}

func TestResolverSecure(t *testing.T) {
	r := mailsectest.NewResolver()
	ctx := context.Background()
	r.Secure("Signed.example.")
	r.MX("signed.example", dns.MX{Host: "mx.signed.example", Pref: 1})
	r.IP("mx.signed.example", netip.MustParseAddr("192.0.2.1"))
	r.IP("insecure.example", netip.MustParseAddr("192.0.2.2"))
	r.IP("notsigned.example", netip.MustParseAddr("192.0.2.3"))

	for name, want := range map[string]bool{"signed.example": true, "mx.signed.example": true, "insecure.example": false, "notsigned.example": false} {
		var authentic bool
		if name == "signed.example" {
			a, err := r.LookupMX(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			authentic = a.Authentic
		} else {
			a, err := r.LookupIP(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			authentic = a.Authentic
		}
		if authentic != want {
			t.Errorf("%s: Authentic %v, want %v", name, authentic, want)
		}
	}
	// Denials are Authentic in signed zones.
	_, err := r.LookupTLSA(ctx, "_25._tcp.mx.signed.example")
	if de := dnsError(t, err); de.Kind != dns.NXDomain || !de.Authentic {
		t.Errorf("signed NXDOMAIN: %+v", de)
	}
	_, err = r.LookupTXT(ctx, "mx.signed.example")
	if de := dnsError(t, err); de.Kind != dns.NoRecords || !de.Authentic {
		t.Errorf("signed NODATA: %+v", de)
	}
	_, err = r.LookupTXT(ctx, "insecure.example")
	if de := dnsError(t, err); de.Authentic {
		t.Errorf("unsigned NODATA: %+v", de)
	}

	// A CNAME out of a signed zone makes the answer insecure, and into one
	// from an unsigned name too.
	r.CNAME("alias.signed.example", "insecure.example")
	r.CNAME("alias.insecure.example", "mx.signed.example")
	for _, name := range []string{"alias.signed.example", "alias.insecure.example"} {
		a, err := r.LookupIP(ctx, name)
		if err != nil || a.Authentic {
			t.Errorf("%s: %+v, %v", name, a, err)
		}
	}
	r.Secure(".")
	if a, err := r.LookupIP(ctx, "alias.signed.example"); err != nil || !a.Authentic {
		t.Errorf("root signed: %+v, %v", a, err)
	}
}

func TestResolverCNAME(t *testing.T) {
	r := mailsectest.NewResolver()
	ctx := context.Background()
	r.CNAME("www.example.org", "Host.Example.NET.")
	r.CNAME("host.example.net", "final.example.com")
	r.IP("final.example.com", netip.MustParseAddr("192.0.2.9"))
	r.MX("www.example.org", dns.MX{Host: "ignored.example", Pref: 1})

	a, err := r.LookupIP(ctx, "www.example.org")
	if err != nil || a.Name != "final.example.com" || len(a.Records) != 1 {
		t.Errorf("chain: %+v, %v", a, err)
	}
	// The CNAME is followed whatever records the alias has.
	if _, err := r.LookupMX(ctx, "www.example.org"); !errors.Is(err, dns.ErrNoRecords) {
		t.Errorf("MX through CNAME: %v", err)
	}
	r.CNAME("dangling.example.org", "gone.example.org")
	_, err = r.LookupMX(ctx, "dangling.example.org")
	if de := dnsError(t, err); de.Kind != dns.NXDomain || de.Name != "dangling.example.org" {
		t.Errorf("dangling: %+v", de)
	}
	r.CNAME("loop1.example", "loop2.example")
	r.CNAME("loop2.example", "loop1.example")
	_, err = r.LookupMX(ctx, "loop1.example")
	if de := dnsError(t, err); de.Kind != dns.ServerFailure || !de.Temporary() {
		t.Errorf("loop: %+v", de)
	}
	// Removing the alias.
	r.CNAME("www.example.org", "")
	if mx, err := r.LookupMX(ctx, "www.example.org"); err != nil || len(mx.Records) != 1 {
		t.Errorf("alias removed: %+v, %v", mx, err)
	}
	r.CNAME("dangling.example.org", "x.example")
	r.Delete("CNAME", "dangling.example.org")
	if _, err := r.LookupMX(ctx, "dangling.example.org"); !errors.Is(err, dns.ErrNXDomain) {
		t.Errorf("alias deleted: %v", err)
	}
}

func TestResolverFail(t *testing.T) {
	r := mailsectest.NewResolver()
	ctx := context.Background()
	r.MX("example.org", dns.MX{Host: "mx.example.org", Pref: 10})
	r.IP("mx.example.org", netip.MustParseAddr("192.0.2.1"))
	r.Fail("MX", "Example.org.", &dns.Error{Kind: dns.ServerFailure})

	_, err := r.LookupMX(ctx, "example.org")
	de := dnsError(t, err)
	if de.Kind != dns.ServerFailure || de.Name != "example.org" || de.Type != "MX" || !de.Temporary() || !mailsec.IsTemporary(err) {
		t.Errorf("failure: %+v", de)
	}
	// Other types of the name are unaffected.
	if _, err := r.LookupIP(ctx, "mx.example.org"); err != nil {
		t.Error(err)
	}
	// The error returned is a copy: changing it changes nothing.
	de.Kind = dns.NXDomain
	if _, err := r.LookupMX(ctx, "example.org"); dnsError(t, err).Kind != dns.ServerFailure {
		t.Error("failure changed through a returned error")
	}

	// Names and types given are kept; other errors are wrapped.
	r.Fail("IP", "mx.example.org", &dns.Error{Name: "x", Type: "AAAA", Kind: dns.Timeout})
	_, err = r.LookupIP(ctx, "mx.example.org")
	if de := dnsError(t, err); de.Name != "x" || de.Type != "AAAA" || de.Kind != dns.Timeout {
		t.Errorf("kept: %+v", de)
	}
	boom := errors.New("boom")
	r.Fail("TXT", "example.org", boom)
	_, err = r.LookupTXT(ctx, "example.org")
	if de := dnsError(t, err); de.Kind != dns.ServerFailure || !errors.Is(err, boom) || de.Type != "TXT" {
		t.Errorf("wrapped: %+v", de)
	}
	// A failure at a CNAME target fails lookups through the alias.
	r.CNAME("alias.example.org", "example.org")
	if _, err := r.LookupTXT(ctx, "alias.example.org"); !errors.Is(err, boom) {
		t.Errorf("through CNAME: %v", err)
	}

	// Fail with nil and Delete remove failures; Delete removes records.
	r.Fail("TXT", "example.org", nil)
	if _, err := r.LookupTXT(ctx, "example.org"); !errors.Is(err, dns.ErrNoRecords) {
		t.Errorf("after Fail(nil): %v", err)
	}
	r.Delete("MX", "example.org")
	if _, err := r.LookupMX(ctx, "example.org"); !errors.Is(err, dns.ErrNoRecords) {
		t.Errorf("after Delete, with names below: %v", err)
	}
	r.Delete("ip", "mx.example.org")
	if _, err := r.LookupIP(ctx, "mx.example.org"); !errors.Is(err, dns.ErrNXDomain) {
		t.Errorf("after Delete IP: %v", err)
	}
	r.Delete("CNAME", "alias.example.org")
	if _, err := r.LookupMX(ctx, "example.org"); !errors.Is(err, dns.ErrNXDomain) {
		t.Errorf("after Delete of everything: %v", err)
	}
}

func TestResolverQueries(t *testing.T) {
	r := mailsectest.NewResolver()
	ctx := context.Background()
	r.CNAME("alias.example.org", "example.org")
	r.MX("example.org", dns.MX{Host: "mx.example.org", Pref: 10})
	for range 3 {
		r.LookupMX(ctx, "Example.org.")
	}
	r.LookupMX(ctx, "alias.example.org")
	r.LookupTXT(ctx, "nx.example.org")
	for qtype, want := range map[[2]string]int{
		{"MX", "example.org"}:       3,
		{"mx", "EXAMPLE.ORG."}:      3,
		{"MX", "alias.example.org"}: 1,
		{"TXT", "nx.example.org"}:   1,
		{"IP", "example.org"}:       0,
		{"TLSA", "example.org"}:     0,
	} {
		if got := r.Queries(qtype[0], qtype[1]); got != want {
			t.Errorf("Queries(%q, %q) = %d, want %d", qtype[0], qtype[1], got, want)
		}
	}
	// Lookups counts every lookup, of a name refused as not a domain
	// name too.
	r.LookupIP(ctx, "not a name")
	if n := r.Lookups(); n != 6 {
		t.Errorf("Lookups() = %d, want 6", n)
	}
	if n := mailsectest.NewResolver().Lookups(); n != 0 {
		t.Errorf("a new Resolver: Lookups() = %d", n)
	}
	defer func() {
		if recover() == nil {
			t.Error("Queries with an unknown type did not panic")
		}
	}()
	r.Queries("AAAA", "example.org")
}

func TestResolverCopies(t *testing.T) {
	r := mailsectest.NewResolver()
	ctx := context.Background()
	data := []byte{1, 2, 3}
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	r.TLSA("_25._tcp.mx.example", dns.TLSA{Usage: 3, Data: data})
	r.IP("mx.example", addrs...)
	data[0], addrs[0] = 9, netip.MustParseAddr("192.0.2.99")

	a, _ := r.LookupTLSA(ctx, "_25._tcp.mx.example")
	if a.Records[0].Data[0] != 1 {
		t.Error("TLSA data aliases the caller's slice")
	}
	a.Records[0].Data[0] = 7
	a.Records[0].Usage = 0
	b, _ := r.LookupTLSA(ctx, "_25._tcp.mx.example")
	if b.Records[0].Data[0] != 1 || b.Records[0].Usage != 3 {
		t.Error("returned TLSA records alias the stored ones")
	}
	ip, _ := r.LookupIP(ctx, "mx.example")
	if ip.Records[0] != netip.MustParseAddr("192.0.2.1") {
		t.Error("addresses alias the caller's slice")
	}
	ip.Records[0] = netip.Addr{}
	if ip, _ := r.LookupIP(ctx, "mx.example"); !ip.Records[0].IsValid() {
		t.Error("returned addresses alias the stored ones")
	}
}

func TestResolverInvalidAndCancelled(t *testing.T) {
	r := mailsectest.NewResolver()
	r.MX("example.org", dns.MX{Host: "mx.example.org", Pref: 10})
	for _, name := range []string{"", ".", "a..b", "exa mple.org", "bücher.example", "a\\.b"} {
		_, err := r.LookupMX(context.Background(), name)
		var de *dns.Error
		if !errors.As(err, &de) || de.Kind != dns.InvalidName || de.Name != name || de.Type != "MX" || de.Temporary() {
			t.Errorf("%q: %v, want a permanent *dns.Error of kind InvalidName", name, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := r.LookupMX(ctx, "example.org")
	if de := dnsError(t, err); de.Kind != dns.Timeout || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestResolverConcurrent(t *testing.T) {
	r := mailsectest.NewResolver()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			ctx := context.Background()
			for range 50 {
				r.MX("example.org", dns.MX{Host: "mx.example.org", Pref: uint16(i)})
				r.Secure("example.org")
				r.LookupMX(ctx, "example.org")
				r.Fail("TXT", "example.org", errors.New("x"))
				r.LookupTXT(ctx, "example.org")
				r.Delete("TXT", "example.org")
				r.Queries("MX", "example.org")
			}
		})
	}
	wg.Wait()
	if got := r.Queries("MX", "example.org"); got != 400 {
		t.Errorf("Queries = %d, want 400", got)
	}
}
