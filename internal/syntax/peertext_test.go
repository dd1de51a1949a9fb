package syntax

import (
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPeerText(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"500 Internal Server Error", "500 Internal Server Error"},
		{"500 \x1b[2J\x1b]0;pwned\x07", "500 ?[2J?]0;pwned?"},
		{"a\r\nb", "a  b"},
		{"tab\tkept", "tab\tkept"},
		{"del\x7f nul\x00", "del? nul?"},
		{"c1 \u0085 \u009b", "c1 ? ?"},
		{"sep \u2028 \u2029", "sep ? ?"},
		{"bidi \u202egnp.exe\u202c \u2066x\u2069 \u200f", "bidi ?gnp.exe? ?x? ?"},
		{"bom \ufeff", "bom ?"},
		{"bad \xff\xfe utf8", "bad ?? utf8"},
		{"Grüße, 東京", "Grüße, 東京"},
		{"", ""},
	} {
		if got := PeerText(c.in); got != c.want {
			t.Errorf("PeerText(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	long := strings.Repeat("é", MaxPeerText) // two octets each
	got := PeerText(long)
	if !strings.HasSuffix(got, "...") || len(got) > MaxPeerText || !utf8.ValidString(got) {
		t.Fatalf("long text: %d octets, valid %v", len(got), utf8.ValidString(got))
	}
}

func TestRedactAddresses(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"lookup mta-sts.example.org on 10.1.2.3:53: no such host", "lookup mta-sts.example.org on [address]: no such host"},
		{"dns: TXT x.example: timed out (resolver 127.0.0.1:5353)", "dns: TXT x.example: timed out (resolver [address])"},
		{"read tcp 10.0.0.5:34567->203.0.113.5:443: connection reset", "read tcp [address]->[address]: connection reset"},
		{"dial tcp [fd00::53]:53: refused", "dial tcp [address]: refused"},
		{"via fe80::1%eth0 and ::ffff:192.168.1.1.", "via [address] and [address]."},
		{"at 192.168.0.1, then", "at [address], then"},
		{"cafe deadbeef TLS 1.2 at 12:30:45 on 2026-01-02", "cafe deadbeef TLS 1.2 at 12:30:45 on 2026-01-02"},
		{"mx1.example.org", "mx1.example.org"},
		{"timeout (resolver:10.0.0.5)", "timeout (resolver:[address])"},
		{"dial tcp4:127.0.0.1:25 refused", "dial tcp4:[address] refused"},
		{"via:[fd00::1]:53: no answer", "via:[address]: no answer"},
		{"ip4:10.0.0.1, x:fd00::1.", "ip4:[address], x:[address]."},
		{"", ""},
	} {
		if got := RedactAddresses(c.in); got != c.want {
			t.Errorf("RedactAddresses(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// FuzzRedactAddresses puts an address between a word and a separator
// and requires it gone from what RedactAddresses leaves.
func FuzzRedactAddresses(f *testing.F) {
	f.Add("resolver", byte(':'), []byte{10, 0, 0, 5}, byte(')'), uint16(53))
	f.Add("via", byte(':'), []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, byte(':'), uint16(0))
	f.Add("on", byte(' '), []byte{127, 0, 0, 1}, byte(','), uint16(5353))
	seps := " :=(/,"
	ends := " ,).;"
	f.Fuzz(func(t *testing.T, word string, sep byte, ip []byte, end byte, port uint16) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok || strings.ContainsAny(word, "0123456789abcdefABCDEF.:[]%") || strings.IndexByte(seps, sep) < 0 || strings.IndexByte(ends, end) < 0 {
			return
		}
		addr := a.String()
		if port != 0 {
			addr = netip.AddrPortFrom(a, port).String()
		}
		s := word + string(sep) + addr + string(end) + "rest"
		if red := RedactAddresses(s); strings.Contains(red, a.String()) {
			t.Fatalf("RedactAddresses(%q) = %q", s, red)
		}
	})
}

func FuzzPeerText(f *testing.F) {
	for _, s := range []string{"500 \x1b[2J\x1b]0;pwned\x07", "a\r\nb", "\u202e", "\xff", "on 10.0.0.1:53"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := PeerText(s)
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out of %q", s)
		}
		for _, r := range out {
			if r != '\t' && unsafePeerRune(r) || r == '\r' || r == '\n' {
				t.Fatalf("%q left in %q", r, out)
			}
		}
		if len(out) > MaxPeerText {
			t.Fatalf("%d octets", len(out))
		}
		if PeerText(out) != out {
			t.Fatalf("not idempotent on %q", s)
		}
		red := RedactAddresses(s)
		if strings.Count(red, "[address]") < strings.Count(s, "[address]") {
			t.Fatalf("redaction lost text of %q", s)
		}
	})
}
