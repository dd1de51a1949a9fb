package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/outbox"
)

// rawConn reads and writes an outbox's database behind its back.
type rawConn struct {
	db   *sql.DB
	pool *pgxpool.Pool
}

func openRaw(t *testing.T, where string) *rawConn {
	t.Helper()
	if len(where) > 11 && where[:11] == "postgres://" {
		pool, err := pgxpool.New(context.Background(), where)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		return &rawConn{pool: pool}
	}
	return &rawConn{db: rawDB(t, where)}
}

func (c *rawConn) scan(t *testing.T, q string, args []any, dest ...any) {
	t.Helper()
	var err error
	if c.pool != nil {
		err = c.pool.QueryRow(context.Background(), q, args...).Scan(dest...)
	} else {
		err = c.db.QueryRow(q, args...).Scan(dest...)
	}
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func (c *rawConn) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	var err error
	if c.pool != nil {
		_, err = c.pool.Exec(context.Background(), q, args...)
	} else {
		_, err = c.db.Exec(q, args...)
	}
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// messageRow is what the outbox's row says of a message's attempts.
func (c *rawConn) messageRow(t *testing.T, id string) (state string, attempts int, runs sql.NullInt64) {
	t.Helper()
	c.scan(t, `SELECT state, attempts, job_runs FROM mailsec_outbox_message WHERE id = $1`, []any{id}, &state, &attempts, &runs)
	return state, attempts, runs
}

func bothDatabases(t *testing.T, f func(t *testing.T, where string)) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			t.Parallel()
			where := t.TempDir() + "/mail.db"
			if db == "postgres" {
				where = pgtest.Start(t).NewDatabase(t)
			}
			f(t, where)
		})
	}
}

// oneQueued opens an outbox at where on a sender to h, queues one
// message, and returns the outbox, a raw connection to its database and
// the message's ID; start starts delivery after the queueing.
func oneQueued(t *testing.T, where string, h *holdServer, start bool) (*outbox.Outbox, *rawConn, string) {
	t.Helper()
	ob := openAt(t, newSender(t, h.Transport(), nil), where, fast(nil), false)
	raw := openRaw(t, where)
	id, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if start {
		if err := ob.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return ob, raw, id
}

// An attempt writes nothing before it sends: River committed the run's
// start, which is the mark. Meanwhile the message reads as Sending, Retry
// says so and queues no second job, and Stats count it as being sent,
// not as due. Its record then accounts for the run.
func TestAttemptWritesNothingBeforeSending(t *testing.T) {
	bothDatabases(t, func(t *testing.T, where string) {
		h := newHoldServer(t, holdEndOfData, 1, 0)
		ob, raw, id := oneQueued(t, where, h, true)
		ctx := context.Background()
		h.waitHeld(t)
		if state, attempts, runs := raw.messageRow(t, id); state != "queued" || attempts != 0 || runs.Int64 != 0 || !runs.Valid {
			t.Fatalf("while the server holds the end of the message: state %s, attempts %d, job_runs %v", state, attempts, runs)
		}
		if st, err := ob.Status(ctx, id); err != nil || st.State != outbox.Sending {
			t.Fatalf("Status: %+v, %v", st, err)
		}
		if s, err := ob.Stats(ctx); err != nil || s.Sending != 1 || s.Due != 0 || s.Depth != 1 {
			t.Fatalf("Stats: %+v, %v", s, err)
		}
		for _, o := range []*outbox.ListOptions{nil, {States: []outbox.State{outbox.Sending}}} {
			l, err := ob.List(ctx, o)
			if err != nil || len(l) != 1 || l[0].State != outbox.Sending {
				t.Fatalf("List(%+v): %+v, %v", o, l, err)
			}
		}
		if l, err := ob.List(ctx, &outbox.ListOptions{States: []outbox.State{outbox.Queued}}); err != nil || len(l) != 0 {
			t.Fatalf("List(queued): %+v, %v", l, err)
		}
		if err := ob.Retry(ctx, id); !errors.Is(err, outbox.ErrSending) {
			t.Fatalf("Retry during the attempt: %v", err)
		}
		var jobs int
		raw.scan(t, `SELECT COUNT(*) FROM river_job WHERE kind = 'mailsec_outbox_deliver'`, nil, &jobs)
		if jobs != 1 {
			t.Fatalf("%d delivery jobs", jobs)
		}
		h.Release()
		st := waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
		if len(st.Attempts) != 1 || st.Attempts[0].Number != 1 || len(st.Attempts[0].PossibleDuplicates) != 0 {
			t.Fatalf("attempts: %+v", st.Attempts)
		}
		if state, attempts, runs := raw.messageRow(t, id); state != "delivered" || attempts != 1 || runs.Int64 != 1 {
			t.Fatalf("after the attempt: state %s, attempts %d, job_runs %v", state, attempts, runs)
		}
		if n := h.Total(); n != 1 {
			t.Fatalf("the server took %d messages", n)
		}
	})
}

// A message queued before runs were counted (schema version 3) has its
// job's runs written, and committed, before its first attempt sends.
func TestQueuedBeforeRunsWereCounted(t *testing.T) {
	bothDatabases(t, func(t *testing.T, where string) {
		h := newHoldServer(t, holdEndOfData, 1, 0)
		ob, raw, id := oneQueued(t, where, h, false)
		ctx := context.Background()
		raw.exec(t, `UPDATE mailsec_outbox_message SET job_runs = NULL WHERE id = $1`, id)
		if err := ob.Start(ctx); err != nil {
			t.Fatal(err)
		}
		h.waitHeld(t)
		if state, attempts, runs := raw.messageRow(t, id); state != "queued" || attempts != 0 || !runs.Valid || runs.Int64 != 0 {
			t.Fatalf("while the server holds the end of the message: state %s, attempts %d, job_runs %v", state, attempts, runs)
		}
		h.Release()
		st := waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
		if len(st.Attempts) != 1 || st.Attempts[0].Number != 1 || len(st.Attempts[0].PossibleDuplicates) != 0 {
			t.Fatalf("attempts: %+v", st.Attempts)
		}
	})
}

// A run that finds its message not due sends nothing and accounts for
// itself, and for itself alone: the next run is not taken for one whose
// worker died, and a run before it that did die still makes the next
// attempt flag its recipients.
func TestRunNotDueAccountsForItself(t *testing.T) {
	for _, died := range []bool{false, true} {
		t.Run(fmt.Sprintf("after a dead run %v", died), func(t *testing.T) {
			bothDatabases(t, func(t *testing.T, where string) {
				ob, raw, id := oneQueued(t, where, newHoldServer(t, holdNone, 0, 0), false)
				ctx := context.Background()
				if died {
					// The job's first run started and died; River's rescue
					// made the job available again.
					raw.exec(t, `UPDATE river_job SET attempt = 1 WHERE kind = 'mailsec_outbox_deliver'`)
				}
				// The job is available now, the message due in an hour: as
				// when instances' clocks disagree.
				raw.exec(t, `UPDATE mailsec_outbox_message SET next_at = $1 WHERE id = $2`, time.Now().Add(time.Hour).UnixMicro(), id)
				if err := ob.Start(ctx); err != nil {
					t.Fatal(err)
				}
				for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
					if _, _, runs := raw.messageRow(t, id); runs.Int64 == 1 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the run that found the message not due did not account for itself")
					}
				}
				if err := ob.Retry(ctx, id); err != nil {
					t.Fatal(err)
				}
				st := waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
				number, dups := 1, 0
				if died {
					number, dups = 2, 1
				}
				if len(st.Attempts) != 1 || st.Attempts[0].Number != number || len(st.Attempts[0].PossibleDuplicates) != dups || st.Recipients[0].PossibleDuplicate != died {
					t.Fatalf("attempts: %+v", st.Attempts)
				}
				if _, attempts, runs := raw.messageRow(t, id); attempts != number || runs.Int64 != int64(number+1) {
					t.Fatalf("attempts %d, job_runs %v", attempts, runs)
				}
			})
		})
	}
}
