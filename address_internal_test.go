package mailsec

import (
	"testing"

	"golang.org/x/net/idna"
)

// plainHostname is a shortcut past IDNA: whatever it lets through, IDNA
// maps to itself both ways without error.
func checkPlainHostname(t *testing.T, d string) {
	t.Helper()
	if !plainHostname(d) {
		return
	}
	a, err := idna.Lookup.ToASCII(d)
	if err != nil || a != d {
		t.Fatalf("plainHostname(%q) but ToASCII = %q, %v", d, a, err)
	}
	u, err := idna.Lookup.ToUnicode(d)
	if err != nil || u != d {
		t.Fatalf("plainHostname(%q) but ToUnicode = %q, %v", d, u, err)
	}
}

func TestPlainHostname(t *testing.T) {
	for _, d := range []string{"example.org", "my-site.example", "a-b-c.d-e.example", "ab--cd.example",
		"r3--sn-abc.googlevideo.com", "xn--bcher-kva.example", "a.xn--p1ai", "a-.example", "-a.example",
		"a..b", ".a", "a.", "", "EXAMPLE.org", "ex_ample.org", "a---b.example", "ab-c.example"} {
		checkPlainHostname(t, d)
	}
	for _, d := range []string{"ab--cd.example", "x.xn--p1ai", "xn--bcher-kva.example"} {
		if plainHostname(d) {
			t.Errorf("plainHostname(%q): labels with -- in the third and fourth place need IDNA", d)
		}
	}
	for _, addr := range []string{"u@ab--cd.example", "u@r3--sn-abc.example"} {
		if _, reason := parseAddrSpec(addr); reason == "" {
			t.Errorf("%s accepted; IDNA refuses its domain", addr)
		}
	}
	if _, reason := parseAddrSpec("u@my-site.example"); reason != "" {
		t.Errorf("u@my-site.example: %s", reason)
	}
}

func FuzzPlainHostname(f *testing.F) {
	for _, s := range []string{"example.org", "ab--cd.example", "a-b.c", "xn--a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, d string) {
		if len(d) > 300 {
			return
		}
		checkPlainHostname(t, d)
	})
}
