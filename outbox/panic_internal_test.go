package outbox

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
)

// A run that panics on every attempt (a defect the message brings out)
// leaves the message queued, River retrying its job at most MaxBackoff
// apart, until a run after the message's expiry ends it as expired: its
// recipients named as possible duplicates, its content deleted, nothing
// sent.
func TestPanickingDeliveryExpires(t *testing.T) {
	sweepDatabases(t, func(t *testing.T, fresh func() string) {
		tr := &mailsectest.RecordingTransport{}
		var told atomic.Pointer[Attempt] // the last attempt OnReceipt was given
		var runs atomic.Int32
		ob, log := sweepOpen(t, fresh(), tr, &Options{MaxAge: 2 * time.Second, OnReceipt: func(_ context.Context, a *Attempt) {
			told.Store(a)
		}})
		ob.beforeSend = func(string) {
			runs.Add(1)
			panic("a defect in the attempt")
		}
		id := sweepEnqueue(t, ob, "ann@example.org")
		if err := ob.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Before the expiry, the message stays unfinished however often
		// the runs panic.
		time.Sleep(time.Second)
		if st, err := ob.Status(context.Background(), id); err != nil || st.State.finished() {
			t.Fatalf("before its expiry: %+v, %v", st, err)
		}
		st := waitState(t, ob, id, Expired)
		if runs.Load() < 2 {
			t.Errorf("%d runs panicked; want River to have retried the job", runs.Load())
		}
		if len(tr.Deliveries()) != 0 {
			t.Fatalf("%d deliveries made", len(tr.Deliveries()))
		}
		last := st.Attempts[len(st.Attempts)-1]
		if last.State != Expired || !strings.Contains(last.Error, "panicked") || !slices.Equal(last.PossibleDuplicates, []string{"ann@example.org"}) {
			t.Errorf("last attempt %+v", last)
		}
		if !strings.Contains(st.Problem, "panicked") {
			t.Errorf("problem %q", st.Problem)
		}
		var content int
		if err := ob.eng.pool().queryRow(context.Background(), `SELECT COUNT(*) FROM mailsec_outbox_message WHERE id = $1 AND envelope IS NOT NULL`, id).Scan(&content); err != nil || content != 0 {
			t.Errorf("content left: %d, %v", content, err)
		}
		if !strings.Contains(log.String(), "delivery panicked") || strings.Contains(log.String(), "a defect in the attempt") {
			t.Errorf("the log should name the panic's type, never its value:\n%s", log.String())
		}
		// OnReceipt is called once the expiry is committed.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if a := told.Load(); a != nil && a.State == Expired {
				break
			}
		}
		if a := told.Load(); a == nil || a.State != Expired {
			t.Errorf("OnReceipt was not told of the expiry: %+v", a)
		}
	})
}

// River's retries of a delivery job's failed run wait as River's default
// policy says, at most max; the clean-up's, as River's default says.
func TestRetryPolicyCapped(t *testing.T) {
	p := retryPolicy{max: time.Minute}
	for _, tc := range []struct {
		kind     string
		attempt  int
		atLeast  time.Duration
		atMost   time.Duration
		describe string
	}{
		{deliverKind, 1, 0, 10 * time.Second, "River's own: about a second"},
		{deliverKind, 3, 30 * time.Second, time.Minute + time.Second, "River's own: about 81 s, capped"},
		{deliverKind, 25, 59 * time.Second, time.Minute + time.Second, "capped"},
		{deliverKind, 900, 59 * time.Second, time.Minute + time.Second, "capped"},
		{cleanKind, 25, 24 * time.Hour, 10000 * time.Hour, "River's own: 25^4 s"},
	} {
		now := time.Now()
		job := &rivertype.JobRow{Kind: tc.kind, Attempt: tc.attempt, AttemptedAt: &now, Errors: make([]rivertype.AttemptError, tc.attempt-1)}
		wait := p.NextRetry(job).Sub(now)
		if wait < tc.atLeast || wait > tc.atMost {
			t.Errorf("%s attempt %d: wait %v, want %v to %v (%s)", tc.kind, tc.attempt, wait, tc.atLeast, tc.atMost, tc.describe)
		}
	}
}

// runsOpen opens an outbox at where whose messages expire a second after
// they are queued, queues one to ann@example.org, and returns it and the
// transport it delivers through. It is not started: the tests run the
// job's runs themselves, as River would, with ob.work.
func runsOpen(t *testing.T, where string) (*Outbox, string, *mailsectest.RecordingTransport) {
	t.Helper()
	tr := &mailsectest.RecordingTransport{}
	sender, err := mailsec.NewSender(tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := Open(context.Background(), sender, where, &Options{Keys: []Key{NewKey()}, MaxAge: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close(context.Background()) })
	id, err := ob.Enqueue(context.Background(), &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Subject: "s", Text: "t"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ob, id, tr
}

// Run 1 outlives its lease and is still sending when run 2 panics past the
// message's expiry. The expiry is numbered after run 1's attempt, as
// start numbers an attempt after a run unaccounted for, so run 1's late
// record (taken over, kept as it is) does not replace it.
func TestExpiryAfterPanicNumberedAfterRunsUnaccounted(t *testing.T) {
	sweepDatabases(t, func(t *testing.T, fresh func() string) {
		ob, id, tr := runsOpen(t, fresh())
		ctx := context.Background()
		var calls atomic.Int32
		reached, release := make(chan struct{}), make(chan struct{})
		ob.beforeSend = func(string) {
			if calls.Add(1) == 1 {
				close(reached)
				<-release
				return
			}
			panic("a defect in the attempt")
		}
		run1 := make(chan error, 1)
		go func() { run1 <- ob.work(ctx, id, 1) }()
		<-reached
		time.Sleep(1100 * time.Millisecond) // past the expiry
		if err := ob.work(ctx, id, 2); err != nil {
			t.Fatalf("run 2: %v", err)
		}
		close(release)
		if err := <-run1; err != errTakenOver {
			t.Errorf("run 1: %v, want it taken over", err)
		}
		st, err := ob.Status(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var seen []string
		for _, a := range st.Attempts {
			seen = append(seen, fmt.Sprintf("#%d %s dup=%v", a.Number, a.State, a.PossibleDuplicates))
		}
		want := []string{"#1 sending dup=[]", "#2 expired dup=[ann@example.org]"}
		if st.State != Expired || !slices.Equal(seen, want) || len(tr.Deliveries()) != 1 {
			t.Errorf("state %s, attempts %q, %d deliveries; want expired, %q, 1", st.State, seen, len(tr.Deliveries()), want)
		}
	})
}

// Run 1 outlives its lease (its context ended at River's JobTimeout); River
// rescued the job and run 2 is sending. Run 1 then panics past the expiry:
// it leaves the message to run 2, which delivers it.
func TestStaleRunPanicLeavesMessageToTheNextRun(t *testing.T) {
	sweepDatabases(t, func(t *testing.T, fresh func() string) {
		ob, id, tr := runsOpen(t, fresh())
		ctx := context.Background()
		var calls atomic.Int32
		reached1, reached2, release1, release2 := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
		ob.beforeSend = func(string) {
			if calls.Add(1) == 1 { // run 1: hangs, then panics
				close(reached1)
				<-release1
				panic("a defect in the attempt")
			}
			close(reached2) // run 2: sends once released
			<-release2
		}
		run1, run2 := make(chan error, 1), make(chan error, 1)
		jctx, jcancel := context.WithTimeout(ctx, 500*time.Millisecond) // River's JobTimeout
		defer jcancel()
		go func() { run1 <- ob.work(jctx, id, 1) }()
		<-reached1
		go func() { run2 <- ob.work(ctx, id, 2) }() // River's rescue
		<-reached2
		time.Sleep(1100 * time.Millisecond) // past the expiry
		close(release1)
		if err := <-run1; err == nil {
			t.Error("the stale run that panicked ended without an error")
		}
		close(release2)
		if err := <-run2; err != nil {
			t.Errorf("run 2: %v", err)
		}
		st, err := ob.Status(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != Delivered || len(tr.Deliveries()) != 1 {
			t.Errorf("state %s after %d deliveries; want delivered, 1", st.State, len(tr.Deliveries()))
		}
	})
}
