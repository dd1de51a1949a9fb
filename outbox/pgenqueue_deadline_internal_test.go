package outbox

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A group whose deadline passes while its pipeline waits (a keyed row
// held on the unique index by another transaction) stores nothing, tells
// each caller its deadline passed, and leaves the pool healthy.
func TestPgEnqueueGroupDeadlineMidPipeline(t *testing.T) {
	ob, pool := openPgGroupTest(t)
	ctx := context.Background()
	hold, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hold.Rollback(ctx) }()
	if _, err := hold.Exec(ctx, sqlInsertMessageInto+` VALUES ('held', 'queued', 0, 0, 0, 0, 0, $1, NULL, NULL, '\x00')`, ob.keys.idemDigests("held")[0]); err != nil {
		t.Fatal(err)
	}
	var calls []func() (string, error)
	for i := range 4 {
		calls = append(calls, func() (string, error) {
			ctx, cancel := context.WithTimeout(ctx, 400*time.Millisecond)
			defer cancel()
			var o *EnqueueOptions
			if i == 2 {
				o = &EnqueueOptions{IdempotencyKey: "held"}
			}
			return ob.Enqueue(ctx, groupMessage(i), o)
		})
	}
	began := time.Now()
	ids, errs := inOneEnqueueGroup(t, ob.enqueueGroup, calls)
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("returned after %v", took)
	}
	for i, err := range errs {
		if !errors.Is(err, context.DeadlineExceeded) || ids[i] != "" {
			t.Errorf("Enqueue %d: %q, %v", i, ids[i], err)
		}
	}
	_ = hold.Rollback(ctx)
	queuedOnce(t, ob, pool, nil)
	// The outbox's pool still serves a group.
	ids, errs = inOneEnqueueGroup(t, ob.enqueueGroup, []func() (string, error){
		func() (string, error) {
			return ob.Enqueue(ctx, groupMessage(7), &EnqueueOptions{IdempotencyKey: "held"})
		},
		func() (string, error) { return ob.Enqueue(ctx, groupMessage(8), nil) },
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("after: %d: %v", i, err)
		}
	}
	queuedOnce(t, ob, pool, ids)
}
