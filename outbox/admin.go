package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/riverqueue/river/rivertype"

	"github.com/mailsec/mailsec"
)

// What an operator does with a queue: look at it (List), hurry a message
// (Retry), and deliver what is due and stop (RunDue). Cancel and Status
// are in status.go.

// ErrSending: Retry was called for a message an attempt is delivering now
// (or whose worker died during one, until another takes it up).
var ErrSending = errors.New("outbox: message is being sent")

// DefaultListLimit is how many messages List returns when
// ListOptions.Limit is zero.
const DefaultListLimit = 100

// ListOptions choose the messages List returns.
type ListOptions struct {
	// States keeps the messages in one of these states; none keeps all.
	States []State
	// Limit is the most messages returned, the newest first; zero means
	// DefaultListLimit.
	Limit int
}

// Summary is a message as List shows it: what the queue schedules it by,
// and how many recipients it has. It names no recipient and nothing of
// the content.
type Summary struct {
	// ID is the outbox's ID for the message.
	ID    string `json:"id"`
	State State  `json:"state"`
	// Enqueued is when Enqueue queued it; Next when the next attempt is
	// due (zero when finished); Finished when it finished.
	Enqueued time.Time `json:"enqueued"`
	Next     time.Time `json:"next,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// Attempts counts the attempts recorded: one under way counts once it
	// ends, one whose worker died with the next attempt's record.
	Attempts int `json:"attempts"`
	// Recipients counts the message's recipients (To, Cc and Bcc); zero
	// when its record does not open (Problem says why).
	Recipients int `json:"recipients"`
	// Problem says why the message could not be opened, when it could not.
	Problem string `json:"problem,omitempty"`
}

// Finished reports whether s is final: not Queued, not Sending.
func (s State) Finished() bool { return s.finished() }

var allStates = []State{Queued, Sending, Delivered, PartlyDelivered, Failed, Expired, Cancelled}

// ParseState returns the State named s ("queued", "partly delivered", ...;
// "partly-delivered" too, for command lines).
func ParseState(s string) (State, error) {
	st := State(strings.ReplaceAll(strings.TrimSpace(s), "-", " "))
	if !slices.Contains(allStates, st) {
		return "", &mailsec.ValidationError{Field: "State", Value: s,
			Reason: "not a message state (queued, sending, delivered, partly-delivered, failed, expired, cancelled)"}
	}
	return st, nil
}

// List returns the messages in the outbox, the newest first, at most
// o.Limit of them. For each it opens only the small sealed record of its
// recipients' progress, to count them, never its content. A record that
// does not open is listed with a Problem, not as an error. o may be nil.
func (ob *Outbox) List(ctx context.Context, o *ListOptions) ([]Summary, error) {
	if ob.isClosed() {
		return nil, ErrClosed
	}
	if o == nil {
		o = &ListOptions{}
	}
	limit := o.Limit
	switch {
	case limit < 0:
		return nil, &mailsec.ValidationError{Field: "ListOptions.Limit", Value: strconv.Itoa(limit), Reason: "negative; zero means the default"}
	case limit == 0:
		limit = DefaultListLimit
	}
	// A queued message whose job is attempting it reads as Sending (see
	// sqlRunningJob).
	q := `SELECT * FROM (SELECT id,
	CASE WHEN state = 'queued' AND id IN (SELECT args ->> 'id' FROM river_job WHERE ` + sqlRunningJob(ob.eng.postgres()) + `) THEN 'sending' ELSE state END AS shown,
	created_at, next_at, finished_at, attempts, progress, problem FROM mailsec_outbox_message) m`
	args := ob.runningArgs()
	if len(o.States) > 0 {
		from := len(args) + 1
		for _, s := range o.States {
			if !slices.Contains(allStates, s) {
				return nil, &mailsec.ValidationError{Field: "ListOptions.States", Value: string(s), Reason: "not a message state"}
			}
			args = append(args, string(s))
		}
		q += ` WHERE shown IN (` + placeholders(from, len(args)-from+1) + `)`
	}
	args = append(args, limit)
	q += ` ORDER BY created_at DESC, id DESC LIMIT $` + strconv.Itoa(len(args))
	rows, err := ob.eng.pool().query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("outbox: List: %w", err)
	}
	defer rows.Close()
	var out []Summary
	for rows.Next() {
		var s Summary
		var state string
		var created, next int64
		var finished sql.NullInt64
		var prog []byte
		var problem sql.NullString
		if err := rows.Scan(&s.ID, &state, &created, &next, &finished, &s.Attempts, &prog, &problem); err != nil {
			return nil, fmt.Errorf("outbox: List: %w", err)
		}
		s.State, s.Enqueued, s.Problem = State(state), micros(created), problem.String
		if !s.State.finished() {
			s.Next = micros(next)
		}
		if finished.Valid {
			s.Finished = micros(finished.Int64)
		}
		n, err := ob.recipientCount(s.ID, prog)
		if err != nil {
			if s.Problem == "" {
				s.Problem = err.Error()
			}
		} else {
			s.Recipients = n
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: List: %w", err)
	}
	return out, nil
}

// recipientCount opens a message's progress and counts its recipients:
// those an attempt has reported on, or, before the first attempt, those
// the message names.
func (ob *Outbox) recipientCount(id string, sealedProg []byte) (int, error) {
	prog, err := ob.openProgress(id, sealedProg)
	if err != nil {
		return 0, err
	}
	return max(len(prog.Recipients), prog.Count), nil
}

// Retry makes the queued message id due now: the wait it was in after a
// temporary failure (or for a missing key) is dropped, and the next
// process delivering from the outbox tries it at once. Its MaxAge is not
// extended, and a later failure waits as long as the attempt count says
// (the backoff does not start over). It fails with ErrNotFound for an
// unknown ID, ErrFinished for a finished message, and ErrSending for one
// an attempt is delivering now (a run of its delivery job that ends
// within a couple of seconds is waited for), or whose finished attempt
// may still be being recorded (on Postgres, for three margins after River
// completed its job). A message whose delivery job River ended is given
// a new one; the clean-up does that unasked (see the package
// documentation, When a worker dies).
func (ob *Outbox) Retry(ctx context.Context, id string) error {
	if ob.isClosed() {
		return ErrClosed
	}
	// A run of the message's job that has just recorded its attempt
	// stays "running" in River until River records how it ended, a few
	// milliseconds on: wait that long before saying an attempt is under
	// way.
	deadline := time.Now().Add(retryWait)
	for {
		err := ob.retryOnce(ctx, id)
		if !errors.Is(err, errJobRunning) {
			return err
		}
		if time.Now().Add(runDuePoll).After(deadline) {
			return fmt.Errorf("%w: %s", ErrSending, id)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("outbox: Retry: %w", ctx.Err())
		case <-time.After(runDuePoll):
		}
	}
}

// retryWait bounds how long Retry waits for a run of the message's job
// to end.
const retryWait = 2 * time.Second

// errJobRunning: the message's delivery job is running.
var errJobRunning = errors.New("outbox: delivery job running")

func (ob *Outbox) retryOnce(ctx context.Context, id string) error {
	t, err := ob.eng.begin(ctx)
	if err != nil {
		return fmt.Errorf("outbox: Retry: %w", err)
	}
	defer func() { _ = t.rollback(ctx) }()
	now := time.Now().UnixMicro()
	n, err := t.exec(ctx, `UPDATE mailsec_outbox_message SET next_at = $1 WHERE id = $2 AND state = 'queued'`, now, id)
	if err != nil {
		return fmt.Errorf("outbox: Retry: %w", err)
	}
	if n == 0 {
		var state string
		err := t.queryRow(ctx, `SELECT state FROM mailsec_outbox_message WHERE id = $1`, id).Scan(&state)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		case err != nil:
			return fmt.Errorf("outbox: Retry: %w", err)
		case State(state) == Sending:
			return fmt.Errorf("%w: %s", ErrSending, id)
		}
		return fmt.Errorf("%w: %s is %s", ErrFinished, id, state)
	}
	// The delivery job sleeps (River "scheduled") until the old time:
	// wake it in the same transaction.
	err = ob.eng.wakeJob(ctx, t, id)
	if errors.Is(err, errJobRunning) {
		return err
	}
	if err != nil {
		return fmt.Errorf("outbox: Retry: %w", err)
	}
	if err := t.commit(ctx); err != nil {
		return fmt.Errorf("outbox: Retry: %w", err)
	}
	return nil
}

// wakeJob makes the delivery job of message id available now. It fails
// with errJobRunning when the job is running: a message has one job at a
// time, so that two runs never attempt it at once.
func wakeJob[TTx any](ctx context.Context, e *riverEngine[TTx], t txn, id string) error {
	tx, ok := e.rawTx(t)
	if !ok {
		return errors.New("internal error: a transaction of another database")
	}
	jobs, running, err := liveJobs(ctx, t, e, id)
	if err != nil {
		return err
	}
	if running {
		return errJobRunning
	}
	for _, j := range jobs {
		if _, err := e.client.JobRetryTx(ctx, tx, j); err != nil {
			return fmt.Errorf("waking delivery job %d: %w", j, err)
		}
	}
	if len(jobs) > 0 {
		return nil
	}
	return replaceJob(ctx, e, t, id)
}

// sqlLiveJobStates are the states of a River job that River has not
// ended: it runs, or will.
const sqlLiveJobStates = `('available', 'pending', 'retryable', 'running', 'scheduled')`

// sqlJobOf is the condition that the River job j is the delivery job of
// message $2, given the job's kind ($1) too. On Postgres it is in the form
// River's GIN index on args serves; SQLite has no index on args, and
// reads the member (->>, SQLite 3.38 and later).
func sqlJobOf(postgres bool) string {
	if postgres {
		return `j.kind = $1 AND j.args @> jsonb_build_object('id', $2::text)`
	}
	return `j.kind = $1 AND j.args ->> 'id' = $2`
}

// sqlLiveJobs selects the delivery jobs of message $2 that River has not
// ended, each with its state; with recent, also one River completed after
// $3, as a running one.
func sqlLiveJobs(postgres, recent bool) string {
	if !recent {
		return `SELECT j.id, j.state FROM river_job j WHERE ` + sqlJobOf(postgres) + ` AND j.state IN ` + sqlLiveJobStates
	}
	return `SELECT j.id, CASE WHEN j.state IN ` + sqlLiveJobStates + ` THEN j.state::text ELSE 'running' END FROM river_job j
WHERE ` + sqlJobOf(postgres) + ` AND (j.state IN ` + sqlLiveJobStates + ` OR j.state = 'completed' AND j.finalized_at > $3)`
}

// liveJobs returns the delivery jobs of message id that River has not
// ended, and whether one of them is running. A job River completed less
// than e.recentlyEnded() ago counts as one running: the record of its
// run's attempt may be under way (lateRecords).
func liveJobs(ctx context.Context, t txn, e engine, id string) (jobs []int64, running bool, err error) {
	args := []any{deliverKind, id}
	d := e.recentlyEnded()
	if d > 0 {
		args = append(args, time.Now().Add(-d))
	}
	rows, err := t.query(ctx, sqlLiveJobs(e.postgres(), d > 0), args...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var j int64
		var state string
		if err := rows.Scan(&j, &state); err != nil {
			return nil, false, err
		}
		if state == string(rivertype.JobStateRunning) {
			running = true
		}
		jobs = append(jobs, j)
	}
	return jobs, running, rows.Err()
}

// replaceJob queues a new delivery job for message id, whose jobs River
// has all ended (or deleted), in t. Retry and the clean-up's sweep
// (requeueJobless) call it with the message's row locked and no live job
// found in t.
func replaceJob[TTx any](ctx context.Context, e *riverEngine[TTx], t txn, id string) error {
	// The new job's runs are counted from none. A run of the old job the
	// message did not account for (its worker died, and River's rescuer
	// discarded the job) may have sent it: the new job's first run is to
	// take it for one that died (a negative count: start's lost is
	// -job_runs). When the old job is gone too, that cannot be told, so
	// it does.
	lost := 1
	var attempt int
	var md []byte
	var runs sql.NullInt64
	metadata := "json(j.metadata)" // SQLite keeps it as JSONB
	if e.postgres() {
		metadata = "j.metadata"
	}
	err := t.queryRow(ctx, `SELECT j.attempt, `+metadata+`, m.job_runs FROM river_job j, mailsec_outbox_message m
WHERE `+sqlJobOf(e.postgres())+` AND m.id = $2 ORDER BY j.id DESC LIMIT 1`, deliverKind, id).Scan(&attempt, &md, &runs)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return err
	case runs.Valid:
		// The old job's runs: attempt plus snoozes (jobRuns counts the
		// run under way too, which an ended job has not).
		if n := jobRuns(&rivertype.JobRow{Attempt: attempt + 1, Metadata: md}) - 1; n >= 0 {
			lost = max(n-int(runs.Int64), 0)
		}
	}
	if _, err := t.exec(ctx, `UPDATE mailsec_outbox_message SET job_runs = $1 WHERE id = $2`, -lost, id); err != nil {
		return err
	}
	return e.insertJob(ctx, t, id)
}

// runDuePoll is how often RunDue looks at the queue.
const runDuePoll = 50 * time.Millisecond

// RunDue delivers what is due and returns when nothing is left to do now:
// it starts delivery (as Start does, if it was not started) and waits
// until no queued message is due and no attempt is under way, then
// returns the queue's Stats, whose Depth counts the messages left queued
// for later. Messages that fall due while it waits (a retry after a short
// backoff) are delivered too. A message whose worker died during an
// attempt counts as under way until it is taken up again (the rescue
// interval after the attempt started: 3.5 minutes with the default
// Options.DeliveryTimeout; see the package documentation), and
// RunDue then delivers it as well. Delivery goes on after RunDue returns,
// until Close; a command that delivers once calls Close next. When ctx
// ends first, RunDue returns ctx's error.
func (ob *Outbox) RunDue(ctx context.Context) (Stats, error) {
	if err := ob.Start(ctx); err != nil {
		return Stats{}, err
	}
	tick := time.NewTicker(runDuePoll)
	defer tick.Stop()
	for {
		st, err := ob.Stats(ctx)
		if err != nil {
			if ctx.Err() != nil {
				// The query was cut short by ctx: say so, whatever the
				// driver made of it.
				return st, fmt.Errorf("outbox: RunDue: %w", ctx.Err())
			}
			return st, err
		}
		if st.Due == 0 && st.Sending == 0 {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("outbox: RunDue: %d due, %d being sent: %w", st.Due, st.Sending, ctx.Err())
		case <-tick.C:
		}
	}
}
