package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailsec/mailsec"
)

// ErrNotFound: no message has the ID (or its status is past
// Options.ReceiptRetention).
var ErrNotFound = errors.New("outbox: no such message")

// ErrFinished: Cancel was called for a message that had already finished.
var ErrFinished = errors.New("outbox: message already finished")

// Status is what the outbox knows of a message.
type Status struct {
	// ID is the outbox's ID for the message.
	ID    string `json:"id"`
	State State  `json:"state"`
	// MessageID and Reference are the message's (Enqueue fixed the
	// Message-ID).
	MessageID string `json:"message_id"`
	Reference string `json:"reference,omitempty"`
	// Enqueued is when Enqueue queued it; Expires when a recipient still
	// deferred is given up on; Next when the next attempt is due (zero
	// when finished); Finished when it finished.
	Enqueued time.Time `json:"enqueued"`
	Expires  time.Time `json:"expires"`
	Next     time.Time `json:"next,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// Recipients are the message's recipients and where each is; before
	// the first attempt they are as the message names them.
	Recipients []RecipientStatus `json:"recipients"`
	// Attempts are every attempt's record, the first first.
	Attempts []Attempt `json:"attempts"`
	// EnvelopeID is the ENVID the message is sent with; a delivery status
	// notification that carries it back is matched to the message.
	EnvelopeID string `json:"envelope_id,omitempty"`
	// Bounces are the delivery status notifications matched to the
	// message (Ingest), the first first.
	Bounces []Bounce `json:"bounces,omitempty"`
	// Sealed reports that the message is stored sealed; false for an
	// outbox opened with Options.Plaintext.
	Sealed bool `json:"sealed"`
	// KeyID names the key the message needs, for rotations: the one its
	// content is sealed under while it has content, its status's after.
	KeyID string `json:"key_id,omitempty"`
	// Problem says why the message could not be opened, when it could
	// not (a missing key, or tampering).
	Problem string `json:"problem,omitempty"`
}

// RecipientStatus is where one recipient of a message is.
type RecipientStatus struct {
	Address string                `json:"address"`
	Kind    mailsec.RecipientKind `json:"kind"`
	State   RecipientState        `json:"state"`
	// Attempts counts the attempts that tried the recipient.
	Attempts int `json:"attempts"`
	// PossibleDuplicate: an attempt sent the message to the recipient
	// after one whose outcome was unknown; it may have it twice.
	PossibleDuplicate bool `json:"possible_duplicate,omitempty"`
	// PossiblyDelivered: an attempt whose outcome is unknown (the
	// server's reply to the end of the message was lost, or the
	// attempt's worker died) may have delivered the message to the
	// recipient. It holds whatever State says: a recipient refused or
	// expired afterwards may have the message all the same.
	PossiblyDelivered bool `json:"possibly_delivered,omitempty"`
	// Error is the last attempt's error for the recipient.
	Error string `json:"error,omitempty"`
	// Bounce explains why a Bounced recipient bounced: the notification's
	// status code and the remote server's diagnostic.
	Bounce string `json:"bounce,omitempty"`
}

// Status returns what the outbox knows of the message id: its state,
// each recipient's, and every attempt's record. It fails with ErrNotFound
// for an unknown ID, and with an *OpenError when the status does not open
// (a missing key, or tampering).
func (ob *Outbox) Status(ctx context.Context, id string) (*Status, error) {
	if ob.isClosed() {
		return nil, ErrClosed
	}
	q := ob.eng.pool()
	r, err := loadRow(ctx, q, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: Status: %w", err)
	}
	st := &Status{ID: r.id, State: r.state, Enqueued: r.createdAt, Expires: r.expiresAt, Finished: r.finishedAt,
		Sealed: sealed(r.progress), Problem: r.problem}
	// The key the message needs: its content's while it has content (an
	// attempt seals its status under the first key, the content keeps
	// the key it was queued under), its status's after.
	for _, b := range [][]byte{r.envelope, r.progress} {
		if id, ok := sealedWith(b); ok {
			st.KeyID = fmt.Sprintf("%x", id)
			break
		}
	}
	if !r.state.finished() {
		st.Next = r.nextAt
	}
	if r.state == Queued {
		running, err := ob.jobRunning(ctx, q, r.id)
		if err != nil {
			return nil, fmt.Errorf("outbox: Status: %w", err)
		}
		if running {
			st.State = Sending
		}
	}
	prog, err := ob.openProgress(r.id, r.progress)
	if err != nil {
		return st, err
	}
	st.MessageID, st.Reference = prog.MessageID, prog.Reference
	st.EnvelopeID, st.Bounces = prog.EnvelopeID, prog.Bounces
	for _, rp := range prog.Recipients {
		rs := RecipientStatus{Address: rp.Address, Kind: rp.Kind, State: rp.State, Attempts: rp.Attempts,
			PossibleDuplicate: rp.PossibleDuplicate, PossiblyDelivered: rp.MayHave, Error: rp.Error, Bounce: rp.Bounce}
		if r.state == Cancelled && rs.State == Pending {
			rs.State = CancelledRecipient
		}
		st.Recipients = append(st.Recipients, rs)
	}
	if len(prog.Recipients) == 0 && r.envelope != nil {
		if sm, err := ob.openEnvelope(r.id, r.envelope); err == nil {
			state := Pending
			if r.state == Cancelled {
				state = CancelledRecipient
			}
			for _, g := range []struct {
				kind mailsec.RecipientKind
				as   []string
			}{{mailsec.KindTo, sm.To}, {mailsec.KindCc, sm.Cc}, {mailsec.KindBcc, sm.Bcc}} {
				for _, a := range g.as {
					st.Recipients = append(st.Recipients, RecipientStatus{Address: a, Kind: g.kind, State: state})
				}
			}
		}
	}
	rows, err := q.query(ctx, `SELECT n, data FROM mailsec_outbox_attempt WHERE message_id = $1 ORDER BY n`, id)
	if err != nil {
		return st, fmt.Errorf("outbox: Status: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var n int
		var data []byte
		if err := rows.Scan(&n, &data); err != nil {
			return st, fmt.Errorf("outbox: Status: %w", err)
		}
		b, err := ob.keys.open(data, aad("attempt", id, strconv.Itoa(n)), id, "attempt")
		if err != nil {
			return st, err
		}
		var a Attempt
		if err := json.Unmarshal(b, &a); err != nil || a.Number != n || a.ID != id {
			return st, &OpenError{ID: id, What: "attempt", Err: ErrTampered}
		}
		st.Attempts = append(st.Attempts, a)
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("outbox: Status: %w", err)
	}
	return st, nil
}

// Cancel stops the message id from being sent any further and deletes its
// content. Recipients an attempt already reached keep what they got. An
// attempt under way (in this process or another) is not stopped: it goes
// on with the content it has read, its outcome is recorded in the Status,
// and the message stays cancelled; only an attachment it has yet to read
// is gone, and then it abandons its transaction before the end of the
// message. It fails with ErrNotFound for an unknown ID and ErrFinished for
// a message that has finished.
func (ob *Outbox) Cancel(ctx context.Context, id string) error {
	if ob.isClosed() {
		return ErrClosed
	}
	t, err := ob.eng.begin(ctx)
	if err != nil {
		return fmt.Errorf("outbox: Cancel: %w", err)
	}
	defer func() { _ = t.rollback(ctx) }()
	n, err := t.exec(ctx, `UPDATE mailsec_outbox_message SET state = $1, finished_at = $2, envelope = NULL
WHERE id = $3 AND state IN ('queued', 'sending')`, string(Cancelled), time.Now().UnixMicro(), id)
	if err != nil {
		return fmt.Errorf("outbox: Cancel: %w", err)
	}
	if n == 0 {
		var state string
		err := t.queryRow(ctx, `SELECT state FROM mailsec_outbox_message WHERE id = $1`, id).Scan(&state)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		if err != nil {
			return fmt.Errorf("outbox: Cancel: %w", err)
		}
		return fmt.Errorf("%w: %s is %s", ErrFinished, id, state)
	}
	if _, err := t.exec(ctx, `DELETE FROM mailsec_outbox_chunk WHERE message_id = $1`, id); err != nil {
		return fmt.Errorf("outbox: Cancel: %w", err)
	}
	if err := t.commit(ctx); err != nil {
		return fmt.Errorf("outbox: Cancel: %w", err)
	}
	return nil
}

// Stats are figures for monitoring a queue.
type Stats struct {
	// Depth counts the unfinished messages: Queued and Sending.
	Depth int `json:"depth"`
	// Sending counts those with an attempt under way (or left by a worker
	// that died).
	Sending int `json:"sending"`
	// Due counts the queued messages whose next attempt is due now.
	Due int `json:"due"`
	// Oldest is when the oldest unfinished message was queued; zero when
	// there is none. OldestAge is how long ago that was.
	Oldest    time.Time     `json:"oldest,omitzero"`
	OldestAge time.Duration `json:"oldest_age"`
}

// Stats returns the queue's depth and the age of its oldest message.
func (ob *Outbox) Stats(ctx context.Context) (Stats, error) {
	if ob.isClosed() {
		return Stats{}, ErrClosed
	}
	now := time.Now()
	var depth int
	var sending, due, oldest sql.NullInt64
	err := ob.eng.pool().queryRow(ctx, `SELECT COUNT(*),
	SUM(CASE WHEN state = 'sending' THEN 1 ELSE 0 END),
	SUM(CASE WHEN state = 'queued' AND next_at <= $1 THEN 1 ELSE 0 END),
	MIN(created_at)
FROM mailsec_outbox_message WHERE state IN ('queued', 'sending')`, now.UnixMicro()).Scan(&depth, &sending, &due, &oldest)
	if err != nil {
		return Stats{}, fmt.Errorf("outbox: Stats: %w", err)
	}
	// Queued messages a run of their job is attempting now.
	var running, runningDue sql.NullInt64
	args := ob.runningArgs()
	args = append(args, now.UnixMicro())
	err = ob.eng.pool().queryRow(ctx, `SELECT COUNT(*), SUM(CASE WHEN m.next_at <= $`+strconv.Itoa(len(args))+` THEN 1 ELSE 0 END)
FROM river_job JOIN mailsec_outbox_message m ON m.id = river_job.args ->> 'id'
WHERE `+sqlRunningJob(ob.eng.postgres())+` AND m.state = 'queued'`, args...).Scan(&running, &runningDue)
	if err != nil {
		return Stats{}, fmt.Errorf("outbox: Stats: %w", err)
	}
	s := Stats{Depth: depth, Sending: int(sending.Int64 + running.Int64), Due: int(due.Int64 - runningDue.Int64)}
	if oldest.Valid {
		s.Oldest = micros(oldest.Int64)
		s.OldestAge = now.Sub(s.Oldest)
	}
	return s, nil
}

// WaitingForKeys counts the unfinished messages that no attempt of this
// Outbox can open: their content or their status is sealed under a key it
// was not given (Status.KeyID names the one a message needs). They wait
// for an Outbox that has the key, until they expire. Check it before
// dropping an old key from Options.Keys. It reads the sealed columns of
// every unfinished message, which costs in proportion to their content:
// it is a check for rotations, not a figure for monitoring (see Stats).
func (ob *Outbox) WaitingForKeys(ctx context.Context) (int, error) {
	if ob.isClosed() {
		return 0, ErrClosed
	}
	if ob.keys.plaintext() {
		return 0, nil
	}
	rows, err := ob.eng.pool().query(ctx, `SELECT substr(envelope, 1, 9), substr(progress, 1, 9), COUNT(*)
FROM mailsec_outbox_message WHERE state IN ('queued', 'sending') GROUP BY substr(envelope, 1, 9), substr(progress, 1, 9)`)
	if err != nil {
		return 0, fmt.Errorf("outbox: WaitingForKeys: %w", err)
	}
	defer rows.Close()
	lacks := func(head []byte) bool {
		id, ok := sealedWith(head)
		return ok && !ob.keys.has(id)
	}
	waiting := 0
	for rows.Next() {
		var envelope, progress []byte
		var n int
		if err := rows.Scan(&envelope, &progress, &n); err != nil {
			return 0, fmt.Errorf("outbox: WaitingForKeys: %w", err)
		}
		if lacks(envelope) || lacks(progress) {
			waiting += n
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("outbox: WaitingForKeys: %w", err)
	}
	return waiting, nil
}

// sqlRunningJob selects River's delivery jobs ($1 deliverKind) whose run
// is attempting its message: those running, and on Postgres those
// completed after $2, whose run's record may still commit (lateRecords);
// ob.runningArgs gives both. A message has no
// mark of its own while an attempt is under way (see Outbox.start): a
// queued message with such a job is being sent, or its worker died during
// an attempt and River has not rescued the job yet (or, its record lost,
// the clean-up has not given it another).
func sqlRunningJob(postgres bool) string {
	if !postgres {
		return `river_job.state = 'running' AND river_job.kind = $1`
	}
	return `(river_job.state = 'running' OR river_job.state = 'completed' AND river_job.finalized_at > $2) AND river_job.kind = $1`
}

// runningArgs are sqlRunningJob's arguments: deliverKind, and on Postgres
// the time since which a completed job counts ($2).
func (ob *Outbox) runningArgs() []any {
	if !ob.eng.postgres() {
		return []any{deliverKind}
	}
	return []any{deliverKind, time.Now().Add(-ob.eng.recentlyEnded())}
}

// jobRunning reports whether message id's delivery job is attempting it
// (sqlRunningJob).
func (ob *Outbox) jobRunning(ctx context.Context, q querier, id string) (bool, error) {
	args := ob.runningArgs()
	args = append(args, id)
	var n int
	err := q.queryRow(ctx, `SELECT COUNT(*) FROM river_job WHERE `+sqlRunningJob(ob.eng.postgres())+` AND args ->> 'id' = $`+strconv.Itoa(len(args)),
		args...).Scan(&n)
	return n > 0, err
}

// orphanAge is how old chunks without an unfinished message must be
// before the clean-up deletes them (an Enqueue that failed midway in an
// application's transaction the application committed anyway).
const orphanAge = time.Hour

// clean deletes what retention no longer keeps: finished messages'
// status and attempts past ReceiptRetention, and orphaned chunks; and it
// gives each unfinished message whose delivery job River ended a new one
// (requeueJobless).
func (ob *Outbox) clean(ctx context.Context) error {
	q := ob.eng.pool()
	now := time.Now()
	if ob.o.retention > 0 {
		cut := now.Add(-ob.o.retention).UnixMicro()
		if _, err := q.exec(ctx, `DELETE FROM mailsec_outbox_attempt WHERE message_id IN
(SELECT id FROM mailsec_outbox_message WHERE finished_at IS NOT NULL AND finished_at < $1)`, cut); err != nil {
			return fmt.Errorf("outbox: clean-up: %w", err)
		}
		if _, err := q.exec(ctx, `DELETE FROM mailsec_outbox_message WHERE finished_at IS NOT NULL AND finished_at < $1`, cut); err != nil {
			return fmt.Errorf("outbox: clean-up: %w", err)
		}
	}
	if _, err := q.exec(ctx, `DELETE FROM mailsec_outbox_chunk WHERE created_at < $1 AND message_id NOT IN
(SELECT id FROM mailsec_outbox_message WHERE envelope IS NOT NULL)`, now.Add(-orphanAge).UnixMicro()); err != nil {
		return fmt.Errorf("outbox: clean-up: %w", err)
	}
	n, err := ob.requeueJobless(ctx)
	level := slog.LevelDebug
	if n > 0 {
		level = slog.LevelInfo
	}
	ob.log.LogAttrs(ctx, level, "mailsec outbox: clean-up", slog.Int("requeued", n))
	if err != nil {
		return fmt.Errorf("outbox: clean-up: %w", err)
	}
	return nil
}

// sqlJobless selects the unfinished messages (queued, or Sending as an
// earlier version marked them) that have no delivery job River has not
// ended ($1 deliverKind), the oldest first. On Postgres NOT EXISTS, an
// anti-join: NOT IN would run its subquery once per message once its
// result outgrows work_mem (a hash anti-join on the member read with ->>,
// as River's index on args serves only the one message's look, sqlJobOf).
// On SQLite NOT IN, whose subquery's result
// SQLite makes an index of once: a correlated NOT EXISTS would read
// River's jobs once per message. On Postgres a job River completed after
// $2 counts as live (see liveJobs).
func sqlJobless(postgres bool) string {
	live := `FROM river_job j WHERE j.kind = $1 AND j.state IN ` + sqlLiveJobStates
	if postgres {
		return `SELECT m.id FROM mailsec_outbox_message m WHERE m.state IN ('queued', 'sending')
AND NOT EXISTS (SELECT 1 FROM river_job j WHERE j.kind = $1 AND (j.state IN ` + sqlLiveJobStates + ` OR j.state = 'completed' AND j.finalized_at > $2)
AND j.args ->> 'id' = m.id) ORDER BY m.created_at, m.id`
	}
	return `SELECT m.id FROM mailsec_outbox_message m WHERE m.state IN ('queued', 'sending')
AND m.id NOT IN (SELECT j.args ->> 'id' ` + live + ` AND j.args ->> 'id' IS NOT NULL) ORDER BY m.created_at, m.id`
}

// requeueJobless gives each unfinished message without a live delivery
// job a new one, as Retry would, and returns how many it gave one. River
// ends a job whose message is still queued when its rescuer discards the
// job of a worker that died (out of attempts, or when the leader has no
// worker for the kind: an application's own River client on the same
// tables), or when an operator cancels or deletes it; such a message would
// wait for ever.
func (ob *Outbox) requeueJobless(ctx context.Context) (int, error) {
	// The IDs first: on SQLite the one connection is needed for the
	// transactions that follow.
	args := []any{deliverKind}
	if ob.eng.postgres() {
		args = append(args, time.Now().Add(-ob.eng.recentlyEnded()))
	}
	rows, err := ob.eng.pool().query(ctx, sqlJobless(ob.eng.postgres()), args...)
	if err != nil {
		return 0, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	n, failed := 0, 0
	var first error
	for _, id := range ids {
		if ctx.Err() != nil {
			return n, ctx.Err() // the rest at the next clean-up
		}
		done, err := ob.requeueIfJobless(ctx, id)
		if err != nil {
			// One message's failure does not keep the others waiting.
			if failed++; first == nil {
				first = fmt.Errorf("giving message %s a delivery job: %w", id, err)
			}
			continue
		}
		if done {
			n++
			ob.log.LogAttrs(ctx, slog.LevelWarn, "mailsec outbox: message without a live delivery job queued again", slog.String("id", id))
		}
	}
	if failed > 1 {
		first = fmt.Errorf("%w (and %d more messages)", first, failed-1)
	}
	return n, first
}

// requeueIfJobless gives message id a new delivery job when, with its
// row locked, it is still unfinished and has no live job, and reports
// whether it did. Whatever else gives a message a job or ends it (Retry,
// Cancel, an attempt's record, another process's sweep) writes its row
// first: on Postgres the UPDATE below waits for the one before it to end
// and then reads its row as committed; on SQLite the transaction holds
// the database's write lock (from its start with Open's settings, from
// the UPDATE at the latest). So this sees the job any of them committed,
// and a second sweep sees the job the first committed: a message never
// gets a job beside a live one, nor one once it is finished.
func (ob *Outbox) requeueIfJobless(ctx context.Context, id string) (bool, error) {
	t, err := ob.eng.begin(ctx)
	if err != nil {
		return false, err
	}
	defer func() { _ = t.rollback(ctx) }()
	n, err := t.exec(ctx, `UPDATE mailsec_outbox_message SET job_runs = job_runs WHERE id = $1 AND state IN ('queued', 'sending')`, id)
	if err != nil || n == 0 {
		return false, err // finished meanwhile, or gone
	}
	jobs, _, err := liveJobs(ctx, t, ob.eng, id)
	if err != nil || len(jobs) > 0 {
		return false, err
	}
	if err := ob.eng.replaceJob(ctx, t, id); err != nil {
		return false, err
	}
	if err := t.commit(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// Migrate brings the tables of the outbox in db (a SQLite file path or a
// postgres:// URL, as for Open) up to date: River's and the outbox's, in
// one transaction. Open does it unless Options.SkipMigrations is set;
// Migrate is for applications that migrate in a deployment step of their
// own. It is safe to run more than once, and from several processes at
// once.
func Migrate(ctx context.Context, db string) error {
	if isPostgresURL(db) {
		pool, err := pgxpool.New(ctx, lowerScheme(db))
		if err != nil {
			return &mailsec.ConfigError{Field: "outbox database", Value: "postgres URL", Reason: "cannot be parsed or opened", Err: err}
		}
		defer pool.Close()
		return MigratePostgres(ctx, pool)
	}
	sdb, err := OpenSQLiteDB(db)
	if err != nil {
		return err
	}
	defer sdb.Close()
	return MigrateSQLite(ctx, sdb)
}

// MigrateSQLite is Migrate for the application's own SQLite database (see
// OpenSQLite).
func MigrateSQLite(ctx context.Context, db *sql.DB) error {
	if db == nil {
		return &mailsec.ConfigError{Field: "outbox database", Reason: "nil *sql.DB"}
	}
	e, err := newSQLiteEngine(nil, db, func() {})
	if err != nil {
		return err
	}
	return e.migrate(ctx)
}

// MigratePostgres is Migrate for a Postgres pool (see OpenPostgres).
func MigratePostgres(ctx context.Context, pool *pgxpool.Pool) error {
	if pool == nil {
		return &mailsec.ConfigError{Field: "outbox database", Reason: "nil *pgxpool.Pool"}
	}
	e, err := newPostgresEngine(nil, pool, func() {})
	if err != nil {
		return err
	}
	return e.migrate(ctx)
}
