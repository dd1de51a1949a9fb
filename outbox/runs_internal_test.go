package outbox

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
)

// River rescues a job still running RescueStuckJobsAfter after its run
// started, and runs it again: a run must be over by then, or its late
// end (a snooze, whose "snoozes" River merges into the job's metadata
// whatever its state) sets the job's count of runs back, and a later run
// that dies is not told from one that did not (its recipients are sent to
// again unflagged). OnReceipt is called within the run: one that does not
// return (a webhook without a timeout) must not keep the run going past
// its lease.
func TestRunEndsBeforeRescueWhateverOnReceiptDoes(t *testing.T) {
	where := filepath.Join(t.TempDir(), "mail.db")
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	called := make(chan struct{}, 1)
	sender, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := &Options{Keys: []Key{NewKey()}, DeliveryTimeout: time.Second, OnReceipt: func(context.Context, *Attempt) {
		called <- struct{}{}
		<-block
	}}
	ctx := context.Background()
	ob, err := Open(ctx, sender, where, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close(context.Background()) })
	id, err := ob.Enqueue(ctx, &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Subject: "s", Text: "t"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The run as River gives it: a context that ends after JobTimeout.
	started := time.Now()
	jctx, cancel := context.WithTimeout(ctx, ob.o.jobTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ob.work(jctx, id, 1) }()
	select {
	case <-called:
	case <-time.After(ob.o.jobTimeout):
		t.Fatal("OnReceipt not called")
	}
	select {
	case <-done:
	case <-time.After(ob.o.rescueAfter - time.Since(started)):
		t.Fatalf("the run is still going %v after it started, when River rescues its job and runs it again", ob.o.rescueAfter)
	}
}

// A run whose number is not beyond the runs the message accounted for
// follows a run whose late end set River's count back (a stale snooze
// merged into the job's metadata): the count no longer tells which runs
// died. The run flags its recipients, and counts from its own number
// again before sending, so that if it dies in turn, the run after it
// flags them too.
func TestRunCountSetBackIsFlagged(t *testing.T) {
	where := filepath.Join(t.TempDir(), "mail.db")
	sender, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ob, err := Open(ctx, sender, where, &Options{Keys: []Key{NewKey()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close(context.Background()) })
	id, err := ob.Enqueue(ctx, &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Subject: "s", Text: "t"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Runs 1 to 3 accounted for; River's count was set back by one, so
	// that the next run is numbered 3 again.
	if _, err := ob.eng.pool().exec(ctx, `UPDATE mailsec_outbox_message SET job_runs = 3 WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	_, _, left, err := ob.start(ctx, id, 3, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !left {
		t.Errorf("run 3 after 3 runs accounted for is not taken to follow one that may have sent the message")
	}
	// Run 3 dies having sent the message; River runs the job again.
	_, lost, left, err := ob.start(ctx, id, 4, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !left || lost != 1 {
		t.Errorf("the run after a run that died: leftInFlight %v, lost %d; want true, 1", left, lost)
	}
}
