package mailsec

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"

	"github.com/emersion/go-message/textproto"
)

// Protector turns a MIME entity into its protected form (encrypted,
// signed, or both) for a set of recipients. PGP/MIME (package pgp) and
// S/MIME (package smime) implement it; so can a test fake. Implementations
// must be safe for concurrent use.
//
// Protect receives the complete message entity the Sender built (its
// header holds From, To, Cc, Subject, Date, Message-ID and the content
// header fields) and the recipients' addresses. It must resolve and check
// every recipient's key before returning. When some recipients have no
// usable key it returns an error that unwraps (through Unwrap() error or
// Unwrap() []error) to one *ProtectionError (or *RecipientError) per such
// recipient and no entity; the Sender then asks again without them. It must never return an
// entity that any of the given recipients could not read, nor one that
// exposes the original body in clear.
//
// The returned entity's Body is written while the message is sent, so
// encryption streams; an error there aborts the delivery before the
// message is complete, and the server discards it.
type Protector interface {
	Protect(ctx context.Context, e *Entity, recipients []string) (*Protected, error)
}

// Protected is a Protector's result.
type Protected struct {
	Entity *Entity
	// Method names the protection in Receipts: "pgp", "smime".
	Method string
	// Signed reports that the content was signed.
	Signed bool
	// Fingerprints maps each recipient to the fingerprint of the key or
	// certificate the content was protected for.
	Fingerprints map[string]string
}

// Entity is a MIME entity: a header and a body produced on demand.
type Entity struct {
	Header textproto.Header
	// Body writes everything after the header's blank line. It may be
	// called more than once (a retried delivery writes the message again).
	Body io.WriterTo
}

// WriteTo writes the header, the blank line and the body.
func (e *Entity) WriteTo(w io.Writer) (int64, error) {
	if e == nil || isNil(e.Body) {
		return 0, errors.New("mailsec: entity without a body")
	}
	// The header is formatted into one buffer and written at once: the
	// writer below may do per-call work. Buffers are pooled: an entity is
	// written for every delivery.
	head := headPool.Get().(*bytes.Buffer)
	defer func() {
		// The header may be a protected one (the real Subject): wipe it
		// before the buffer is used again or left to the collector.
		clear(head.Bytes())
		if head.Cap() <= maxPooledHead {
			head.Reset()
			headPool.Put(head)
		}
	}()
	if err := textproto.WriteHeader(head, e.Header); err != nil {
		return 0, err
	}
	n, err := w.Write(head.Bytes())
	if err != nil {
		return int64(n), err
	}
	m, err := e.Body.WriteTo(w)
	return int64(n) + m, err
}

var headPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledHead bounds the header buffers kept for reuse.
const maxPooledHead = 64 << 10
