package outbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// migratedOutbox returns a Postgres database that Migrate made (it
// records no storage mode), a pool on it of maxConns connections (0: the
// default), and a sealed outbox opened on the pool with SkipMigrations.
func migratedOutbox(t *testing.T, maxConns int32) (string, *pgxpool.Pool, *mailsec.Sender, *outbox.Outbox) {
	t.Helper()
	ctx := context.Background()
	url := pgtest.Start(t).NewDatabase(t)
	if err := outbox.Migrate(ctx, url); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
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
	return url, pool, s, ob
}

// On a database Migrate made (no mode recorded), the storage mode that
// the first EnqueuePgxTx claims is not held in the application's
// transaction: while it is open, other Enqueues, of this process and of
// another, go through.
func TestStorageClaimNotHeldByApplicationTx(t *testing.T) {
	ctx := context.Background()
	url, pool, s, ob := migratedOutbox(t, 0)
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

// With a pool of one connection, which the application's transaction
// holds, the first EnqueuePgxTx on a database that records no mode
// claims it in that transaction rather than wait for the pool for ever;
// the claim commits with it.
func TestStorageClaimPoolOfOne(t *testing.T) {
	ctx := context.Background()
	url, pool, s, ob := migratedOutbox(t, 1)

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := ob.EnqueuePgxTx(c, tx, message(), nil); err != nil {
		t.Fatalf("EnqueuePgxTx with the pool's one connection in the transaction: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var ce *mailsec.ConfigError
	if _, err := outbox.Open(ctx, s, url, &outbox.Options{Plaintext: true, SkipMigrations: true}); !errors.As(err, &ce) {
		t.Fatalf("a plaintext Open after the sealed claim committed: %v, want a *mailsec.ConfigError", err)
	}
}
