package bounce

import (
	"bufio"
	"errors"
	"io"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/mailsec/mailsec"
)

// deliveryStatus reads the body of a message/delivery-status part (RFC
// 3464 §2.1): a block of per-message fields, then one block of
// per-recipient fields per recipient, blocks separated by blank lines.
func (st *state) deliveryStatus(r io.Reader, where string) error {
	lr := &io.LimitedReader{R: r, N: int64(st.lim.MaxStatusBytes) + 1}
	br := bufio.NewReader(lr)
	for block := 0; ; block++ {
		if !skipBlankLines(br) {
			break
		}
		bwhere := where + " per-message fields"
		if block > 0 {
			bwhere = where + " recipient block " + strconv.Itoa(block)
			if block > st.lim.MaxRecipients {
				return &Error{Kind: ErrTooLarge, Part: where, Reason: "more than " + strconv.Itoa(st.lim.MaxRecipients) + " recipients"}
			}
		}
		h, err := textproto.ReadHeader(br)
		if lr.N <= 0 {
			return &Error{Kind: ErrTooLarge, Part: where, Reason: "longer than " + strconv.Itoa(st.lim.MaxStatusBytes) + " octets"}
		}
		if err != nil && !(errors.Is(err, io.EOF) && h.Len() > 0) {
			return &Error{Kind: ErrMalformed, Part: bwhere, Err: err}
		}
		if err := st.checkHeader(h, bwhere); err != nil {
			return err
		}
		if block == 0 {
			st.perMessage(h)
			continue
		}
		rc, err := perRecipient(h, bwhere, st.rep.Global)
		if err != nil {
			return err
		}
		st.rep.Recipients = append(st.rep.Recipients, rc)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return &Error{Kind: ErrMalformed, Part: where, Err: err}
	}
	if len(st.rep.Recipients) == 0 {
		return &Error{Kind: ErrMalformed, Part: where, Reason: "no per-recipient fields"}
	}
	return nil
}

// skipBlankLines skips empty and white-space-only lines, and reports
// whether anything follows them.
func skipBlankLines(br *bufio.Reader) bool {
	for {
		b, err := br.Peek(1)
		if err != nil || len(b) == 0 {
			return false
		}
		switch b[0] {
		case '\r', '\n', ' ', '\t':
			// A line of white space only is blank; one that goes on after
			// its leading white space is a malformed continuation, left
			// to ReadHeader to refuse.
			line, err := br.Peek(br.Buffered())
			if err != nil {
				return false
			}
			i := 0
			for i < len(line) && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r') {
				i++
			}
			switch {
			case i < len(line) && line[i] == '\n':
				br.Discard(i + 1)
			case i == len(line):
				if _, err := br.Peek(len(line) + 1); errors.Is(err, bufio.ErrBufferFull) {
					br.Discard(len(line))
				} else if err != nil {
					return false
				}
			default:
				return true
			}
		default:
			return true
		}
	}
}

// perMessage takes the per-message fields (RFC 3464 §2.2).
func (st *state) perMessage(h textproto.Header) {
	st.rep.EnvelopeID = clean(h.Get("Original-Envelope-Id"))
	st.rep.ReportingMTA = mtaName(h.Get("Reporting-Mta"))
	st.rep.ReceivedFromMTA = mtaName(h.Get("Received-From-Mta"))
	st.rep.ArrivalDate = date(h.Get("Arrival-Date"))
}

// perRecipient reads the per-recipient fields (RFC 3464 §2.3). It
// requires the three that RFC 3464 requires: Final-Recipient, Action and
// Status.
func perRecipient(h textproto.Header, where string, global bool) (Recipient, error) {
	var rc Recipient
	missing := func(f string) error {
		return &Error{Kind: ErrMalformed, Part: where, Field: f, Reason: "missing, and required (RFC 3464 §2.3)"}
	}
	at, addr := typed(h.Get("Final-Recipient"))
	if addr == "" {
		return rc, missing("Final-Recipient")
	}
	rc.FinalRecipient = address(at, addr, global)
	if at, addr := typed(h.Get("Original-Recipient")); addr != "" {
		rc.OriginalRecipient = address(at, addr, global)
	}
	a := strings.ToLower(firstWord(h.Get("Action")))
	switch Action(a) {
	case ActionFailed, ActionDelayed, ActionDelivered, ActionRelayed, ActionExpanded:
		rc.Action = Action(a)
	case "":
		return rc, missing("Action")
	default:
		return rc, &Error{Kind: ErrMalformed, Part: where, Field: "Action", Reason: "unknown action " + strconv.Quote(clean(a))}
	}
	s := firstWord(h.Get("Status"))
	if s == "" {
		return rc, missing("Status")
	}
	code, ok := mailsec.ParseEnhancedCode(s)
	if !ok {
		return rc, &Error{Kind: ErrMalformed, Part: where, Field: "Status", Reason: "not a status code (RFC 3463): " + strconv.Quote(clean(s))}
	}
	rc.Status = code
	rc.RemoteMTA = mtaName(h.Get("Remote-Mta"))
	rc.DiagnosticType, rc.DiagnosticCode = typed(h.Get("Diagnostic-Code"))
	rc.LastAttempt = date(h.Get("Last-Attempt-Date"))
	rc.WillRetryUntil = date(h.Get("Will-Retry-Until"))
	return rc, nil
}

// typed splits a field of the form "type; value" (an address, an MTA
// name, a diagnostic) into its type, lower case, and its value. A value
// without a type is returned as it is.
func typed(v string) (string, string) {
	t, rest, ok := strings.Cut(v, ";")
	if !ok {
		return "", clean(v)
	}
	return strings.ToLower(clean(t)), clean(rest)
}

// mtaName returns the name in an MTA field ("dns; mx.example.org."),
// without its type, a trailing comment or the final dot of the DNS name.
func mtaName(v string) string {
	_, name := typed(v)
	return strings.TrimSuffix(firstWord(name), ".")
}

// address returns the address of an address field: without the angle
// brackets some servers add, and for the "utf-8" type of RFC 6533 with
// its \x{HHHH} escapes undone.
func address(addrType, v string, global bool) string {
	v = strings.TrimSpace(v)
	if len(v) > 1 && v[0] == '<' && v[len(v)-1] == '>' {
		v = v[1 : len(v)-1]
	}
	if addrType == "utf-8" || global {
		v = unitext(v)
	}
	return clean(v)
}

// unitext undoes the \x{HHHH} escapes of RFC 6533 §3 (utf-8-addr-unitext
// and utf-8-addr-xtext); anything that is not a valid escape is left as
// it is.
func unitext(s string) string {
	if !strings.Contains(s, `\x{`) {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, `\x{`)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		hex := s[i+3 : i+j]
		n, err := strconv.ParseUint(hex, 16, 32)
		if err != nil || len(hex) < 2 || len(hex) > 6 || n > 0x10FFFF || (n >= 0xD800 && n <= 0xDFFF) {
			b.WriteString(s[:i+3])
			s = s[i+3:]
			continue
		}
		b.WriteString(s[:i])
		b.WriteRune(rune(n))
		s = s[i+j+1:]
	}
}

// firstWord returns the first word of a field, without a trailing
// comment: "failed (bad address)" gives "failed".
func firstWord(v string) string {
	f := strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == '\t' || r == '(' })
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// date reads an RFC 5322 date, in UTC; the zero time when it cannot.
func date(v string) time.Time {
	if strings.TrimSpace(v) == "" {
		return time.Time{}
	}
	t, err := mail.ParseDate(v)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// gate is the reader under everything Parse reads: it counts the octets
// against MaxSize, and bounds what a MIME reader may read while it reads a
// header, so that no header grows beyond the header limit in memory. It
// remembers what stopped it, which decides the error Parse returns.
type gate struct {
	r   io.Reader
	n   int64 // octets read so far
	max int64
	// budget is what may still be read while a header is read, or -1.
	budget int64
	where  string // the header being read
	// err is the reader's error other than io.EOF; over is set when the
	// message was longer than max; budgetHit names a header that was
	// longer than its budget.
	err       error
	over      bool
	budgetHit string
}

var errLimit = errors.New("bounce: limit reached")

func (g *gate) limit(n int, where string) { g.budget, g.where = int64(n), where }
func (g *gate) unlimit()                  { g.budget = -1 }

func (g *gate) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if g.over || g.budget == 0 {
		if g.budget == 0 && g.budgetHit == "" && !g.over {
			g.budgetHit = g.where
		}
		return 0, errLimit
	}
	if room := g.max + 1 - g.n; int64(len(p)) > room {
		p = p[:room]
	}
	if g.budget > 0 && int64(len(p)) > g.budget {
		p = p[:g.budget]
	}
	n, err := g.r.Read(p)
	if n < 0 || n > len(p) {
		n, err = 0, errors.New("invalid count from Read")
	}
	g.n += int64(n)
	if g.budget > 0 {
		g.budget -= int64(n)
	}
	if g.n > g.max {
		g.over = true
		return 0, errLimit
	}
	if err != nil && err != io.EOF {
		g.err = err
	}
	return n, err
}
