package dnstest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestCheckZonesRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		zones []Zone
		want  string
	}{
		{"parent itself", []Zone{{Name: "test."}}, "not below"},
		{"outside test.", []Zone{{Name: "example.com."}}, "not below"},
		{"bad name", []Zone{{Name: "a b.test."}}, "not a valid domain name"},
		{"empty name", []Zone{{Name: ""}}, "not a valid domain name"},
		{"nested", []Zone{{Name: "a.test."}, {Name: "b.a.test."}}, "overlaps"},
		{"duplicate", []Zone{{Name: "a.test."}, {Name: "A.test"}}, "overlaps"},
		{"record outside", []Zone{{Name: "a.test.", Records: []string{"b.test. 300 IN A 127.0.0.1"}}}, "outside the zone"},
		{"SOA", []Zone{{Name: "a.test.", Records: []string{"a.test. 300 IN SOA ns.a.test. h.a.test. 1 2 3 4 5"}}}, "made by Start"},
		{"apex NS", []Zone{{Name: "a.test.", Records: []string{"a.test. 300 IN NS ns.example."}}}, "apex NS"},
		{"DNSKEY", []Zone{{Name: "a.test.", Records: []string{"a.test. 300 IN DNSKEY 257 3 13 AAAA"}}}, "made by Start"},
		{"DS", []Zone{{Name: "a.test.", Records: []string{"b.a.test. 300 IN DS 1 13 2 00"}}}, "made by Start"},
		{"two lines", []Zone{{Name: "a.test.", Records: []string{"a.test. 300 IN A 127.0.0.1\nb.test. 300 IN A 127.0.0.1"}}}, "one record per line"},
		{"empty record", []Zone{{Name: "a.test.", Records: []string{""}}}, "empty"},
		{"garbage", []Zone{{Name: "a.test.", Records: []string{"a.test. 300 IN A not-an-address"}}}, "record"},
		{"class CH", []Zone{{Name: "a.test.", Records: []string{"a.test. 300 CH TXT x"}}}, "class IN"},
		{"bogus unsigned", []Zone{{Name: "a.test.", Bogus: []string{"a.test. A"}}}, "not signed"},
		{"bogus outside", []Zone{{Name: "a.test.", Signed: true, Bogus: []string{"b.test. A"}}}, "not in zone"},
		{"bogus type", []Zone{{Name: "a.test.", Signed: true, Bogus: []string{"a.test. NOSUCH"}}}, "unknown type"},
		{"bogus RRSIG", []Zone{{Name: "a.test.", Signed: true, Bogus: []string{"a.test. RRSIG"}}}, "not signed"},
		{"bogus form", []Zone{{Name: "a.test.", Signed: true, Bogus: []string{"a.test."}}}, "owner TYPE"},
		{"too many", []Zone{{Name: "a.test.", Records: make([]string, maxRecords+1)}}, "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkZones(tc.zones)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestCheckZonesAccepts(t *testing.T) {
	zs, err := checkZones([]Zone{
		{Name: "Secure.Test", Signed: true, Records: []string{
			"MX.secure.test. 300 IN A 127.0.0.2",
			"sub.secure.test. 300 IN NS ns.elsewhere.test.",
			`txt.secure.test. 300 IN TXT "v=STSv1; id=$1"`,
		}, Bogus: []string{"mx.SECURE.test tlsa"}},
		{Name: "other.test."},
	})
	if err != nil {
		t.Fatal(err)
	}
	if zs[0].name != "secure.test." || zs[0].records[0].Header().Name != "mx.secure.test." {
		t.Errorf("names not canonical: %s, %s", zs[0].name, zs[0].records[0].Header().Name)
	}
	if want := (rrset{"mx.secure.test.", dns.TypeTLSA}); zs[0].bogus[0] != want {
		t.Errorf("bogus %v, want %v", zs[0].bogus[0], want)
	}
}

// TestBogusMustExist checks that a Bogus entry naming no signed RRset is
// an error, not a silently secure RRset.
func TestBogusMustExist(t *testing.T) {
	Need(t)
	tl, err := findTools()
	if err != nil {
		t.Fatal(err)
	}
	zs, err := checkZones([]Zone{{Name: "secure.test.", Signed: true,
		Records: []string{"mx.secure.test. 300 IN A 127.0.0.2"},
		Bogus:   []string{"mx.secure.test. AAAA"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = buildZones(ctx, tl, t.TempDir(), zs)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("got %v, want an error about the missing RRset", err)
	}
}

// TestCorrupt checks that exactly the named RRset's signature changes.
func TestCorrupt(t *testing.T) {
	Need(t)
	tl, err := findTools()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	zs, err := checkZones([]Zone{{Name: "secure.test.", Signed: true,
		Records: []string{"mx.secure.test. 300 IN A 127.0.0.2", "mx.secure.test. 300 IN TXT x"},
		Bogus:   []string{"mx.secure.test. A"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := buildZones(ctx, tl, dir, zs); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, servedFile(zs[0])))
	if err != nil {
		t.Fatal(err)
	}
	var key *dns.DNSKEY
	var sigs []*dns.RRSIG
	sets := map[uint16][]dns.RR{}
	zp := dns.NewZoneParser(strings.NewReader(string(data)), "", "")
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		switch rr := rr.(type) {
		case *dns.DNSKEY:
			key = rr
		case *dns.RRSIG:
			if rr.Hdr.Name == "mx.secure.test." {
				sigs = append(sigs, rr)
			}
		default:
			if rr.Header().Name == "mx.secure.test." {
				sets[rr.Header().Rrtype] = append(sets[rr.Header().Rrtype], rr)
			}
		}
	}
	if err := zp.Err(); err != nil {
		t.Fatal(err)
	}
	if key == nil || len(sigs) != 3 {
		t.Fatalf("key %v, %d signatures at mx.secure.test. (want A, TXT, NSEC)", key, len(sigs))
	}
	for _, sig := range sigs {
		err := sig.Verify(key, sets[sig.TypeCovered])
		if bad := sig.TypeCovered == dns.TypeA; bad != (err != nil) {
			t.Errorf("RRSIG %s: verify error %v, want an error: %v", dns.TypeToString[sig.TypeCovered], err, bad)
		}
	}
}

// fakeTB records what Need does instead of stopping the test.
type fakeTB struct {
	testing.TB
	skipped, failed bool
}

func (f *fakeTB) Helper()                      {}
func (f *fakeTB) Skip(...any)                  { f.skipped = true }
func (f *fakeTB) Fatalf(string, ...any)        { f.failed = true }
func (f *fakeTB) Logf(format string, a ...any) {}

func TestNeedMissingTool(t *testing.T) {
	// ldns-keygen lives in /usr/bin, outside the sbin fall-backs.
	t.Setenv("PATH", t.TempDir())
	if _, err := findTools(); err == nil {
		t.Skip("every tool is found in the sbin directories; cannot hide one")
	}
	t.Setenv("CI", "")
	f := &fakeTB{TB: t}
	Need(f)
	if !f.skipped || f.failed {
		t.Errorf("without CI: skipped=%v failed=%v, want a skip", f.skipped, f.failed)
	}
	t.Setenv("CI", "1")
	f = &fakeTB{TB: t}
	Need(f)
	if f.skipped || !f.failed {
		t.Errorf("with CI: skipped=%v failed=%v, want a failure", f.skipped, f.failed)
	}
}

func FuzzParseRRset(f *testing.F) {
	for _, s := range []string{"a.test. A", "_25._tcp.mx.secure.test. TLSA", "x", "a b c", "\x00 A", "a.test. TYPE65534"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 512 {
			return
		}
		r, err := parseRRset(s)
		if err != nil {
			return
		}
		again, err := parseRRset(r.String())
		if err != nil || again != r {
			t.Errorf("%q parsed as %v, which parses as %v, %v", s, r, again, err)
		}
	})
}

func FuzzCheckRecord(f *testing.F) {
	for _, s := range []string{
		"a.test. 300 IN A 127.0.0.1",
		"_25._tcp.a.test. 300 IN TLSA 3 1 1 abcd",
		`a.test. IN TXT "x" "y"`,
		"b.a.test. NS ns.example.",
		"$ORIGIN x.",
		"a.test. 300 IN SOA a b 1 2 3 4 5",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if len(line) > 1024 {
			return
		}
		rr, err := checkRecord("a.test.", line)
		if err != nil {
			return
		}
		// What is accepted stays inside the zone and reads back from
		// the zone file as it was written.
		if !dns.IsSubDomain("a.test.", rr.Header().Name) {
			t.Errorf("%q accepted outside the zone: %v", line, rr)
		}
		back, err := dns.NewRR(rr.String())
		if err != nil || back == nil || back.String() != rr.String() {
			t.Errorf("%q written as %q reads back as %v, %v", line, rr.String(), back, err)
		}
	})
}
