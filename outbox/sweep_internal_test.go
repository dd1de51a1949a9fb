package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
)

// The clean-up's sweep gives a message that is still queued a new delivery
// job when River ended its job (see requeueJobless). These tests call the
// clean-up directly, as River's leader does every cleanEvery.

// sweepDatabases runs f on SQLite and on Postgres (a server of its own);
// each call of fresh makes a new database.
func sweepDatabases(t *testing.T, f func(t *testing.T, fresh func() string)) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			t.Parallel()
			fresh := func() string { return filepath.Join(t.TempDir(), "mail.db") }
			if db == "postgres" {
				pg := pgtest.Start(t)
				fresh = func() string { return pg.NewDatabase(t) }
			}
			f(t, fresh)
		})
	}
}

// sweepOpen opens an outbox at where, delivering through tr (a recording
// one when nil), logging to the returned buffer; it is not started.
func sweepOpen(t *testing.T, where string, tr mailsec.Transport, o *Options) (*Outbox, *logBuffer) {
	t.Helper()
	if tr == nil {
		tr = &mailsectest.RecordingTransport{}
	}
	sender, err := mailsec.NewSender(tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o == nil {
		o = &Options{}
	}
	log := &logBuffer{}
	o.Keys = []Key{sweepKey}
	o.Logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if o.MinBackoff == 0 {
		o.MinBackoff, o.MaxBackoff = 50*time.Millisecond, 200*time.Millisecond
	}
	ob, err := Open(context.Background(), sender, where, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = ob.Close(ctx)
	})
	return ob, log
}

var sweepKey = NewKey()

const sweepSubject = "sweep-canary-subject"

func sweepEnqueue(t *testing.T, ob *Outbox, to string) string {
	t.Helper()
	id, err := ob.Enqueue(context.Background(), &mailsec.Message{From: "app@example.com", To: []string{to}, Subject: sweepSubject, Text: "t"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// jobCounts counts message id's delivery jobs: those River has not ended,
// and all.
func jobCounts(t *testing.T, ob *Outbox, id string) (live, all int) {
	t.Helper()
	err := ob.eng.pool().queryRow(context.Background(), `SELECT
	COALESCE(SUM(CASE WHEN state IN ('available', 'pending', 'retryable', 'running', 'scheduled') THEN 1 ELSE 0 END), 0), COUNT(*)
FROM river_job WHERE kind = $1 AND args ->> 'id' = $2`, deliverKind, id).Scan(&live, &all)
	if err != nil {
		t.Fatal(err)
	}
	return live, all
}

// lastJob returns message id's newest delivery job.
func lastJob(t *testing.T, ob *Outbox, id string) int64 {
	t.Helper()
	var j int64
	if err := ob.eng.pool().queryRow(context.Background(), `SELECT MAX(id) FROM river_job WHERE kind = $1 AND args ->> 'id' = $2`,
		deliverKind, id).Scan(&j); err != nil {
		t.Fatal(err)
	}
	return j
}

// endJob ends message id's delivery job as River or an operator may:
// "discarded" as River's rescuer does once the job's first run died
// (attempt 1 committed, nothing recorded), "cancelled" and "deleted"
// through River's client.
func endJob(t *testing.T, ob *Outbox, id, how string) {
	t.Helper()
	ctx := context.Background()
	j := lastJob(t, ob, id)
	var err error
	switch how {
	case "discarded":
		q := `UPDATE river_job SET state = 'discarded', attempt = 1, attempted_at = created_at, finalized_at = created_at WHERE id = $1`
		_, err = ob.eng.pool().exec(ctx, q, j)
	case "cancelled", "deleted":
		switch e := ob.eng.(type) {
		case *riverEngine[*sql.Tx]:
			err = endWithClient(ctx, e, j, how)
		case *riverEngine[pgx.Tx]:
			err = endWithClient(ctx, e, j, how)
		}
	default:
		t.Fatalf("no way %q", how)
	}
	if err != nil {
		t.Fatalf("%s job %d: %v", how, j, err)
	}
	if live, _ := jobCounts(t, ob, id); live != 0 {
		t.Fatalf("%d live jobs after the job was %s", live, how)
	}
}

func endWithClient[TTx any](ctx context.Context, e *riverEngine[TTx], j int64, how string) error {
	var err error
	if how == "cancelled" {
		_, err = e.client.JobCancel(ctx, j)
	} else {
		_, err = e.client.JobDelete(ctx, j)
	}
	return err
}

func waitState(t *testing.T, ob *Outbox, id string, want State) *Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := ob.Status(context.Background(), id)
		if err == nil && st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s not %s after 30s: %+v, %v", id, want, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// attemptsSeen is what a message's attempts say of the runs before them:
// each attempt's number and its possible duplicates.
func attemptsSeen(st *Status) string {
	var b strings.Builder
	for _, a := range st.Attempts {
		fmt.Fprintf(&b, "#%d dup=%v; ", a.Number, a.PossibleDuplicates)
	}
	fmt.Fprintf(&b, "recipient flagged=%v", st.Recipients[0].PossibleDuplicate)
	return b.String()
}

// A queued message whose job River ended (discarded by the rescuer after
// a run that died, cancelled, deleted) is given a new job by the
// clean-up, and delivered; its attempts are numbered, and its recipients
// flagged, as Retry would have them in the same case: a run that died
// unrecorded (or a job gone, which may have had one) is an attempt whose
// recipients may have the message.
func TestSweepRequeuesMessageWhoseJobEnded(t *testing.T) {
	sweepDatabases(t, func(t *testing.T, fresh func() string) {
		for _, c := range []struct {
			how     string
			numbers string // the attempts' numbers and flags
		}{
			{"discarded", "#2 dup=[ann@example.org]; recipient flagged=true"},
			{"cancelled", "#1 dup=[]; recipient flagged=false"},
			{"deleted", "#2 dup=[ann@example.org]; recipient flagged=true"},
		} {
			t.Run(c.how, func(t *testing.T) {
				ctx := context.Background()
				ob, log := sweepOpen(t, fresh(), nil, nil)
				swept := sweepEnqueue(t, ob, "ann@example.org")
				retried := sweepEnqueue(t, ob, "ann@example.org")
				endJob(t, ob, swept, c.how)
				endJob(t, ob, retried, c.how)
				if err := ob.Retry(ctx, retried); err != nil {
					t.Fatal(err)
				}
				if err := ob.clean(ctx); err != nil {
					t.Fatal(err)
				}
				for _, id := range []string{swept, retried} {
					if live, _ := jobCounts(t, ob, id); live != 1 {
						t.Fatalf("message %s has %d live jobs after the clean-up, want 1", id, live)
					}
				}
				logged := log.String()
				if !strings.Contains(logged, "id="+swept) || strings.Contains(logged, "id="+retried) {
					t.Errorf("the log does not name the message queued again (and it alone):\n%s", logged)
				}
				if !strings.Contains(logged, "requeued=1") {
					t.Errorf("the clean-up's log does not count the message queued again:\n%s", logged)
				}
				if strings.Contains(logged, sweepSubject) || strings.Contains(logged, "ann@") {
					t.Errorf("the log shows the message's content:\n%s", logged)
				}
				if err := ob.Start(ctx); err != nil {
					t.Fatal(err)
				}
				got, want := attemptsSeen(waitState(t, ob, swept, Delivered)), attemptsSeen(waitState(t, ob, retried, Delivered))
				if got != want {
					t.Errorf("queued again by the clean-up: %s\nby Retry: %s", got, want)
				}
				if got != c.numbers {
					t.Errorf("attempts %s, want %s", got, c.numbers)
				}
			})
		}
	})
}

// byRecipient is a transport whose outcome depends on the recipient:
// later@ is deferred (451), refused@ refused (550), hold@ waits until
// release is closed (started is told); the others are accepted.
func byRecipient() (tr *mailsectest.RecordingTransport, started chan string, release chan struct{}) {
	started, release = make(chan string, 10), make(chan struct{})
	tr = &mailsectest.RecordingTransport{Fail: func(d *mailsec.Delivery) error {
		switch d.To[0] {
		case "later@example.org":
			return &mailsec.SMTPError{Command: "RCPT", Code: 451, EnhancedCode: mailsec.EnhancedCode{4, 3, 0}, Message: "later"}
		case "refused@example.org":
			return &mailsec.SMTPError{Command: "RCPT", Code: 550, EnhancedCode: mailsec.EnhancedCode{5, 1, 1}, Message: "no such user"}
		case "hold@example.org":
			started <- d.To[0]
			<-release
		}
		return nil
	}}
	return tr, started, release
}

// jobState is the state of message id's newest delivery job.
func jobState(t *testing.T, ob *Outbox, id string) string {
	t.Helper()
	var s string
	if err := ob.eng.pool().queryRow(context.Background(), `SELECT state FROM river_job WHERE id = $1`, lastJob(t, ob, id)).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func jobRunsOf(t *testing.T, ob *Outbox, id string) sql.NullInt64 {
	t.Helper()
	var n sql.NullInt64
	if err := ob.eng.pool().queryRow(context.Background(), `SELECT job_runs FROM mailsec_outbox_message WHERE id = $1`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A message whose job River has not ended is left as it is: its job
// available (not yet run), scheduled (snoozed until the next attempt after
// a deferral), or running (an attempt under way, or a dead worker's not
// yet rescued). It keeps its one job and its count of runs.
func TestSweepLeavesLiveJobAlone(t *testing.T) {
	sweepDatabases(t, func(t *testing.T, fresh func() string) {
		ctx := context.Background()
		tr, started, release := byRecipient()
		ob, log := sweepOpen(t, fresh(), tr, &Options{MinBackoff: time.Hour, MaxBackoff: 2 * time.Hour})
		check := func(id, state string) {
			t.Helper()
			if s := jobState(t, ob, id); s != state {
				t.Fatalf("message's job is %s, want %s", s, state)
			}
			runs := jobRunsOf(t, ob, id)
			if err := ob.clean(ctx); err != nil {
				t.Fatal(err)
			}
			if live, all := jobCounts(t, ob, id); live != 1 || all != 1 {
				t.Errorf("job %s: after the clean-up the message has %d live jobs of %d, want 1 of 1", state, live, all)
			}
			if got := jobRunsOf(t, ob, id); got != runs {
				t.Errorf("job %s: the clean-up changed the message's count of runs from %v to %v", state, runs, got)
			}
			if s := jobState(t, ob, id); s != state {
				t.Errorf("after the clean-up the message's job is %s, want %s", s, state)
			}
		}

		available := sweepEnqueue(t, ob, "ann@example.org")
		check(available, "available")

		later := sweepEnqueue(t, ob, "later@example.org")
		hold := sweepEnqueue(t, ob, "hold@example.org")
		if err := ob.Start(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			t.Fatal("the held delivery did not start")
		}
		check(hold, "running")
		deadline := time.Now().Add(20 * time.Second)
		for jobState(t, ob, later) != "scheduled" {
			if time.Now().After(deadline) {
				t.Fatalf("the deferred message's job is %s after 20s, want scheduled", jobState(t, ob, later))
			}
			time.Sleep(20 * time.Millisecond)
		}
		check(later, "scheduled")
		close(release)
		waitState(t, ob, available, Delivered)
		st := waitState(t, ob, hold, Delivered)
		if got := attemptsSeen(st); got != "#1 dup=[]; recipient flagged=false" {
			t.Errorf("the held message's attempts: %s", got)
		}
		if live, all := jobCounts(t, ob, hold); all != 1 || live > 1 {
			t.Errorf("the held message had %d jobs", all)
		}
		if strings.Contains(log.String(), "requeued=1") {
			t.Errorf("a message with a live job was queued again:\n%s", log.String())
		}
	})
}

// A finished message is never given a job: delivered, failed, expired or
// cancelled, whether its job completed or was discarded.
func TestSweepLeavesFinishedAlone(t *testing.T) {
	sweepDatabases(t, func(t *testing.T, fresh func() string) {
		ctx := context.Background()
		tr, _, _ := byRecipient()
		ob, log := sweepOpen(t, fresh(), tr, &Options{MaxAge: 2 * time.Second})
		cancelled := sweepEnqueue(t, ob, "ann@example.org")
		if err := ob.Cancel(ctx, cancelled); err != nil {
			t.Fatal(err)
		}
		cancelledDiscarded := sweepEnqueue(t, ob, "ann@example.org")
		if err := ob.Cancel(ctx, cancelledDiscarded); err != nil {
			t.Fatal(err)
		}
		endJob(t, ob, cancelledDiscarded, "discarded")
		want := map[string]State{cancelled: Cancelled, cancelledDiscarded: Cancelled}
		want[sweepEnqueue(t, ob, "ann@example.org")] = Delivered
		want[sweepEnqueue(t, ob, "refused@example.org")] = Failed
		want[sweepEnqueue(t, ob, "later@example.org")] = Expired
		if err := ob.Start(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for id, state := range want {
			waitState(t, ob, id, state)
			for {
				live, _ := jobCounts(t, ob, id)
				if live == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("message %s is %s and its job is still %s", id, state, jobState(t, ob, id))
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		for id, state := range want {
			_, before := jobCounts(t, ob, id)
			if err := ob.clean(ctx); err != nil {
				t.Fatal(err)
			}
			if live, all := jobCounts(t, ob, id); live != 0 || all != before {
				t.Errorf("%s message: %d live jobs of %d after the clean-up, %d before", state, live, all, before)
			}
		}
		if strings.Contains(log.String(), "requeued=1") {
			t.Errorf("a finished message was queued again:\n%s", log.String())
		}
	})
}

// The clean-up run twice, by two processes at once (a leader and a stale
// one), and with Retry and Cancel at the same time, gives each message
// whose job River ended one live job at most, and the attempt that
// follows is numbered and flagged once for the run that died; a cancelled
// message is not attempted.
func TestSweepConcurrentGivesOneJob(t *testing.T) {
	sweepDatabases(t, func(t *testing.T, fresh func() string) {
		ctx := context.Background()
		where := fresh()
		tr := &mailsectest.RecordingTransport{}
		one, _ := sweepOpen(t, where, tr, nil)
		other, _ := sweepOpen(t, where, tr, nil)
		var ids []string
		for range 8 {
			id := sweepEnqueue(t, one, "ann@example.org")
			endJob(t, one, id, "discarded")
			ids = append(ids, id)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for _, ob := range []*Outbox{one, other, one, other} {
			wg.Go(func() {
				if err := ob.clean(ctx); err != nil {
					errs <- err
				}
			})
		}
		cancelled := map[string]bool{}
		for i, id := range ids {
			switch i % 4 {
			case 0, 2:
				wg.Go(func() {
					if err := other.Retry(ctx, id); err != nil {
						errs <- err
					}
				})
			case 3:
				cancelled[id] = true
				wg.Go(func() {
					if err := other.Cancel(ctx, id); err != nil {
						errs <- err
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for _, id := range ids {
			// A message cancelled after the sweep gave it a job keeps the
			// job, whose run finds it cancelled.
			if live, all := jobCounts(t, one, id); live != 1 && !cancelled[id] || live > 1 || all > 2 {
				t.Errorf("message %s has %d live jobs of %d, want 1 beside the one River ended", id, live, all)
			}
		}
		if err := one.clean(ctx); err != nil {
			t.Fatal(err)
		}
		if err := one.Start(ctx); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if cancelled[id] {
				continue
			}
			if got := attemptsSeen(waitState(t, one, id, Delivered)); got != "#2 dup=[ann@example.org]; recipient flagged=true" {
				t.Errorf("message %s: %s", id, got)
			}
		}
		for id := range cancelled {
			if st := waitState(t, one, id, Cancelled); len(st.Attempts) != 0 {
				t.Errorf("cancelled message %s attempted: %+v", id, st.Attempts)
			}
		}
		if n := len(tr.Deliveries()); n != len(ids)-len(cancelled) {
			t.Errorf("%d deliveries of %d messages not cancelled", n, len(ids)-len(cancelled))
		}
	})
}

// The sweep reads which messages lack a live job, then gives each one a
// job in a transaction of its own: a message that Cancel ended, or that
// Retry (or another process's sweep) gave a job, after that read is left
// as it is. requeueIfJobless is what runs for each message read.
func TestSweepRechecksEachMessage(t *testing.T) {
	sweepDatabases(t, func(t *testing.T, fresh func() string) {
		ctx := context.Background()
		ob, _ := sweepOpen(t, fresh(), nil, nil)
		cancelled := sweepEnqueue(t, ob, "ann@example.org")
		retried := sweepEnqueue(t, ob, "ann@example.org")
		for _, id := range []string{cancelled, retried} {
			endJob(t, ob, id, "discarded")
		}
		if err := ob.Cancel(ctx, cancelled); err != nil {
			t.Fatal(err)
		}
		if err := ob.Retry(ctx, retried); err != nil {
			t.Fatal(err)
		}
		for id, want := range map[string]int{cancelled: 0, retried: 1} {
			done, err := ob.requeueIfJobless(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if live, _ := jobCounts(t, ob, id); done || live != want {
				t.Errorf("queued again: %v; %d live jobs, want %d", done, live, want)
			}
		}
	})
}

// A message an earlier version of the outbox left marked in flight
// (state Sending, from before schema version 4) whose job River ended is
// given a new job too: the attempt that follows flags its recipient, as
// the mark says an attempt may have sent it.
func TestSweepRequeuesLegacySending(t *testing.T) {
	sweepDatabases(t, func(t *testing.T, fresh func() string) {
		ctx := context.Background()
		ob, log := sweepOpen(t, fresh(), nil, nil)
		id := sweepEnqueue(t, ob, "ann@example.org")
		endJob(t, ob, id, "discarded")
		if _, err := ob.eng.pool().exec(ctx, `UPDATE mailsec_outbox_message SET state = 'sending', in_flight_at = 1, job_runs = NULL WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		if err := ob.clean(ctx); err != nil {
			t.Fatal(err)
		}
		if live, _ := jobCounts(t, ob, id); live != 1 || !strings.Contains(log.String(), "id="+id) {
			t.Fatalf("%d live jobs after the clean-up, want 1; log:\n%s", live, log.String())
		}
		if err := ob.Start(ctx); err != nil {
			t.Fatal(err)
		}
		st := waitState(t, ob, id, Delivered)
		if len(st.Attempts) != 1 || len(st.Attempts[0].PossibleDuplicates) != 1 || !st.Recipients[0].PossibleDuplicate {
			t.Errorf("attempts after the in-flight mark: %s", attemptsSeen(st))
		}
	})
}

// On a large Postgres queue the sweep's query is an anti-join, not a
// subquery run once per message (what NOT IN becomes once its result
// outgrows work_mem), and the look for one message's jobs uses River's
// index on args rather than reading every job.
func TestSweepQueriesScaleOnPostgres(t *testing.T) {
	_, pool := openPgGroupTest(t)
	ctx := t.Context()
	const n = 20000
	if _, err := pool.Exec(ctx, `INSERT INTO mailsec_outbox_message
(id, state, created_at, expires_at, next_at, attempts, job_runs, envelope, progress)
SELECT 'm' || g, 'queued', g, g, g, 0, 0, ''::bytea, ''::bytea FROM generate_series(1, $1) g`, n); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO river_job (kind, args, queue, state, max_attempts, priority, scheduled_at)
SELECT $2, json_build_object('id', 'm' || g)::jsonb, 'q', 'available', 25, 1, now() FROM generate_series(1, $1) g`, n, deliverKind); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE mailsec_outbox_message; ANALYZE river_job`); err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// A work_mem far below the subquery's result, as a queue of millions
	// meets the default 4 MB.
	if _, err := conn.Exec(ctx, `SET work_mem = '64kB'`); err != nil {
		t.Fatal(err)
	}
	explain := func(q string, args ...any) string {
		rows, err := conn.Query(ctx, `EXPLAIN `+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var plan []string
		for rows.Next() {
			var l string
			if err := rows.Scan(&l); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, l)
		}
		return strings.Join(plan, "\n")
	}
	if p := explain(sqlJobless(true), deliverKind, time.Now()); !strings.Contains(p, "Anti Join") {
		t.Errorf("the sweep's query is not an anti-join:\n%s", p)
	}
	if p := explain(sqlLiveJobs(true, true), deliverKind, "m77", time.Now()); !strings.Contains(p, "river_job_args_index") {
		t.Errorf("the look for a message's jobs reads without River's index on args:\n%s", p)
	}
}
