package syntax

import (
	"net/netip"
	"strings"
	"unicode/utf8"
)

// MaxPeerText bounds, in octets, what PeerText keeps of one string.
const MaxPeerText = 512

// PeerText makes text that came from a peer (an HTTP status line or
// header, a DNS name or TXT record, an SMTP reply, a key server's answer)
// safe to put into an error, a log record or a Receipt: a line break
// becomes a space; C0 and C1 controls (ESC and BEL among them, which
// drive terminals), DEL, the Unicode line and paragraph separators, the
// bidirectional overrides and isolates (which reorder what a reader
// sees) and invalid UTF-8 each become '?'; a tab stays. Text longer than
// MaxPeerText octets is cut at a character boundary to end in "..."
// within that length.
func PeerText(s string) string {
	if len(s) > MaxPeerText {
		n := MaxPeerText - len("...")
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "..."
	}
	if cleanPeer(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == utf8.RuneError && size <= 1:
			b.WriteByte('?')
		case r == '\r' || r == '\n':
			b.WriteByte(' ')
		case unsafePeerRune(r):
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// cleanPeer reports whether PeerText would leave s as it is.
func cleanPeer(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c == '\r' || c == '\n' || unsafePeerRune(rune(c)) {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 || unsafePeerRune(r) {
			return false
		}
		i += size
	}
	return true
}

// unsafePeerRune reports a rune PeerText replaces.
func unsafePeerRune(r rune) bool {
	switch {
	case r == '\t':
		return false
	case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
		return true
	case r == 0x2028, r == 0x2029: // line and paragraph separators
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		// Bidirectional embeddings, overrides, isolates and marks.
		return true
	case r == 0xfeff: // byte-order mark, zero width
		return true
	}
	return false
}

// RedactAddresses replaces every IP address in s, with or without a port
// or brackets ("10.0.0.5", "10.0.0.5:53", "[fd00::1]:5353", "fe80::1%eth0"),
// by "[address]". Text about this host's network (the resolver asked, the
// local end of a connection) goes through it before it leaves for another
// party, in a TLS report for example.
func RedactAddresses(s string) string {
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); {
		if !addrRune(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && (addrRune(s[j]) || s[j] == '%' && j+1 < len(s) && zoneRune(s[j+1])) {
			if s[j] == '%' {
				j++
				for j < len(s) && zoneRune(s[j]) {
					j++
				}
				continue
			}
			j++
		}
		if k, n := addressIn(s[i:j]); n > 0 {
			b.WriteString(s[last : i+k])
			b.WriteString("[address]")
			last = i + k + n
		}
		i = j
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// addrRune reports the characters an address token is made of: hex
// digits, dots, colons and brackets.
func addrRune(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '.' || c == ':' || c == '[' || c == ']'
}

func zoneRune(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-'
}

// addressIn finds the address in tok, a run of address characters: tok
// itself, or what follows a colon in it ("resolver:10.0.0.5",
// "tcp4:127.0.0.1:25", "via:[fd00::1]:53"), the first that is one. It
// returns where the address starts and its length; n is 0 when there is
// none.
func addressIn(tok string) (k, n int) {
	if n := addressPrefix(tok); n > 0 {
		return 0, n
	}
	for k := 1; k < len(tok); k++ {
		if tok[k-1] != ':' {
			continue
		}
		if n := addressPrefix(tok[k:]); n > 0 {
			return k, n
		}
	}
	return 0, 0
}

// addressPrefix returns the length of the longest prefix of tok that is
// an IP address, an address and port, or either in brackets, followed
// only by the dots and colons that may end a sentence ("::" ends an IPv6
// address too); otherwise 0. A word of hex digits ("cafe"), a version
// ("1.2") or a time of day ("12:30:45") is none.
func addressPrefix(tok string) int {
	// "::" itself is all dots and colons.
	shortest := max(len(strings.TrimRight(tok, ".:")), 2)
	for n := len(tok); n >= shortest; n-- {
		t := tok[:n]
		if _, err := netip.ParseAddrPort(t); err == nil {
			return n
		}
		if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(t, "["), "]")); err == nil {
			return n
		}
	}
	return 0
}
