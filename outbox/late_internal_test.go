package outbox

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
)

// On Postgres a finished attempt is recorded after its run has returned
// (lateRecords). These tests hold or drop that record through
// lateRecords.before.

// lateOpen opens an outbox on a fresh Postgres database, delivering
// through tr, with before as the late records' hook; it is not started.
func lateOpen(t *testing.T, tr *mailsectest.RecordingTransport, o *Options, before func(id string) bool) (*Outbox, *logBuffer) {
	t.Helper()
	ob, log := sweepOpen(t, pgtest.Start(t).NewDatabase(t), tr, o)
	if ob.later == nil {
		t.Fatal("no late records on Postgres")
	}
	ob.later.before = before
	return ob, log
}

// waitJobState waits until message id's newest job is in state want.
func waitJobState(t *testing.T, ob *Outbox, id, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for jobState(t, ob, id) != want {
		if time.Now().After(deadline) {
			t.Fatalf("the message's job is %s after 20s, want %s", jobState(t, ob, id), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// While a finished attempt's record is still to commit, its message is
// queued and River has completed its job: Status, List and Stats show it
// sending, Retry says an attempt is under way, and the clean-up gives it
// no job, so that nothing sends it again. Once the record commits, the
// message is delivered, once.
func TestLateRecordKeepsMessageFromNewJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr := &mailsectest.RecordingTransport{}
	held, release := make(chan string, 1), make(chan struct{})
	var once sync.Once
	var calls atomic.Int32
	ob, _ := lateOpen(t, tr, nil, func(id string) bool {
		// The first record is held; any other (had anything sent the
		// message again) is made at once.
		if calls.Add(1) == 1 {
			held <- id
			<-release
		}
		return true
	})
	// Before the outbox's Close, which waits for the held record.
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	id := sweepEnqueue(t, ob, "ann@example.org")
	if err := ob.Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-held:
		if got != id {
			t.Fatalf("late record of %s, want %s", got, id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no late record")
	}
	waitJobState(t, ob, id, "completed")
	if st, err := ob.Status(ctx, id); err != nil || st.State != Sending || len(st.Attempts) != 0 {
		t.Fatalf("before its record: %+v, %v", st, err)
	}
	if l, err := ob.List(ctx, &ListOptions{States: []State{Sending}}); err != nil || len(l) != 1 || l[0].ID != id {
		t.Fatalf("listed as sending before its record: %+v, %v", l, err)
	}
	if s, err := ob.Stats(ctx); err != nil || s.Sending != 1 || s.Due != 0 {
		t.Fatalf("stats before its record: %+v, %v", s, err)
	}
	if err := ob.Retry(ctx, id); !errors.Is(err, ErrSending) {
		t.Errorf("Retry before the record: %v, want ErrSending", err)
	}
	if err := ob.clean(ctx); err != nil {
		t.Fatal(err)
	}
	if live, all := jobCounts(t, ob, id); live != 0 || all != 1 {
		t.Errorf("after Retry and the clean-up: %d live jobs of %d, want 0 of 1", live, all)
	}
	once.Do(func() { close(release) })
	st := waitState(t, ob, id, Delivered)
	if got := attemptsSeen(st); got != "#1 dup=[]; recipient flagged=false" {
		t.Errorf("attempts: %s", got)
	}
	// Time for a second run, had anything given the message a job.
	time.Sleep(300 * time.Millisecond)
	if n := len(tr.Deliveries()); n != 1 {
		t.Errorf("%d deliveries, want 1", n)
	}
}

// A finished attempt's record that never commits (its process died) leaves
// the message queued with its job completed. The clean-up leaves it while
// the record may still commit, then gives it a job; its next attempt
// sends it again, its recipient flagged as a possible duplicate.
func TestLateRecordLostIsTakenUpAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr := &mailsectest.RecordingTransport{}
	var drop atomic.Bool
	drop.Store(true)
	ob, log := lateOpen(t, tr, nil, func(string) bool { return !drop.Swap(false) })
	id := sweepEnqueue(t, ob, "ann@example.org")
	if err := ob.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitJobState(t, ob, id, "completed")
	if err := ob.clean(ctx); err != nil {
		t.Fatal(err)
	}
	if live, _ := jobCounts(t, ob, id); live != 0 {
		t.Fatal("the clean-up gave the message a job while its record might still commit")
	}
	// As if the window had passed.
	if _, err := ob.eng.pool().exec(ctx, `UPDATE river_job SET finalized_at = finalized_at - $1 * interval '1 microsecond' WHERE id = $2`,
		ob.eng.recentlyEnded().Microseconds(), lastJob(t, ob, id)); err != nil {
		t.Fatal(err)
	}
	if err := ob.clean(ctx); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, ob, id, Delivered)
	if got := attemptsSeen(st); got != "#2 dup=[ann@example.org]; recipient flagged=true" {
		t.Errorf("attempts: %s", got)
	}
	if n := len(tr.Deliveries()); n != 2 {
		t.Errorf("%d deliveries, want 2", n)
	}
	if !strings.Contains(log.String(), "id="+id) {
		t.Errorf("the log does not name the message queued again:\n%s", log.String())
	}
}

// Close returns once the late records under way have committed, and
// reported.
func TestCloseWaitsForLateRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	held := make(chan string, 1)
	var reported atomic.Bool
	ob, _ := lateOpen(t, &mailsectest.RecordingTransport{}, &Options{OnReceipt: func(context.Context, *Attempt) { reported.Store(true) }},
		func(id string) bool {
			held <- id
			time.Sleep(300 * time.Millisecond)
			return true
		})
	sweepEnqueue(t, ob, "ann@example.org")
	if err := ob.Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("no late record")
	}
	if err := ob.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !reported.Load() {
		t.Error("Close returned before the late record was made")
	}
}

// Only a finished attempt is recorded late: a deferred one is recorded by
// its run, which snoozes the job until the next attempt.
func TestDeferredAttemptNotRecordedLate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr, _, _ := byRecipient()
	var late atomic.Int32
	ob, _ := lateOpen(t, tr, &Options{MinBackoff: time.Hour, MaxBackoff: 2 * time.Hour}, func(string) bool {
		late.Add(1)
		return true
	})
	deferred := sweepEnqueue(t, ob, "later@example.org")
	delivered := sweepEnqueue(t, ob, "ann@example.org")
	if err := ob.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitState(t, ob, delivered, Delivered)
	waitJobState(t, ob, deferred, "scheduled")
	if st, err := ob.Status(ctx, deferred); err != nil || st.State != Queued || len(st.Attempts) != 1 {
		t.Fatalf("deferred: %+v, %v", st, err)
	}
	if n := late.Load(); n != 1 {
		t.Errorf("%d late records, want 1 (the delivered message's)", n)
	}
}
