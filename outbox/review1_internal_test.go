package outbox

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
)

// A run that outlived its lease (River rescued its job, and the job's
// next run recorded an attempt first) records its own attempt after the
// other's. Its message is still queued: the run must not end the job
// (River would complete it, leaving the message with no job to run it),
// and what its Send did (a recipient the server accepted) must not be
// dropped, or a later attempt sends to that recipient again unflagged.
func TestTakenOverRunKeepsJobAndOutcome(t *testing.T) {
	where := filepath.Join(t.TempDir(), "mail.db")
	var (
		mu   sync.Mutex
		ob   *Outbox
		id   string
		hook error
	)
	rt := &mailsectest.RecordingTransport{Fail: func(d *mailsec.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		// Meanwhile the job's next run recorded attempt 1 (a temporary
		// failure, the recipient still pending), its run counted as 2.
		_, hook = ob.eng.pool().exec(context.Background(), `UPDATE mailsec_outbox_message SET attempts = 1, job_runs = 2, next_at = $1 WHERE id = $2`,
			time.Now().Add(time.Minute).UnixMicro(), id)
		return nil
	}}
	sender, err := mailsec.NewSender(rt, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := &Options{Keys: []Key{NewKey()}, DeliveryTimeout: 10 * time.Second}
	ctx := context.Background()
	mu.Lock()
	ob, err = Open(ctx, sender, where, o)
	if err != nil {
		mu.Unlock()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close(context.Background()) })
	id, err = ob.Enqueue(ctx, &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Subject: "s", Text: "t"}, nil)
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	r, lost, left, err := ob.start(ctx, id, 1, time.Now())
	if err != nil || r == nil {
		t.Fatal(r, err)
	}
	err = ob.attempt(ctx, r, 1, lost, left)
	mu.Lock()
	if hook != nil {
		t.Fatal(hook)
	}
	mu.Unlock()
	if err == nil {
		t.Errorf("the run ends its job (River completes it) though its message is queued")
	}
	st, serr := ob.Status(ctx, id)
	if serr != nil {
		t.Fatal(serr)
	}
	if st.State != Queued || len(st.Recipients) != 1 || st.Recipients[0].State != Accepted {
		t.Errorf("the server accepted ann, but the message is %s with recipients %+v", st.State, st.Recipients)
	}
}
