package syntax

import (
	"strings"
	"testing"
)

func TestHostname(t *testing.T) {
	for s, ok := range map[string]bool{
		"example.com": true, "a": true, "xn--bcher-kva.example": true, "a-b.c": true,
		"": false, "-a.com": false, "a-.com": false, "a..b": false, "a.b.": false, "a_b.com": false,
		"a b": false, "a\r\n.com": false, strings.Repeat("a", 64) + ".com": false, strings.Repeat("a.", 127) + "aa": false,
	} {
		if _, got := Hostname(s); got != ok {
			t.Errorf("Hostname(%q) = %v", s, got)
		}
	}
}

func TestEHLOName(t *testing.T) {
	for s, ok := range map[string]bool{
		"mail.example.com": true, "[192.0.2.1]": true, "[IPv6:2001:db8::1]": true,
		"[2001:db8::1]": false, "[IPv6:192.0.2.1]": false, "[192.0.2.1": false, "[]": false,
		"[300.0.0.1]": false, "host\r\nMAIL": false, "": false, "[fe80::1%eth0]": false,
	} {
		if _, got := EHLOName(s); got != ok {
			t.Errorf("EHLOName(%q) = %v", s, got)
		}
	}
}

func TestDotAtom(t *testing.T) {
	for s, want := range map[string][2]bool{ // {ascii-only, utf8 allowed}
		"ann": {true, true}, "a.b+c": {true, true}, "jöhn": {false, true},
		"a..b": {false, false}, ".a": {false, false}, "a b": {false, false}, "a\"b": {false, false},
		"a<b": {false, false}, "a\x00": {false, false}, "a\u2028": {false, false}, "\xff": {false, false},
	} {
		if _, got := DotAtom(s, false); got != want[0] {
			t.Errorf("DotAtom(%q, false) = %v", s, got)
		}
		if _, got := DotAtom(s, true); got != want[1] {
			t.Errorf("DotAtom(%q, true) = %v", s, got)
		}
	}
}

func TestHeaderText(t *testing.T) {
	for s, ok := range map[string]bool{
		"plain": true, "tab\there": true, "Grüße": true,
		"cr\r": false, "lf\n": false, "nul\x00": false, "del\x7f": false, "nel\u0085": false,
		"ls\u2028": false, "ps\u2029": false, "bad\xff": false, "esc\x1b": false,
	} {
		if _, got := HeaderText(s); got != ok {
			t.Errorf("HeaderText(%q) = %v", s, got)
		}
	}
}

func TestHeaderName(t *testing.T) {
	for s, ok := range map[string]bool{"X-Thing": true, "": false, "X Thing": false, "X:": false, "X\r": false, "Ü": false} {
		if _, got := HeaderName(s); got != ok {
			t.Errorf("HeaderName(%q) = %v", s, got)
		}
	}
}

func TestFoldAddress(t *testing.T) {
	for in, want := range map[string]string{
		"Ann@Example.ORG":            "ann@example.org",
		" ann@example.org ":          "ann@example.org",
		"kate@bücher.example":        "kate@xn--bcher-kva.example",
		"Kate@XN--BCHER-KVA.example": "kate@xn--bcher-kva.example",
		"\u212Aate@example.org":      "\u212Aate@example.org", // KELVIN SIGN is not K
		"Jürgen@example.org":         "jürgen@example.org",
		"noat":                       "noat",
	} {
		if got := FoldAddress(in); got != want {
			t.Errorf("FoldAddress(%q) = %q, want %q", in, got, want)
		}
	}
}
