package mailsec

import (
	"mime"
	"net/mail"
	"strings"

	"golang.org/x/net/idna"

	"github.com/mailsec/mailsec/internal/syntax"
)

// mailbox is an address that passed validation.
type mailbox struct {
	name    string // display name, decoded, may be empty
	local   string // local part, dot-atom, ASCII unless utf8
	aDomain string // domain as A-labels (ASCII)
	uDomain string // domain as U-labels
	utf8    bool   // the local part needs SMTPUTF8
}

// addr returns the addr-spec. When the message travels as SMTPUTF8 the
// domain keeps its Unicode form; otherwise it is written as A-labels, which
// any server accepts.
func (m mailbox) addr(utf8 bool) string {
	if utf8 {
		return m.local + "@" + m.uDomain
	}
	return m.local + "@" + m.aDomain
}

// header formats the mailbox for an address header field: the display name
// as an RFC 2047 encoded-word when it is not ASCII, as a quoted-string when it
// holds specials, and bare otherwise.
func (m mailbox) header(utf8 bool) string {
	if m.name == "" {
		return m.addr(utf8)
	}
	return phrase(m.name) + " <" + m.addr(utf8) + ">"
}

func phrase(s string) string {
	if !syntax.IsASCII(s) {
		return mime.QEncoding.Encode("utf-8", s)
	}
	atoms := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != ' ' && !syntax.IsAtext(c) {
			atoms = false
			break
		}
	}
	if atoms && !strings.HasPrefix(s, "=?") {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// parseMailbox validates one address as an application gives it, either a
// bare addr-spec ("ann@example.com") or a name-addr ("Ann <ann@example.com>").
// field names the message field for the error.
func parseMailbox(field, s string) (mailbox, error) {
	if reason, ok := syntax.HeaderText(s); !ok {
		return mailbox{}, invalid(field, s, reason)
	}
	if strings.TrimSpace(s) == "" {
		return mailbox{}, invalid(field, s, "empty address")
	}
	if hasEncodedWord(s) {
		return mailbox{}, invalid(field, s, encodedWordReason)
	}
	if !strings.ContainsAny(s, "<>\"(),:;[]\\ \t") {
		// A bare addr-spec (the common case) needs no RFC 5322 parser.
		m, reason := parseAddrSpec(s)
		if reason != "" {
			return mailbox{}, invalid(field, s, reason)
		}
		return m, nil
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return mailbox{}, invalid(field, s, "not a single valid address: "+strings.TrimPrefix(err.Error(), "mail: "))
	}
	if reason, ok := syntax.HeaderText(a.Name); !ok {
		return mailbox{}, invalid(field, s, "display name: "+reason)
	}
	if strings.ContainsAny(a.Name, "<>") {
		return mailbox{}, invalid(field, s, "display name contains '<' or '>'")
	}
	if len(a.Name) > maxDisplayName {
		return mailbox{}, invalid(field, s, "display name longer than 256 octets")
	}
	m, reason := parseAddrSpec(a.Address)
	if reason != "" {
		return mailbox{}, invalid(field, s, reason)
	}
	m.name = a.Name
	return m, nil
}

// parseAddrSpec checks local@domain: a dot-atom local part (quoted local
// parts are refused; they are legal but almost never meant, and a common
// route for envelope injection), and a host name that IDNA maps to valid
// A-labels. It returns a reason when s is not acceptable.
func parseAddrSpec(s string) (mailbox, string) {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return mailbox{}, "missing '@'"
	}
	local, domain := s[:at], s[at+1:]
	if len(local) > syntax.MaxLocalPart {
		return mailbox{}, "local part longer than 64 octets"
	}
	if reason, ok := syntax.DotAtom(local, true); !ok {
		return mailbox{}, "local part: " + reason
	}
	if strings.HasPrefix(domain, "[") {
		return mailbox{}, "address literals are not supported"
	}
	aDomain, uDomain := domain, domain
	if !plainHostname(domain) {
		var err error
		if aDomain, err = idna.Lookup.ToASCII(domain); err != nil {
			return mailbox{}, "domain: " + strings.TrimPrefix(err.Error(), "idna: ")
		}
	}
	if reason, ok := syntax.Hostname(aDomain); !ok {
		return mailbox{}, "domain: " + reason
	}
	if aDomain != domain || !plainHostname(domain) {
		var err error
		if uDomain, err = idna.Lookup.ToUnicode(aDomain); err != nil {
			return mailbox{}, "domain: " + strings.TrimPrefix(err.Error(), "idna: ")
		}
	}
	m := mailbox{local: local, aDomain: aDomain, uDomain: uDomain, utf8: !syntax.IsASCII(local)}
	if len(m.addr(true))+2 > syntax.MaxPath || len(m.addr(false))+2 > syntax.MaxPath {
		return mailbox{}, "address longer than 254 octets"
	}
	return m, ""
}

// maxDisplayName bounds a display name, so that even unencoded it fits a
// header line.
const maxDisplayName = 256

const encodedWordReason = `contains RFC 2047 encoded-word syntax ("=?...?="); pass plain text, mailsec encodes it`

// hasEncodedWord reports whether s contains what a receiver might decode
// as an RFC 2047 encoded-word. Such text is refused, not checked: decoders
// differ (charsets such as UTF-7 or EBCDIC, lenient base64, bad escapes),
// and a word one decoder leaves alone another turns into a line break. The
// builder encodes non-ASCII text itself, so an application never needs to
// pass encoded-words.
func hasEncodedWord(s string) bool {
	i := strings.Index(s, "=?")
	return i >= 0 && strings.Contains(s[i+2:], "?=")
}

// plainHostname reports whether d is lower-case letters, digits, hyphens
// and dots, with no label that starts or ends with a hyphen or holds "--"
// in its third and fourth place (an A-label "xn--", or another label UTS 46
// reserves): a name IDNA maps to itself both ways, as nearly every
// address's domain is. syntax.Hostname still checks it.
func plainHostname(d string) bool {
	label := 0 // position in the current label
	for i := 0; i < len(d); i++ {
		c := d[i]
		switch {
		case c == '.':
			if label > 0 && d[i-1] == '-' {
				return false
			}
			label = 0
			continue
		case c == '-' && (label == 0 || label == 2 && i+1 < len(d) && d[i+1] == '-'):
			return false
		case (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-':
			return false
		}
		label++
	}
	return len(d) == 0 || d[len(d)-1] != '-'
}
