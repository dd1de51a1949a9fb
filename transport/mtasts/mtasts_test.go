package mtasts

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// The policy of RFC 8461 section 3.2, with CRLF and with LF line ends.
const rfcPolicy = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n"

func TestParsePolicyRFCExample(t *testing.T) {
	for _, body := range []string{rfcPolicy, strings.ReplaceAll(rfcPolicy, "\n", "\r\n"), strings.TrimSuffix(rfcPolicy, "\n")} {
		p, err := ParsePolicy([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if p.Mode != Enforce || p.MaxAge != 604800 || !slices.Equal(p.MX, []string{"mail.example.com", "*.example.net", "backupmx.example.com"}) {
			t.Fatalf("%+v", p)
		}
	}
}

func TestMatches(t *testing.T) {
	p, err := ParsePolicy([]byte(rfcPolicy))
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"mail.example.com":      true,
		"MAIL.Example.COM.":     true,
		"mx1.example.net":       true, // one label for "*"
		"example.net":           false,
		"a.mx1.example.net":     false, // "*" is exactly one label
		".example.net":          false,
		"mail.example.com.evil": false,
		"backupmx.example.com":  true,
		"evilmail.example.com":  false,
	} {
		if got := p.Matches(host); got != want {
			t.Errorf("Matches(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestParsePolicyRefusals(t *testing.T) {
	for name, body := range map[string]string{
		"no version":        "mode: enforce\nmx: a.example\nmax_age: 1\n",
		"wrong version":     "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
		"two versions":      "version: STSv1\nversion: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n",
		"no mode":           "version: STSv1\nmx: a.example\nmax_age: 1\n",
		"bad mode":          "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n",
		"two modes":         "version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 1\n",
		"no max_age":        "version: STSv1\nmode: enforce\nmx: a.example\n",
		"negative max_age":  "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
		"11-digit max_age":  "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n",
		"no mx":             "version: STSv1\nmode: enforce\nmax_age: 1\n",
		"bad mx":            "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
		"mx wildcard inner": "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",
		"mx with port":      "version: STSv1\nmode: enforce\nmx: a.example:25\nmax_age: 1\n",
		"no colon":          "version: STSv1\nmode enforce\nmx: a.example\nmax_age: 1\n",
		"html":              "<html><body>not a policy</body></html>",
		"control":           "version: STSv1\nmode: enforce\x00\nmx: a.example\nmax_age: 1\n",
		"too large":         rfcPolicy + strings.Repeat("x: y\n", MaxPolicySize/5),
	} {
		if p, err := ParsePolicy([]byte(body)); err == nil {
			t.Errorf("%s: accepted as %+v", name, p)
		}
	}
}

func TestParsePolicyLenient(t *testing.T) {
	// Unknown fields are ignored; mode none needs no mx; max_age is
	// capped at a year; surrounding blanks are ignored.
	p, err := ParsePolicy([]byte("version: STSv1\nmode: none\nmax_age:   99999999\nextension_1: anything goes\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != None || p.MaxAge != MaxAge || len(p.MX) != 0 {
		t.Fatalf("%+v", p)
	}
}

func TestRecords(t *testing.T) {
	r, err := SelectRecord([]string{"v=spf1 -all", "v=STSv1; id=20160831085700Z;"})
	if err != nil || r.ID != "20160831085700Z" {
		t.Fatalf("%+v %v", r, err)
	}
	if r, err := ParseRecord("v=STSv1;id=abc;ext=1"); err != nil || r.ID != "abc" {
		t.Fatalf("%+v %v", r, err)
	}
	for _, txts := range [][]string{nil, {"v=spf1 -all"}, {"v=STSv1; id=a;", "v=STSv1; id=b;"}} {
		if _, err := SelectRecord(txts); !errors.Is(err, ErrNoRecord) {
			t.Errorf("%q: %v", txts, err)
		}
	}
	for _, bad := range []string{
		"v=STSv1; id=;", "v=STSv1;", "v=STSv1; id=abc-def;", "v=STSv1; id=" + strings.Repeat("a", 33) + ";",
		"v=STSv1; id=a; id=b;", "v=STSv1 id=a;", "v=STSv1; junk;", " v=STSv1; id=a;",
	} {
		if r, err := ParseRecord(bad); err == nil {
			t.Errorf("%q accepted as %+v", bad, r)
		}
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(rfcPolicy))
	f.Add([]byte("version: STSv1\r\nmode: none\r\nmax_age: 0\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			return
		}
		if p.MaxAge < 0 || p.MaxAge > MaxAge || (p.Mode != None && len(p.MX) == 0) {
			t.Fatalf("accepted an invalid policy: %+v", p)
		}
		for _, pat := range p.MX {
			host := strings.TrimPrefix(pat, "*.")
			if strings.HasPrefix(pat, "*.") {
				host = "x." + host
			}
			if !p.Matches(host) || p.Matches("evil-"+host+".attacker.example") {
				t.Fatalf("pattern %q does not match %q as it should", pat, host)
			}
		}
	})
}

func FuzzParseRecord(f *testing.F) {
	f.Add("v=STSv1; id=20160831085700Z;")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRecord(s)
		if err == nil && (r.ID == "" || len(r.ID) > 32 || !isAlnum(r.ID)) {
			t.Fatalf("accepted %q with id %q", s, r.ID)
		}
	})
}
