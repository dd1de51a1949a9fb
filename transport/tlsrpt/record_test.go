package tlsrpt_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

func ruaStrings(rec *tlsrpt.Record) []string {
	var out []string
	for _, u := range rec.RUA {
		out = append(out, u.String())
	}
	return out
}

func TestParseRecordValid(t *testing.T) {
	for _, tc := range []struct {
		txt     string
		rua     []string
		ignored []string
		ext     []tlsrpt.Extension
	}{
		// The examples of RFC 8460 §3 (the second one's strings joined).
		{txt: "v=TLSRPTv1;rua=mailto:reports@example.com", rua: []string{"mailto:reports@example.com"}},
		{txt: "v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt", rua: []string{"https://reporting.example.com/v1/tlsrpt"}},
		// Lists, white space around delimiters, a final delimiter.
		{txt: "v=TLSRPTv1 ;\trua=mailto:a@example.com , https://r.example.com/x ;", rua: []string{"mailto:a@example.com", "https://r.example.com/x"}},
		// rua may appear more than once: every URI counts.
		{txt: "v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com", rua: []string{"mailto:a@example.com", "mailto:b@example.com"}},
		// Other schemes are ignored, not fatal.
		{txt: "v=TLSRPTv1; rua=ftp://r.example.com/,http://r.example.com/,mailto:a@example.com",
			rua: []string{"mailto:a@example.com"}, ignored: []string{"ftp://r.example.com/", "http://r.example.com/"}},
		// A mailto naming two addresses (an encoded comma) is not usable.
		{txt: "v=TLSRPTv1; rua=mailto:a@example.com%2Cb@example.com,mailto:c@example.com",
			rua: []string{"mailto:c@example.com"}, ignored: []string{"mailto:a@example.com%2Cb@example.com"}},
		// An encoded "!" in an address.
		{txt: "v=TLSRPTv1; rua=mailto:a%21b@example.com", rua: []string{"mailto:a%21b@example.com"}},
		// Extensions, including a 32-character name.
		{txt: "v=TLSRPTv1; x-ext.1=va,lu!e; rua=mailto:a@example.com; abcdefghijklmnopqrstuvwxyz012345=1",
			rua: []string{"mailto:a@example.com"},
			ext: []tlsrpt.Extension{{Name: "x-ext.1", Value: "va,lu!e"}, {Name: "abcdefghijklmnopqrstuvwxyz012345", Value: "1"}}},
	} {
		rec, err := tlsrpt.ParseRecord(tc.txt)
		if err != nil {
			t.Errorf("ParseRecord(%q): %v", tc.txt, err)
			continue
		}
		if got := ruaStrings(rec); !slices.Equal(got, tc.rua) {
			t.Errorf("ParseRecord(%q).RUA = %q, want %q", tc.txt, got, tc.rua)
		}
		if !slices.Equal(rec.Ignored, tc.ignored) {
			t.Errorf("ParseRecord(%q).Ignored = %q, want %q", tc.txt, rec.Ignored, tc.ignored)
		}
		if !slices.Equal(rec.Extensions, tc.ext) {
			t.Errorf("ParseRecord(%q).Extensions = %q, want %q", tc.txt, rec.Extensions, tc.ext)
		}
	}
}

func TestParseRecordMalformed(t *testing.T) {
	for _, txt := range []string{
		"",
		"v=TLSRPTv1",                           // no field
		"v=TLSRPTv1;",                          // no field
		"v=tlsrptv1; rua=mailto:a@example.com", // the version is case-sensitive
		"v=TLSRPTv2; rua=mailto:a@example.com",
		" v=TLSRPTv1; rua=mailto:a@example.com",
		"v=TLSRPTv1 rua=mailto:a@example.com", // no delimiter
		"v=TLSRPTv1; rua=",
		"v=TLSRPTv1; rua=mailto:a@example.com,",
		"v=TLSRPTv1; rua=mailto:a@example.com;;",
		"v=TLSRPTv1; rua=mailto:a@example.com ",  // white space only inside field-delim
		"v=TLSRPTv1; rua=mailto:a!b@example.com", // "!" must be encoded
		"v=TLSRPTv1; rua=https://r.example.com/a b",
		"v=TLSRPTv1; rua=mailto:a@example.com; x=",
		"v=TLSRPTv1; rua=mailto:a@example.com; x=a=b",
		"v=TLSRPTv1; rua=mailto:a@example.com; _x=1",
		"v=TLSRPTv1; rua=mailto:a@example.com; x",
		"v=TLSRPTv1; rua=mailto:a@example.com; abcdefghijklmnopqrstuvwxyz0123456=1", // 33 characters
		"v=TLSRPTv1; rua=no-scheme",
		"v=TLSRPTv1; rua=mailto:a@example.com\x00",
		"v=TLSRPTv1; rua=mailto:é@example.com",
		"v=TLSRPTv1; rua=" + strings.Repeat("x", 20000),
	} {
		_, err := tlsrpt.ParseRecord(txt)
		if !errors.Is(err, tlsrpt.ErrSyntax) {
			t.Errorf("ParseRecord(%q) = %v, want ErrSyntax", txt, err)
		}
		var re *tlsrpt.RecordError
		if !errors.As(err, &re) || re.Record != txt {
			t.Errorf("ParseRecord(%q): error %v does not carry the record", txt, err)
		}
	}
}

func TestParseRecordNoUsableURI(t *testing.T) {
	for _, txt := range []string{
		"v=TLSRPTv1; x=1",                                   // no rua at all
		"v=TLSRPTv1; RUA=mailto:a@example.com",              // "rua" is case-sensitive: an extension
		"v=TLSRPTv1; rua=http://reports.example.com/",       // plain HTTP
		"v=TLSRPTv1; rua=mailto:not-an-address",             // no domain
		"v=TLSRPTv1; rua=https:/path-only,ftp://x.example/", // no host
	} {
		_, err := tlsrpt.ParseRecord(txt)
		if !errors.Is(err, tlsrpt.ErrNoUsableURI) {
			t.Errorf("ParseRecord(%q) = %v, want ErrNoUsableURI", txt, err)
		}
	}
}

func TestLookupPolicy(t *testing.T) {
	ctx := context.Background()
	const name = "_smtp._tls.example.org"
	good := "v=TLSRPTv1; rua=mailto:tlsrpt@example.org"

	pol, err := tlsrpt.LookupPolicy(ctx, txtResolver(map[string][]string{name: {"v=spf1 -all", "v=TLSRPTv10; rua=mailto:x@example.org", good}}), "EXAMPLE.org.")
	if err != nil {
		t.Fatal(err)
	}
	if pol.Domain != "example.org" || pol.TXT != good || len(pol.RUA) != 1 || pol.RUA[0].String() != "mailto:tlsrpt@example.org" {
		t.Errorf("policy = %+v", pol)
	}

	for _, tc := range []struct {
		name string
		r    dns.Resolver
		kind error
		temp bool
	}{
		{"nxdomain", mailsectest.NewResolver(), tlsrpt.ErrNoRecord, false},
		{"nodata", failing(name, &dns.Error{Kind: dns.NoRecords}), tlsrpt.ErrNoRecord, false},
		{"servfail", failing(name, &dns.Error{Kind: dns.ServerFailure}), tlsrpt.ErrLookup, true},
		{"other TXT only", txtResolver(map[string][]string{name: {"v=spf1 -all", "v=TLSRPTv10; rua=mailto:x@example.org"}}), tlsrpt.ErrNoRecord, false},
		{"two records", txtResolver(map[string][]string{name: {good, "v=TLSRPTv1; rua=https://r.example.org/"}}), tlsrpt.ErrMultipleRecords, false},
		{"malformed", txtResolver(map[string][]string{name: {"v=TLSRPTv1; rua=mailto:a@example.org; ;"}}), tlsrpt.ErrSyntax, false},
		{"no usable uri", txtResolver(map[string][]string{name: {"v=TLSRPTv1; rua=http://r.example.org/"}}), tlsrpt.ErrNoUsableURI, false},
	} {
		_, err := tlsrpt.LookupPolicy(ctx, tc.r, "example.org")
		if !errors.Is(err, tc.kind) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.kind)
			continue
		}
		var re *tlsrpt.RecordError
		if !errors.As(err, &re) || re.Domain != "example.org" || !strings.Contains(err.Error(), "example.org") {
			t.Errorf("%s: error %v does not name the domain", tc.name, err)
		}
		if mailsec.IsTemporary(err) != tc.temp {
			t.Errorf("%s: IsTemporary = %v, want %v", tc.name, mailsec.IsTemporary(err), tc.temp)
		}
	}

	if _, err := tlsrpt.LookupPolicy(ctx, mailsectest.NewResolver(), "not a domain"); !errors.Is(err, tlsrpt.ErrNoRecord) {
		t.Errorf("bad domain: %v", err)
	}
}

// LookupPolicy asks for exactly _smtp._tls.<domain>.
func TestLookupPolicyName(t *testing.T) {
	r := txtResolver(map[string][]string{"_smtp._tls.xn--bcher-kva.example": {"v=TLSRPTv1; rua=mailto:r@xn--bcher-kva.example"}})
	pol, err := tlsrpt.LookupPolicy(context.Background(), r, "bücher.example")
	if err != nil {
		t.Fatal(err)
	}
	if r.Lookups() != 1 || r.Queries("TXT", "_smtp._tls.xn--bcher-kva.example") != 1 || pol.Domain != "xn--bcher-kva.example" {
		t.Errorf("%d lookups, %d of the TXT records; domain %q", r.Lookups(), r.Queries("TXT", "_smtp._tls.xn--bcher-kva.example"), pol.Domain)
	}
}

// failing is a resolver whose TXT lookups of name fail with err.
func failing(name string, err error) *mailsectest.Resolver {
	r := mailsectest.NewResolver()
	r.Fail("TXT", name, err)
	return r
}

func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		"v=TLSRPTv1;rua=mailto:reports@example.com",
		"v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt",
		"v=TLSRPTv1; rua=mailto:a@example.com,https://r.example.com/x; ext=1;",
		"v=TLSRPTv1; rua=mailto:a%21b@example.com%2Cc@example.com",
		"v=TLSRPTv1; rua=ftp://x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, txt string) {
		if len(txt) > 4096 {
			return
		}
		rec, err := tlsrpt.ParseRecord(txt)
		if err != nil {
			if !errors.Is(err, tlsrpt.ErrSyntax) && !errors.Is(err, tlsrpt.ErrNoUsableURI) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if !strings.HasPrefix(txt, "v=TLSRPTv1") || len(rec.RUA) == 0 {
			t.Fatalf("accepted %q: %+v", txt, rec)
		}
		for _, u := range rec.RUA {
			if s := strings.ToLower(u.Scheme); s != "mailto" && s != "https" {
				t.Fatalf("kept %s from %q", u, txt)
			}
		}
	})
}
