package outbox

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
)

// pgGroupOutbox opens an outbox on a new Postgres database, not started,
// with n messages queued to ann@example.org.
func pgGroupOutbox(t *testing.T, n int) (*Outbox, *riverEngine[pgx.Tx], []string) {
	t.Helper()
	where := pgtest.Start(t).NewDatabase(t)
	sender, err := mailsec.NewSender(nopTransport{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := Open(context.Background(), sender, where, &Options{Keys: []Key{NewKey()}, DeliveryTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close(context.Background()) })
	ids := make([]string, n)
	for i := range ids {
		if ids[i], err = ob.Enqueue(context.Background(), &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"},
			Subject: "s", Text: "t"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	return ob, ob.eng.(*riverEngine[pgx.Tx]), ids
}

type nopTransport struct{}

func (nopTransport) Deliver(context.Context, *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	return nil, errors.New("not used")
}

// inOneGroup runs fns at once, each calling g.do once first, in this
// order, and runs their calls as one group.
func inOneGroup[In, Out any](t *testing.T, g *pgGroup[In, Out], fns ...func()) {
	t.Helper()
	g.mu.Lock()
	if g.leaders > 0 || len(g.pending) > 0 {
		g.mu.Unlock()
		t.Fatal("the group is busy")
	}
	g.leaders = 1 // held back until every call is pending
	g.mu.Unlock()
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Go(fn)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			g.mu.Lock()
			n := len(g.pending)
			g.mu.Unlock()
			if n == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("call %d did not reach the group", i)
			}
		}
	}
	g.lead(g.run)
	wg.Wait()
}

// The reads of concurrent runs are one statement; each caller gets its
// own row, sql.ErrNoRows for a message that is not there.
func TestPGReadGroupGivesEachCallerItsRow(t *testing.T) {
	t.Parallel()
	ob, e, ids := pgGroupOutbox(t, 3)
	ctx := context.Background()
	ask := []string{ids[0], "no-such-message", ids[1], ids[0], ids[2]}
	got := make([]*row, len(ask))
	errs := make([]error, len(ask))
	var fns []func()
	for i, id := range ask {
		fns = append(fns, func() { got[i], errs[i] = e.readRow(ctx, id) })
	}
	inOneGroup(t, e.reads, fns...)
	for i, id := range ask {
		if id == "no-such-message" {
			if !errors.Is(errs[i], sql.ErrNoRows) || got[i] != nil {
				t.Errorf("a missing message read as %v, %v", got[i] != nil, errs[i])
			}
			continue
		}
		want, err := loadRow(ctx, ob.eng.pool(), id)
		if err != nil {
			t.Fatal(err)
		}
		if errs[i] != nil || got[i] == nil || got[i].id != id || string(got[i].envelope) != string(want.envelope) ||
			string(got[i].progress) != string(want.progress) || got[i].state != want.state || !got[i].nextAt.Equal(want.nextAt) {
			t.Errorf("read %d (%s): not its row (%v)", i, id, errs[i])
		}
	}
	if got[0] == got[3] || &got[0].envelope[0] == &got[3].envelope[0] {
		t.Error("two callers reading one message share its row")
	}
}

// A group runs with the latest of its callers' deadlines, or none when a
// caller has none, and without their cancellation.
func TestPGGroupDeadline(t *testing.T) {
	var got []time.Time
	var cancelled []bool
	g := &pgGroup[int, int]{
		one: func(ctx context.Context, in int) (int, error) { return in, nil },
		many: func(ctx context.Context, ins []int) ([]int, error) {
			d, _ := ctx.Deadline()
			got = append(got, d)
			cancelled = append(cancelled, ctx.Err() != nil)
			return ins, nil
		},
	}
	soon, late := time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
	call := func(ctx context.Context, in int) func() {
		return func() {
			if out, err := g.do(ctx, in); out != in || err != nil {
				t.Errorf("call %d: %d, %v", in, out, err)
			}
		}
	}
	ctxSoon, cancelSoon := context.WithDeadline(context.Background(), soon)
	defer cancelSoon()
	ctxLate, cancelLate := context.WithDeadline(context.Background(), late)
	defer cancelLate()
	inOneGroup(t, g, call(ctxSoon, 1), call(ctxLate, 2))
	inOneGroup(t, g, call(ctxLate, 1), call(ctxSoon, 2), call(context.Background(), 3))
	inOneGroup(t, g, call(context.Background(), 1), call(ctxSoon, 2))
	if len(got) != 3 || !got[0].Equal(late) || !got[1].IsZero() || !got[2].IsZero() || cancelled[0] || cancelled[1] || cancelled[2] {
		t.Errorf("the groups ran with deadlines %v (cancelled %v), want %v, none, none", got, cancelled, late)
	}
}

// When a group fails as a whole, each of its callers runs its statement
// alone, once, and gets that outcome.
func TestPGGroupFailedRunsEachAlone(t *testing.T) {
	var mu sync.Mutex
	alone := map[int]int{}
	g := &pgGroup[int, int]{
		one: func(ctx context.Context, in int) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			alone[in]++
			return in * 10, nil
		},
		many: func(ctx context.Context, ins []int) ([]int, error) {
			return nil, errors.New("the group's statement failed")
		},
	}
	outs := make([]int, 3)
	errs := make([]error, 3)
	var fns []func()
	for i := range outs {
		fns = append(fns, func() { outs[i], errs[i] = g.do(context.Background(), i+1) })
	}
	inOneGroup(t, g, fns...)
	for i := range outs {
		if errs[i] != nil || outs[i] != (i+1)*10 || alone[i+1] != 1 {
			t.Errorf("caller %d: %d, %v, run alone %d times; want %d, nil, once", i+1, outs[i], errs[i], alone[i+1], (i+1)*10)
		}
	}
}

// The records of attempts that end together are one statement: each is
// recorded, or reported false having changed nothing, as it would be
// alone. A message finished loses its content, one left queued keeps it;
// a message cancelled, or changed since its attempt read it, is reported
// false (recordIn's case); a message named twice is recorded once.
func TestPGRecordGroup(t *testing.T) {
	t.Parallel()
	ob, e, ids := pgGroupOutbox(t, 5)
	ctx := context.Background()
	withFile, err := ob.Enqueue(ctx, &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Subject: "s", Text: "t",
		Attachments: []mailsec.Attachment{{Filename: "a.txt", Content: strings.NewReader(strings.Repeat("x", 200000))}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Cancel(ctx, ids[3]); err != nil {
		t.Fatal(err)
	}
	before := map[string]*row{}
	for _, id := range append(ids, withFile) {
		if before[id], err = loadRow(ctx, ob.eng.pool(), id); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UnixMicro()
	record := func(id string, finished bool) pgRecord {
		r := before[id]
		rec := pgRecord{id: id, state: string(Queued), next: now + 1e6, progress: []byte("progress of " + id), n: r.attempts + 1,
			attempt: []byte("attempt of " + id), run: r.attempts + 3, wasProgress: r.progress, wasAttempts: r.attempts}
		if finished {
			rec.state, rec.finished = string(Delivered), sql.NullInt64{Int64: now, Valid: true}
		}
		return rec
	}
	stale := record(ids[2], true)
	stale.wasAttempts++
	changed := record(ids[4], true)
	changed.wasProgress = []byte("not the progress")
	again := record(withFile, false)
	again.state = string(Failed)
	recs := []pgRecord{
		record(withFile, true), // finished, with chunks
		record(ids[1], false),  // left queued
		stale,                  // another run recorded an attempt meanwhile
		record(ids[3], true),   // cancelled
		changed,                // its progress changed meanwhile
		again,                  // the first message again
		record(ids[0], true),   // finished, without chunks
	}
	want := []bool{true, true, false, false, false, false, true}
	got := make([]bool, len(recs))
	errs := make([]error, len(recs))
	var fns []func()
	for i, r := range recs {
		fns = append(fns, func() { got[i], errs[i] = e.recordRow(ctx, r) })
	}
	inOneGroup(t, e.records, fns...)
	for i := range recs {
		if errs[i] != nil || got[i] != want[i] {
			t.Errorf("record %d (%s): %v, %v; want %v", i, recs[i].id, got[i], errs[i], want[i])
		}
	}

	var chunks int
	if err := ob.eng.pool().queryRow(ctx, `SELECT count(*) FROM mailsec_outbox_chunk WHERE message_id = $1`, withFile).Scan(&chunks); err != nil {
		t.Fatal(err)
	}
	if chunks != 0 {
		t.Errorf("a finished message kept %d chunks of its content", chunks)
	}
	for i, rec := range recs {
		if i == 5 {
			continue // the first message's second record
		}
		cur, err := loadRow(ctx, ob.eng.pool(), rec.id)
		if err != nil {
			t.Fatal(err)
		}
		var attempts int
		if err := ob.eng.pool().queryRow(ctx, `SELECT count(*) FROM mailsec_outbox_attempt WHERE message_id = $1 AND n = $2 AND data = $3`,
			rec.id, rec.n, rec.attempt).Scan(&attempts); err != nil {
			t.Fatal(err)
		}
		if !want[i] {
			b := before[rec.id]
			if cur.state != b.state || cur.attempts != b.attempts || string(cur.progress) != string(b.progress) || string(cur.envelope) != string(b.envelope) || attempts != 0 {
				t.Errorf("record %d (%s), not recorded, changed the message: %s, attempts %d, %d attempt rows", i, rec.id, cur.state, cur.attempts, attempts)
			}
			continue
		}
		wantEnvelope := before[rec.id].envelope
		if rec.finished.Valid {
			wantEnvelope = nil
		}
		if cur.state != State(rec.state) || cur.attempts != rec.n || string(cur.progress) != string(rec.progress) || !cur.runsKnown || cur.jobRuns != rec.run ||
			cur.nextAt.UnixMicro() != rec.next || (cur.finishedAt.IsZero() == rec.finished.Valid) || string(cur.envelope) != string(wantEnvelope) ||
			(cur.envelope == nil) != (wantEnvelope == nil) || attempts != 1 {
			t.Errorf("record %d (%s): the message is %s, attempts %d, runs %d, envelope %d bytes, %d attempt rows", i, rec.id,
				cur.state, cur.attempts, cur.jobRuns, len(cur.envelope), attempts)
		}
	}
}

// withRowHeld opens an outbox on Postgres with n messages queued, and
// returns its engine, the messages' rows, and a function making a
// message's record as delivered at its next attempt; another transaction
// holds the row of message number held for hold, or until the test ends.
func withRowHeld(t *testing.T, n, held int, hold time.Duration) (*riverEngine[pgx.Tx], []*row, func(*row) pgRecord) {
	t.Helper()
	ob, e, ids := pgGroupOutbox(t, n)
	ctx := context.Background()
	rows := make([]*row, len(ids))
	for i, id := range ids {
		var err error
		if rows[i], err = loadRow(ctx, ob.eng.pool(), id); err != nil {
			t.Fatal(err)
		}
	}
	lock, err := e.beginTx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lock.rollback(context.Background()) })
	if _, err := lock.exec(ctx, `SELECT id FROM mailsec_outbox_message WHERE id = $1 FOR UPDATE`, ids[held]); err != nil {
		t.Fatal(err)
	}
	release := time.AfterFunc(hold, func() { _ = lock.rollback(context.Background()) })
	t.Cleanup(func() { release.Stop() })
	now := time.Now().UnixMicro()
	return e, rows, func(r *row) pgRecord {
		return pgRecord{id: r.id, state: string(Delivered), finished: sql.NullInt64{Int64: now, Valid: true}, next: now, progress: []byte("p"),
			n: r.attempts + 1, attempt: []byte("a"), run: 1, wasProgress: r.progress, wasAttempts: r.attempts}
	}
}

// A message whose row another transaction holds is left out of its group:
// the others are recorded without waiting for that transaction, and its
// caller is told to record it alone.
func TestPGRecordGroupSkipsLockedRow(t *testing.T) {
	t.Parallel()
	e, rows, delivered := withRowHeld(t, 3, 1, 10*time.Second)
	ctx := context.Background()
	got := make([]bool, len(rows))
	errs := make([]error, len(rows))
	var fns []func()
	for i, r := range rows {
		fns = append(fns, func() { got[i], errs[i] = e.recordRow(ctx, delivered(r)) })
	}
	began := time.Now()
	inOneGroup(t, e.records, fns...)
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("the group waited %v for a row another transaction held", took)
	}
	if want := []bool{true, false, true}; !slices.Equal(got, want) || errors.Join(errs...) != nil {
		t.Fatalf("recorded %v (%v), want %v", got, errors.Join(errs...), want)
	}
	for i, r := range rows {
		cur, err := loadRow(ctx, e.q, r.id)
		if err != nil {
			t.Fatal(err)
		}
		if (cur.state == Delivered) != (i != 1) {
			t.Errorf("message %d is %s", i, cur.state)
		}
	}
}

// A record alone in its group does not wait for a row another
// transaction holds either: it would keep the group's only place, and the
// record of another message arriving meanwhile would wait behind it, past
// its deadline.
func TestPGLoneRecordOnLockedRowHoldsUpNone(t *testing.T) {
	t.Parallel()
	e, rows, rec := withRowHeld(t, 2, 1, 8*time.Second)
	ctx := context.Background()
	lockedDone := make(chan error, 1)
	go func() {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := e.recordRow(lctx, rec(rows[1]))
		lockedDone <- err
	}()
	// Wait until the locked message's record is taken, alone, by a group,
	// or has returned.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		e.records.mu.Lock()
		l, p := e.records.leaders, len(e.records.pending)
		e.records.mu.Unlock()
		if l == 1 && p == 0 || len(lockedDone) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the record was not taken")
		}
	}
	time.Sleep(300 * time.Millisecond) // in its statement, were it to wait for the lock

	octx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	began := time.Now()
	ok, err := e.recordRow(octx, rec(rows[0]))
	took := time.Since(began)
	if err != nil || !ok || took > time.Second {
		t.Errorf("the record of an unlocked message: %v, %v after %v; want true, nil, at once (another message's row was locked)", ok, err, took)
	}
	<-lockedDone
}

// A message whose row another transaction only holds, or changed without
// touching what the record checks, is recorded once its run's own
// transaction gets the row: once, with its runs counted, and not as one
// another run took over.
func TestRecordOnMerelyLockedRow(t *testing.T) {
	t.Parallel()
	for _, how := range []string{
		`SELECT id FROM mailsec_outbox_message WHERE id = $1 FOR UPDATE`,
		`SELECT id FROM mailsec_outbox_message WHERE id = $1 FOR NO KEY UPDATE`,
		`SELECT id FROM mailsec_outbox_message WHERE id = $1 FOR SHARE`,
		`UPDATE mailsec_outbox_message SET job_runs = job_runs WHERE id = $1`,   // requeueIfJobless
		`UPDATE mailsec_outbox_message SET next_at = next_at + 1 WHERE id = $1`, // Retry-like
	} {
		for _, commit := range []bool{false, true} {
			ob, e, ids := pgGroupOutbox(t, 1)
			ctx := context.Background()
			id := ids[0]
			r, err := loadRow(ctx, ob.eng.pool(), id)
			if err != nil {
				t.Fatal(err)
			}
			prog, err := ob.openProgress(id, r.progress)
			if err != nil {
				t.Fatal(err)
			}
			lock, err := e.beginTx(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := lock.exec(ctx, how, id); err != nil {
				t.Fatal(err)
			}
			go func() {
				time.Sleep(500 * time.Millisecond)
				if commit {
					_ = lock.commit(context.Background())
				} else {
					_ = lock.rollback(context.Background())
				}
			}()
			now := time.Now()
			a := &Attempt{ID: id, Number: r.attempts + 1, Started: now, Finished: now}
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = ob.record(rctx, r, 1, prog, a, &outcome{sendErr: &mailsec.SMTPError{Code: 451, EnhancedCode: mailsec.EnhancedCode{4, 3, 0}, Message: "later"}})
			cancel()
			if err != nil && !isSnooze(err) {
				t.Fatalf("%s (commit %v): %v", how, commit, err)
			}
			cur, err := loadRow(ctx, ob.eng.pool(), id)
			if err != nil {
				t.Fatal(err)
			}
			var n int
			if err := ob.eng.pool().queryRow(ctx, `SELECT count(*) FROM mailsec_outbox_attempt WHERE message_id = $1`, id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if a.State == Sending || cur.attempts != a.Number || !cur.runsKnown || cur.jobRuns != 1 || n != 1 || cur.state != a.State {
				t.Errorf("%s (commit %v): attempt state %s, row %s attempts %d runs %d/%v, %d attempt rows", how, commit, a.State, cur.state, cur.attempts, cur.jobRuns, cur.runsKnown, n)
			}
		}
	}
}
