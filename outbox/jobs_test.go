package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/mailsec/mailsec/outbox"
)

// A message queued by schema version 3 may have two live delivery jobs:
// version 3's Retry queued a second one whenever the first was running
// (an attempt under way, or River not yet having recorded its end), and
// relied on the in-flight mark to keep the two from attempting at once.
// Version 4 writes no mark: the migration to it leaves one job per
// message, so that the two never attempt the message at the same time.
func TestLegacySecondJobNeverAttemptsAtOnce(t *testing.T) {
	bothDatabases(t, func(t *testing.T, where string) {
		h := newHoldServer(t, holdEndOfData, 2, 0)
		ob := openAt(t, newSender(t, h.Transport(), nil), where, fast(nil), false)
		raw := openRaw(t, where)
		ctx := context.Background()
		id, err := ob.Enqueue(ctx, message(), nil)
		if err != nil {
			t.Fatal(err)
		}
		other, err := ob.Enqueue(ctx, message(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := ob.Close(ctx); err != nil {
			t.Fatal(err)
		}
		// What version 3 left: rows without job_runs, a second job its
		// Retry queued beside the first for one message, the schema at 3.
		raw.exec(t, `UPDATE mailsec_outbox_message SET job_runs = NULL`)
		raw.exec(t, `INSERT INTO river_job (args, kind, max_attempts, metadata, priority, queue, state, scheduled_at, tags)
SELECT args, kind, max_attempts, metadata, priority, queue, state, scheduled_at, tags FROM river_job WHERE kind = 'mailsec_outbox_deliver' AND args ->> 'id' = $1`, id)
		raw.exec(t, `UPDATE mailsec_outbox_schema SET version = 3`)
		ob = openAt(t, newSender(t, h.Transport(), nil), where, fast(nil), false)
		var jobs int
		raw.scan(t, `SELECT COUNT(*) FROM river_job WHERE kind = 'mailsec_outbox_deliver' AND args ->> 'id' = $1`, []any{id}, &jobs)
		if jobs != 1 {
			t.Fatalf("after the migration, %d delivery jobs for the message", jobs)
		}
		raw.scan(t, `SELECT COUNT(*) FROM river_job WHERE kind = 'mailsec_outbox_deliver' AND args ->> 'id' = $1`, []any{other}, &jobs)
		if jobs != 1 {
			t.Fatalf("after the migration, %d delivery jobs for the other message", jobs)
		}
		if err := ob.Start(ctx); err != nil {
			t.Fatal(err)
		}
		// Both messages sent whole, their 250s held: a second attempt at
		// either now is a second transaction the server takes.
		h.waitHeld(t)
		h.waitHeld(t)
		time.Sleep(2 * time.Second)
		if n := h.Total(); n != 2 {
			t.Errorf("the server took %d messages while the first attempts waited for their 250s", n)
		}
		h.Release()
		for _, m := range []string{id, other} {
			st := waitFor(t, ob, m, outbox.Delivered, 20*time.Second)
			if len(st.Attempts) != 1 || len(st.Attempts[0].PossibleDuplicates) != 0 {
				t.Errorf("attempts: %+v", st.Attempts)
			}
			if n := h.Received()[bareID(st.MessageID)]; n != 1 {
				t.Errorf("the server took message %s %d times", m, n)
			}
		}
	})
}

// River can end a message's job without the outbox having accounted for
// its last run: the rescuer discards a job whose worker died once it is
// out of attempts, or when the leader that rescues it has no worker for
// the outbox's kind (an application's own River client on the same
// database). The message is then queued with no job, and Retry queues a
// new one. The run that died may have delivered the message: the new
// job's attempt must flag its recipients.
func TestRetryAfterJobEndedKeepsDeadRunFlagged(t *testing.T) {
	bothDatabases(t, func(t *testing.T, where string) {
		ob, raw, id := oneQueued(t, where, newHoldServer(t, holdNone, 0, 0), false)
		ctx := context.Background()
		// The job's first run started (River committed attempt 1), its
		// worker died, and the rescuer discarded the job.
		raw.exec(t, `UPDATE river_job SET state = 'discarded', attempt = 1, attempted_at = created_at, finalized_at = created_at
WHERE kind = 'mailsec_outbox_deliver'`)
		if err := ob.Retry(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := ob.Start(ctx); err != nil {
			t.Fatal(err)
		}
		st := waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
		if len(st.Attempts) == 0 || len(st.Attempts[len(st.Attempts)-1].PossibleDuplicates) == 0 || !st.Recipients[0].PossibleDuplicate {
			t.Errorf("the attempt after a run that died unrecorded flags no possible duplicate: %+v", st.Attempts)
		}
	})
}
