// Package mimeprot holds what PGP/MIME and S/MIME protection share: the
// protected-headers layout that keeps the real Subject (and the other
// header fields that say who and what) inside the encrypted part, and a
// header for the outside that gives nothing away beyond what delivery
// needs. It also holds what every layer that writes MIME shares, the
// message builder included: multipart boundaries and a byte counter.
//
// The layout follows draft-ietf-lamps-header-protection and what
// Thunderbird reads: the protected content is a multipart/mixed carrying
// protected-headers="v1" and copies of the header fields, whose single part
// is the original content.
package mimeprot

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/emersion/go-message/textproto"

	"github.com/mailsec/mailsec/internal/syntax"
)

// DefaultSubject replaces the Subject on the outside.
const DefaultSubject = "..."

// outerFields are the header fields that stay on the outside of a
// protected message, besides the Subject ("..."): what servers need to
// deliver and clients to show, reply and thread. Every other field (the
// real Subject, and extra fields such as X-Ticket or Thread-Topic that may
// say as much) travels only inside. TLS-Required (RFC 8689 §5) is read by
// every relay, so it stays outside too.
var outerFields = []string{"Date", "From", "Sender", "Reply-To", "To", "Cc", "Message-Id", "In-Reply-To", "References", "Tls-Required", "Mime-Version"}

// Inner returns the entity to encrypt or sign: a multipart/mixed with
// protected-headers="v1" whose header copies every field of the message
// header but the Content-* fields and MIME-Version, and whose one part is
// the message's content (its Content-* fields and body). h is the
// complete message header. The copied fields keep their folding (a field
// added with AddRaw is copied as written), so that the inner From, To and
// Cc read exactly as the outer ones.
func Inner(h textproto.Header, body io.WriterTo) (textproto.Header, io.WriterTo) {
	return inner(h, body, NewBoundary("=_p"))
}

func inner(h textproto.Header, body io.WriterTo, boundary string) (textproto.Header, io.WriterTo) {
	var inner, content textproto.Header
	// Header.Add and AddRaw put a field on top: collect the fields first,
	// then add them from the last.
	var buf [24]textField
	fields := buf[:0]
	for f := h.Fields(); f.Next(); {
		k := f.Key()
		switch {
		case isContent(k):
			fields = append(fields, textField{k: k, v: f.Value(), content: true})
		case !strings.EqualFold(k, "Mime-Version"):
			tf := textField{k: k, v: f.Value()}
			if raw, err := f.Raw(); err == nil {
				tf.raw = raw
			}
			fields = append(fields, tf)
		}
	}
	for i := len(fields) - 1; i >= 0; i-- {
		switch f := fields[i]; {
		case f.content:
			content.Add(f.k, f.v)
		case f.raw != nil:
			inner.AddRaw(f.raw)
		default:
			inner.Add(f.k, f.v)
		}
	}
	inner.Add("Content-Transfer-Encoding", "7bit")
	// Written out rather than through mime.FormatMediaType, which would
	// leave the token v1 unquoted; readers look for the quoted form.
	inner.Add("Content-Type", `multipart/mixed; boundary="`+boundary+`"; protected-headers="v1"`)
	inner.Add("MIME-Version", "1.0")
	return inner, wrapped{boundary: boundary, header: content, body: body}
}

// innerFixed is the header Inner adds, as textproto writes it, around the
// boundary (whose length is fixed).
const (
	innerFixed1 = "Mime-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\""
	innerFixed2 = "\"; protected-headers=\"v1\"\r\nContent-Transfer-Encoding: 7bit\r\n"
)

// Rendered returns the entity that Inner describes, rendered: one
// io.WriterTo for its header, blank line and body. The fields are copied
// as h holds them (a field added with AddRaw keeps its folding, and its
// name its case), and everything up to the original content's body goes
// in a single Write: the writer below (an encrypting one) may do work per
// call. Rendered fails only when a field of h cannot be written.
func Rendered(h textproto.Header, body io.WriterTo) (io.WriterTo, error) {
	return rendered(h, body, NewBoundary("=_p"))
}

func rendered(h textproto.Header, body io.WriterTo, boundary string) (io.WriterTo, error) {
	// Two passes over the fields: the message fields, then the content
	// fields, each in their order.
	n := len(innerFixed1) + len(boundary) + len(innerFixed2) + 2*len(boundary) + 24
	for f := h.Fields(); f.Next(); {
		n += len(f.Key()) + len(f.Value()) + 8
	}
	head := make([]byte, 0, n)
	head = append(append(append(head, innerFixed1...), boundary...), innerFixed2...)
	var err error
	appendFields := func(content bool) {
		for f := h.Fields(); f.Next() && err == nil; {
			k := f.Key()
			if isContent(k) != content || !content && strings.EqualFold(k, "Mime-Version") {
				continue
			}
			var raw []byte
			if raw, err = f.Raw(); err == nil {
				head = append(head, raw...)
			}
		}
	}
	appendFields(false)
	head = append(append(append(head, "\r\n--"...), boundary...), "\r\n"...)
	appendFields(true)
	if err != nil {
		return nil, err
	}
	head = append(head, "\r\n"...)
	end := len(head)
	head = append(append(append(head, "\r\n--"...), boundary...), "--\r\n"...)
	return renderedEntity{head: head[:end:end], tail: head[end:], body: body}, nil
}

// renderedEntity writes Rendered's entity.
type renderedEntity struct {
	head, tail []byte
	body       io.WriterTo
}

func (e renderedEntity) WriteTo(dst io.Writer) (int64, error) {
	cw := &Counter{W: dst}
	if _, err := cw.Write(e.head); err != nil {
		return cw.N, err
	}
	if _, err := e.body.WriteTo(cw); err != nil {
		return cw.N, err
	}
	_, err := cw.Write(e.tail)
	return cw.N, err
}

type textField struct {
	k, v    string
	raw     []byte // the field as written, when it can be written
	content bool
}

func isContent(k string) bool {
	return len(k) >= 8 && strings.EqualFold(k[:8], "content-")
}

// maxSubject bounds a Subject for the outside of a protected message.
const maxSubject = 256

// OuterSubject checks a Subject for the outside of a protected message, as
// the Sender checks a message's Subject, and returns it as it is to be
// written: printable ASCII as it is, other text as RFC 2047 encoded-words
// (the outside must stay 7-bit). It refuses, with the reason, controls
// (CR, LF and NUL among them), invalid UTF-8, encoded-word syntax (which
// decoders disagree on) and more than 256 octets.
func OuterSubject(s string) (string, error) {
	if reason, ok := syntax.HeaderText(s); !ok {
		return "", errors.New(reason)
	}
	if i := strings.Index(s, "=?"); i >= 0 && strings.Contains(s[i+2:], "?=") {
		return "", errors.New("contains RFC 2047 encoded-word syntax; pass plain text")
	}
	if len(s) > maxSubject {
		return "", fmt.Errorf("longer than %d octets", maxSubject)
	}
	if syntax.IsASCII(s) {
		return s, nil
	}
	return mime.QEncoding.Encode("utf-8", s), nil
}

// Outer returns the header for the outside of a protected message: the
// outerFields of h, in their order, with Subject replaced by subject.
// Everything else, Content-* fields included (the protection adds its
// own), stays inside.
func Outer(h textproto.Header, subject string) textproto.Header {
	out := h.Copy()
	for f := out.Fields(); f.Next(); {
		if !isOuter(f.Key()) {
			f.Del()
		}
	}
	out.Set("Subject", subject)
	return out
}

func isOuter(k string) bool {
	for _, p := range outerFields {
		if len(k) == len(p) && strings.EqualFold(k, p) {
			return true
		}
	}
	return false
}

// NewBoundary returns a new multipart boundary: prefix and 32 random
// hexadecimal digits. Each layer that writes multiparts has a prefix of
// its own (the message builder "=_", protected headers "=_p", PGP/MIME
// "=_pgp"), and the prefixes differ at a character that is not a
// hexadecimal digit: whatever the digits, no layer's boundary is the
// start of another's, so a delimiter line of one cannot end a part of
// another (RFC 2046 §5.1.1). "=_" never occurs in quoted-printable or
// base64 output, so no boundary collides with encoded content either.
func NewBoundary(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// wrapped writes the body of the protected multipart.
type wrapped struct {
	boundary string
	header   textproto.Header
	body     io.WriterTo
}

func (w wrapped) WriteTo(dst io.Writer) (int64, error) {
	// The multipart framing is written here rather than through a
	// multipart writer, so that the body reaches dst directly: a writer
	// in between would hide dst's WriteString and copy every text part.
	cw := &Counter{W: dst}
	if _, err := io.WriteString(cw, "--"+w.boundary+"\r\n"); err != nil {
		return cw.N, err
	}
	if err := textproto.WriteHeader(cw, w.header); err != nil {
		return cw.N, err
	}
	if _, err := w.body.WriteTo(cw); err != nil {
		return cw.N, err
	}
	_, err := io.WriteString(cw, "\r\n--"+w.boundary+"--\r\n")
	return cw.N, err
}

// Counter counts the bytes it passes on to W, keeping W's WriteString.
type Counter struct {
	W io.Writer
	N int64
}

func (c *Counter) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	c.N += int64(n)
	return n, err
}

// WriteString writes s without copying it when W has WriteString.
func (c *Counter) WriteString(s string) (int, error) {
	n, err := io.WriteString(c.W, s)
	c.N += int64(n)
	return n, err
}

// Authors returns the addresses a signature may speak for: the From
// address and, when the header has one, the Sender address (RFC 5322
// §3.6.2; RFC 8550 §3 checks a signer against both).
func Authors(h textproto.Header) ([]string, error) {
	var out []string
	for _, field := range []string{"From", "Sender"} {
		v := h.Get(field)
		if v == "" {
			continue
		}
		a, err := mail.ParseAddress(v)
		if err != nil {
			return nil, fmt.Errorf("%s header %q: %w", field, v, err)
		}
		out = append(out, a.Address)
	}
	return out, nil
}
