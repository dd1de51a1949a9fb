package mailsec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/mailsec/mailsec/internal/syntax"
)

// Protector turns a MIME entity into its protected form (encrypted,
// signed, or both) for a set of recipients. PGP/MIME (package pgp) and
// S/MIME (package smime) implement it; so can a test fake. Implementations
// must be safe for concurrent use.
//
// Method names the protection: "pgp" for package pgp, "smime" for package
// smime. Plans refer to a Protector by it (Plan.Methods) and Receipts
// record it (ProtectionInfo.Method). NewSender asks once; the name must
// be non-empty and neither MethodNone nor MethodNotice.
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
	Method() string
	Protect(ctx context.Context, e *Entity, recipients []string) (*Protected, error)
}

// Protected is a Protector's result.
type Protected struct {
	Entity *Entity
	// Signed reports that the content was signed.
	Signed bool
	// Fingerprints maps each recipient to the fingerprint of the key or
	// certificate the content was protected for.
	Fingerprints map[string]string
	// Keys maps each recipient to more about that key or certificate and
	// the content's encryption, recorded in its Receipt's ProtectionInfo.
	// Optional: a recipient missing from it records only the fingerprint.
	Keys map[string]KeyUse
}

// KeyUse is what a Protector reports about the key or certificate it
// protected a recipient's content with.
type KeyUse struct {
	// Expires is when the key or certificate stops being usable; zero when
	// it does not expire.
	Expires time.Time
	// Cipher names the content encryption, such as "aes256-cbc",
	// "aes256-gcm" or "aes256-ocb"; empty when the content was only signed.
	Cipher string
	// Notes are what the Protector observed on the way, one sentence
	// each: a key that expires within the Protector's warning window, how
	// a certificate's revocation status was established or why it could
	// not be.
	Notes []string
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

// How a Send protects content, the step between grouping recipients and
// handing deliveries to the Transport (send.go).

// protect delivers the group's content protected by each allowed
// Protector in turn to the recipients it has keys for, and returns those
// no Protector served, each with why.
func (sd *sending) protect(ctx context.Context, g *group) []*recipient {
	remaining := g.rcpts
	protectors := sd.s.protectorsFor(g.plan)
	if len(g.plan.Methods) > 0 && len(protectors) == 0 {
		for _, r := range remaining {
			r.why = &ProtectionError{Recipient: r.Address, fault: true,
				Reason: "the Sender has no Protector for the plan's methods " + strings.Join(g.plan.Methods, ", ")}
			r.hard = true
		}
	}
	for _, np := range protectors {
		if len(remaining) == 0 {
			break
		}
		prot, failed := sd.protectWith(ctx, np.p, addresses(remaining))
		var done, left []*recipient
		for _, r := range remaining {
			if err := failed[r.Address]; err != nil || prot == nil {
				if err != nil {
					r.why = joinReasons(r.why, err)
					r.hard = r.hard || !errors.Is(err, ErrNoKey) || IsTemporary(err)
				}
				left = append(left, r)
				continue
			}
			done = append(done, r)
		}
		if prot != nil && len(done) > 0 {
			for _, r := range done {
				ku := prot.Keys[r.Address]
				r.receipt.Protection = &ProtectionInfo{Method: np.name, Fingerprint: prot.Fingerprints[r.Address], Signed: prot.Signed,
					KeyExpires: ku.Expires, Cipher: ku.Cipher, Notes: cleanNotes(ku.Notes)}
			}
			sd.deliver(ctx, sd.msg, g.plan, done, recovering{w: prot.Entity, what: "Protector"})
		}
		remaining = left
	}
	for _, r := range remaining {
		if r.why == nil {
			r.why = &ProtectionError{Recipient: r.Address, Reason: "the Sender has no Protector"}
		}
	}
	return remaining
}

// protectWith asks p for content for rcpts. Recipients it cannot serve
// are returned with their errors, and the others are protected again
// without them, so a missing key for one never exposes another.
func (sd *sending) protectWith(ctx context.Context, p Protector, rcpts []string) (*Protected, map[string]error) {
	failed := map[string]error{}
	e, err := sd.msg.entity()
	if err != nil {
		for _, r := range rcpts {
			failed[r] = &ProtectionError{Recipient: r, Reason: "internal: header does not parse", Err: err, fault: true}
		}
		return nil, failed
	}
	remaining := slices.Clone(rcpts)
	for len(remaining) > 0 {
		prot, err := protectOnce(ctx, p, e, remaining)
		if err == nil {
			return prot, failed
		}
		per := recipientErrors(err)
		progress := false
		for _, re := range per {
			if i := slices.Index(remaining, re.Recipient); i >= 0 {
				failed[re.Recipient] = re
				remaining = slices.Delete(remaining, i, i+1)
				progress = true
			}
		}
		if !progress {
			// An error that names no recipient applies to all of them.
			for _, r := range remaining {
				failed[r] = &ProtectionError{Recipient: r, Reason: "protection failed", Err: err, fault: true}
			}
			return nil, failed
		}
	}
	return nil, failed
}

// protectOnce calls the Protector and turns a panic inside it (a crypto
// library fed a malformed key, say) into an error instead of a crash.
func protectOnce(ctx context.Context, pr Protector, e *Entity, rcpts []string) (p *Protected, err error) {
	defer func() {
		if v := recover(); v != nil {
			p, err = nil, fmt.Errorf("mailsec: Protector panicked: %v", v)
		}
	}()
	p, err = pr.Protect(ctx, e, rcpts)
	err = usableError("Protector", err)
	if err == nil && (p == nil || p.Entity == nil) {
		err = errors.New("mailsec: Protector returned no entity")
	}
	return p, err
}

// unprotected settles the recipients no Protector served. Those whose
// failure was not about their key fail, whatever the plan; the others get
// what the plan says: the content as it is (ProtectionPreferred), the
// notice (NoKeyNotice), or nothing.
func (sd *sending) unprotected(ctx context.Context, plan Plan, rcpts []*recipient) {
	var hard, soft []*recipient
	for _, r := range rcpts {
		if r.hard {
			hard = append(hard, r)
		} else {
			soft = append(soft, r)
		}
	}
	sd.refuse(ctx, hard)
	if len(soft) == 0 {
		return
	}
	switch {
	case plan.Protection == ProtectionPreferred:
		for _, r := range soft {
			r.receipt.Protection = &ProtectionInfo{Method: MethodNone, Reason: reasonText(r.why)}
		}
		sd.deliver(ctx, sd.msg, plan, soft, sd.msg.content())
	case plan.NoKey == NoKeyNotice:
		for _, r := range soft {
			sd.notice(ctx, plan, r)
		}
	default:
		sd.refuse(ctx, soft)
	}
}

// refuse fails recipients whose content could not be protected, each for
// its reason, and logs them in one record.
func (sd *sending) refuse(ctx context.Context, rcpts []*recipient) {
	if len(rcpts) == 0 {
		return
	}
	why := make([]error, len(rcpts))
	for i, r := range rcpts {
		r.fail(r.why)
		why[i] = r.why
	}
	sd.log(ctx, sd.msg, rcpts, nil, errors.Join(why...))
}

// reasons is why each allowed method could not protect a recipient's
// content.
type reasons []error

func (r reasons) Error() string {
	s := make([]string, len(r))
	for i, e := range r {
		s[i] = strings.TrimPrefix(e.Error(), "mailsec: ")
	}
	return "mailsec: " + strings.Join(s, "; ")
}

func (r reasons) Unwrap() []error { return r }

func joinReasons(prev, err error) error {
	if prev == nil {
		return err
	}
	if r, ok := prev.(reasons); ok {
		return append(r, err)
	}
	return reasons{prev, err}
}

// reasonText is why a recipient's content was not protected, for the
// Receipt: the error's text without the package prefix.
func reasonText(err error) string {
	if err == nil {
		return ""
	}
	return strings.TrimPrefix(err.Error(), "mailsec: ")
}

// maxKeyNotes bounds the notes a Protector may record for one recipient.
const maxKeyNotes = 8

// cleanNotes copies a Protector's notes for a Receipt: at most
// maxKeyNotes, each cleaned like text from a peer (a note may quote a
// certificate's responder URL or a server's answer).
func cleanNotes(notes []string) []string {
	var out []string
	for _, n := range notes {
		if len(out) == maxKeyNotes {
			break
		}
		if n = syntax.PeerText(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}
