package smtpwire

import (
	"strconv"
	"strings"
)

// XText encodes s as RFC 3461 section 4 xtext: printable ASCII other than
// "+" and "=" as is, every other byte as "+" and two upper-case hex digits.
func XText(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '!' && c <= '~' && c != '+' && c != '=' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('+')
		b.WriteString(strings.ToUpper(strconv.FormatUint(uint64(c)|0x100, 16)[1:]))
	}
	return b.String()
}

// UTF8AddrXText encodes an address as RFC 6533 utf-8-addr-xtext, for
// ORCPT=utf-8; when the server does not offer SMTPUTF8: every character
// other than printable ASCII except "+", "=" and "\" (RFC 6533's QCHAR)
// as \x{HEX}.
func UTF8AddrXText(s string) string { return utf8Addr(s, false) }

// UTF8AddrUnitext encodes an address as RFC 6533 utf-8-addr-unitext, for
// ORCPT=utf-8; when the server offers SMTPUTF8: non-ASCII characters as
// they are, other ASCII that xtext escapes as \x{HEX}.
func UTF8AddrUnitext(s string) string { return utf8Addr(s, true) }

func utf8Addr(s string, keepUTF8 bool) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r >= '!' && r <= '~' && r != '+' && r != '=' && r != '\\':
			b.WriteRune(r)
		case keepUTF8 && r > 0x7f:
			b.WriteRune(r)
		default:
			b.WriteString(`\x{`)
			b.WriteString(strings.ToUpper(strconv.FormatInt(int64(r), 16)))
			b.WriteByte('}')
		}
	}
	return b.String()
}
