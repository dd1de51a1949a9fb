// Package mimeprot holds what PGP/MIME and S/MIME protection share: the
// protected-headers layout that keeps the real Subject (and the other
// header fields that say who and what) inside the encrypted part, and a
// header for the outside that gives nothing away beyond what delivery
// needs.
//
// The layout follows draft-ietf-lamps-header-protection and what
// Thunderbird reads: the protected content is a multipart/mixed carrying
// protected-headers="v1" and copies of the header fields, whose single part
// is the original content.
package mimeprot

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// DefaultSubject replaces the Subject on the outside.
const DefaultSubject = "..."

// protectedFields are copied into the protected part; of them, only those
// delivery needs stay on the outside too.
var protectedFields = []string{"Date", "From", "Sender", "Reply-To", "To", "Cc", "Subject", "Message-Id", "In-Reply-To", "References"}

// Inner returns the entity to encrypt or sign: a multipart/mixed with
// protected-headers="v1" whose header copies the message's identifying
// fields and whose one part is the message's content (its Content-*
// fields and body). h is the complete message header.
func Inner(h textproto.Header, body io.WriterTo) (textproto.Header, io.WriterTo) {
	var content textproto.Header
	var inner textproto.Header
	// Header.Add inserts at the top; walk from the bottom up to keep order.
	fields := collect(h)
	for i := len(fields) - 1; i >= 0; i-- {
		f := fields[i]
		switch {
		case strings.HasPrefix(strings.ToLower(f[0]), "content-"):
			content.Add(f[0], f[1])
		case isProtected(f[0]):
			inner.Add(f[0], f[1])
		}
	}
	boundary := newBoundary()
	inner.Add("Content-Transfer-Encoding", "7bit")
	// Written out rather than through mime.FormatMediaType, which would
	// leave the token v1 unquoted; readers look for the quoted form.
	inner.Add("Content-Type", `multipart/mixed; boundary="`+boundary+`"; protected-headers="v1"`)
	inner.Add("MIME-Version", "1.0")
	return inner, wrapped{boundary: boundary, header: content, body: body}
}

// Outer returns the header for the outside of a protected message: the
// message header without its Content-* fields (the protection adds its
// own) and with Subject replaced by subject. Other fields (Date, From, To,
// Cc, Message-ID) stay: servers need them to deliver and recipients to
// reply.
func Outer(h textproto.Header, subject string) textproto.Header {
	var out textproto.Header
	fields := collect(h)
	for i := len(fields) - 1; i >= 0; i-- {
		k, v := fields[i][0], fields[i][1]
		switch {
		case strings.HasPrefix(strings.ToLower(k), "content-"):
			continue
		case strings.EqualFold(k, "Subject"):
			v = subject
		}
		out.Add(k, v)
	}
	if !out.Has("Subject") {
		out.Add("Subject", subject)
	}
	return out
}

func collect(h textproto.Header) [][2]string {
	var out [][2]string
	for f := h.Fields(); f.Next(); {
		out = append(out, [2]string{f.Key(), f.Value()})
	}
	return out
}

func isProtected(k string) bool {
	for _, p := range protectedFields {
		if strings.EqualFold(k, p) {
			return true
		}
	}
	return false
}

func newBoundary() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "=_p" + hex.EncodeToString(b[:])
}

// wrapped writes the body of the protected multipart.
type wrapped struct {
	boundary string
	header   textproto.Header
	body     io.WriterTo
}

func (w wrapped) WriteTo(dst io.Writer) (int64, error) {
	mw := textproto.NewMultipartWriter(dst)
	if err := mw.SetBoundary(w.boundary); err != nil {
		return 0, err
	}
	pw, err := mw.CreatePart(w.header)
	if err != nil {
		return 0, err
	}
	if _, err := w.body.WriteTo(pw); err != nil {
		return 0, err
	}
	return 0, mw.Close()
}
