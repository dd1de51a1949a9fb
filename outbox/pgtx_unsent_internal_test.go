package outbox

import (
	"context"
	"testing"
)

// A Query that fails before anything goes out (its context has ended)
// leaves no statement to run outside the transaction: what follows fails,
// or runs in it, so that the rollback undoes it and a commit stores all
// of it or none.
func TestPipedTxUnsentQueryKeepsTransaction(t *testing.T) {
	ctx := t.Context()
	pool, _ := pipedTxTest(t)
	const sqlCount = `SELECT count(*) FROM piped`
	ended, cancel := context.WithCancel(ctx)
	cancel()
	begin := func(t *testing.T, vs ...int32) (*pipedTx, *int) {
		t.Helper()
		tx := beginPipedTest(t, pool)
		// Prepared on the connection, as River's insert is after its first.
		if _, err := tx.Prepare(ctx, sqlCount, sqlCount); err != nil {
			t.Fatal(err)
		}
		inserted := queueInserts(t, ctx, tx, vs...)
		if _, err := tx.Query(ended, sqlCount); err == nil {
			t.Fatal("Query with an ended context succeeded")
		}
		return tx, inserted
	}

	t.Run("rollback", func(t *testing.T) {
		tx, _ := begin(t, 1, 2)
		_, _ = tx.Exec(ctx, `INSERT INTO piped VALUES (3)`)
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if got := countPiped(t, pool); got != 0 {
			t.Errorf("%d rows stored by a transaction rolled back", got)
		}
		assertPoolServes(t, pool)
	})

	t.Run("commit", func(t *testing.T) {
		tx, inserted := begin(t, 11, 12)
		_, execErr := tx.Exec(ctx, `INSERT INTO piped VALUES (13)`)
		commitErr := tx.Commit(ctx)
		got := countPiped(t, pool)
		if execErr == nil && commitErr == nil {
			if got != 3 || *inserted != 2 {
				t.Errorf("Commit succeeded with %d of 3 rows stored (%d queued inserts read)", got, *inserted)
			}
		} else if got != 0 {
			t.Errorf("Exec: %v, Commit: %v, yet %d rows stored", execErr, commitErr, got)
		}
		if commitErr != nil && !rolledBack(commitErr) {
			t.Errorf("Commit: %v, not known to have stored nothing", commitErr)
		}
		assertPoolServes(t, pool)
	})
}
