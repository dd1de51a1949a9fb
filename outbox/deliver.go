package outbox

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/transport"
)

// State is where a message is in the outbox.
type State string

// Message states. Queued and Sending are unfinished; the others are final.
const (
	// Queued: waiting for its first attempt, or for the next one after a
	// temporary failure.
	Queued State = "queued"
	// Sending: an attempt is under way, or its worker died during it and
	// another will take the message up (see the package documentation).
	Sending State = "sending"
	// Delivered: every recipient was accepted.
	Delivered State = "delivered"
	// PartlyDelivered: some recipients were accepted, the others refused
	// for good, bounced later, or still deferred when the message expired.
	PartlyDelivered State = "partly delivered"
	// Failed: no recipient was accepted (or every one accepted bounced
	// later), and every one was refused for good; or the stored message
	// did not open (tampered with).
	Failed State = "failed"
	// Expired: no recipient was accepted, and some were still deferred
	// when the message reached its MaxAge.
	Expired State = "expired"
	// Cancelled: Cancel was called before the message finished.
	Cancelled State = "cancelled"
)

func (s State) finished() bool { return s != Queued && s != Sending }

// RecipientState is where one recipient of a message is.
type RecipientState string

// Recipient states.
const (
	// Pending: not accepted yet; the next attempt tries it.
	Pending RecipientState = "pending"
	// Accepted: the server took the message for the recipient; no later
	// attempt sends it to this recipient again.
	Accepted RecipientState = "accepted"
	// Refused: the last attempt failed for good (a 5xx reply, no usable
	// key where protection is required, ...).
	Refused RecipientState = "refused"
	// ExpiredRecipient: still deferred when the message expired.
	ExpiredRecipient RecipientState = "expired"
	// CancelledRecipient: pending when the message was cancelled.
	CancelledRecipient RecipientState = "cancelled"
	// Bounced: accepted, then a later server failed to deliver it and a
	// delivery status notification said so (see Outbox.Ingest).
	Bounced RecipientState = "bounced"
)

// progress is what the outbox knows of a message's recipients, sealed.
type progress struct {
	MessageID  string         `json:"message_id"`
	Reference  string         `json:"reference,omitempty"`
	EnvelopeID string         `json:"envelope_id,omitempty"`
	Recipients []rcptProgress `json:"recipients,omitempty"`
	// Bounces are the delivery status notifications Ingest matched to
	// the message, the first first, at most maxBounces.
	Bounces []Bounce `json:"bounces,omitempty"`
	// Count is how many recipients the message names, for List before
	// the first attempt has reported on each.
	Count int `json:"count,omitempty"`
	// PerDelivery: the message is sent with one ENVID per delivery
	// (EnvelopeID, a dot and a random part), which each recipient's
	// EnvelopeIDs record; a notification is matched to a recipient by
	// its own. A message queued before that was sent with EnvelopeID
	// itself, for all its recipients.
	PerDelivery bool `json:"per_delivery,omitempty"`
	// Unknown: before any attempt reported on the recipients, a run died
	// whose attempt may have delivered the message to them; the attempt
	// that next sends it flags them all.
	Unknown bool `json:"unknown,omitempty"`
}

type rcptProgress struct {
	Address  string                `json:"address"`
	Kind     mailsec.RecipientKind `json:"kind"`
	State    RecipientState        `json:"state"`
	Attempts int                   `json:"attempts"`
	// Unknown: the recipient may have the message from an attempt whose
	// outcome is unknown (its transaction broke after the message may
	// have been complete, or its worker died). It stays set through
	// attempts that send the recipient nothing, until one settles it.
	Unknown bool `json:"unknown,omitempty"`
	// PossibleDuplicate: an attempt sent it again after one whose outcome
	// was unknown.
	PossibleDuplicate bool `json:"possible_duplicate,omitempty"`
	// MayHave: an attempt whose outcome is unknown may have delivered the
	// message to the recipient, whatever State says; never cleared.
	MayHave bool   `json:"may_have,omitempty"`
	Error   string `json:"error,omitempty"`
	// Bounce explains a Bounced recipient.
	Bounce string `json:"bounce,omitempty"`
	// EnvelopeIDs are the ENVIDs of the deliveries that may have left
	// the message with the recipient's server (accepted, or an outcome
	// unknown), the last last, at most maxEnvelopeIDs: the ones a
	// notification about the recipient may carry.
	EnvelopeIDs []string `json:"envelope_ids,omitempty"`
}

// maxEnvelopeIDs bounds rcptProgress.EnvelopeIDs.
const maxEnvelopeIDs = 8

// sentWith records that the recipient's server may have the message from
// the delivery whose ENVID is envid.
func (rp *rcptProgress) sentWith(envid string) {
	if envid == "" || slices.Contains(rp.EnvelopeIDs, envid) {
		return
	}
	rp.EnvelopeIDs = append(rp.EnvelopeIDs, envid)
	if len(rp.EnvelopeIDs) > maxEnvelopeIDs {
		rp.EnvelopeIDs = slices.Delete(rp.EnvelopeIDs, 0, len(rp.EnvelopeIDs)-maxEnvelopeIDs)
	}
}

// Attempt is the record of one attempt to deliver a queued message: the
// Receipt of the Send it made, or why it made none. Status returns every
// attempt's; Options.OnReceipt is given each as it is recorded.
type Attempt struct {
	// ID is the outbox's ID for the message.
	ID string `json:"id"`
	// Number counts the message's attempts from 1.
	Number int `json:"number"`
	// Started and Finished bound the attempt.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// State is the message's state after the attempt.
	State State `json:"state"`
	// Receipt is the Send's Receipt: the recipients tried (those no
	// earlier attempt delivered to), and for each what happened. Nil when
	// the attempt sent nothing (Error says why).
	Receipt *mailsec.Receipt `json:"receipt,omitempty"`
	// PossibleDuplicates are the recipients this attempt sent the
	// message to although an earlier attempt may already have delivered
	// it to them: that attempt's worker died during its transaction, or
	// the server's reply to the end of the message was lost or came out
	// of turn. Each may have the message twice. This is the one case in
	// which the outbox may deliver a message twice.
	PossibleDuplicates []string `json:"possible_duplicates,omitempty"`
	// Interrupted reports an attempt cut short by Close (or the end of the
	// process's work): its recipients not accepted stay pending, to be
	// tried again at once.
	Interrupted bool `json:"interrupted,omitempty"`
	// Error says why the attempt sent nothing, or failed as a whole.
	Error string `json:"error,omitempty"`
	// Next is when the next attempt is due; zero when the message is
	// finished.
	Next time.Time `json:"next,omitzero"`
}

// row is a message's row, as a worker reads it.
type row struct {
	id         string
	state      State
	createdAt  time.Time
	expiresAt  time.Time
	nextAt     time.Time
	finishedAt time.Time
	attempts   int
	inFlightAt time.Time
	envelope   []byte
	progress   []byte
	problem    string
	// jobRuns is the number of runs of the message's River job the outbox
	// has accounted for: each ended with the attempt it recorded, or
	// having sent nothing. runsKnown is false for a message queued before
	// the outbox counted runs (schema version 4).
	jobRuns   int
	runsKnown bool
}

const rowColumns = `id, state, created_at, expires_at, next_at, finished_at, attempts, in_flight_at, envelope, progress, problem, job_runs`

func scanRow(s scanner) (*row, error) {
	var r row
	var state string
	var created, expires, next int64
	var finished, inFlight, runs sql.NullInt64
	var problem sql.NullString
	if err := s.Scan(&r.id, &state, &created, &expires, &next, &finished, &r.attempts, &inFlight, &r.envelope, &r.progress, &problem, &runs); err != nil {
		return nil, err
	}
	r.jobRuns, r.runsKnown = int(runs.Int64), runs.Valid
	r.state = State(state)
	r.createdAt, r.expiresAt, r.nextAt = micros(created), micros(expires), micros(next)
	if finished.Valid {
		r.finishedAt = micros(finished.Int64)
	}
	if inFlight.Valid {
		r.inFlightAt = micros(inFlight.Int64)
	}
	r.problem = problem.String
	return &r, nil
}

func micros(v int64) time.Time { return time.UnixMicro(v) }

// The statements of an attempt on SQLite, which an Outbox prepares once.
const (
	sqlLoadRow = `SELECT ` + rowColumns + ` FROM mailsec_outbox_message WHERE id = $1`
	// sqlNoteRun accounts for the job's runs ($1) when the row is still as
	// read: attempts $3, state $4, job_runs $5 (-1 for none).
	sqlNoteRun = `UPDATE mailsec_outbox_message SET job_runs = $1
WHERE id = $2 AND attempts = $3 AND state = $4 AND COALESCE(job_runs, -1) = $5`
	// sqlRecord records attempt $6 and the job's runs ($7) when the row is
	// still as the attempt read it: attempts $9, progress $8. A message
	// cancelled meanwhile stays cancelled.
	sqlRecord = `UPDATE mailsec_outbox_message SET
	state = CASE WHEN state = 'cancelled' THEN state ELSE $1 END,
	finished_at = CASE WHEN state = 'cancelled' THEN finished_at ELSE $2 END,
	next_at = $3, in_flight_at = NULL, progress = $4, problem = NULL, attempts = $6, job_runs = $7
WHERE id = $5 AND attempts = $9 AND progress = $8 RETURNING state`
	// sqlRecordDone is sqlRecord for a finished message: its envelope is
	// deleted.
	sqlRecordDone = `UPDATE mailsec_outbox_message SET
	state = CASE WHEN state = 'cancelled' THEN state ELSE $1 END,
	finished_at = CASE WHEN state = 'cancelled' THEN finished_at ELSE $2 END,
	next_at = $3, in_flight_at = NULL, progress = $4, problem = NULL, attempts = $6, job_runs = $7, envelope = NULL
WHERE id = $5 AND attempts = $9 AND progress = $8 RETURNING state`
	sqlDeleteChunks  = `DELETE FROM mailsec_outbox_chunk WHERE message_id = $1`
	sqlInsertAttempt = `INSERT INTO mailsec_outbox_attempt (message_id, n, data) VALUES ($1, $2, $3)
ON CONFLICT (message_id, n) DO UPDATE SET data = excluded.data`
)

// attemptStatements are the statements prepared for attempts on SQLite.
var attemptStatements = []string{sqlLoadRow, sqlNoteRun, sqlRecord, sqlRecordDone, sqlDeleteChunks, sqlInsertAttempt}

func loadRow(ctx context.Context, q querier, id string) (*row, error) {
	return scanRow(q.queryRow(ctx, sqlLoadRow, id))
}

// work is one run of a delivery job: at most one attempt. run counts the
// job's runs, this one included (jobRuns).
func (ob *Outbox) work(ctx context.Context, id string, run int) (err error) {
	defer func() {
		if v := recover(); v != nil {
			// The panic's value may hold the message's content: log its
			// type and where it happened, never the value.
			ob.log.LogAttrs(ctx, slog.LevelError, "mailsec outbox: delivery panicked", slog.String("id", id),
				slog.String("panic", fmt.Sprintf("%T", v)), slog.String("stack", string(debug.Stack())))
			// River keeps a job's errors: say nothing about the message.
			err = errors.New("outbox: the delivery panicked; see the outbox's log")
			if ob.expireAfterPanic(ctx, id, run) {
				err = nil
			}
		}
	}()
	r, lost, leftInFlight, err := ob.start(ctx, id, run, time.Now())
	if r == nil || err != nil {
		return err
	}
	return ob.attempt(ctx, r, run, lost, leftInFlight)
}

// expireAfterPanic ends message id as expired, when a run of its job
// panicked past the message's expiry, and reports whether it did. A panic
// that recurs on every run (a defect the message's content brings out)
// would otherwise leave the message queued for ever: only an attempt's
// record expires a message. The run may have sent it: its recipients
// still waiting are named as possible duplicates. The content is deleted,
// as for any finished message.
//
// A run whose context has ended is past River's JobTimeout: River may
// have rescued its job and given the message to a run that is sending it
// now, which the row cannot show (a run writes nothing before its
// record). Such a run leaves the message to the next one.
func (ob *Outbox) expireAfterPanic(ctx context.Context, id string, run int) (expired bool) {
	defer func() {
		if recover() != nil {
			expired = false
		}
	}()
	if ctx.Err() != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ob.o.margin)
	defer cancel()
	r, err := loadRow(ctx, ob.eng.pool(), id)
	now := time.Now()
	if err != nil || r.state.finished() || now.Before(r.expiresAt) {
		return false
	}
	// Numbered as start numbers an attempt: after those of the runs
	// between the last one accounted for and this one, lest a late
	// record of one of them take this attempt's number.
	lost := 0
	if r.runsKnown && run > r.jobRuns {
		lost = run - r.jobRuns - 1
	}
	a := &Attempt{ID: id, Number: r.attempts + lost + 1, Started: now, Finished: now, State: Expired,
		Error: "the delivery panicked; see the outbox's log", PossibleDuplicates: ob.waiting(r)}
	t, err := ob.eng.begin(ctx)
	if err != nil {
		return false
	}
	defer func() { _ = t.rollback(ctx) }()
	n, err := t.exec(ctx, `UPDATE mailsec_outbox_message SET state = $1, finished_at = $2, in_flight_at = NULL, envelope = NULL, problem = $3, attempts = $4, job_runs = $5
WHERE id = $6 AND attempts = $7 AND state IN ('queued', 'sending')`,
		string(Expired), now.UnixMicro(), "the delivery panicked, and the message has expired", a.Number, run, id, r.attempts)
	if err != nil || n != 1 {
		return false
	}
	if _, err := t.exec(ctx, sqlDeleteChunks, id); err != nil {
		return false
	}
	if err := ob.insertAttempt(ctx, t, a); err != nil {
		return false
	}
	if err := t.commit(ctx); err != nil {
		return false
	}
	ob.report(ctx, a, nil)
	return true
}

// waiting returns the recipients of the message in r that no attempt has
// settled: those its progress says are pending, or, before any attempt
// was recorded, those its envelope names. It returns nil when neither
// opens (nor when opening them panics).
func (ob *Outbox) waiting(r *row) (to []string) {
	defer func() {
		if recover() != nil {
			to = nil
		}
	}()
	prog, err := ob.openProgress(r.id, r.progress)
	if err != nil {
		return nil
	}
	if len(prog.Recipients) == 0 {
		sm, err := ob.openEnvelope(r.id, r.envelope)
		if err != nil {
			return nil
		}
		return sm.recipients()
	}
	for _, rp := range prog.Recipients {
		if rp.State == Pending {
			to = append(to, rp.Address)
		}
	}
	return to
}

// start reads message id for run number run of its job and says whether
// to attempt it now. When it is not to be attempted it returns a nil row
// and the error work returns: nil (finished, or cancelled and cleaned up),
// or a JobSnooze until it is due.
//
// Nothing marks a message in flight before an attempt: River committed the
// run's start before the job reached this worker, and the message's
// job_runs says how many runs the outbox accounted for. A run beyond the
// next one means that a run in between neither recorded an attempt nor
// ended having sent nothing: its worker died, or its record was lost, and
// the recipients it tried may have the message (leftInFlight). lost
// counts such runs, each an attempt. A run that sends nothing (the message
// not due yet) accounts for itself, so that it is never taken for one that
// died.
//
// A message queued before runs were counted (runsKnown false), or left in
// flight by an attempt made before that (state Sending), has its runs
// accounted for first, committed before anything is sent.
func (ob *Outbox) start(ctx context.Context, id string, run int, now time.Time) (r *row, lost int, leftInFlight bool, err error) {
	r, err = ob.readForRun(ctx, id)
	due, ret := ob.due(id, r, err, now)
	if !due {
		if r != nil && run > 0 && isSnooze(ret) {
			// This run ends having sent nothing: account for it, and for
			// it alone (a run before it that died stays unaccounted). A
			// failure is only a run the next one takes for a dead one.
			_, _ = ob.noteRun(ctx, r, r.accountedWith(run))
		}
		return nil, 0, false, ret
	}
	switch {
	case run <= 0:
		// River's count could not be read: every run may follow one that
		// died.
		leftInFlight = true
	case !r.runsKnown || r.state == Sending || run <= r.jobRuns:
		// Counted from this run on: this one unaccounted for, until it
		// records its attempt. An attempt that left the message Sending
		// counted itself. A run numbered within the runs accounted for
		// follows one whose late end set River's count back (a snooze
		// merges its count into the job's metadata whatever the job's
		// state): which runs died can no longer be told.
		setBack := r.runsKnown && run <= r.jobRuns
		ok, err := ob.noteRun(ctx, r, run-1)
		if err != nil {
			return nil, 0, false, fmt.Errorf("outbox: starting an attempt at message %s: %w", id, err)
		}
		if !ok {
			return nil, 0, false, river.JobSnooze(time.Second) // changed meanwhile: look again
		}
		leftInFlight = r.state == Sending || setBack
		r.jobRuns, r.runsKnown = run-1, true
	default:
		lost = max(run-r.jobRuns-1, 0)
		leftInFlight = lost > 0
	}
	return r, lost, leftInFlight, nil
}

// accountedWith is the row's count of runs accounted for with one more,
// run, that sent nothing: one more than it was, so that runs before it
// that died stay unaccounted for (start counts them as lost from the
// gap). A row that counted no runs yet counts the runs up to run.
func (r *row) accountedWith(run int) int {
	if !r.runsKnown {
		return run
	}
	// Never more runs than River started (its count set back).
	return min(r.jobRuns+1, run)
}

// readForRun reads message id's row for a run, trying again for a while
// when the database does not answer: a run that ends without reading it
// is one the next run cannot tell from a dead one. On Postgres the reads
// of runs that start together are one statement.
func (ob *Outbox) readForRun(ctx context.Context, id string) (*row, error) {
	deadline := time.Now().Add(ob.o.margin)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		r, err := ob.eng.readRow(ctx, id)
		if err == nil || errors.Is(err, sql.ErrNoRows) || time.Now().Add(wait).After(deadline) {
			return r, err
		}
		select {
		case <-ctx.Done():
			return r, err
		case <-time.After(wait):
		}
	}
}

// noteRun records that the job's first runs runs are accounted for, when
// the row is still as r says. It reports whether it was.
func (ob *Outbox) noteRun(ctx context.Context, r *row, runs int) (bool, error) {
	was := -1
	if r.runsKnown {
		was = r.jobRuns
	}
	var n int64
	err := ob.eng.inTx(ctx, func(ctx context.Context, t txn) error {
		var err error
		n, err = t.exec(ctx, sqlNoteRun, runs, r.id, r.attempts, string(r.state), was)
		return err
	})
	return n == 1, err
}

func isSnooze(err error) bool {
	var s *river.JobSnoozeError
	return errors.As(err, &s)
}

// due reports whether the message in r (read with err) is to be attempted
// at now. When it is not, ret is what work returns: nil for a message
// finished, or cancelled and cleaned up (err sql.ErrNoRows); a JobSnooze
// until it is due; err, when the message could not be read.
func (ob *Outbox) due(id string, r *row, err error, now time.Time) (due bool, ret error) {
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil // cancelled and cleaned up
	case err != nil:
		return false, fmt.Errorf("outbox: reading message %s: %w", id, err)
	case r.state.finished():
		return false, nil
	case r.state == Queued && r.nextAt.After(now.Add(time.Second)):
		return false, river.JobSnooze(r.nextAt.Sub(now))
	case r.state == Sending && r.inFlightAt.Add(ob.o.rescueAfter).After(now):
		// Marked in flight by an attempt of an earlier version of the
		// outbox, whose worker may still be at it: wait until its lease
		// is over, as River's rescue does.
		return false, river.JobSnooze(r.inFlightAt.Add(ob.o.rescueAfter).Sub(now))
	}
	return true, nil
}

// attempt makes one attempt at the message in r, in run number run of its
// job. leftInFlight says that an earlier run may have sent it without
// recording what happened: the recipients it tried may have the message;
// lost counts such runs (attempts) r does not.
func (ob *Outbox) attempt(ctx context.Context, r *row, run, lost int, leftInFlight bool) error {
	a := &Attempt{ID: r.id, Number: r.attempts + lost + 1, Started: time.Now()}
	prog, sm, err := ob.openMessage(r)
	if err != nil {
		return ob.unopened(ctx, r, run, a, err)
	}

	var to []string
	dup := map[string]bool{}
	for i := range prog.Recipients {
		rp := &prog.Recipients[i]
		if rp.State != Pending {
			continue
		}
		to = append(to, rp.Address)
		if rp.Unknown || leftInFlight {
			dup[rp.Address] = true
			a.PossibleDuplicates = append(a.PossibleDuplicates, rp.Address)
		}
	}
	// Before the first Receipt the recipients are known only as the
	// message writes them.
	allDup := prog.allMayHave(leftInFlight)
	if allDup {
		a.PossibleDuplicates = sm.recipients()
	}

	ds := &deliveryState{}
	dctx, cancel := context.WithTimeout(ctx, ob.o.deliveryTimeout)
	m := ob.message(dctx, r.id, sm, ds)
	if ob.beforeSend != nil {
		ob.beforeSend(r.id)
	}
	var rec *mailsec.Receipt
	var sendErr error
	if len(prog.Recipients) == 0 {
		rec, sendErr = ob.sender.Send(dctx, m)
	} else {
		rec, sendErr = ob.sender.SendTo(dctx, m, to)
	}
	cancel()
	a.Finished = time.Now()
	a.Receipt = rec
	a.Interrupted = ctx.Err() != nil
	if rec != nil && allDup {
		a.PossibleDuplicates = nil
		for _, rr := range rec.Recipients {
			dup[rr.Address] = true
			a.PossibleDuplicates = append(a.PossibleDuplicates, rr.Address)
		}
	}

	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), ob.o.margin)
	defer rcancel()
	if oerr := ds.err(); oerr != nil {
		// Content that does not open is never sent: the transaction was
		// abandoned before the end of the message. A chunk deleted by
		// Cancel meanwhile is not tampering.
		if cur, err := loadRow(rctx, ob.eng.pool(), r.id); err == nil && cur.state == Cancelled {
			oerr = nil
		}
		if oerr != nil {
			return ob.unopened(rctx, r, run, a, oerr)
		}
	}
	ds.temporary(rec)
	_, timed := ctx.Deadline()
	return ob.record(rctx, r, run, prog, a, &outcome{rec: rec, sendErr: sendErr, dup: dup, allDup: allDup, ownsJob: timed && !a.Interrupted})
}

// allMayHave reports that no attempt has reported on the recipients yet,
// and that every one of them may have the message: from a run that died
// before this attempt (leftInFlight), or from one that died before an
// attempt that sent nothing.
func (prog *progress) allMayHave(leftInFlight bool) bool {
	return len(prog.Recipients) == 0 && (leftInFlight || prog.Unknown)
}

// outcome is what an attempt's Send returned.
type outcome struct {
	rec     *mailsec.Receipt
	sendErr error
	dup     map[string]bool // recipients sent to although they may have it
	// allDup: every recipient may have the message from a run that died
	// before any attempt reported on them.
	allDup bool
	// ownsJob: the run's context had a deadline (River's JobTimeout) that
	// had not passed when Send returned. River rescues a job only two
	// margins after that deadline, so the job stays the run's for longer
	// than the attempt's record may take (see lateRecords).
	ownsJob bool
}

// apply merges the attempt's outcome into prog and returns the message's
// next attempt and state.
func (ob *Outbox) apply(prog *progress, r *row, a *Attempt, o *outcome) (time.Time, State) {
	ob.merge(prog, a, o)
	return ob.decide(prog, r, a, o.sendErr)
}

// openMessage opens a row's progress and envelope for an attempt. The
// envelope is opened in the row's own memory, which the message's text
// and HTML then share, and r.envelope is nil after: a delivery copies a
// message's content no more than it must.
func (ob *Outbox) openMessage(r *row) (*progress, *storedMessage, error) {
	prog, err := ob.openProgress(r.id, r.progress)
	if err != nil {
		return nil, nil, err
	}
	sealed := r.envelope
	r.envelope = nil
	sm, err := ob.openEnvelopeIn(true, r.id, sealed)
	if err != nil {
		return nil, nil, err
	}
	return prog, sm, nil
}

// openProgress opens message id's sealed progress record.
func (ob *Outbox) openProgress(id string, sealed []byte) (*progress, error) {
	var prog progress
	if err := ob.openJSON(id, "progress", sealed, &prog); err != nil {
		return nil, err
	}
	return &prog, nil
}

// openEnvelope opens message id's sealed envelope; a message whose
// content was deleted has none, which does not open either.
func (ob *Outbox) openEnvelope(id string, sealed []byte) (*storedMessage, error) {
	return ob.openEnvelopeIn(false, id, sealed)
}

// openEnvelopeIn is openEnvelope, consuming sealed when inPlace: it is
// opened in its own memory (keyring.consume), and the text and HTML
// share it (decodeEnvelopeAs).
func (ob *Outbox) openEnvelopeIn(inPlace bool, id string, sealed []byte) (*storedMessage, error) {
	if sealed == nil {
		return nil, &OpenError{ID: id, What: "envelope", Err: ErrTampered}
	}
	b, err := ob.keys.openIn(inPlace, sealed, aad("envelope", id, ""), id, "envelope")
	if err != nil {
		return nil, err
	}
	sm, err := decodeEnvelopeAs(b, inPlace)
	if err != nil {
		return nil, &OpenError{ID: id, What: "envelope", Err: ErrTampered}
	}
	return sm, nil
}

// openJSON opens the sealed value what of message id into v: a value that
// opens but does not decode was not written by the outbox.
func (ob *Outbox) openJSON(id, what string, sealed []byte, v any) error {
	b, err := ob.keys.open(sealed, aad(what, id, ""), id, what)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return &OpenError{ID: id, What: what, Err: ErrTampered}
	}
	return nil
}

// recipients lists the message's recipients as it names them.
func (sm *storedMessage) recipients() []string {
	return slices.Concat(sm.To, sm.Cc, sm.Bcc)
}

// unopened handles a message that did not open. One sealed under a key
// the outbox lacks waits for it (until its MaxAge); one that fails
// authentication is never sent: it fails, and the failure is logged and
// recorded.
func (ob *Outbox) unopened(ctx context.Context, r *row, run int, a *Attempt, err error) error {
	a.Finished = time.Now()
	a.Error = err.Error()
	var oe *OpenError
	errors.As(err, &oe)
	if errors.Is(err, ErrUnknownKey) {
		ob.log.LogAttrs(ctx, slog.LevelError, "mailsec outbox: message sealed under a key the outbox was not given; it waits for the key",
			slog.String("id", r.id), slog.String("key_id", oe.KeyID))
		next := a.Finished.Add(ob.backoff(a.Number))
		if !a.Finished.Before(r.expiresAt) {
			return ob.finishUnopened(ctx, r, run, a, Expired, "sealed under key "+oe.KeyID+", not configured, until the message expired")
		}
		// Nothing was attempted: the message is left as it was, this run
		// (alone) accounted for, due again when the key may be there.
		if _, err := ob.eng.pool().exec(ctx, `UPDATE mailsec_outbox_message SET next_at = $1, problem = $2, job_runs = $3
WHERE id = $4 AND attempts = $5 AND state = $6`,
			earliest(next, r.expiresAt).UnixMicro(), "sealed under key "+oe.KeyID+", not configured", r.accountedWith(run),
			r.id, r.attempts, string(r.state)); err != nil {
			return fmt.Errorf("outbox: message %s: %w", r.id, err)
		}
		return river.JobSnooze(max(time.Until(earliest(next, r.expiresAt)), 0))
	}
	ob.log.LogAttrs(ctx, slog.LevelError, "mailsec outbox: stored message does not authenticate; it is not sent",
		slog.String("id", r.id), slog.String("part", oe.What))
	return ob.finishUnopened(ctx, r, run, a, Failed, "stored "+oe.What+" does not authenticate: tampered with; not sent")
}

// finishUnopened ends a message that could not be opened, keeping its
// sealed rows as evidence, and records the attempt.
func (ob *Outbox) finishUnopened(ctx context.Context, r *row, run int, a *Attempt, state State, problem string) error {
	a.State = state
	now := time.Now().UnixMicro()
	t, err := ob.eng.begin(ctx)
	if err != nil {
		return fmt.Errorf("outbox: message %s: %w", r.id, err)
	}
	defer func() { _ = t.rollback(ctx) }()
	if _, err := t.exec(ctx, `UPDATE mailsec_outbox_message SET state = $1, finished_at = $2, in_flight_at = NULL, problem = $3, attempts = $4, job_runs = $5
WHERE id = $6 AND state IN ('queued', 'sending')`, string(state), now, problem, a.Number, run, r.id); err != nil {
		return fmt.Errorf("outbox: message %s: %w", r.id, err)
	}
	if err := ob.insertAttempt(ctx, t, a); err != nil {
		return err
	}
	if err := t.commit(ctx); err != nil {
		return fmt.Errorf("outbox: message %s: %w", r.id, err)
	}
	ob.report(ctx, a, nil)
	return nil
}

func (ob *Outbox) insertAttempt(ctx context.Context, q querier, a *Attempt) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = q.exec(ctx, sqlInsertAttempt, a.ID, a.Number, ob.keys.seal(b, aad("attempt", a.ID, strconv.Itoa(a.Number))))
	if err != nil {
		return fmt.Errorf("outbox: recording attempt %d of message %s: %w", a.Number, a.ID, err)
	}
	return nil
}

// merge writes what the Send did into the message's progress.
func (ob *Outbox) merge(prog *progress, a *Attempt, o *outcome) {
	rec, sendErr, dup := o.rec, o.sendErr, o.dup
	if rec == nil {
		// Nothing was attempted: the whole message failed before any
		// delivery (a Sender whose configuration changed since Enqueue,
		// say). Its recipients stay pending when a retry can help. It
		// sent nothing: none is a duplicate of this attempt, and those
		// that may have the message from an earlier one still may.
		a.PossibleDuplicates = nil
		if sendErr != nil {
			a.Error = sendErr.Error()
		}
		if len(prog.Recipients) == 0 {
			// No recipient known yet; decide goes by a.Error.
			prog.Unknown = prog.Unknown || o.allDup
			return
		}
		for i := range prog.Recipients {
			rp := &prog.Recipients[i]
			if rp.State != Pending {
				continue
			}
			rp.Attempts++
			rp.Error = a.Error
			rp.Unknown = rp.Unknown || dup[rp.Address]
			rp.MayHave = rp.MayHave || rp.Unknown
			if !a.Interrupted && !mailsec.IsTemporary(sendErr) {
				rp.State = Refused
			}
		}
		return
	}
	// reached: the recipients this attempt may have delivered to.
	reached := map[string]bool{}
	for _, rr := range rec.Recipients {
		i := slices.IndexFunc(prog.Recipients, func(rp rcptProgress) bool { return rp.Address == rr.Address })
		if i < 0 {
			prog.Recipients = append(prog.Recipients, rcptProgress{Address: rr.Address, Kind: rr.Kind, State: Pending})
			i = len(prog.Recipients) - 1
		}
		rp := &prog.Recipients[i]
		rp.Attempts++
		// had: the recipient may have the message from before.
		had := rp.Unknown || dup[rr.Address]
		unknown := !rr.Accepted && transport.OutcomeUnknown(rr.Err)
		rp.Error = ""
		switch {
		case rr.Accepted:
			rp.State = Accepted
		case a.Interrupted && !hasReply(rr.Err):
			rp.Error = "interrupted"
		case rr.Failure != nil && rr.Failure.Temporary:
			rp.Error = errText(rr.Err)
		default:
			rp.State = Refused
			rp.Error = errText(rr.Err)
			unknown = false
		}
		// Settled by an acceptance or a refusal; otherwise the recipient
		// may have it from this attempt or from before, and the next
		// attempt that sends to it flags it.
		rp.Unknown = rp.State == Pending && (had || unknown)
		rp.MayHave = rp.MayHave || had || unknown
		if rr.Accepted || unknown {
			reached[rr.Address] = true
			rp.sentWith(rr.EnvelopeID)
			rp.PossibleDuplicate = rp.PossibleDuplicate || had
		}
	}
	prog.Unknown = false // the recipients carry it now
	// A possible duplicate of this attempt is a recipient it may have
	// delivered to.
	a.PossibleDuplicates = slices.DeleteFunc(a.PossibleDuplicates, func(addr string) bool { return !reached[addr] })
	if len(a.PossibleDuplicates) == 0 {
		a.PossibleDuplicates = nil
	}
}

// hasReply reports whether err carries a server's reply: a verdict that
// stands even when the attempt was interrupted.
func hasReply(err error) bool {
	var se *mailsec.SMTPError
	return errors.As(err, &se)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// decide returns the message's next attempt and state after attempt a.
func (ob *Outbox) decide(prog *progress, r *row, a *Attempt, sendErr error) (time.Time, State) {
	now := a.Finished
	var accepted, pending, refused int
	for _, rp := range prog.Recipients {
		switch rp.State {
		case Accepted:
			accepted++
		case Pending:
			pending++
		default:
			refused++
		}
	}
	if len(prog.Recipients) == 0 {
		// The attempt failed as a whole before any recipient was known.
		if a.Interrupted {
			return now, Queued
		}
		if !mailsec.IsTemporary(sendErr) {
			return time.Time{}, Failed
		}
		pending = 1
	}
	switch {
	case pending == 0 && refused == 0:
		return time.Time{}, Delivered
	case pending == 0 && accepted > 0:
		return time.Time{}, PartlyDelivered
	case pending == 0:
		return time.Time{}, Failed
	case a.Interrupted:
		return now, Queued
	case !now.Before(r.expiresAt):
		for i := range prog.Recipients {
			if prog.Recipients[i].State == Pending {
				prog.Recipients[i].State = ExpiredRecipient
			}
		}
		if accepted > 0 {
			return time.Time{}, PartlyDelivered
		}
		return time.Time{}, Expired
	}
	if overLimitOnly(prog, a.Receipt) {
		// The server took what one transaction may carry: the rest go in
		// the next one now, as an MTA does, rather than after a backoff.
		// Each such attempt delivers to one recipient at least, so this
		// ends.
		return now, Queued
	}
	return earliest(now.Add(ob.backoff(a.Number)), r.expiresAt), Queued
}

// overLimitOnly reports whether the attempt with receipt rec had a
// recipient accepted, and deferred every recipient still pending for
// being beyond the server's limit on recipients in one transaction.
func overLimitOnly(prog *progress, rec *mailsec.Receipt) bool {
	if rec == nil || !slices.ContainsFunc(rec.Recipients, func(rr mailsec.RecipientReceipt) bool { return rr.Accepted }) {
		return false
	}
	for _, rp := range prog.Recipients {
		if rp.State != Pending {
			continue
		}
		i := slices.IndexFunc(rec.Recipients, func(rr mailsec.RecipientReceipt) bool { return rr.Address == rp.Address })
		if i < 0 || !overRecipientLimit(rec.Recipients[i].Err) {
			return false
		}
	}
	return true
}

// overRecipientLimit reports a refusal of RCPT for too many recipients
// (RFC 5321 section 4.5.3.1.10): 452, or 552 from a server that follows
// RFC 821, with no enhanced code or X.5.3 (RFC 3463). A 452 that says
// something else (4.3.1, the server out of storage; 4.2.2, a full
// mailbox) is not one: a transaction of fewer recipients does not help.
func overRecipientLimit(err error) bool {
	var se *mailsec.SMTPError
	if !errors.As(err, &se) || se.Command != "RCPT" || (se.Code != 452 && se.Code != 552) {
		return false
	}
	ec := se.EnhancedCode
	return ec == (mailsec.EnhancedCode{}) || (ec[1] == 5 && ec[2] == 3)
}

// backoff is the wait after the n-th attempt: MinBackoff doubled n-1
// times, at most MaxBackoff, drawn at random from its upper half.
func (ob *Outbox) backoff(n int) time.Duration {
	d := ob.o.minBackoff
	for i := 1; i < n && d < ob.o.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, ob.o.maxBackoff)
	return d/2 + rand.N(d/2+1)
}

// record writes the attempt's outcome in one transaction: the message's
// state and progress, the attempt's record, the job's runs accounted for,
// and, once it is finished, the deletion of its content. The outcome is in
// hand and the server's replies cannot be had again: a transaction that
// fails (the database restarting, a connection lost) is tried again until
// ctx ends, rather than leave the run unaccounted for, to be taken for a
// dead one. Trying again is safe: the transaction writes the same rows to
// the same values.
func (ob *Outbox) record(ctx context.Context, r *row, run int, prog *progress, a *Attempt, o *outcome) error {
	next, state := ob.apply(prog, r, a, o)
	pb, err := json.Marshal(prog)
	if err != nil {
		return err
	}
	rec := &recording{r: r, run: run, prog: prog, pb: pb, a: a, o: o, state: state, next: next}
	if ob.later.take(ctx, rec, ob.recordAndReport) {
		return nil
	}
	if err := ob.recordAndReport(ctx, rec); err != nil {
		return err
	}
	switch a.State {
	case Queued:
		return river.JobSnooze(max(time.Until(rec.next), 0))
	case Sending:
		// Taken over by another run: the job is not ended while its
		// message may be unfinished (River would complete it, and the
		// message would have no job left). An error, not a snooze: when
		// the job is no longer this run's, River leaves it as it is (a
		// snooze would still merge this run's stale snooze count into
		// its metadata, setting the run count back).
		return errTakenOver
	}
	return nil
}

// recordAndReport records the attempt (recordTx), trying again until ctx
// ends, and then reports it (OnReceipt, the log).
func (ob *Outbox) recordAndReport(ctx context.Context, rec *recording) error {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		err := ob.recordTx(ctx, rec)
		if err == nil {
			break
		}
		ob.log.LogAttrs(ctx, slog.LevelWarn, "mailsec outbox: recording an attempt failed; trying again", slog.String("id", rec.r.id),
			slog.Int("attempt", rec.a.Number), slog.String("error", err.Error()))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
	ob.report(ctx, rec.a, rec.prog)
	return nil
}

// errTakenOver ends a run whose message another run took over.
var errTakenOver = errors.New("outbox: another run of the job took the message over during this attempt; this attempt's record is kept")

// mergeTakenOver applies to prog what an attempt whose message another
// run took over learnt: recipients accepted, or that may have the message.
// It never undoes what prog says. It reports whether prog changed.
func mergeTakenOver(prog *progress, o *outcome) bool {
	changed := false
	for _, rr := range o.rec.Recipients {
		i := slices.IndexFunc(prog.Recipients, func(rp rcptProgress) bool { return rp.Address == rr.Address })
		if i < 0 {
			prog.Recipients = append(prog.Recipients, rcptProgress{Address: rr.Address, Kind: rr.Kind, State: Pending})
			i = len(prog.Recipients) - 1
			changed = true
		}
		rp := &prog.Recipients[i]
		reached := rr.Accepted || transport.OutcomeUnknown(rr.Err)
		if o.dup[rr.Address] && reached && !rp.PossibleDuplicate {
			rp.PossibleDuplicate, changed = true, true
		}
		if rp.State != Pending {
			continue
		}
		switch {
		case rr.Accepted:
			rp.State, rp.Error, rp.Unknown = Accepted, "", false
		case transport.OutcomeUnknown(rr.Err):
			rp.Unknown, rp.MayHave = true, true
		default:
			continue
		}
		rp.sentWith(rr.EnvelopeID)
		changed = true
	}
	return changed
}

// recording is an attempt's outcome on its way to the database: prog (pb
// as JSON) with the outcome applied, and what it makes of the message.
type recording struct {
	r     *row
	run   int
	prog  *progress
	pb    []byte
	a     *Attempt
	o     *outcome
	state State
	next  time.Time
}

func (rec *recording) finished() sql.NullInt64 {
	if rec.state.finished() {
		return sql.NullInt64{Int64: rec.a.Finished.UnixMicro(), Valid: true}
	}
	return sql.NullInt64{}
}

// recordTx is record's transaction; it sets a.State and a.Next. When the
// message changed since the attempt read it (a notification ingested, the
// message cancelled, another run's attempt recorded), it reads it again.
func (ob *Outbox) recordTx(ctx context.Context, rec *recording) error {
	sealedProg := ob.keys.seal(rec.pb, aad("progress", rec.r.id, ""))
	if ob.eng.postgres() {
		if ok, err := ob.recordPostgres(ctx, rec, sealedProg); ok || err != nil {
			return err
		}
	}
	return ob.eng.inTx(ctx, func(ctx context.Context, t txn) error {
		return ob.recordIn(ctx, t, rec, sealedProg)
	})
}

// recordPostgres records the attempt as one statement, in the usual case:
// the message as the attempt read it, not cancelled, and its row held by
// no other transaction. The records of attempts that end together are one
// statement (see newPGRecords). It reports false, having changed nothing,
// in the other cases, which recordIn handles in a transaction of its own.
func (ob *Outbox) recordPostgres(ctx context.Context, rec *recording, sealedProg []byte) (bool, error) {
	a := rec.a
	a.State, a.Next = rec.state, rec.next
	if rec.state.finished() {
		a.Next = time.Time{}
	}
	b, err := json.Marshal(a)
	if err != nil {
		return false, err
	}
	ok, err := ob.eng.recordRow(ctx, pgRecord{
		id: rec.r.id, state: string(rec.state), finished: rec.finished(), next: latest(rec.next, a.Finished).UnixMicro(),
		progress: sealedProg, n: a.Number, attempt: ob.keys.seal(b, aad("attempt", a.ID, strconv.Itoa(a.Number))),
		run: rec.run, wasProgress: rec.r.progress, wasAttempts: rec.r.attempts,
	})
	if err != nil {
		return false, fmt.Errorf("outbox: recording attempt %d of message %s: %w", a.Number, rec.r.id, err)
	}
	return ok, nil
}

// sqlLoadRowLocked is sqlLoadRow holding the row until the transaction
// ends, on Postgres (a SQLite transaction holds the whole database).
const sqlLoadRowLocked = sqlLoadRow + ` FOR UPDATE`

// recordIn is record's transaction's work, in t.
func (ob *Outbox) recordIn(ctx context.Context, t txn, rec *recording, sealedProg []byte) error {
	r, a := rec.r, rec.a
	q := sqlRecord
	if rec.state.finished() {
		q = sqlRecordDone
	}
	var got string
	err := t.queryRow(ctx, q, string(rec.state), rec.finished(), latest(rec.next, a.Finished).UnixMicro(), sealedProg, r.id, a.Number, rec.run, r.progress, r.attempts).Scan(&got)
	if errors.Is(err, sql.ErrNoRows) {
		// Changed since the attempt read it: read it again.
		load := sqlLoadRow
		if ob.eng.postgres() {
			load = sqlLoadRowLocked
		}
		cur, err := scanRow(t.queryRow(ctx, load, r.id))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			ob.log.LogAttrs(ctx, slog.LevelWarn, "mailsec outbox: message deleted during an attempt", slog.String("id", r.id), slog.Int("attempt", a.Number))
			a.State = Cancelled
			return nil
		case err != nil:
			return fmt.Errorf("outbox: recording attempt %d of message %s: %w", a.Number, r.id, err)
		case cur.attempts == a.Number && cur.runsKnown && cur.jobRuns == rec.run:
			// Recorded already: a commit whose answer was lost.
			a.State, a.Next = cur.state, time.Time{}
			if !cur.state.finished() {
				a.Next = rec.next
			}
			return nil
		case cur.attempts != r.attempts:
			// Taken over by another run meanwhile (this one outlived its
			// lease): keep this attempt's record, leave the message to it.
			// What the server told this attempt still stands: a recipient
			// it accepted, or may have taken, is so in the progress as it
			// is now (never the other way), lest a later attempt send to
			// it again unflagged.
			ob.log.LogAttrs(ctx, slog.LevelWarn, "mailsec outbox: message taken over during an attempt", slog.String("id", r.id), slog.Int("attempt", a.Number))
			a.State = Sending
			if !cur.state.finished() && rec.o.rec != nil {
				prog, err := ob.openProgress(r.id, cur.progress)
				if err != nil {
					return err
				}
				if mergeTakenOver(prog, rec.o) {
					pb, err := json.Marshal(prog)
					if err != nil {
						return err
					}
					if _, err := t.exec(ctx, `UPDATE mailsec_outbox_message SET progress = $1 WHERE id = $2 AND attempts = $3 AND progress = $4`,
						ob.keys.seal(pb, aad("progress", r.id, "")), r.id, cur.attempts, cur.progress); err != nil {
						return fmt.Errorf("outbox: recording attempt %d of message %s: %w", a.Number, r.id, err)
					}
				}
			}
			return ob.insertAttempt(ctx, t, a)
		}
		if !bytes.Equal(cur.progress, r.progress) {
			// A notification was ingested meanwhile: apply the outcome to
			// the progress as it is now.
			prog, err := ob.openProgress(r.id, cur.progress)
			if err != nil {
				return err
			}
			rec.next, rec.state = ob.apply(prog, r, a, rec.o)
			if rec.pb, err = json.Marshal(prog); err != nil {
				return err
			}
			rec.prog = prog
			sealedProg = ob.keys.seal(rec.pb, aad("progress", r.id, ""))
			q = sqlRecord
			if rec.state.finished() {
				q = sqlRecordDone
			}
		}
		err = t.queryRow(ctx, q, string(rec.state), rec.finished(), latest(rec.next, a.Finished).UnixMicro(), sealedProg, r.id, a.Number, rec.run, cur.progress, r.attempts).Scan(&got)
		if err != nil {
			return fmt.Errorf("outbox: recording attempt %d of message %s: %w", a.Number, r.id, err)
		}
	} else if err != nil {
		return fmt.Errorf("outbox: recording attempt %d of message %s: %w", a.Number, r.id, err)
	}
	a.State = State(got)
	if a.State.finished() {
		a.Next = time.Time{}
		if _, err := t.exec(ctx, sqlDeleteChunks, r.id); err != nil {
			return fmt.Errorf("outbox: deleting the content of message %s: %w", r.id, err)
		}
	} else {
		a.Next = rec.next
	}
	return ob.insertAttempt(ctx, t, a)
}

// report logs an attempt and hands it to OnReceipt.
func (ob *Outbox) report(ctx context.Context, a *Attempt, prog *progress) {
	attrs := []slog.Attr{
		slog.String("id", a.ID), slog.Int("attempt", a.Number), slog.String("state", string(a.State)),
	}
	if a.Receipt != nil {
		attrs = append(attrs, slog.String("message_id", a.Receipt.MessageID))
	}
	level := slog.LevelInfo
	if prog != nil {
		var acc, pend, ref int
		for _, rp := range prog.Recipients {
			switch rp.State {
			case Accepted:
				acc++
			case Pending:
				pend++
			default:
				ref++
			}
		}
		attrs = append(attrs, slog.Int("accepted", acc), slog.Int("pending", pend), slog.Int("refused", ref))
		if pend > 0 || ref > 0 {
			level = slog.LevelWarn
		}
	} else {
		level = slog.LevelError
	}
	if n := len(a.PossibleDuplicates); n > 0 {
		attrs = append(attrs, slog.Int("possible_duplicates", n))
	}
	if a.Interrupted {
		attrs = append(attrs, slog.Bool("interrupted", true))
	}
	if !a.Next.IsZero() {
		attrs = append(attrs, slog.Time("next", a.Next))
	}
	ob.log.LogAttrs(ctx, level, "mailsec outbox attempt", attrs...)
	if ob.o.onReceipt == nil {
		return
	}
	// The run waits for OnReceipt only until ctx ends (the margin to
	// record the attempt): a run kept going past its lease is rescued by
	// River and run again, and its late end sets the job's count of runs
	// back.
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if v := recover(); v != nil {
				ob.log.LogAttrs(ctx, slog.LevelError, "mailsec outbox: Options.OnReceipt panicked", slog.String("id", a.ID),
					slog.String("panic", fmt.Sprintf("%T", v)), slog.String("stack", string(debug.Stack())))
			}
		}()
		ob.o.onReceipt(ctx, a)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		ob.log.LogAttrs(ctx, slog.LevelWarn, "mailsec outbox: Options.OnReceipt still running at the end of the attempt's margin; the run ends without it",
			slog.String("id", a.ID), slog.Int("attempt", a.Number))
	}
}

// deliveryState collects what went wrong reading stored content during an
// attempt.
type deliveryState struct {
	mu         sync.Mutex
	openErr    error
	readFailed bool
}

// temporary marks as temporary the failures of the recipients whose
// content could not be written because stored content could not be read
// for a reason other than tampering: a later attempt can send it.
func (d *deliveryState) temporary(rec *mailsec.Receipt) {
	d.mu.Lock()
	failed := d.readFailed
	d.mu.Unlock()
	if !failed || rec == nil {
		return
	}
	for i := range rec.Recipients {
		if rr := &rec.Recipients[i]; rr.Failure != nil && errors.Is(rr.Err, mailsec.ErrContent) {
			rr.Failure.Temporary = true
		}
	}
}

// fail records why stored content could not be read: an *OpenError
// (content that does not open, never sent), or another error (the
// attempt's deadline, Close, the database), which fails the attempt for
// now only.
func (d *deliveryState) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var oe *OpenError
	switch {
	case !errors.As(err, &oe):
		d.readFailed = true
	case d.openErr == nil:
		d.openErr = err
	}
}

func (d *deliveryState) err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.openErr
}

// message rebuilds the Message, its attachments read from their chunks.
func (ob *Outbox) message(ctx context.Context, id string, sm *storedMessage, ds *deliveryState) *mailsec.Message {
	m := &mailsec.Message{
		From: sm.From, Sender: sm.Sender, ReplyTo: sm.ReplyTo, To: sm.To, Cc: sm.Cc, Bcc: sm.Bcc,
		Subject: sm.Subject, Text: sm.Text, HTML: sm.HTML, Headers: sm.Headers,
		EnvelopeFrom: sm.EnvelopeFrom, RequireTLS: sm.RequireTLS, TLSRequiredNo: sm.TLSRequiredNo,
		DSN: sm.DSN, Date: sm.Date, MessageID: sm.MessageID, Reference: sm.Reference,
		ReportType: sm.ReportType,
	}
	conv := func(as []storedAttachment) []mailsec.Attachment {
		out := make([]mailsec.Attachment, len(as))
		for i, a := range as {
			out[i] = mailsec.Attachment{Filename: a.Filename, ContentType: a.ContentType, ContentID: a.ContentID,
				Content: &chunkReader{ctx: ctx, ob: ob, id: id, a: a, ds: ds}}
		}
		return out
	}
	m.Attachments, m.Inline = conv(sm.Attachments), conv(sm.Inline)
	return m
}

// chunkReader reads an attachment from its sealed chunks, one query per
// chunk, checking each. It seeks, so that a message that needs several
// deliveries reads it again.
type chunkReader struct {
	ctx context.Context
	ob  *Outbox
	id  string
	a   storedAttachment
	ds  *deliveryState
	pos int64
	buf []byte // the chunk holding pos, when loaded
	seq int    // buf's chunk number
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.pos >= c.a.Size {
		return 0, io.EOF
	}
	seq := int(c.pos / chunkSize)
	if c.buf == nil || c.seq != seq {
		if err := c.load(seq); err != nil {
			c.ds.fail(err)
			return 0, err
		}
	}
	n := copy(p, c.buf[c.pos-int64(seq)*chunkSize:])
	c.pos += int64(n)
	return n, nil
}

func (c *chunkReader) load(seq int) error {
	pos := strconv.Itoa(c.a.Part) + ":" + strconv.Itoa(seq)
	var data []byte
	err := c.ob.eng.pool().queryRow(c.ctx, `SELECT data FROM mailsec_outbox_chunk WHERE message_id = $1 AND part = $2 AND seq = $3`,
		c.id, c.a.Part, seq).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return &OpenError{ID: c.id, What: "chunk", Err: ErrTampered}
	}
	if err != nil {
		return err
	}
	plain, err := c.ob.keys.consume(data, aad("chunk", c.id, pos), c.id, "chunk")
	if err != nil {
		return err
	}
	want := min(chunkSize, c.a.Size-int64(seq)*chunkSize)
	if int64(len(plain)) != want {
		return &OpenError{ID: c.id, What: "chunk", Err: ErrTampered}
	}
	c.buf, c.seq = plain, seq
	return nil
}

func (c *chunkReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += c.pos
	case io.SeekEnd:
		offset += c.a.Size
	default:
		return 0, errors.New("outbox: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("outbox: negative position")
	}
	c.pos = offset
	return offset, nil
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
