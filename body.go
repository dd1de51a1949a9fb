package mailsec

import (
	"io"
	"math/bits"
	"mime"
	"strconv"
	"strings"
	"sync"

	"github.com/emersion/go-message/textproto"

	"github.com/mailsec/mailsec/internal/mimeprot"
)

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

	if m.ReportType != "" {
		// Checked: Text, attachments, no HTML, no Inline.
		return multipartParams("report", map[string]string{"report-type": m.ReportType}, append([]*part{alt[0]}, attachments...)...), sources, nil
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

func multipart(subtype string, children ...*part) *part {
	if len(children) == 1 {
		return children[0]
	}
	return multipartParams(subtype, nil, children...)
}

// multipartParams is a multipart of subtype with the media type
// parameters params besides its boundary, whatever its number of
// children.
func multipartParams(subtype string, params map[string]string, children ...*part) *part {
	boundary := mimeprot.NewBoundary("=_")
	p := &part{boundary: boundary, children: children}
	ps := map[string]string{"boundary": boundary}
	for k, v := range params {
		ps[k] = v
	}
	p.header.Set("Content-Type", mime.FormatMediaType("multipart/"+subtype, ps))
	return p
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
	cw := &mimeprot.Counter{W: w}
	err := p.writeBody(cw)
	return cw.N, err
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
		s, breaks = string(canonicalText(s)), breaksCRLF
		clean = sevenBitClean(s)
	}
	if clean {
		p.header.Add("Content-Transfer-Encoding", "7bit")
		p.leaf = func(w io.Writer) error { return writeCRLF(w, s, breaks) }
		return p
	}
	p.header.Add("Content-Transfer-Encoding", "quoted-printable")
	p.leaf = func(w io.Writer) error { return writeQP(w, s, breaks) }
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
		// An octet is marked when it has its high bit set, is below 0x20,
		// or is 0x7f (DEL): the usual "has a byte less than n" test on w,
		// and on w ^ 0x7f.., and the high bit itself. Borrows can mark
		// octets above an unprintable one, never below: the lowest mark
		// is exact.
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
func sevenBitClean(s string) bool {
	for len(s) > 0 {
		n := strings.IndexByte(s, '\r')
		line := s
		if n >= 0 {
			if n+1 == len(s) || s[n+1] != '\n' {
				return false
			}
			line, s = s[:n], s[n+2:]
		} else {
			s = ""
		}
		if len(line) > 76 || strings.HasPrefix(line, "From ") || strings.HasSuffix(line, " ") || unprintable(line) < len(line) {
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
