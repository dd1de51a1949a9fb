package outbox

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/internal/syntax"
)

// ErrUnmatched: a delivery status notification names no message of the
// outbox (no ENVID, an ENVID the outbox did not give, or one whose
// message is gone; a return path the outbox did not sign), or none of
// the recipients it reports on that the delivery it names carried.
// Nothing was changed. A notification is never trusted further than its match: an
// ENVID carries a secret part that only the outbox knows, so that nobody
// who merely knows a message's ID can forge a bounce for it.
var ErrUnmatched = errors.New("outbox: bounce matches no message")

// ErrBusy: the message a notification is for has an attempt under way;
// Ingest changed nothing, and the same notification can be ingested again
// later (IngestError.Temporary).
var ErrBusy = errors.New("outbox: message has an attempt under way")

// IngestError is why Ingest did not record a notification.
type IngestError struct {
	// ID is the outbox's message ID, when the notification named one.
	ID  string
	Err error
	// temporary: the database failed, or the message was busy.
	temporary bool
}

func (e *IngestError) Error() string {
	if e.ID == "" {
		return "outbox: bounce: " + e.Err.Error()
	}
	return "outbox: bounce for message " + e.ID + ": " + e.Err.Error()
}

func (e *IngestError) Unwrap() error { return e.Err }

// Temporary reports whether ingesting the same notification again later
// may succeed: the database failed, or the message was busy. An unmatched
// notification is not temporary.
func (e *IngestError) Temporary() bool { return e.temporary }

// Notification is a delivery status notification (RFC 3464) as Ingest
// matches it: what package bounce parses from a bounce message
// (NotificationOf), or what an application's own parser found.
type Notification struct {
	// EnvelopeID is the Original-Envelope-Id: the ENVID the delivery was
	// sent with. It may be empty when ReturnPath is set.
	EnvelopeID string
	// ReturnPath, when set, is the address the notification was
	// delivered to: a signed VERP return path (Options.VERP), which names
	// the message and the delivery even when the notification carries no
	// ENVID. A path whose tag is not genuine is refused (ErrUnmatched).
	ReturnPath string
	// Recipients are the per-recipient reports.
	Recipients []NotificationRecipient
}

// NotificationRecipient is one per-recipient report of a Notification.
type NotificationRecipient struct {
	// OriginalRecipient and FinalRecipient are the addresses (the
	// address type, such as "rfc822;", removed or not).
	OriginalRecipient string
	FinalRecipient    string
	// Action is "failed", "delayed", "delivered", "relayed" or
	// "expanded".
	Action string
	// Status is the enhanced status code ("5.1.1"); RemoteMTA and
	// Diagnostic the remote server and what it said.
	Status     string
	RemoteMTA  string
	Diagnostic string
}

// Bounce is the record of one per-recipient report Ingest matched to a
// message: Status.Bounces.
type Bounce struct {
	Received  time.Time `json:"received"`
	Recipient string    `json:"recipient"`
	// Action is the report's: "failed" turns an Accepted recipient into
	// a Bounced one; "delayed" and the others are recorded only.
	Action     string `json:"action"`
	Status     string `json:"status,omitempty"`
	RemoteMTA  string `json:"remote_mta,omitempty"`
	Diagnostic string `json:"diagnostic,omitempty"`
}

// IngestResult is what Ingest did with a notification.
type IngestResult struct {
	// ID is the outbox's message the notification was matched to.
	ID string `json:"id"`
	// Bounced are the recipients that became Bounced; Recorded every
	// recipient a report was recorded for.
	Bounced  []string `json:"bounced,omitempty"`
	Recorded []string `json:"recorded"`
}

// maxBounces bounds the reports kept per message: a server that sends a
// "delayed" notification every hour for days does not grow it further.
const maxBounces = 64

// envelopeIDTag is the length of an ENVID's secret part, in base32
// characters (100 bits).
const envelopeIDTag = 20

// newEnvelopeID returns the ENVID of the message id: the ID, a dot, and
// random characters that only the message's sealed progress records.
func newEnvelopeID(id string) string {
	var b [envelopeIDTag * 5 / 8]byte
	_, _ = rand.Read(b[:])
	return id + "." + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// Ingest reads one bounce message from r (a delivery status notification,
// RFC 3464, as package bounce parses it) and records it as
// IngestNotification does. A message that is not a notification, or is
// one the outbox cannot match, fails with ErrUnmatched (and, for the
// former, the *bounce.Error saying why): nothing is changed, and
// retrying cannot help. Errors that a retry may cure are temporary
// (mailsec.IsTemporary).
func (ob *Outbox) Ingest(ctx context.Context, r io.Reader) (*IngestResult, error) {
	n, err := ob.readNotification(r)
	if err != nil {
		return nil, err
	}
	return ob.IngestNotification(ctx, n)
}

// readNotification parses the bounce message in r for Ingest and
// IngestReturnPath: a message that is not a notification is ErrUnmatched,
// never temporary; a failure to read r is temporary.
func (ob *Outbox) readNotification(r io.Reader) (*Notification, error) {
	if ob.isClosed() {
		return nil, ErrClosed
	}
	rep, err := bounce.Parse(r)
	if err != nil {
		var be *bounce.Error
		if errors.As(err, &be) {
			return nil, &IngestError{Err: fmt.Errorf("%w: %w", ErrUnmatched, err)}
		}
		return nil, &IngestError{Err: err, temporary: true} // reading r failed
	}
	return NotificationOf(rep), nil
}

// IngestReturnPath is Ingest for a bounce delivered to returnPath (the
// envelope recipient: Postfix's pipe(8) passes it as ${recipient}), a
// signed VERP return path of Options.VERP. It matches the bounce by that
// path, so that a bounce from a server that drops the ENVID is matched
// too; see IngestNotification. Without Options.VERP it fails with a
// *mailsec.ConfigError.
func (ob *Outbox) IngestReturnPath(ctx context.Context, r io.Reader, returnPath string) (*IngestResult, error) {
	n, err := ob.readNotification(r)
	if err != nil {
		return nil, err
	}
	n.ReturnPath = returnPath
	return ob.IngestNotification(ctx, n)
}

// NotificationOf is a parsed report as IngestNotification takes it.
func NotificationOf(rep *bounce.Report) *Notification {
	if rep == nil {
		return nil
	}
	n := &Notification{EnvelopeID: rep.EnvelopeID}
	for _, rr := range rep.Recipients {
		nr := NotificationRecipient{OriginalRecipient: rr.OriginalRecipient, FinalRecipient: rr.FinalRecipient,
			Action: string(rr.Action), RemoteMTA: rr.RemoteMTA, Diagnostic: rr.DiagnosticCode}
		if rr.Status != (mailsec.EnhancedCode{}) {
			nr.Status = rr.Status.String()
		}
		n.Recipients = append(n.Recipients, nr)
	}
	return n
}

// IngestNotification matches a delivery status notification to the
// outbox message and delivery whose ENVID it carries back (or, with
// ReturnPath, whose signed VERP return path it was delivered to), and
// records it: a "failed" report for an Accepted recipient makes it
// Bounced (a message none of whose accepted recipients is left becomes
// Failed, one with some left PartlyDelivered), and every matching report
// is added to the message's Status.Bounces. Each delivery of a message
// has its own ENVID, and a report counts only for a recipient that
// delivery carried: one about another recipient (written by a server
// that received some other delivery) is ignored and logged. By a return
// path, which every recipient of its delivery reads, a report counts
// only when that delivery carried one recipient, the one it is about
// (a mailsec.Sender with Options.ReturnPath gives each recipient a
// delivery of its own). It fails
// with ErrUnmatched (not temporary) when the notification names no
// message of the outbox, or names one but none of the recipients of the
// delivery it names; nothing is changed then. A database failure, or a
// message with an attempt under way (ErrBusy), is an *IngestError whose
// Temporary is true.
func (ob *Outbox) IngestNotification(ctx context.Context, n *Notification) (*IngestResult, error) {
	if ob.isClosed() {
		return nil, ErrClosed
	}
	var id string
	var tag *bounce.VERPTag
	switch {
	case n != nil && n.ReturnPath != "":
		if ob.verp == nil {
			return nil, &IngestError{Err: &mailsec.ConfigError{Field: "Options.VERP", Reason: "not set: a bounce's return path cannot be checked"}}
		}
		var err error
		if tag, err = ob.verp.Parse(n.ReturnPath); err != nil {
			ob.log.LogAttrs(ctx, slog.LevelWarn, "mailsec outbox: bounce to a return path the outbox did not sign; ignored")
			return nil, &IngestError{Err: fmt.Errorf("%w: %w", ErrUnmatched, err)}
		}
		id = tag.Ref
	case n == nil || n.EnvelopeID == "":
		return nil, &IngestError{Err: fmt.Errorf("%w: no Original-Envelope-Id", ErrUnmatched)}
	default:
		var ok bool
		id, _, ok = strings.Cut(n.EnvelopeID, ".")
		if !ok || id == "" {
			return nil, &IngestError{Err: fmt.Errorf("%w: Original-Envelope-Id %q is not the outbox's", ErrUnmatched, syntax.PeerText(n.EnvelopeID))}
		}
	}
	for try := 0; ; try++ {
		res, retry, err := ob.ingestOnce(ctx, id, n, tag)
		if !retry || try == 4 {
			return res, err
		}
		select {
		case <-ctx.Done():
			return nil, &IngestError{ID: id, Err: ctx.Err(), temporary: true}
		case <-time.After(time.Duration(try+1) * 20 * time.Millisecond):
		}
	}
}

// ingestOnce is one try of IngestNotification; retry reports that the
// message changed meanwhile.
func (ob *Outbox) ingestOnce(ctx context.Context, id string, n *Notification, tag *bounce.VERPTag) (res *IngestResult, retry bool, err error) {
	q := ob.eng.pool()
	r, err := loadRow(ctx, q, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, &IngestError{Err: fmt.Errorf("%w: no message %s", ErrUnmatched, id)}
	}
	if err != nil {
		return nil, false, &IngestError{ID: id, Err: err, temporary: true}
	}
	prog, err := ob.openProgress(r.id, r.progress)
	if err != nil {
		return nil, false, &IngestError{ID: id, Err: err, temporary: mailsec.IsTemporary(err)}
	}
	if tag != nil && !prog.signed(tag) {
		ob.log.LogAttrs(ctx, slog.LevelWarn, "mailsec outbox: bounce to a return path that names no delivery of the message; ignored", slog.String("id", id))
		return nil, false, &IngestError{Err: fmt.Errorf("%w: the return path's tag names no delivery of message %s", ErrUnmatched, id)}
	}
	if (tag == nil || n.EnvelopeID != "") && !prog.ofMessage(n.EnvelopeID) {
		ob.log.LogAttrs(ctx, slog.LevelWarn, "mailsec outbox: bounce names a message with the wrong ENVID; ignored", slog.String("id", id))
		return nil, false, &IngestError{Err: fmt.Errorf("%w: Original-Envelope-Id does not match message %s", ErrUnmatched, id)}
	}
	busy := r.state == Sending
	if !busy && r.state == Queued {
		if busy, err = ob.jobRunning(ctx, q, id); err != nil {
			return nil, false, &IngestError{ID: id, Err: err, temporary: true}
		}
	}
	if busy {
		// An attempt is under way; what it records would be written over
		// this (or, when it started after this look, it applies its
		// outcome to what this writes: see recordIn).
		return nil, false, &IngestError{ID: id, Err: ErrBusy, temporary: true}
	}

	res = &IngestResult{ID: id}
	now := time.Now()
	others := 0
	for _, nr := range n.Recipients {
		i := prog.find(nr)
		if i < 0 {
			continue
		}
		rp := &prog.Recipients[i]
		if !prog.carried(rp, n.EnvelopeID, tag) {
			// A report about a recipient the delivery did not carry:
			// forged by a server that received some other delivery.
			others++
			continue
		}
		b := Bounce{Received: now, Recipient: rp.Address, Action: clean(strings.ToLower(nr.Action)), Status: clean(nr.Status),
			RemoteMTA: clean(nr.RemoteMTA), Diagnostic: clean(nr.Diagnostic)}
		if len(prog.Bounces) < maxBounces {
			prog.Bounces = append(prog.Bounces, b)
		}
		res.Recorded = append(res.Recorded, rp.Address)
		if b.Action == "failed" && rp.State == Accepted {
			rp.State = Bounced
			rp.Bounce = explain(b)
			res.Bounced = append(res.Bounced, rp.Address)
		}
	}
	if others > 0 {
		ob.log.LogAttrs(ctx, slog.LevelWarn, "mailsec outbox: bounce reports on recipients its delivery did not carry; those reports ignored",
			slog.String("id", id), slog.Int("ignored", others))
	}
	if len(res.Recorded) == 0 {
		if others > 0 {
			return nil, false, &IngestError{ID: id, Err: fmt.Errorf("%w: it reports only on recipients of message %s that the delivery its Original-Envelope-Id names did not carry", ErrUnmatched, id)}
		}
		return nil, false, &IngestError{ID: id, Err: fmt.Errorf("%w: it reports on none of the recipients of message %s", ErrUnmatched, id)}
	}
	state := r.state
	if len(res.Bounced) > 0 && (state == Delivered || state == PartlyDelivered) {
		state = Failed
		for _, rp := range prog.Recipients {
			if rp.State == Accepted {
				state = PartlyDelivered
			}
		}
	}
	nb, err := json.Marshal(prog)
	if err != nil {
		return nil, false, &IngestError{ID: id, Err: err}
	}
	changed, err := q.exec(ctx, `UPDATE mailsec_outbox_message SET progress = $1, state = $2
WHERE id = $3 AND state = $4 AND attempts = $5 AND progress = $6`,
		ob.keys.seal(nb, aad("progress", id, "")), string(state), id, string(r.state), r.attempts, r.progress)
	if err != nil {
		return nil, false, &IngestError{ID: id, Err: err, temporary: true}
	}
	if changed == 0 {
		return nil, true, &IngestError{ID: id, Err: ErrBusy, temporary: true}
	}
	ob.log.LogAttrs(ctx, slog.LevelInfo, "mailsec outbox: bounce recorded", slog.String("id", id),
		slog.Int("recorded", len(res.Recorded)), slog.Int("bounced", len(res.Bounced)), slog.String("state", string(state)))
	return res, false, nil
}

// ofMessage reports whether envid is an ENVID the message was sent with:
// one of its deliveries' (its EnvelopeID, a dot and a random part), or,
// for a message queued before each delivery had its own, its EnvelopeID.
func (prog *progress) ofMessage(envid string) bool {
	if prog.EnvelopeID == "" {
		return false
	}
	if !prog.PerDelivery {
		return subtle.ConstantTimeCompare([]byte(prog.EnvelopeID), []byte(envid)) == 1
	}
	return strings.HasPrefix(envid, prog.EnvelopeID+".")
}

// carried reports whether the delivery whose ENVID is envid carried the
// recipient rp: it is one of rp's EnvelopeIDs (compared in constant
// time), or, for a message queued before each delivery had its own
// ENVID, the message's.
//
// With a VERP tag, the delivery is the one the tag signs, and envid, when
// the notification has one, must be that delivery's; and rp must be the
// only recipient that delivery carried. Every recipient of a delivery
// reads its return path, so one the delivery shared (any of its
// recipients could have written the report) speaks for none of them.
func (prog *progress) carried(rp *rcptProgress, envid string, tag *bounce.VERPTag) bool {
	if tag != nil {
		for _, e := range rp.EnvelopeIDs {
			if tag.Signs(e) && (envid == "" || subtle.ConstantTimeCompare([]byte(e), []byte(envid)) == 1) {
				return prog.carriers(e) == 1
			}
		}
		return false
	}
	if !prog.PerDelivery {
		return subtle.ConstantTimeCompare([]byte(prog.EnvelopeID), []byte(envid)) == 1
	}
	ok := 0
	for _, e := range rp.EnvelopeIDs {
		ok |= subtle.ConstantTimeCompare([]byte(e), []byte(envid))
	}
	return ok == 1
}

// carriers counts the recipients the delivery whose ENVID is envid
// carried.
func (prog *progress) carriers(envid string) int {
	n := 0
	for i := range prog.Recipients {
		if slices.Contains(prog.Recipients[i].EnvelopeIDs, envid) {
			n++
		}
	}
	return n
}

// signed reports whether a VERP tag signs a delivery of the message.
func (prog *progress) signed(tag *bounce.VERPTag) bool {
	for i := range prog.Recipients {
		for _, e := range prog.Recipients[i].EnvelopeIDs {
			if tag.Signs(e) {
				return true
			}
		}
	}
	return false
}

// find returns the index of the recipient a report is about: by its
// Original-Recipient (the ORCPT the outbox sent), else its
// Final-Recipient; -1 for none.
func (prog *progress) find(nr NotificationRecipient) int {
	for _, a := range []string{nr.OriginalRecipient, nr.FinalRecipient} {
		a = bareAddress(a)
		if a == "" {
			continue
		}
		for i, rp := range prog.Recipients {
			if strings.EqualFold(rp.Address, a) {
				return i
			}
		}
	}
	return -1
}

// bareAddress removes an address type ("rfc822;") and angle brackets.
func bareAddress(a string) string {
	a = strings.TrimSpace(a)
	if t, rest, ok := strings.Cut(a, ";"); ok && !strings.ContainsAny(t, "@<") {
		a = strings.TrimSpace(rest)
	}
	return strings.TrimSuffix(strings.TrimPrefix(a, "<"), ">")
}

// explain is a Bounced recipient's explanation: the status code's in
// plain words, then the code, the remote server and what it said.
func explain(b Bounce) string {
	text := "A later server failed to deliver it."
	var c mailsec.EnhancedCode
	if _, err := fmt.Sscanf(b.Status, "%d.%d.%d", &c[0], &c[1], &c[2]); err == nil && c[0] >= 2 && c[0] <= 5 {
		text = c.Explain().Text
	}
	var s []string
	if b.Status != "" {
		s = append(s, "status "+b.Status)
	}
	if b.RemoteMTA != "" {
		s = append(s, "from "+b.RemoteMTA)
	}
	if b.Diagnostic != "" {
		s = append(s, b.Diagnostic)
	}
	if len(s) == 0 {
		return "bounced: " + text
	}
	return "bounced: " + text + " (" + strings.Join(s, "; ") + ")"
}

// clean makes text from a notification, which comes from anywhere, fit
// to keep and show: no control characters, bounded (syntax.PeerText).
func clean(s string) string { return strings.Join(strings.Fields(syntax.PeerText(s)), " ") }
