package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/riverqueue/river"
)

// groupCommit runs the short writing transactions of concurrent callers
// on SQLite (Enqueues, an attempt's start and record) together in one
// transaction, each in a savepoint of its own: a SQLite outbox writes through one
// connection and every commit waits for the disk, so N workers' writes
// committed at once cost one sync instead of N. Each caller returns only
// once the transaction holding its work has committed: durability is
// that of a transaction of its own. A caller's failed work is rolled back
// to its savepoint and does not touch the others'; a failed commit, or a
// failed insert of the group's delivery jobs, fails every caller in the
// group.
type groupCommit struct {
	db     *sql.DB
	prep   *sqlitePrepared        // statements prepared on db, or nil
	client *river.Client[*sql.Tx] // inserts the group's new delivery jobs

	coalescer[*groupOp] // one group at a time: SQLite has one writer
}

type groupOp struct {
	ctx  context.Context
	fn   func(ctx context.Context, t txn) error
	err  error
	done chan struct{}
}

const groupSavepoint = "mailsec_outbox_op"

// do runs fn in a transaction, with others' work, and returns fn's error
// or the commit's.
func (g *groupCommit) do(ctx context.Context, fn func(ctx context.Context, t txn) error) error {
	op := &groupOp{ctx: ctx, fn: fn, done: make(chan struct{})}
	g.add(op, g.run)
	if g.wait(ctx, op, op.done) {
		return ctx.Err()
	}
	return op.err
}

// run runs ops in one transaction and wakes their callers.
func (g *groupCommit) run(ops []*groupOp) {
	var tx *sql.Tx
	fail := func(err error) {
		for _, op := range ops {
			if op.err == nil {
				op.err = err
			}
		}
	}
	defer func() {
		if v := recover(); v != nil {
			// The transaction may be open on the one connection.
			if tx != nil {
				_ = tx.Rollback()
			}
			fail(errors.New("outbox: internal error: a database operation panicked"))
		}
		for _, op := range ops {
			close(op.done)
		}
	}()
	// The transaction serves callers with their own deadlines: it runs
	// without any, and each operation runs under its caller's context.
	ctx := context.WithoutCancel(ops[0].ctx)
	tx, err := g.db.BeginTx(ctx, nil)
	if err != nil {
		fail(err)
		return
	}
	// Each operation sees the transaction as a savepoint, which is what
	// it is, and which River's InsertTx accepts (see rawTx); the
	// operation neither releases nor rolls it back: run does. The
	// delivery jobs of the messages the operations queue are inserted
	// last, all in one statement; those of an operation rolled back are
	// dropped with it.
	var jobs, opJobs []string
	q := sqliteSavepoint{sqliteQ{tx, g.prep}, tx, &opJobs}
	ran := 0
	for _, op := range ops {
		if op.err = op.ctx.Err(); op.err != nil {
			continue
		}
		if _, err := tx.ExecContext(ctx, "SAVEPOINT "+groupSavepoint); err != nil {
			op.err = err
			continue
		}
		opJobs = opJobs[:0]
		op.err = op.safeRun(q)
		if op.err != nil {
			_, err = tx.ExecContext(ctx, "ROLLBACK TO "+groupSavepoint)
		} else {
			jobs = append(jobs, opJobs...)
		}
		if _, rerr := tx.ExecContext(ctx, "RELEASE "+groupSavepoint); err == nil {
			err = rerr
		}
		if err != nil {
			// The savepoint could not be undone or released: the
			// transaction's state is unknown, so nothing in it commits.
			_ = tx.Rollback()
			fail(err)
			return
		}
		ran++
	}
	if ran == 0 {
		_ = tx.Rollback()
		return
	}
	if len(jobs) > 0 {
		if err := recovered(func() error { return insertJobs(ctx, g.client, tx, jobs) }); err != nil {
			_ = tx.Rollback()
			fail(fmt.Errorf("outbox: queueing the delivery jobs: %w", err))
			return
		}
	}
	if err := tx.Commit(); err != nil {
		fail(err)
	}
}

// safeRun runs the operation, turning a panic into an error: the group's
// other callers must still be told their outcome.
func (op *groupOp) safeRun(q txn) error {
	return recovered(func() error { return op.fn(op.ctx, q) })
}

// recovered runs fn, turning a panic into an error.
func recovered(fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = errors.New("outbox: internal error: a database operation panicked")
		}
	}()
	return fn()
}
