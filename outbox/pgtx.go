package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pipedTx is a transaction on one of the pool's connections that sends
// its BEGIN, and the statements queued on it, with the next statement
// that goes through it: together, in one pipeline, so in one round trip.
// An Enqueue group queues its rows on it and gives it to River's
// InsertManyTx, whose insert of the group's jobs then carries BEGIN and
// the rows; the commit is the second round trip, where a pgx transaction
// takes four (BEGIN, the rows, the jobs, COMMIT).
//
// Only Query takes the queued statements with it. Every other way of
// sending a statement (Exec, QueryRow, SendBatch, CopyFrom) sends them
// first, in a round trip of their own, as does a Query with pgx's
// per-query options among its arguments: whatever River sends, it runs
// in the transaction, after the rows. A nested transaction is refused:
// the group's Enqueue then fails as a group and its callers each queue
// alone, in a pgx transaction. The connection is given back to the pool
// at the commit or the rollback; the pool closes it if it is still in a
// transaction, or busy.
//
// Its statements run in pgx's default query mode: the pool must prepare
// statements by name (prepares). Those it sends through its own pipeline
// (BEGIN, the queued ones, the Query taking them) do not reach a tracer
// set on the pool's connections. A send that fails leaves the
// transaction failed: nothing more is sent but the rollback, and the
// commit rolls back.
type pipedTx struct {
	pc     *pgxpool.Conn
	conn   *pgx.Conn
	queued []queuedStatement
	begun  bool // BEGIN has gone out
	closed bool // committed or rolled back: the connection is given back
	// failed is the error of a send that failed: what it took (BEGIN,
	// the queued statements) may not have gone out, so nothing more is
	// sent but the rollback, and the commit fails.
	failed error
}

// queuedStatement is a statement queued on a pipedTx, and what reads its
// result: read must consume the result reader it is given.
type queuedStatement struct {
	sd                          *pgconn.StatementDescription
	params                      [][]byte
	paramFormats, resultFormats []int16
	read                        func(*pgconn.ResultReader) error
}

// beginPiped takes a connection from pool for a pipedTx. Nothing is sent.
func beginPiped(ctx context.Context, pool *pgxpool.Pool) (*pipedTx, error) {
	pc, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return &pipedTx{pc: pc, conn: pc.Conn()}, nil
}

// queue adds a statement, its parameters in the binary format, to go out
// with the next one sent.
func (t *pipedTx) queue(sd *pgconn.StatementDescription, params [][]byte, resultFormats []int16, read func(*pgconn.ResultReader) error) {
	t.queued = append(t.queued, queuedStatement{sd: sd, params: params, paramFormats: binaryFormat, resultFormats: resultFormats, read: read})
}

// flush sends BEGIN, if it has not gone out, and the queued statements,
// and reads their results.
func (t *pipedTx) flush(ctx context.Context) error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	if t.failed != nil {
		return t.failed
	}
	if t.begun && len(t.queued) == 0 {
		return nil
	}
	pl, err := t.send(ctx, nil)
	if err != nil {
		return err
	}
	return pl.Close()
}

// send sends what flush does and then last, if not nil, with one sync
// point after them, and reads every result before last's. The pipeline
// it returns, open, has last's result next, then the sync point's; on an
// error the pipeline is closed.
func (t *pipedTx) send(ctx context.Context, last *queuedStatement) (_ *pgconn.Pipeline, err error) {
	queued := t.queued
	t.queued = nil
	begin := !t.begun
	t.begun = true
	pl := t.conn.PgConn().StartPipeline(ctx)
	defer func() {
		if err != nil {
			err = errors.Join(err, pl.Close())
			t.failed = err
		}
	}()
	if begin {
		pl.SendQueryParams("BEGIN", nil, nil, nil, nil)
	}
	// Each statement is written out on its own (see binaryParams).
	for _, q := range queued {
		pl.SendQueryStatement(q.sd, q.params, q.paramFormats, q.resultFormats)
		if err := pl.Flush(); err != nil {
			return nil, err
		}
	}
	if last != nil {
		pl.SendQueryStatement(last.sd, last.params, last.paramFormats, last.resultFormats)
	}
	if err := pl.Sync(); err != nil {
		return nil, err
	}
	if begin {
		rr, err := pipelineResult(pl)
		if err != nil {
			return nil, err
		}
		if _, err := rr.Close(); err != nil {
			return nil, err
		}
	}
	for _, q := range queued {
		rr, err := pipelineResult(pl)
		if err != nil {
			return nil, err
		}
		if err := q.read(rr); err != nil {
			// What read left unread is read by the pipeline's Close.
			return nil, err
		}
	}
	return pl, nil
}

// Query runs sql in the transaction, sending the queued statements with
// it when it can (see pipedTx).
func (t *pipedTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if t.closed {
		return nil, pgx.ErrTxClosed
	}
	if t.failed != nil {
		return nil, t.failed
	}
	if t.begun && len(t.queued) == 0 || hasQueryOptions(args) {
		if err := t.flush(ctx); err != nil {
			return nil, err
		}
		return t.conn.Query(ctx, sql, args...)
	}
	// Prepared once a connection, as pgx's default query mode does.
	sd, err := t.conn.Prepare(ctx, sql, sql)
	if err != nil {
		return nil, err
	}
	var eqb pgx.ExtendedQueryBuilder
	if err := eqb.Build(t.conn.TypeMap(), sd, args); err != nil {
		return nil, err
	}
	pl, err := t.send(ctx, &queuedStatement{sd: sd, params: eqb.ParamValues, paramFormats: eqb.ParamFormats, resultFormats: eqb.ResultFormats})
	if err != nil {
		return nil, err
	}
	rr, err := pipelineResult(pl)
	if err != nil {
		return nil, errors.Join(err, pl.Close())
	}
	return &pipedRows{Rows: pgx.RowsFromResultReader(t.conn.TypeMap(), rr), pl: pl}, nil
}

// hasQueryOptions reports whether args hold one of pgx's per-query
// options, which only pgx's own Query reads.
func hasQueryOptions(args []any) bool {
	for _, a := range args {
		switch a.(type) {
		case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID, pgx.QueryRewriter:
			return true
		}
	}
	return false
}

// pipedRows are the rows of a statement sent with others: once they are
// read, the rest of the pipeline is, and an error there is theirs.
type pipedRows struct {
	pgx.Rows
	pl   *pgconn.Pipeline
	err  error
	done bool
}

func (r *pipedRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.finish()
	return false
}

func (r *pipedRows) Close() {
	r.Rows.Close()
	r.finish()
}

func (r *pipedRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

func (r *pipedRows) finish() {
	if r.done {
		return
	}
	r.done = true
	r.Rows.Close()
	r.err = r.pl.Close()
}

// Exec runs sql in the transaction, after the queued statements.
func (t *pipedTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := t.flush(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.conn.Exec(ctx, sql, args...)
}

// QueryRow runs sql in the transaction, after the queued statements.
func (t *pipedTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.flush(ctx); err != nil {
		return errRow{err}
	}
	return t.conn.QueryRow(ctx, sql, args...)
}

// SendBatch runs b in the transaction, after the queued statements.
func (t *pipedTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if err := t.flush(ctx); err != nil {
		return errBatch{err}
	}
	return t.conn.SendBatch(ctx, b)
}

// CopyFrom copies into a table in the transaction, after the queued
// statements.
func (t *pipedTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if err := t.flush(ctx); err != nil {
		return 0, err
	}
	return t.conn.CopyFrom(ctx, table, columns, src)
}

// Prepare prepares sql on the transaction's connection.
func (t *pipedTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if t.closed {
		return nil, pgx.ErrTxClosed
	}
	return t.conn.Prepare(ctx, name, sql)
}

// LargeObjects is not offered: pgx builds its LargeObjects only on a
// transaction of its own. The value returned has no transaction, and its
// methods must not be called.
func (t *pipedTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }

// errNestedPipedTx refuses a nested transaction on a pipedTx.
var errNestedPipedTx = errors.New("outbox: a nested transaction in an Enqueue group")

// Begin refuses a nested transaction (see pipedTx).
func (t *pipedTx) Begin(context.Context) (pgx.Tx, error) { return nil, errNestedPipedTx }

// Conn is the transaction's connection.
func (t *pipedTx) Conn() *pgx.Conn { return t.conn }

// Commit sends the queued statements, then COMMIT, and gives the
// connection back. As pgx's Commit, it returns pgx.ErrTxCommitRollback
// when Postgres rolled the transaction back; after a failed send it rolls
// back and returns that error too, wrapping the send's.
func (t *pipedTx) Commit(ctx context.Context) error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	if failed := t.failed; failed != nil {
		_ = t.Rollback(ctx)
		return fmt.Errorf("%w: %w", pgx.ErrTxCommitRollback, failed)
	}
	defer t.release()
	if err := t.flush(ctx); err != nil {
		return err
	}
	tag, err := t.conn.Exec(ctx, "COMMIT")
	if err != nil {
		return err
	}
	if tag.String() == "ROLLBACK" {
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// Rollback rolls back what went out, drops what is queued, and gives the
// connection back; a connection whose rollback failed is closed.
func (t *pipedTx) Rollback(ctx context.Context) error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	defer t.release()
	t.queued = nil
	if !t.begun {
		return nil
	}
	if _, err := t.conn.Exec(ctx, "ROLLBACK"); err != nil {
		_ = t.conn.Close(ctx)
		return fmt.Errorf("rollback failed: %w", err)
	}
	return nil
}

// release gives the connection back to the pool, which closes it if it
// is in a transaction still.
func (t *pipedTx) release() {
	t.closed = true
	t.pc.Release()
}

// errRow is a pgx.Row that fails with err.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// errBatch is pgx.BatchResults that fail with err.
type errBatch struct{ err error }

func (b errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b errBatch) Query() (pgx.Rows, error)         { return nil, b.err }
func (b errBatch) QueryRow() pgx.Row                { return errRow(b) }
func (b errBatch) Close() error                     { return b.err }
func (b errBatch) Tx() pgx.Tx                       { return nil }
