package mailsec

import (
	"encoding/base64"
	"net/mail"
	"strings"
	"unicode/utf8"

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

// header formats the mailbox for an address header field: the display
// name as phrase renders it, then the address in angle brackets.
func (m mailbox) header(utf8 bool) string {
	if m.name == "" {
		return m.addr(utf8)
	}
	return phrase(m.name) + " <" + m.addr(utf8) + ">"
}

// maxPhraseWord bounds every word phrase writes (an atom, a quoted-string
// or an encoded-word), so that appendField can fold an address field into
// lines of at most 76 octets, the limit RFC 2047 §2 sets for a line with
// encoded-words: "Reply-To: " and one word fit.
const maxPhraseWord = 66

// phrase renders a display name so that a reader of the address field gets
// back exactly s and nothing else: not a second mailbox, not a changed
// space. Readers differ in how they unfold (removing the CRLF, as RFC 5322
// §2.2.3 says, or turning the whitespace around it into one space, as Go's
// net/textproto and go-message do; Python's compat32 messages keep it) and
// in what they decode, so s is written in the first form that leaves them
// no choice:
//
//   - atoms separated by single spaces, as they are ("Ann Smith");
//   - other printable ASCII whose only blanks are single spaces between
//     words, as a quoted-string ("Smith, John"), which appendField never
//     folds;
//   - anything else (non-ASCII text, tabs, leading, trailing or repeated
//     spaces, a word too long to fold) as RFC 2047 encoded-words.
//
// Encoded-words in a phrase may hold only the characters RFC 2047 §5(3)
// allows, so specials such as ',' '@' '"' ':' ';' '(' ')' are always
// encoded and never end a mailbox early. Each word holds whole characters
// (§5: a multi-octet character is never split across words), and the
// words are separated by single spaces, where appendField may fold;
// readers join adjacent encoded-words without the space between them
// (§6.2).
func phrase(s string) string {
	switch {
	case isPlainPhrase(s):
		return s
	case isQuotablePhrase(s):
		return quotePhrase(s)
	}
	return encodePhrase(s)
}

// isPlainPhrase reports whether s is atoms separated by single spaces, none
// longer than maxPhraseWord, and nothing that looks like the start of an
// encoded-word.
func isPlainPhrase(s string) bool {
	if strings.Contains(s, "=?") {
		return false
	}
	word := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ':
			if word == 0 {
				return false // leading or repeated space
			}
			word = 0
		case syntax.IsAtext(c) && word < maxPhraseWord:
			word++
		default:
			return false
		}
	}
	return word > 0 // not empty, no trailing space
}

// isQuotablePhrase reports whether s can be a quoted-string that every
// reader unfolds to s: printable ASCII whose blanks are single spaces
// between other characters, at most maxPhraseWord octets once quoted, and
// nothing a reader could decode as an encoded-word (Python's email
// package and mail clients decode them inside quoted-strings too).
func isQuotablePhrase(s string) bool {
	if hasEncodedWord(s) {
		return false
	}
	n := 2
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ':
			if i == 0 || i == len(s)-1 || s[i-1] == ' ' {
				return false
			}
		case c < '!' || c > '~':
			return false
		case c == '"' || c == '\\':
			n++
		}
		n++
	}
	return len(s) > 0 && n <= maxPhraseWord
}

func quotePhrase(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 4)
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

// encodePhrase writes s as UTF-8 encoded-words of at most maxPhraseWord
// octets, in the Q encoding restricted to the characters RFC 2047 §5(3)
// allows in a phrase or in the B encoding, whichever is shorter.
func encodePhrase(s string) string {
	q, b := encodeWords(s, false), encodeWords(s, true)
	if len(b) < len(q) {
		return b
	}
	return q
}

// The parts of a UTF-8 encoded-word around its encoded text.
const (
	qPrefix    = "=?utf-8?q?"
	bPrefix    = "=?utf-8?b?"
	wordSuffix = "?="
	// maxEncodedText is the room for encoded text in one word.
	maxEncodedText = maxPhraseWord - len(qPrefix) - len(wordSuffix)
)

// encodeWords splits s, at rune boundaries, into as few encoded-words as
// fit maxPhraseWord, separated by single spaces.
func encodeWords(s string, useB bool) string {
	var out strings.Builder
	out.Grow(len(s) * 3)
	for len(s) > 0 {
		// n is how many octets of s the next word takes: whole runes while
		// their encoding fits (every rune fits in an empty word).
		n, size := 0, 0
		for n < len(s) {
			_, l := utf8.DecodeRuneInString(s[n:])
			var more int
			if useB {
				more = base64.StdEncoding.EncodedLen(n+l) - size
			} else {
				for _, c := range []byte(s[n : n+l]) {
					more += qLen(c)
				}
			}
			if size+more > maxEncodedText && n > 0 {
				break
			}
			n, size = n+l, size+more
		}
		if out.Len() > 0 {
			out.WriteByte(' ')
		}
		if useB {
			out.WriteString(bPrefix)
			out.WriteString(base64.StdEncoding.EncodeToString([]byte(s[:n])))
		} else {
			out.WriteString(qPrefix)
			for _, c := range []byte(s[:n]) {
				switch {
				case c == ' ':
					out.WriteByte('_')
				case qLen(c) == 1:
					out.WriteByte(c)
				default:
					out.WriteByte('=')
					out.WriteByte(upperHex[c>>4])
					out.WriteByte(upperHex[c&0xf])
				}
			}
		}
		out.WriteString(wordSuffix)
		s = s[n:]
	}
	return out.String()
}

const upperHex = "0123456789ABCDEF"

// qLen is the length of octet c in Q-encoded text inside a phrase: letters,
// digits and "!*+-/" stand for themselves (RFC 2047 §5(3)), a space is
// "_", anything else "=XX".
func qLen(c byte) int {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == ' ':
		return 1
	}
	if strings.IndexByte("!*+-/", c) >= 0 {
		return 1
	}
	return 3
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
	// Quoted-pairs ("=\?") hide an encoded-word from a check of the raw
	// text, and net/mail drops them (and decodes encoded-words in a
	// comment it takes for the name): look for one without them.
	if hasEncodedWord(s) || strings.Contains(s, `\`) && hasEncodedWord(strings.ReplaceAll(s, `\`, "")) {
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
	if name, addr, ok := simpleNameAddr(s); ok {
		// "Name <addr-spec>" with a plain name (the other common case):
		// what net/mail would make of it, without its parser.
		if m, reason := parseAddrSpec(addr); reason == "" {
			m.name = name
			return m, nil
		}
	}
	return parseNameAddr(field, s)
}

// simpleNameAddr splits s of the form `Name <local@domain>` where the name
// is words of ASCII atext separated by single spaces, at most
// maxDisplayName octets, and the address is a dot-atom local part and a
// dot-atom domain of ASCII atext: a form net/mail reads as exactly that
// name and address (it would decode a word that looks like an RFC 2047
// encoded-word, so a name with "=?" is left to it). ok is false for
// anything else.
func simpleNameAddr(s string) (name, addr string, ok bool) {
	lt := strings.IndexByte(s, '<')
	if lt < 2 || s[lt-1] != ' ' || s[len(s)-1] != '>' {
		return "", "", false
	}
	name, addr = s[:lt-1], s[lt+1:len(s)-1]
	if len(name) > maxDisplayName || !atextWords(name) || strings.Contains(name, "=?") {
		return "", "", false
	}
	at := strings.IndexByte(addr, '@')
	if at < 0 || !dotAtomASCII(addr[:at]) || !dotAtomASCII(addr[at+1:]) {
		return "", "", false
	}
	return name, addr, true
}

// atextWords reports whether s is one or more words of ASCII atext
// separated by single spaces.
func atextWords(s string) bool {
	for w := range strings.SplitSeq(s, " ") {
		if w == "" {
			return false
		}
		for i := range len(w) {
			if !syntax.IsAtext(w[i]) {
				return false
			}
		}
	}
	return true
}

// dotAtomASCII reports whether s is a dot-atom of ASCII atext: atoms
// separated by single dots, none at either end.
func dotAtomASCII(s string) bool {
	for a := range strings.SplitSeq(s, ".") {
		if a == "" {
			return false
		}
		for i := range len(a) {
			if !syntax.IsAtext(a[i]) {
				return false
			}
		}
	}
	return true
}

// parseNameAddr reads s, which is not a bare addr-spec, with net/mail's
// RFC 5322 parser, and checks the name and address it finds.
func parseNameAddr(field, s string) (mailbox, error) {
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

// parseDomain checks a domain named on its own (in configuration) as
// parseAddrSpec checks an address's, and returns it as lower-case
// A-labels, or a reason it is not acceptable.
func parseDomain(d string) (string, string) {
	m, reason := parseAddrSpec("x@" + d)
	if reason != "" {
		return "", reason
	}
	return strings.ToLower(m.aDomain), ""
}

// domainPattern is a domain as configuration names it: "example.org" for
// exactly that domain, or ".example.org" for every domain below it (not
// example.org itself), as in Postfix's tables.
type domainPattern struct {
	name  string // lower-case A-labels, without the leading dot
	below bool   // ".example.org"
}

// parseDomainPattern reads a domainPattern, or returns why it cannot.
// Internationalised names may be given in either form.
func parseDomainPattern(s string) (domainPattern, string) {
	name, reason := parseDomain(strings.TrimPrefix(s, "."))
	return domainPattern{name: name, below: strings.HasPrefix(s, ".")}, reason
}

// matches reports whether the pattern names domain, given as lower-case
// A-labels.
func (p domainPattern) matches(domain string) bool {
	if p.below {
		return strings.HasSuffix(domain, "."+p.name)
	}
	return domain == p.name
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
