package mailsec

import (
	"mime"
	"strings"
	"testing"
	"unicode/utf8"

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

// Every word phrase writes (atom, quoted-string or encoded-word) fits
// maxPhraseWord, so that an address field folds into lines of at most 76
// octets; encoded text holds whole characters and reads back as s.
func TestPhraseWords(t *testing.T) {
	names := []string{"Ann", "Müller, Anna", "a  b", "\t", strings.Repeat("é", 128), strings.Repeat("🙂", 64),
		strings.Repeat("a", 66), strings.Repeat("a", 67), strings.Repeat("x,", 31), strings.Repeat("x,", 32), strings.Repeat("日本", 40),
		"ab" + strings.Repeat("é", 30), strings.Repeat(`"`, 31), strings.Repeat(`"`, 32)}
	for _, s := range names {
		p := phrase(s)
		var words []string
		if strings.HasPrefix(p, `"`) {
			words = []string{p}
		} else {
			words = strings.Split(p, " ")
		}
		var decoded strings.Builder
		for _, w := range words {
			if len(w) > maxPhraseWord {
				t.Errorf("%q: word of %d octets: %q", s, len(w), w)
			}
			if !strings.HasPrefix(w, "=?") {
				continue
			}
			d, err := new(mime.WordDecoder).Decode(w)
			if err != nil || !utf8.ValidString(d) {
				t.Errorf("%q: word %q does not decode to whole characters: %q, %v", s, w, d, err)
			}
			decoded.WriteString(d)
		}
		if strings.HasPrefix(p, "=?") && decoded.String() != s {
			t.Errorf("%q encodes to %q, which decodes to %q", s, p, decoded.String())
		}
	}
}

// Text that looks like an encoded-word is never written as an atom or a
// quoted-string, where a reader may decode it, but encoded itself, so
// that it reads back as the text it is.
func TestPhraseEncodesEncodedWordSyntax(t *testing.T) {
	for _, s := range []string{"=?utf-8?b?QmFuaw==?=", "a =?utf-8?q?x?= b", "x=?y?=z", `"=?a?b?c?="`} {
		p := phrase(s)
		if strings.HasPrefix(p, `"`) || !strings.HasPrefix(p, "=?utf-8?") {
			t.Errorf("%q written as %q", s, p)
			continue
		}
		d, err := new(mime.WordDecoder).DecodeHeader(p)
		if err != nil || d != s {
			t.Errorf("%q written as %q, which decodes to %q (%v)", s, p, d, err)
		}
	}
}

// checkNameAddrShortcut fails unless the shortcut in parseMailbox reads s
// exactly as the net/mail path (parseNameAddr) does whenever it takes s
// (when parseAddrSpec refuses the address, parseMailbox takes the net/mail
// path itself).
func checkNameAddrShortcut(t *testing.T, s string) {
	t.Helper()
	name, addr, ok := simpleNameAddr(s)
	if !ok {
		return
	}
	got, reason := parseAddrSpec(addr)
	if reason != "" {
		return
	}
	got.name = name
	want, err := parseNameAddr("From", s)
	if err != nil || got != want {
		t.Errorf("%q: the shortcut gives %+v; net/mail gives %+v, %v", s, got, want, err)
	}
}

func nameAddrSeeds() []string {
	return []string{
		"Example App <noreply@example.com>", "Ann <ann@example.org>", "A B C <a.b@c.example>",
		"O'Brien <ob@example.ie>", "x <a@b>", "Ann  <a@example.org>", " Ann <a@example.org>",
		"Ann <a@example.com.>", "Ann <.a@example.com>", "Ann <a..b@example.com>", "Ann <a@-x.example>",
		"Ann <a@exa_mple.com>", "Ann <a@xn--mnchen-3ya.de>", "Ann <a@xn--zz.example>", "Ann <a@1.2.3.4>",
		"Ann <" + strings.Repeat("a", 65) + "@example.com>", "Ann <a@" + strings.Repeat("b", 64) + ".example>",
		strings.Repeat("n", 256) + " <a@example.org>", strings.Repeat("n", 257) + " <a@example.org>",
		"Ann <a@example.org> ", "Ann<a@example.org>", "Ann <a@b@example.org>", "Ann <a@>", "Ann <@example.org>",
		"=?utf-8?q?x?= <a@example.org>", "Ann =? <a@example.org>", "{|} <a@example.org>", "a+b=c <q+r@example.org>",
	}
}

// The shortcut past net/mail for a plain "Name <addr>" changes nothing:
// whatever it takes, it reads as the net/mail path does, and it does take
// the common form.
func TestNameAddrShortcut(t *testing.T) {
	for _, s := range nameAddrSeeds() {
		checkNameAddrShortcut(t, s)
	}
	if _, _, ok := simpleNameAddr("Example App <noreply@example.com>"); !ok {
		t.Error("the shortcut does not take a plain name-addr")
	}
}

func FuzzNameAddrShortcut(f *testing.F) {
	for _, s := range nameAddrSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 600 {
			return
		}
		checkNameAddrShortcut(t, s)
	})
}
