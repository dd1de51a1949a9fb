package mailsec

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"mime"
	"mime/quotedprintable"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-message/textproto"

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

// prepared is a validated message ready for delivery.
type prepared struct {
	messageID    string
	date         time.Time
	rcpts        []preparedRcpt
	envelopeFrom string
	envUTF8      bool // the reverse-path needs SMTPUTF8
	utf8         bool // the header needs SMTPUTF8
	requireTLS   bool
	tlsOptional  bool // "TLS-Required: No" (RFC 8689 §5)
	dsn          *DSN
	head         []byte // the rendered top-level header, blank line included
	fieldEnds    []int  // where each field of head ends
	body         *part
	sources      []*source
}

type preparedRcpt struct {
	Recipient
	utf8 bool
}

// prepare validates m and builds its entity. It performs no I/O: the
// attachment readers are only read when the entity's body is written.
func (s *Sender) prepare(m *Message) (*prepared, error) {
	p := &prepared{requireTLS: m.RequireTLS, tlsOptional: m.TLSRequiredNo}
	if m.RequireTLS && m.TLSRequiredNo {
		return nil, invalid("TLSRequiredNo", "", "cannot be combined with RequireTLS (RFC 8689 §5)")
	}

	from, err := parseMailbox("From", m.From)
	if err != nil {
		return nil, err
	}
	one := func(field, v string) (*mailbox, error) {
		if v == "" {
			return nil, nil
		}
		mb, err := parseMailbox(field, v)
		return &mb, err
	}
	list := func(field string, vs []string) ([]mailbox, error) {
		out := make([]mailbox, 0, len(vs))
		for i, v := range vs {
			mb, err := parseMailbox(field+"["+strconv.Itoa(i)+"]", v)
			if err != nil {
				return nil, err
			}
			out = append(out, mb)
		}
		return out, nil
	}
	sender, err := one("Sender", m.Sender)
	if err != nil {
		return nil, err
	}
	replyTo, err := list("ReplyTo", m.ReplyTo)
	if err != nil {
		return nil, err
	}
	to, err := list("To", m.To)
	if err != nil {
		return nil, err
	}
	cc, err := list("Cc", m.Cc)
	if err != nil {
		return nil, err
	}
	bcc, err := list("Bcc", m.Bcc)
	if err != nil {
		return nil, err
	}
	if len(to)+len(cc)+len(bcc) == 0 {
		return nil, invalid("To", "", "no recipients")
	}
	env := from
	if m.EnvelopeFrom != "" {
		e, err := parseMailbox("EnvelopeFrom", m.EnvelopeFrom)
		if err != nil {
			return nil, err
		}
		env = e
	}
	p.envelopeFrom, p.envUTF8 = env.addr(false), env.utf8
	if err := s.checkSender("From", from); err != nil {
		return nil, err
	}
	if sender != nil {
		if err := s.checkSender("Sender", *sender); err != nil {
			return nil, err
		}
	}
	if err := s.checkSender("EnvelopeFrom", env); err != nil {
		return nil, err
	}

	seen := map[string]bool{}
	add := func(kind RecipientKind, ms []mailbox) {
		for _, mb := range ms {
			a := mb.addr(false)
			if seen[a] {
				continue
			}
			seen[a] = true
			p.rcpts = append(p.rcpts, preparedRcpt{Recipient{Address: a, Kind: kind, Domain: mb.aDomain}, mb.utf8})
		}
	}
	add(KindTo, to)
	add(KindCc, cc)
	add(KindBcc, bcc)

	headerBoxes := append(append(append([]mailbox{from}, replyTo...), to...), cc...)
	if sender != nil {
		headerBoxes = append(headerBoxes, *sender)
	}
	for _, mb := range headerBoxes {
		p.utf8 = p.utf8 || mb.utf8
	}

	if reason, ok := checkHeaderValue(m.Subject); !ok {
		return nil, invalid("Subject", m.Subject, reason)
	}
	if err := m.DSN.validate(); err != nil {
		return nil, err
	}
	p.dsn = m.DSN

	idDomain := s.idDomain
	if idDomain == "" {
		idDomain = from.aDomain
	}
	p.messageID = m.MessageID
	if p.messageID == "" {
		p.messageID = newMessageID(idDomain)
	} else if reason, ok := checkMessageID(p.messageID); !ok {
		return nil, invalid("MessageID", m.MessageID, reason)
	}
	date := m.Date
	if date.IsZero() {
		date = s.now()
	}
	p.date = date

	extra := make([]Header, 0, len(m.Headers))
	for i, h := range m.Headers {
		field := "Headers[" + strconv.Itoa(i) + "]"
		if reason, ok := syntax.HeaderName(h.Name); !ok {
			return nil, invalid(field+".Name", h.Name, reason)
		}
		if len(h.Name) > 76 {
			return nil, invalid(field+".Name", h.Name, "longer than 76 octets")
		}
		lower := strings.ToLower(h.Name)
		for _, r := range reservedHeaders {
			if lower == r {
				return nil, invalid(field+".Name", h.Name, "set by mailsec; use the Message field instead")
			}
		}
		if strings.HasPrefix(lower, "content-") {
			return nil, invalid(field+".Name", h.Name, "content header fields are set by mailsec")
		}
		if strings.HasPrefix(lower, "resent-") || slices.Contains(mailSystemHeaders, lower) {
			return nil, invalid(field+".Name", h.Name, "a resent or trace field, written only by the mail system that resends, relays or checks the message")
		}
		if reason, ok := checkHeaderValue(h.Value); !ok {
			return nil, invalid(field+".Value", h.Value, reason)
		}
		extra = append(extra, h)
	}

	body, sources, err := buildBody(m)
	if err != nil {
		return nil, err
	}
	p.sources = sources

	// Header fields, in the order they are written.
	fields := make([]Header, 0, 12+len(extra))
	addrs := func(ms []mailbox) string {
		parts := make([]string, len(ms))
		for i, mb := range ms {
			parts[i] = mb.header(p.utf8)
		}
		return strings.Join(parts, ", ")
	}
	fields = append(fields, Header{"Date", date.Format("Mon, 02 Jan 2006 15:04:05 -0700")})
	fields = append(fields, Header{"From", from.header(p.utf8)})
	if sender != nil {
		fields = append(fields, Header{"Sender", sender.header(p.utf8)})
	}
	if len(replyTo) > 0 {
		fields = append(fields, Header{"Reply-To", addrs(replyTo)})
	}
	switch {
	case len(to) > 0:
		fields = append(fields, Header{"To", addrs(to)})
	case len(cc) == 0:
		fields = append(fields, Header{"To", "undisclosed-recipients:;"})
	}
	if len(cc) > 0 {
		fields = append(fields, Header{"Cc", addrs(cc)})
	}
	fields = append(fields, Header{"Subject", encodeText(m.Subject)})
	fields = append(fields, Header{"Message-ID", "<" + p.messageID + ">"})
	if m.TLSRequiredNo {
		fields = append(fields, Header{"TLS-Required", "No"})
	}
	for _, h := range extra {
		fields = append(fields, Header{h.Name, encodeText(h.Value)})
	}
	fields = append(fields, Header{"MIME-Version", "1.0"})
	for f := body.header.Fields(); f.Next(); {
		fields = append(fields, Header{f.Key(), f.Value()})
	}
	head := make([]byte, 0, 1024)
	ends := make([]int, len(fields))
	for i, f := range fields {
		head = appendField(head, f.Name, f.Value)
		ends[i] = len(head)
	}
	if err := checkLines(head, fields); err != nil {
		return nil, err
	}
	p.head = append(head, '\r', '\n')
	p.fieldEnds = ends
	p.body = body
	return p, nil
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

// content returns the message as it goes to recipients whose content is
// not protected. A panic in an attachment reader while it is written is
// an error, as any other failure of the reader.
func (p *prepared) content() io.WriterTo {
	return recovering{w: rawMessage{head: p.head, body: p.body}, what: "an attachment reader"}
}

// entity returns the message as a MIME entity for a Protector.
func (p *prepared) entity() (*Entity, error) {
	// The header is built from the rendered fields as they are (AddRaw
	// keeps their folding), without parsing the text again. AddRaw puts
	// each field on top, so they are added from the last.
	var h textproto.Header
	for i := len(p.fieldEnds) - 1; i >= 0; i-- {
		start := 0
		if i > 0 {
			start = p.fieldEnds[i-1]
		}
		// Full slice expressions: no later append can reach the next field.
		h.AddRaw(p.head[start:p.fieldEnds[i]:p.fieldEnds[i]])
	}
	return &Entity{Header: h, Body: p.body}, nil
}

// rawMessage is a rendered header and a body.
type rawMessage struct {
	head []byte
	body *part
}

func (m rawMessage) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(m.head)
	if err != nil {
		return int64(n), err
	}
	k, err := m.body.WriteTo(w)
	return int64(n) + k, err
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

func checkMessageID(id string) (string, bool) {
	if len(id) > 250 {
		return "longer than 250 octets", false
	}
	if reason, ok := syntax.HeaderText(id); !ok {
		return reason, false
	}
	if hasEncodedWord(id) {
		return encodedWordReason, false
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

// part is a node of the MIME tree. Leaves write their encoded content;
// multiparts write their children between boundaries.
type part struct {
	header   textproto.Header
	boundary string
	children []*part
	leaf     func(w io.Writer) error
}

// WriteTo writes the part's body (not its header).
func (p *part) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	err := p.writeBody(cw)
	return cw.n, err
}

func (p *part) writeBody(w io.Writer) error {
	if p.leaf != nil {
		return p.leaf(w)
	}
	mw := textproto.NewMultipartWriter(w)
	if err := mw.SetBoundary(p.boundary); err != nil {
		return err
	}
	for _, c := range p.children {
		pw, err := mw.CreatePart(c.header)
		if err != nil {
			return err
		}
		if err := c.writeBody(pw); err != nil {
			return err
		}
	}
	return mw.Close()
}

func multipart(subtype string, children ...*part) *part {
	if len(children) == 1 {
		return children[0]
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	// "=_" never occurs in quoted-printable or base64 output, so the
	// boundary cannot collide with encoded content.
	boundary := "=_" + hex.EncodeToString(b[:])
	p := &part{boundary: boundary, children: children}
	p.header.Set("Content-Type", mime.FormatMediaType("multipart/"+subtype, map[string]string{"boundary": boundary}))
	return p
}

func buildBody(m *Message) (*part, []*source, error) {
	var alt []*part
	if m.Text != "" {
		alt = append(alt, textPart("text/plain", m.Text))
	}
	if m.HTML != "" {
		alt = append(alt, textPart("text/html", m.HTML))
	}
	var sources []*source
	attach := func(field string, as []Attachment, inline bool) ([]*part, error) {
		var out []*part
		for i, a := range as {
			p, src, err := attachmentPart(field+"["+strconv.Itoa(i)+"]", a, inline)
			if err != nil {
				return nil, err
			}
			sources = append(sources, src)
			out = append(out, p)
		}
		return out, nil
	}
	inline, err := attach("Inline", m.Inline, true)
	if err != nil {
		return nil, nil, err
	}
	attachments, err := attach("Attachments", m.Attachments, false)
	if err != nil {
		return nil, nil, err
	}

	var body *part
	if len(alt) > 0 {
		body = multipart("alternative", alt...)
	}
	if len(inline) > 0 {
		if body != nil {
			inline = append([]*part{body}, inline...)
		}
		body = multipart("related", inline...)
	}
	if len(attachments) > 0 {
		if body != nil {
			attachments = append([]*part{body}, attachments...)
		}
		body = multipart("mixed", attachments...)
	}
	if body == nil {
		body = textPart("text/plain", "")
	}
	return body, sources, nil
}

// textPart normalises line endings to CRLF and picks 7bit when the text
// is short-lined ASCII, quoted-printable otherwise (so that the message is
// 7-bit clean and no line exceeds the SMTP limit whatever the input).
//
// Text whose line breaks are all LF or all CRLF (nearly all of it) is kept
// as the string it is and converted while it is written, through a pooled
// buffer: a message is built for each Send, and a canonical copy of every
// text would be allocated for it.
func textPart(mediaType, s string) *part {
	p := &part{}
	p.header.Add("Content-Type", mediaType+"; charset=utf-8")
	clean, breaks, ok := scanText(s)
	if !ok {
		// Bare CRs, or breaks of both kinds: canonicalise once, up front.
		text := canonicalText(s)
		clean = sevenBitClean(text)
		s, breaks = string(text), breaksCRLF
	}
	if clean {
		p.header.Add("Content-Transfer-Encoding", "7bit")
		p.leaf = func(w io.Writer) error { return writeCRLF(w, s, breaks) }
		return p
	}
	p.header.Add("Content-Transfer-Encoding", "quoted-printable")
	p.leaf = func(w io.Writer) error {
		qp := quotedprintable.NewWriter(w)
		if err := writeCRLF(qp, s, breaks); err != nil {
			return err
		}
		return qp.Close()
	}
	return p
}

// textBreaks says how the line breaks of a text are written.
type textBreaks uint8

const (
	breaksCRLF textBreaks = iota // CRLF only, or no break at all
	breaksLF                     // bare LF only
)

// scanText does what sevenBitClean(canonicalText(s)) does, in one pass and
// without a copy, for text whose breaks are all LF or all CRLF: it reports
// whether the canonical text is 7bit-clean and which breaks s has. ok is
// false for any other text (a bare CR, or both kinds of break).
func scanText(s string) (clean bool, breaks textBreaks, ok bool) {
	clean = true
	var lf, crlf bool
	for start := 0; ; {
		i := start + unprintable(s[start:])
		if line := s[start:i]; len(line) > 76 || strings.HasPrefix(line, "From ") || strings.HasSuffix(line, " ") {
			clean = false
		}
		switch {
		case i == len(s):
			switch {
			case lf && crlf:
				return false, 0, false
			case lf:
				return clean, breaksLF, true
			default:
				return clean, breaksCRLF, true
			}
		case s[i] == '\n':
			lf, start = true, i+1
		case s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n':
			crlf, start = true, i+2
		case s[i] == '\r':
			return false, 0, false
		default:
			// A control or 8-bit octet: not clean, whatever the rest.
			switch {
			case !strings.Contains(s, "\r"):
				return false, breaksLF, true
			case isCanonical(s):
				return false, breaksCRLF, true
			default:
				return false, 0, false
			}
		}
	}
}

// unprintable returns the index of the first octet of s outside
// ' '..'~', or len(s). It tests eight octets at a time.
func unprintable(s string) int {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		// The compiler merges these loads into one.
		t := s[i : i+8]
		w := uint64(t[0]) | uint64(t[1])<<8 | uint64(t[2])<<16 | uint64(t[3])<<24 |
			uint64(t[4])<<32 | uint64(t[5])<<40 | uint64(t[6])<<48 | uint64(t[7])<<56
		// As in printableASCII; borrows can mark octets above an
		// unprintable one, never below: the lowest mark is exact.
		x := w ^ 0x7f*ones
		if m := (w | (w - 0x20*ones) | (x-ones)&^x) & high; m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f {
			return i
		}
	}
	return i
}

// textBufSize is the size of the buffers writeCRLF converts text in.
const textBufSize = 16 << 10

var textBufPool = sync.Pool{New: func() any { b := make([]byte, 0, textBufSize); return &b }}

// writeCRLF writes s, whose breaks are all of the kind breaks says, with
// CRLF breaks, through a pooled buffer that it clears afterwards (the
// text may be what a Protector encrypts).
func writeCRLF(w io.Writer, s string, breaks textBreaks) error {
	bp := textBufPool.Get().(*[]byte)
	buf, used := (*bp)[:0], 0
	defer func() {
		clear(buf[:used])
		textBufPool.Put(bp)
	}()
	for len(s) > 0 {
		buf = buf[:0]
		if breaks == breaksCRLF {
			n := min(len(s), cap(buf))
			buf, s = append(buf, s[:n]...), s[n:]
		} else {
			// Each line with its CRLF, while it fits; a line longer than
			// the buffer goes in pieces.
			for len(s) > 0 && len(buf)+2 < cap(buf) {
				room := cap(buf) - len(buf) - 2
				i := strings.IndexByte(s[:min(len(s), room+1)], '\n')
				if i < 0 {
					n := min(len(s), room)
					buf, s = append(buf, s[:n]...), s[n:]
					continue
				}
				buf = append(append(buf, s[:i]...), '\r', '\n')
				s = s[i+1:]
			}
		}
		used = max(used, len(buf))
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// sevenBitClean reports whether canonical (CRLF) text can be sent as
// 7bit unchanged: printable ASCII, lines of at most 76 octets, no space
// before a line break (which transports may strip), no line starting
// "From " (which mbox-style stores mangle). Text with tabs takes
// quoted-printable too, which keeps a tab before a line break safe.
func sevenBitClean(s []byte) bool {
	for len(s) > 0 {
		n := bytes.IndexByte(s, '\r')
		line := s
		if n >= 0 {
			if n+1 == len(s) || s[n+1] != '\n' {
				return false
			}
			line, s = s[:n], s[n+2:]
		} else {
			s = nil
		}
		if len(line) > 76 || bytes.HasPrefix(line, []byte("From ")) || bytes.HasSuffix(line, []byte(" ")) || !printableASCII(line) {
			return false
		}
	}
	return true
}

// printableASCII reports whether every byte of s is in ' '..'~'. It tests
// eight bytes at a time: the common case is a long, clean text.
func printableASCII(s []byte) bool {
	const (
		ones = 0x0101010101010101
		high = 0x8080808080808080
	)
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := binary.LittleEndian.Uint64(s[i:])
		// A byte has its high bit set, is below 0x20, or is 0x7f (DEL):
		// the usual "has a byte less than n" test on w, on w ^ 0x7f.., and
		// the high bit itself.
		if (w|(w-0x20*ones)|(((w^0x7f*ones)-ones)&^(w^0x7f*ones)))&high != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// canonicalText turns LF, CR and CRLF line endings into CRLF (RFC 2046
// section 4.1.1: text line breaks are CRLF).
func canonicalText(s string) []byte {
	if isCanonical(s) {
		return []byte(s)
	}
	b := make([]byte, 0, len(s)+len(s)/16)
	if !strings.Contains(s, "\r") {
		// The common case (text from templates): LF only.
		for {
			i := strings.IndexByte(s, '\n')
			if i < 0 {
				return append(b, s...)
			}
			b = append(b, s[:i]...)
			b = append(b, '\r', '\n')
			s = s[i+1:]
		}
	}
	for {
		i := strings.IndexAny(s, "\r\n")
		if i < 0 {
			break
		}
		b = append(b, s[:i]...)
		b = append(b, '\r', '\n')
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			i++
		}
		s = s[i+1:]
	}
	return append(b, s...)
}

// isCanonical reports whether every line break in s is CRLF.
func isCanonical(s string) bool {
	for {
		i := strings.IndexAny(s, "\r\n")
		if i < 0 {
			return true
		}
		if s[i] == '\n' || i+1 == len(s) || s[i+1] != '\n' {
			return false
		}
		s = s[i+2:]
	}
}

func attachmentPart(field string, a Attachment, inline bool) (*part, *source, error) {
	if a.Content == nil {
		return nil, nil, invalid(field+".Content", "", "no content reader")
	}
	if isNil(a.Content) {
		// A typed nil (a nil *bytes.Reader, say) would panic when read.
		return nil, nil, invalid(field+".Content", fmt.Sprintf("%T", a.Content), "a nil reader")
	}
	if a.Filename != "" {
		if reason, ok := checkHeaderValue(a.Filename); !ok {
			return nil, nil, invalid(field+".Filename", a.Filename, reason)
		}
		if len(a.Filename) > 255 {
			return nil, nil, invalid(field+".Filename", a.Filename, "longer than 255 octets")
		}
		if strings.ContainsAny(a.Filename, `/\`) {
			return nil, nil, invalid(field+".Filename", a.Filename, "must be a file name, not a path")
		}
	}
	ct := a.ContentType
	if ct == "" {
		ct = mime.TypeByExtension(path.Ext(a.Filename))
		if ct == "" {
			ct = "application/octet-stream"
		}
	}
	mediaType, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, nil, invalid(field+".ContentType", ct, "malformed media type")
	}
	if strings.HasPrefix(mediaType, "multipart/") || strings.HasPrefix(mediaType, "message/") {
		return nil, nil, invalid(field+".ContentType", ct, "multipart and message types cannot be attached as files")
	}
	// Parameter values are header text like any other (as
	// mime.ParseMediaType decoded them, RFC 2231 included): an encoded-word
	// in a name= is one a receiver may decode into a line break or another
	// file name, as it would in a Filename.
	for k, v := range params {
		if reason, ok := checkHeaderValue(v); !ok {
			return nil, nil, invalid(field+".ContentType", ct, "parameter "+k+": "+reason)
		}
		if len(k)+len(v) > 200 {
			return nil, nil, invalid(field+".ContentType", ct, "parameter "+k+" longer than 200 octets")
		}
	}
	disp := "attachment"
	dparams := map[string]string{}
	if a.Filename != "" {
		params["name"] = a.Filename
		dparams["filename"] = a.Filename
	}
	p := &part{}
	p.header.Set("Content-Type", mime.FormatMediaType(mediaType, params))
	if inline {
		disp = "inline"
		if a.ContentID == "" {
			return nil, nil, invalid(field+".ContentID", "", "inline parts need a ContentID")
		}
	}
	if a.ContentID != "" {
		if reason, ok := checkMessageIDLeft(a.ContentID); !ok {
			return nil, nil, invalid(field+".ContentID", a.ContentID, reason)
		}
		p.header.Set("Content-ID", "<"+a.ContentID+">")
	}
	p.header.Set("Content-Disposition", mime.FormatMediaType(disp, dparams))
	p.header.Set("Content-Transfer-Encoding", "base64")

	src := newSource(a.Content)
	p.leaf = func(w io.Writer) error {
		r, err := src.open()
		if err != nil {
			return fmt.Errorf("mailsec: %s: %w", field, err)
		}
		lw := &lineWrapper{w: w}
		enc := base64.NewEncoder(base64.StdEncoding, lw)
		if _, err := io.Copy(enc, r); err != nil {
			return fmt.Errorf("mailsec: %s: reading content: %w", field, err)
		}
		if err := enc.Close(); err != nil {
			return err
		}
		return lw.end()
	}
	return p, src, nil
}

// checkMessageIDLeft checks a Content-ID: printable ASCII without
// brackets, spaces, quotes or encoded-word syntax.
func checkMessageIDLeft(id string) (string, bool) {
	if !syntax.IsPrintableASCII(id) || strings.ContainsAny(id, `<>"\()[];:,`) || len(id) > 250 {
		return "must be printable ASCII without brackets, quotes or separators", false
	}
	if hasEncodedWord(id) {
		return encodedWordReason, false
	}
	return "", true
}

// lineWrapper breaks base64 output into 76-character lines.
type lineWrapper struct {
	w   io.Writer
	col int
	buf []byte
}

func (l *lineWrapper) Write(p []byte) (int, error) {
	n := len(p)
	l.buf = l.buf[:0]
	for len(p) > 0 {
		room := 76 - l.col
		chunk := min(room, len(p))
		l.buf = append(l.buf, p[:chunk]...)
		p = p[chunk:]
		l.col += chunk
		if l.col == 76 {
			l.buf = append(l.buf, '\r', '\n')
			l.col = 0
		}
	}
	if _, err := l.w.Write(l.buf); err != nil {
		return 0, err
	}
	return n, nil
}

func (l *lineWrapper) end() error {
	if l.col == 0 {
		return nil
	}
	l.col = 0
	_, err := l.w.Write([]byte("\r\n"))
	return err
}

// source is an attachment reader that can be read again from its starting
// offset when it is an io.Seeker.
type source struct {
	r      io.Reader
	seeker io.Seeker
	start  int64
	used   bool
}

func newSource(r io.Reader) *source {
	s := &source{r: r}
	if sk, ok := r.(io.Seeker); ok {
		if off, err := sk.Seek(0, io.SeekCurrent); err == nil {
			s.seeker, s.start = sk, off
		}
	}
	return s
}

var errConsumed = errors.New("attachment reader already consumed by an earlier delivery and cannot seek back")

func (s *source) open() (io.Reader, error) {
	if s.used {
		if s.seeker == nil {
			return nil, errConsumed
		}
		if _, err := s.seeker.Seek(s.start, io.SeekStart); err != nil {
			return nil, err
		}
	}
	s.used = true
	return s.r, nil
}

// checkReplayable fails before any I/O when the message needs n
// deliveries and an attachment can be read only once.
func (p *prepared) checkReplayable(n int) error {
	for i, src := range p.sources {
		if src.seeker == nil {
			return invalid("attachment "+strconv.Itoa(i), "",
				"the message needs "+strconv.Itoa(n)+" deliveries but this attachment's reader cannot seek back; use an io.ReadSeeker (*os.File, *bytes.Reader)")
		}
	}
	return nil
}

func newMessageID(domain string) string {
	var b [20]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])) + "@" + domain
}
