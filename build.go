package mailsec

import (
	"crypto/rand"
	"encoding/base32"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/mailsec/mailsec/internal/syntax"
)

// prepared is a validated message ready for delivery.
type prepared struct {
	messageID    string
	from         string // the From address, for the Receipt
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
	p.from = from.addr(false)
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
	if m.DSN != nil && len(m.DSN.EnvelopeID) > MaxEnvelopeID {
		return nil, invalid("DSN.EnvelopeID", m.DSN.EnvelopeID, "longer than "+strconv.Itoa(MaxEnvelopeID)+
			" characters: each delivery appends its own random part, and an ENVID is at most 100 (RFC 3461)")
	}
	p.dsn = envelopeDSN(m.DSN)

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
	if reason, ok := checkReference(m.Reference); !ok {
		return nil, invalid("Reference", m.Reference, reason)
	}
	if m.ReportType != "" {
		if reason, ok := checkReportType(m); !ok {
			return nil, invalid("ReportType", m.ReportType, reason)
		}
	}
	date := m.Date
	if date.IsZero() {
		date = s.now()
	}
	if y := date.Year(); y < 1900 || y > 9999 {
		// RFC 5322 §3.3: a four-digit year, 1900 or later.
		return nil, invalid("Date", date.Format(time.RFC3339), "the year must be from 1900 to 9999")
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

// only returns the recipients of p named in to (SendTo's list), in the
// order p has them. Each entry is matched by the address it names, as
// the Receipt writes it.
func (p *prepared) only(to []string) ([]preparedRcpt, error) {
	want := make(map[string]bool, len(to))
	for i, v := range to {
		field := "SendTo recipients[" + strconv.Itoa(i) + "]"
		mb, err := parseMailbox(field, v)
		if err != nil {
			return nil, err
		}
		a := mb.addr(false)
		if !slices.ContainsFunc(p.rcpts, func(r preparedRcpt) bool { return r.Address == a }) {
			return nil, invalid(field, v, "not a recipient of the message (To, Cc or Bcc)")
		}
		want[a] = true
	}
	out := make([]preparedRcpt, 0, len(want))
	for _, r := range p.rcpts {
		if want[r.Address] {
			out = append(out, r)
		}
	}
	return out, nil
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

// envelopeDSN returns the DSN options a message is sent with: the
// Message's own, with an ENVID generated when it has none, or, when it
// asks for nothing, an ENVID and ORCPT alone, which ask for no
// notification but let one be matched to the Receipt.
func envelopeDSN(d *DSN) *DSN {
	out := DSN{OriginalRecipient: true}
	if d != nil {
		out = *d
		out.Notify = slices.Clone(d.Notify)
	}
	if out.EnvelopeID == "" {
		out.EnvelopeID = newEnvelopeID()
	}
	return &out
}

// newEnvelopeID returns a random ENVID: 120 bits in lower-case base32,
// 24 characters that xtext leaves as they are.
func newEnvelopeID() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// MaxEnvelopeID is the longest Message.DSN.EnvelopeID: each delivery
// sends it with a dot and envelopeIDSuffix random characters appended,
// and RFC 3461 bounds an ENVID at 100 characters.
const MaxEnvelopeID = 100 - 1 - envelopeIDSuffix

// envelopeIDSuffix is the length of the random part each delivery adds
// to a message's ENVID, in base32 characters (80 bits).
const envelopeIDSuffix = 16

// deliveryEnvelopeID returns the ENVID one delivery of a message whose
// ENVID is base is sent with: base, a dot, and a random part. Each SMTP
// transaction has its own, so that a server that receives one delivery
// learns nothing that names another: a notification carrying it back can
// speak only for the recipients that delivery carried.
func deliveryEnvelopeID(base string) string {
	var b [envelopeIDSuffix * 5 / 8]byte
	_, _ = rand.Read(b[:])
	return base + "." + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

func newMessageID(domain string) string {
	var b [20]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])) + "@" + domain
}

// checkReportType checks a report (RFC 6522): a report-type that is an
// RFC 2045 token of letters, digits, '-' and '.', a human-readable Text
// and at least one attachment for the report itself, nothing else.
func checkReportType(m *Message) (string, bool) {
	if len(m.ReportType) > 64 {
		return "longer than 64 octets", false
	}
	for _, c := range m.ReportType {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return "a report-type is letters, digits, '-' and '.'", false
		}
	}
	switch {
	case m.Text == "":
		return "a report needs Text, its human-readable first part", false
	case len(m.Attachments) == 0:
		return "a report needs at least one attachment, the report itself", false
	case m.HTML != "" || len(m.Inline) > 0:
		return "a report has no HTML or Inline parts", false
	}
	return "", true
}
