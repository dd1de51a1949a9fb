package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
)

// A notification ingested while an attempt is under way (Ingest looked
// before the job's run began, and committed after the attempt read the
// message) is not written over by the attempt's record: the record finds
// the message changed and applies its outcome to it as it is now.
func TestRecordAppliesOutcomeToChangedProgress(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			t.Parallel()
			where := filepath.Join(t.TempDir(), "mail.db")
			if db == "postgres" {
				where = pgtest.Start(t).NewDatabase(t)
			}
			var (
				mu    sync.Mutex
				ob    *Outbox
				id    string
				calls = map[string]int{}
				hook  error
			)
			rt := &mailsectest.RecordingTransport{PerDomain: true, Fail: func(d *mailsec.Delivery) error {
				mu.Lock()
				defer mu.Unlock()
				if !strings.HasSuffix(d.To[0], "@example.net") {
					return nil
				}
				calls[d.To[0]]++
				if calls[d.To[0]] == 1 {
					return &mailsec.SMTPError{Command: "RCPT", Code: 451, EnhancedCode: mailsec.EnhancedCode{4, 3, 0}, Message: "later"}
				}
				// The second attempt: a bounce for ann is recorded meanwhile.
				hook = bounceBehind(context.Background(), ob, id, "ann@example.org")
				return nil
			}}
			sender, err := mailsec.NewSender(rt, nil)
			if err != nil {
				t.Fatal(err)
			}
			key := NewKey()
			o := &Options{Keys: []Key{key}, MinBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, DeliveryTimeout: 10 * time.Second}
			mu.Lock()
			ob, err = Open(context.Background(), sender, where, o)
			if err != nil {
				mu.Unlock()
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ob.Close(context.Background()) })
			id, err = ob.Enqueue(context.Background(), &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org", "bob@example.net"},
				Subject: "s", Text: "t"}, nil)
			mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			if err := ob.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			var st *Status
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if st, err = ob.Status(context.Background(), id); err != nil {
					t.Fatal(err)
				}
				if st.State.finished() || time.Now().After(deadline) {
					break
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if hook != nil {
				t.Fatal(hook)
			}
			if st.State != PartlyDelivered || len(st.Recipients) != 2 || st.Recipients[0].State != Bounced ||
				st.Recipients[1].State != Accepted || len(st.Bounces) != 1 || len(st.Attempts) != 2 {
				t.Fatalf("after the attempt: %+v", st)
			}
		})
	}
}

// bounceBehind records a failed notification for rcpt in message id's
// progress, as Ingest does, behind any attempt's back.
func bounceBehind(ctx context.Context, ob *Outbox, id, rcpt string) error {
	r, err := loadRow(ctx, ob.eng.pool(), id)
	if err != nil {
		return err
	}
	prog, err := ob.openProgress(id, r.progress)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(prog.Recipients, func(rp rcptProgress) bool { return rp.Address == rcpt })
	if i < 0 {
		return errors.New("no such recipient in the progress")
	}
	prog.Recipients[i].State = Bounced
	prog.Recipients[i].Bounce = "5.1.1"
	prog.Bounces = append(prog.Bounces, Bounce{Received: time.Now(), Recipient: rcpt, Action: "failed", Status: "5.1.1"})
	b, err := json.Marshal(prog)
	if err != nil {
		return err
	}
	_, err = ob.eng.pool().exec(ctx, `UPDATE mailsec_outbox_message SET progress = $1 WHERE id = $2`, ob.keys.seal(b, aad("progress", id, "")), id)
	return err
}

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
