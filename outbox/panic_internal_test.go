package outbox

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"

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

// River's retries of a run that failed wait as River's default policy
// says, at most max.
func TestRetryPolicyCapped(t *testing.T) {
	p := retryPolicy{max: time.Minute}
	for _, tc := range []struct {
		attempt  int
		atLeast  time.Duration
		atMost   time.Duration
		describe string
	}{
		{1, 0, 10 * time.Second, "River's own: about a second"},
		{3, 30 * time.Second, time.Minute + time.Second, "River's own: about 81 s, capped"},
		{25, 59 * time.Second, time.Minute + time.Second, "capped"},
		{900, 59 * time.Second, time.Minute + time.Second, "capped"},
	} {
		now := time.Now()
		job := &rivertype.JobRow{Attempt: tc.attempt, AttemptedAt: &now, Errors: make([]rivertype.AttemptError, tc.attempt-1)}
		wait := p.NextRetry(job).Sub(now)
		if wait < tc.atLeast || wait > tc.atMost {
			t.Errorf("attempt %d: wait %v, want %v to %v (%s)", tc.attempt, wait, tc.atLeast, tc.atMost, tc.describe)
		}
	}
}
