package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// On a database Migrate made (no mode recorded), the storage mode that
// the first EnqueuePgxTx claims is not held in the application's
// transaction: while it is open, other Enqueues, of this process and of
// another, go through.
func TestStorageClaimNotHeldByApplicationTx(t *testing.T) {
	pg := pgtest.Start(t)
	ctx := context.Background()
	url := pg.NewDatabase(t)
	if err := outbox.Migrate(ctx, url); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	ob, err := outbox.OpenPostgres(ctx, s, pool, fast(&outbox.Options{SkipMigrations: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close(context.Background()) })
	other := openAt(t, s, url, fast(&outbox.Options{SkipMigrations: true}), false)

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := ob.EnqueuePgxTx(ctx, tx, message(), nil); err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]*outbox.Outbox{"same process": ob, "other process": other} {
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		start := time.Now()
		_, err := o.Enqueue(c, message(), nil)
		cancel()
		if err != nil {
			t.Errorf("%s: Enqueue while the application's transaction is open: %v after %v", name, err, time.Since(start).Round(time.Millisecond))
		}
	}
}
