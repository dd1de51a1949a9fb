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
// Version 4 writes no mark, so after an upgrade the two jobs' runs must
// still never attempt the message at the same time.
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
		// What version 3 left: the row without job_runs, and the second
		// job its Retry queued beside the first.
		raw.exec(t, `UPDATE mailsec_outbox_message SET job_runs = NULL WHERE id = $1`, id)
		raw.exec(t, `INSERT INTO river_job (args, kind, max_attempts, metadata, priority, queue, state, scheduled_at, tags)
SELECT args, kind, max_attempts, metadata, priority, queue, state, scheduled_at, tags FROM river_job WHERE kind = 'mailsec_outbox_deliver'`)
		if err := ob.Start(ctx); err != nil {
			t.Fatal(err)
		}
		h.waitHeld(t) // one attempt has sent the whole message; its 250 is held
		select {
		case <-h.held:
			t.Errorf("a second attempt at the message sent it while the first was still under way")
		case <-time.After(5 * time.Second):
		}
		h.Release()
		st := waitFor(t, ob, id, "", 20*time.Second)
		flagged := false
		for _, a := range st.Attempts {
			flagged = flagged || len(a.PossibleDuplicates) > 0
		}
		if n := h.Total(); n > 1 && !flagged {
			t.Errorf("the server took the message %d times and no attempt flagged a possible duplicate: %+v", n, st.Attempts)
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
		h := newHoldServer(t, holdNone, 0, 0)
		ob := openAt(t, newSender(t, h.Transport(), nil), where, fast(nil), false)
		raw := openRaw(t, where)
		ctx := context.Background()
		id, err := ob.Enqueue(ctx, message(), nil)
		if err != nil {
			t.Fatal(err)
		}
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
