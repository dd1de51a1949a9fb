package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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

// recordDelivered records attempt 1 of the message read in r, run 1, as
// delivered to ann: the attempt's state, and record's error.
func recordDelivered(ctx context.Context, ob *Outbox, r *row) (State, error) {
	prog, err := ob.openProgress(r.id, r.progress)
	if err != nil {
		return "", err
	}
	now := time.Now()
	a := &Attempt{ID: r.id, Number: 1, Started: now, Finished: now}
	rec := &mailsec.Receipt{MessageID: "<m@example.com>", Started: now, Finished: now,
		Recipients: []mailsec.RecipientReceipt{{Address: "ann@example.org", Accepted: true, Delivery: 1}}}
	err = ob.record(ctx, r, 1, prog, a, &outcome{rec: rec, dup: map[string]bool{}})
	return a.State, err
}

// loadRows reads the rows of ids.
func loadRows(t *testing.T, ob *Outbox, ids []string) []*row {
	t.Helper()
	rs := make([]*row, len(ids))
	for i, id := range ids {
		var err error
		if rs[i], err = loadRow(context.Background(), ob.eng.pool(), id); err != nil {
			t.Fatal(err)
		}
	}
	return rs
}

// committedIn returns how many distinct transactions last wrote the rows
// of ids.
func committedIn(t *testing.T, ob *Outbox, ids []string) int {
	t.Helper()
	var n int
	if err := ob.eng.pool().queryRow(context.Background(), `SELECT count(DISTINCT xmin::text) FROM mailsec_outbox_message WHERE id = ANY($1)`, ids).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// attemptsOf returns the message's state, its attempts and the attempt
// records stored for it.
func attemptsOf(t *testing.T, ob *Outbox, id string) (State, int, int) {
	t.Helper()
	var state string
	var attempts, records int
	if err := ob.eng.pool().queryRow(context.Background(), `SELECT state, attempts, (SELECT count(*) FROM mailsec_outbox_attempt WHERE message_id = $1)
FROM mailsec_outbox_message WHERE id = $1`, id).Scan(&state, &attempts, &records); err != nil {
		t.Fatal(err)
	}
	return State(state), attempts, records
}

// The records of concurrent attempts commit in one transaction, and each
// caller gets its own outcome: a message cancelled during its attempt, or
// taken over by another run, no longer matches the grouped statement and
// is recorded by the caller alone; the others are recorded by the group.
func TestPGRecordGroupGivesEachCallerItsOutcome(t *testing.T) {
	t.Parallel()
	ob, e, ids := pgGroupOutbox(t, 6)
	ctx := context.Background()
	cancelled, takenOver := ids[1], ids[2]
	rs := loadRows(t, ob, ids)
	states := make([]State, len(ids))
	errs := make([]error, len(ids))
	var fns []func()
	for i, id := range ids {
		fns = append(fns, func() {
			if id == cancelled {
				// Cancelled once the attempt read the message.
				if err := ob.Cancel(ctx, id); err != nil {
					errs[i] = err
					return
				}
			}
			if id == takenOver {
				// Another run recorded an attempt meanwhile.
				if _, err := ob.eng.pool().exec(ctx, `UPDATE mailsec_outbox_message SET attempts = 1, job_runs = 2 WHERE id = $1`, id); err != nil {
					errs[i] = err
					return
				}
			}
			states[i], errs[i] = recordDelivered(ctx, ob, rs[i])
		})
	}
	inOneGroup(t, e.records, fns...)
	var grouped []string
	for i, id := range ids {
		st, attempts, records := attemptsOf(t, ob, id)
		switch id {
		case cancelled:
			if errs[i] != nil || states[i] != Cancelled || st != Cancelled || attempts != 1 || records != 1 {
				t.Errorf("cancelled message: record returned %v, %s; stored %s, %d attempts, %d records", errs[i], states[i], st, attempts, records)
			}
		case takenOver:
			if !errors.Is(errs[i], errTakenOver) || states[i] != Sending || st != Queued || attempts != 1 || records != 1 {
				t.Errorf("message taken over: record returned %v, %s; stored %s, %d attempts, %d records", errs[i], states[i], st, attempts, records)
			}
		default:
			grouped = append(grouped, id)
			if errs[i] != nil || states[i] != Delivered || st != Delivered || attempts != 1 || records != 1 {
				t.Errorf("message %d: record returned %v, %s; stored %s, %d attempts, %d records", i, errs[i], states[i], st, attempts, records)
			}
		}
	}
	if n := committedIn(t, ob, grouped); n != 1 {
		t.Errorf("the grouped records committed in %d transactions, not one", n)
	}
}

// failOnce makes the first update of message id's row fail, in the
// database: the statement that records it fails and aborts its
// transaction. Updates are logged in mailsec_test_updates as they commit.
func failOnce(t *testing.T, ob *Outbox, id string) {
	t.Helper()
	for _, q := range []string{
		`CREATE SEQUENCE mailsec_test_fail`,
		`CREATE TABLE mailsec_test_updates (id TEXT NOT NULL)`,
		fmt.Sprintf(`CREATE FUNCTION mailsec_test_fail() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.id = '%s' AND nextval('mailsec_test_fail') = 1 THEN
		RAISE EXCEPTION 'forced failure';
	END IF;
	INSERT INTO mailsec_test_updates (id) VALUES (NEW.id);
	RETURN NEW;
END $$`, id),
		`CREATE TRIGGER mailsec_test_fail BEFORE UPDATE ON mailsec_outbox_message FOR EACH ROW EXECUTE FUNCTION mailsec_test_fail()`,
	} {
		if _, err := ob.eng.pool().exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
}

func updatesOf(t *testing.T, ob *Outbox, id string) int {
	t.Helper()
	var n int
	if err := ob.eng.pool().queryRow(context.Background(), `SELECT count(*) FROM mailsec_test_updates WHERE id = $1`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A statement that fails in a group rolls the group back, and every
// caller records its attempt again alone: each is told its own outcome,
// each attempt is recorded once, none is lost.
func TestPGRecordGroupFailedStatement(t *testing.T) {
	t.Parallel()
	ob, e, ids := pgGroupOutbox(t, 5)
	ctx := context.Background()
	failOnce(t, ob, ids[2])
	rs := loadRows(t, ob, ids)
	states := make([]State, len(ids))
	errs := make([]error, len(ids))
	var fns []func()
	for i := range ids {
		fns = append(fns, func() { states[i], errs[i] = recordDelivered(ctx, ob, rs[i]) })
	}
	inOneGroup(t, e.records, fns...)
	for i, id := range ids {
		st, attempts, records := attemptsOf(t, ob, id)
		if errs[i] != nil || states[i] != Delivered || st != Delivered || attempts != 1 || records != 1 {
			t.Errorf("message %d: record returned %v, %s; stored %s, %d attempts, %d records", i, errs[i], states[i], st, attempts, records)
		}
		if n := updatesOf(t, ob, id); n != 1 {
			t.Errorf("message %d: its row was updated %d times, not once", i, n)
		}
	}
	if n := committedIn(t, ob, ids); n != len(ids) {
		t.Errorf("after the group failed, the records committed in %d transactions, not each alone (%d)", n, len(ids))
	}
}

// A caller whose context ends while its group runs is told the group's
// outcome for its work, not its context's error: its record committed.
// A caller whose context ended before its group ran is not recorded.
func TestPGRecordGroupCallerCancelled(t *testing.T) {
	t.Parallel()
	ob, e, ids := pgGroupOutbox(t, 3)
	rs := loadRows(t, ob, ids)
	for _, q := range []string{
		`CREATE FUNCTION mailsec_test_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$`,
		`CREATE TRIGGER mailsec_test_slow BEFORE UPDATE ON mailsec_outbox_message FOR EACH ROW EXECUTE FUNCTION mailsec_test_slow()`,
	} {
		if _, err := ob.eng.pool().exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dead, deadCancel := context.WithCancel(context.Background())
	deadCancel()
	states := make([]State, 3)
	errs := make([]error, 3)
	// The first caller's context ends once the group's statements run
	// (they sleep in the database); the last one's has ended before.
	go func() {
		for ctx.Err() == nil {
			var n int
			if err := ob.eng.pool().queryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'`).Scan(&n); err == nil && n > 0 {
				cancel()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	inOneGroup(t, e.records,
		func() { states[0], errs[0] = recordDelivered(ctx, ob, rs[0]) },
		func() { states[1], errs[1] = recordDelivered(context.Background(), ob, rs[1]) },
		func() { states[2], errs[2] = recordDelivered(dead, ob, rs[2]) },
	)
	if ctx.Err() == nil {
		t.Fatal("the context was not cancelled while the group ran")
	}
	for i := range 2 {
		st, attempts, records := attemptsOf(t, ob, ids[i])
		if errs[i] != nil || states[i] != Delivered || st != Delivered || attempts != 1 || records != 1 {
			t.Errorf("message %d: record returned %v, %s; stored %s, %d attempts, %d records", i, errs[i], states[i], st, attempts, records)
		}
	}
	if n := committedIn(t, ob, ids[:2]); n != 1 {
		t.Errorf("the grouped records committed in %d transactions, not one", n)
	}
	st, attempts, records := attemptsOf(t, ob, ids[2])
	if errs[2] == nil || st != Queued || attempts != 0 || records != 0 {
		t.Errorf("caller cancelled before its group: record returned %v; stored %s, %d attempts, %d records", errs[2], st, attempts, records)
	}
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
