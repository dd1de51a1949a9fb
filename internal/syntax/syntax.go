// Package syntax holds the lexical checks shared by the message builder and
// the SMTP transports: host names, dot-atoms, header field names and values.
//
// Every function here is pure and allocation-light; none of them performs
// I/O. They implement the grammar of RFC 5321 and RFC 5322 strictly, refusing
// rather than repairing anything that could change how a receiver splits
// lines, commands or header fields.
package syntax

import (
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Limits from RFC 5321 section 4.5.3.1.
const (
	MaxLocalPart = 64  // octets in a local part
	MaxDomain    = 255 // octets in a domain
	MaxPath      = 256 // octets in a reverse- or forward-path, brackets included
	MaxLine      = 998 // octets in a message line, CRLF excluded (RFC 5322 2.1.1)
)

// IsAtext reports whether b is an RFC 5322 atext character (ASCII only).
func IsAtext(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", b) >= 0
}

// DotAtom checks s as an RFC 5322 dot-atom. With utf8 set it also accepts
// the UTF-8 atext of RFC 6532 (non-ASCII characters that are not controls).
// It returns a short reason when s is not acceptable.
func DotAtom(s string, allowUTF8 bool) (reason string, ok bool) {
	if s == "" {
		return "empty", false
	}
	if !utf8.ValidString(s) {
		return "not valid UTF-8", false
	}
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return "misplaced dot", false
	}
	for _, r := range s {
		switch {
		case r == '.':
		case r < utf8.RuneSelf:
			if !IsAtext(byte(r)) {
				return "character " + quoteRune(r) + " is not allowed", false
			}
		case !allowUTF8:
			return "non-ASCII character " + quoteRune(r), false
		case IsForbiddenRune(r):
			return "control character " + quoteRune(r), false
		}
	}
	return "", true
}

// Hostname checks s as a domain name in ASCII (LDH) form: labels of 1 to
// 63 letters, digits and hyphens, not starting or ending with a hyphen, at
// most 253 octets in all, no trailing dot.
func Hostname(s string) (reason string, ok bool) {
	if s == "" {
		return "empty", false
	}
	if len(s) > 253 {
		return "longer than 253 octets", false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" {
			return "empty label", false
		}
		if len(label) > 63 {
			return "label longer than 63 octets", false
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "label starts or ends with a hyphen", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return "character " + quoteRune(rune(c)) + " is not allowed", false
			}
		}
	}
	return "", true
}

// LookupName checks s as a name a DNS lookup may ask for: a domain name
// in A-label form whose labels hold letters, digits, hyphens and the
// underscores of service labels such as "_25._tcp", 1 to 63 octets each,
// at most 253 octets in all without the final dot, which is allowed
// (RFC 1035 §2.3.4). Refusing anything else keeps escapes and other
// presentation-format tricks out of queries.
func LookupName(s string) (reason string, ok bool) {
	n := strings.TrimSuffix(s, ".")
	switch {
	case n == "":
		return "empty", false
	case len(n) > 253:
		return "longer than 253 octets", false
	}
	for label := range strings.SplitSeq(n, ".") {
		switch {
		case label == "":
			return "empty label", false
		case len(label) > 63:
			return "label longer than 63 octets", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "character " + quoteRune(rune(c)) + " is not allowed (letters, digits, '-', '_' and dots)", false
			}
		}
	}
	return "", true
}

// EHLOName checks s as the argument of EHLO: a host name or an address
// literal such as [192.0.2.1] or [IPv6:2001:db8::1].
func EHLOName(s string) (reason string, ok bool) {
	if inner, found := strings.CutPrefix(s, "["); found {
		inner, found = strings.CutSuffix(inner, "]")
		if !found {
			return "unterminated address literal", false
		}
		v6, isV6 := strings.CutPrefix(inner, "IPv6:")
		if isV6 {
			inner = v6
		}
		ip, err := netip.ParseAddr(inner)
		if err != nil || ip.Zone() != "" || ip.Is4() == isV6 {
			return "malformed address literal", false
		}
		return "", true
	}
	return Hostname(s)
}

// HeaderName checks s as a header field name: printable US-ASCII except
// colon (RFC 5322 section 2.2, ftext).
func HeaderName(s string) (reason string, ok bool) {
	if s == "" {
		return "empty", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 33 || c > 126 || c == ':' {
			return "character " + quoteRune(rune(c)) + " is not allowed in a field name", false
		}
	}
	return "", true
}

// IsForbiddenRune reports whether r may never appear in a header value,
// display name or envelope parameter: C0 controls other than horizontal tab
// (CR, LF and NUL among them), DEL, the C1 NEL, and the Unicode line and
// paragraph separators, which some receivers treat as line breaks.
func IsForbiddenRune(r rune) bool {
	switch {
	case r == '\t':
		return false
	case r < 0x20, r == 0x7f, r == 0x85, r == 0x2028, r == 0x2029:
		return true
	}
	return r == utf8.RuneError
}

// HeaderText checks a header value or display name as the application gave
// it: valid UTF-8 and free of the characters IsForbiddenRune names.
func HeaderText(s string) (reason string, ok bool) {
	if !utf8.ValidString(s) {
		return "not valid UTF-8", false
	}
	for _, r := range s {
		if IsForbiddenRune(r) {
			return "control character " + quoteRune(r), false
		}
	}
	return "", true
}

// IsPrintableASCII reports whether s consists only of printable US-ASCII
// characters (33 to 126) and is not empty, as DSN's ENVID and the xtext
// of RFC 3461 need before encoding.
func IsPrintableASCII(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}

// IsASCII reports whether s is entirely US-ASCII.
func IsASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func quoteRune(r rune) string { return strconv.QuoteRune(r) }

// FoldAddress returns the form in which two spellings of one email address
// compare equal: the local part with ASCII letters lowered and nothing
// else changed (Unicode case folding would make distinct SMTPUTF8
// mailboxes, such as one with U+212A KELVIN SIGN, equal to ASCII ones),
// and the domain in lower-case A-labels, so that "bücher.example" and
// "xn--bcher-kva.example" are one domain. A domain that is not valid IDNA
// is lowered in ASCII only.
func FoldAddress(addr string) string {
	addr = strings.TrimSpace(addr)
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return asciiLower(addr)
	}
	local, domain := addr[:at], addr[at+1:]
	if a, err := idna.Lookup.ToASCII(domain); err == nil {
		domain = a
	}
	return asciiLower(local) + "@" + asciiLower(domain)
}

func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
