package mailsec

import (
	"bytes"
	"mime"
	"strconv"
	"strings"

	"github.com/mailsec/mailsec/internal/syntax"
)

// maxHeaderValue bounds any single header value the application supplies.
const maxHeaderValue = 8 << 10

// reservedHeaders are written by the builder; an application cannot set
// them through Message.Headers (a "Bcc" header would leak the very thing
// Bcc hides, a second "Content-Type" would change how the body is parsed).
var reservedHeaders = []string{
	"from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date",
	"message-id", "mime-version", "return-path", "received", "tls-required",
}

// mailSystemHeaders are written only by the mail system that resends,
// relays, checks or signs a message, never by its author: receivers trust
// them as such. Every "Resent-" field is refused too (RFC 5322 §3.6.6: a
// resent block, whose Resent-Bcc names hidden recipients).
var mailSystemHeaders = []string{
	"authentication-results",                                          // RFC 8601
	"arc-seal", "arc-message-signature", "arc-authentication-results", // RFC 8617
	"received-spf",   // RFC 7208 §9.1
	"dkim-signature", // RFC 6376; it cannot cover a header not yet written
}

// checkHeaderValue refuses what could break a header field: raw control
// characters, invalid UTF-8, and encoded-words that decode to controls.
func checkHeaderValue(v string) (string, bool) {
	if len(v) > maxHeaderValue {
		return "longer than " + strconv.Itoa(maxHeaderValue) + " octets", false
	}
	if reason, ok := syntax.HeaderText(v); !ok {
		return reason, false
	}
	if hasEncodedWord(v) {
		return encodedWordReason, false
	}
	return "", true
}

// checkMessageID checks a Message-ID given without angle brackets: header
// text, as checkHeaderValue checks it, of the form id-left@id-right.
func checkMessageID(id string) (string, bool) {
	if len(id) > 250 {
		return "longer than 250 octets", false
	}
	if reason, ok := checkHeaderValue(id); !ok {
		return reason, false
	}
	if strings.ContainsAny(id, "<> \t\"\\") {
		return "must be id-left@id-right without brackets or spaces", false
	}
	l, r, ok := strings.Cut(id, "@")
	if !ok || l == "" || r == "" || strings.Contains(r, "@") || !syntax.IsASCII(id) {
		return "must be id-left@id-right in ASCII", false
	}
	return "", true
}

// encodeText encodes an unstructured header value (RFC 2047) when it is
// not plain ASCII or has a word too long to fold.
func encodeText(v string) string {
	long := false
	for w := range strings.FieldsSeq(v) {
		if len(w) > 900 {
			long = true
			break
		}
	}
	if syntax.IsASCII(v) && !long {
		return v
	}
	return mime.QEncoding.Encode("utf-8", v)
}

// appendField formats one header field, folding before a run of spaces
// or tabs so that lines stay near 78 octets; unfolding restores the value
// exactly. It never folds where what follows is only whitespace, so no
// folded line is blank (RFC 5322 section 3.2.2). prepare checks the result
// against the 998-octet limit.
//
// An address field (From, Sender, Reply-To, To, Cc) is folded within 76
// octets, the limit for lines with encoded-words (RFC 2047 §2), and never
// inside a quoted-string: a reader that keeps the line break (Python's
// compat32 messages) or turns the space around it into one would read
// another display name, or none.
func appendField(b []byte, name, value string) []byte {
	width, quotes := 78, false
	if isAddressField(name) {
		width, quotes = 76, true
	}
	b = append(b, name...)
	b = append(b, ':', ' ')
	col := len(name) + 2
	for col+len(value) > width {
		i := foldPoint(value, width-col, quotes)
		if i <= 0 {
			break
		}
		b = append(b, value[:i]...)
		b = append(b, '\r', '\n')
		value = value[i:]
		col = 0
	}
	b = append(b, value...)
	return append(b, '\r', '\n')
}

// isAddressField reports whether the builder writes the field name as an
// address list (Message.Headers may not use these names).
func isAddressField(name string) bool {
	switch name {
	case "From", "Sender", "Reply-To", "To", "Cc":
		return true
	}
	return false
}

// foldPoint returns where to fold v: before a blank that follows a
// non-blank and precedes something other than blanks, outside
// quoted-strings when quotes is set; the last such point within limit,
// else the first after it; 0 when there is none.
func foldPoint(v string, limit int, quotes bool) int {
	best := 0
	inQuote, escaped := false, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if quotes {
			switch {
			case escaped:
				escaped = false
				continue
			case inQuote && c == '\\':
				escaped = true
				continue
			case c == '"':
				inQuote = !inQuote
				continue
			case inQuote:
				continue
			}
		}
		if i == 0 || !isBlank(c) || isBlank(v[i-1]) {
			continue
		}
		if strings.TrimLeft(v[i:], " \t") == "" {
			break
		}
		if i > limit && best > 0 {
			break
		}
		best = i
		if i > limit {
			break
		}
	}
	return best
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

// checkLines refuses a rendered header with a line the SMTP limit would
// cut: possible only for a value with a run of more than 900 octets
// without a blank that the builder could not encode.
func checkLines(head []byte, fields []Header) error {
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		if len(line) <= syntax.MaxLine {
			continue
		}
		field := "header"
		for _, f := range fields {
			if bytes.HasPrefix(line, []byte(f.Name+":")) {
				field = f.Name
			}
		}
		return invalid(field, string(line[:min(len(line), 80)]), "would need a header line longer than 998 octets")
	}
	return nil
}
