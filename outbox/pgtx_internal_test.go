package outbox

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
)

// turnCounter counts the round trips on the connections it dials: the
// writes that follow something read (or come first) each start one.
type turnCounter struct {
	mu    sync.Mutex
	turns int
}

func (c *turnCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.turns
}

func (c *turnCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: conn, c: c, read: true}, nil
}

type countedConn struct {
	net.Conn
	c    *turnCounter
	mu   sync.Mutex
	read bool // the last thing done was a read that returned data
}

func (cc *countedConn) Write(b []byte) (int, error) {
	cc.mu.Lock()
	if cc.read {
		cc.c.mu.Lock()
		cc.c.turns++
		cc.c.mu.Unlock()
	}
	cc.read = false
	cc.mu.Unlock()
	return cc.Conn.Write(b)
}

func (cc *countedConn) Read(b []byte) (int, error) {
	n, err := cc.Conn.Read(b)
	if n > 0 {
		cc.mu.Lock()
		cc.read = true
		cc.mu.Unlock()
	}
	return n, err
}

// pipedTxTest is a fresh database with table piped (a int primary key),
// a pool whose round trips are counted, and the statement inserting $1.
func pipedTxTest(t *testing.T) (*pgxpool.Pool, *turnCounter) {
	t.Helper()
	pool, tc := countedPool(t, 2, nil)
	if _, err := pool.Exec(t.Context(), `CREATE TABLE piped (a int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	return pool, tc
}

// countedPool is a pool of at most maxConns connections (0: pgx's
// default) to a fresh database, its round trips counted, its statements
// traced by tracer when not nil.
func countedPool(t *testing.T, maxConns int32, tracer pgx.QueryTracer) (*pgxpool.Pool, *turnCounter) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(pgtest.Start(t).NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	tc := &turnCounter{}
	cfg.ConnConfig.DialFunc = tc.dial
	cfg.ConnConfig.Tracer = tracer
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, tc
}

// beginPipedTest begins a pipedTx on pool, rolled back at the test's end
// unless closed before.
func beginPipedTest(t *testing.T, pool *pgxpool.Pool) *pipedTx {
	t.Helper()
	tx, err := beginPiped(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

// queueInserts queues an insert of each of vs on tx, and returns how many
// have been read back as inserted.
func queueInserts(t *testing.T, ctx context.Context, tx *pipedTx, vs ...int32) *int {
	t.Helper()
	sd, err := tx.Prepare(ctx, "piped_insert", `INSERT INTO piped VALUES ($1)`)
	if err != nil {
		t.Fatal(err)
	}
	inserted := new(int)
	for _, v := range vs {
		params, err := binaryParams(tx.Conn().TypeMap(), sd, v)
		if err != nil {
			t.Fatal(err)
		}
		tx.queue(sd, params, nil, func(rr *pgconn.ResultReader) error {
			tag, err := rr.Close()
			*inserted += int(tag.RowsAffected())
			return err
		})
	}
	return inserted
}

func countPiped(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM piped`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// BEGIN, the queued statements and a Query go out in one round trip, in
// one transaction that the commit ends; the rows are read from the Query.
func TestPipedTxQueryTakesQueued(t *testing.T) {
	ctx := t.Context()
	pool, tc := pipedTxTest(t)
	tx := beginPipedTest(t, pool)
	const query = `SELECT count(*), sum(a) FROM piped WHERE a > $1`
	// Prepared on the connection, as the first Query of it would.
	if _, err := tx.Prepare(ctx, query, query); err != nil {
		t.Fatal(err)
	}
	inserted := queueInserts(t, ctx, tx, 1, 2, 3)
	before := tc.count()
	rows, err := tx.Query(ctx, query, 0)
	if err != nil {
		t.Fatal(err)
	}
	var n, sum int64
	for rows.Next() {
		if err := rows.Scan(&n, &sum); err != nil {
			t.Fatal(err)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if turns := tc.count() - before; turns != 1 {
		t.Errorf("BEGIN, 3 inserts and the query took %d round trips, want 1", turns)
	}
	if *inserted != 3 || n != 3 || sum != 6 {
		t.Errorf("inserted %d; the query saw %d rows summing to %d", *inserted, n, sum)
	}
	if got := countPiped(t, pool); got != 0 {
		t.Errorf("%d rows seen before the commit", got)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := countPiped(t, pool); got != 3 {
		t.Errorf("%d rows after the commit, want 3", got)
	}
	if _, err := tx.Query(ctx, `SELECT 1`); !errors.Is(err, pgx.ErrTxClosed) {
		t.Errorf("Query after Commit: %v", err)
	}
	if err := tx.Rollback(ctx); !errors.Is(err, pgx.ErrTxClosed) {
		t.Errorf("Rollback after Commit: %v", err)
	}
}

// A queued statement's failure is the Query's; the transaction stores
// nothing and the pool keeps a usable connection.
func TestPipedTxQueuedFailureFailsQuery(t *testing.T) {
	ctx := t.Context()
	pool, _ := pipedTxTest(t)
	tx := beginPipedTest(t, pool)
	queueInserts(t, ctx, tx, 1, 1, 2) // the second breaks the primary key
	rows, err := tx.Query(ctx, `SELECT count(*) FROM piped`)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23505" {
		t.Fatalf("Query: %v, %v; want the queued insert's unique violation", rows, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	assertNothingStored(t, pool)
}

// The Query's own failure reaches its rows after the queued statements
// ran; the commit then reports the rollback.
func TestPipedTxQueryFailureRollsBack(t *testing.T) {
	ctx := t.Context()
	pool, _ := pipedTxTest(t)
	tx := beginPipedTest(t, pool)
	inserted := queueInserts(t, ctx, tx, 1, 2)
	err := drained(tx.Query(ctx, `SELECT 1 / (count(*) - $1) FROM piped`, int64(2)))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "22012" {
		t.Fatalf("Query: %v, want a division by zero", err)
	}
	if *inserted != 2 {
		t.Errorf("%d queued inserts read", *inserted)
	}
	if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Errorf("Commit: %v, want pgx.ErrTxCommitRollback", err)
	}
	assertNothingStored(t, pool)
}

// Every other way of sending a statement sends the queued ones first, in
// the transaction.
func TestPipedTxOtherStatementsFollowQueued(t *testing.T) {
	ctx := t.Context()
	pool, _ := pipedTxTest(t)
	cases := map[string]func(tx *pipedTx) (int, error){
		"Exec": func(tx *pipedTx) (int, error) {
			tag, err := tx.Exec(ctx, `UPDATE piped SET a = a + 10`)
			return int(tag.RowsAffected()), err
		},
		"QueryRow": func(tx *pipedTx) (int, error) {
			var n int
			err := tx.QueryRow(ctx, `SELECT count(*) FROM piped`).Scan(&n)
			return n, err
		},
		"SendBatch": func(tx *pipedTx) (int, error) {
			b := &pgx.Batch{}
			b.Queue(`SELECT count(*) FROM piped`)
			br := tx.SendBatch(ctx, b)
			var n int
			err := br.QueryRow().Scan(&n)
			return n, errors.Join(err, br.Close())
		},
		"CopyFrom": func(tx *pipedTx) (int, error) {
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"piped"}, []string{"a"}, pgx.CopyFromRows([][]any{{int32(9)}})); err != nil {
				return 0, err
			}
			var n int
			err := tx.QueryRow(ctx, `SELECT count(*) - 1 FROM piped`).Scan(&n)
			return n, err
		},
		"Query with an option": func(tx *pipedTx) (int, error) {
			var n int
			rows, err := tx.Query(ctx, `SELECT count(*) FROM piped`, pgx.QueryExecModeSimpleProtocol)
			if err != nil {
				return 0, err
			}
			defer rows.Close()
			for rows.Next() {
				err = rows.Scan(&n)
			}
			return n, errors.Join(err, rows.Err())
		},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			tx := beginPipedTest(t, pool)
			inserted := queueInserts(t, ctx, tx, 1, 2)
			n, err := f(tx)
			if err != nil || n != 2 || *inserted != 2 {
				t.Errorf("saw %d rows (%v), %d queued inserts read; want 2 and 2", n, err, *inserted)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if got := countPiped(t, pool); got != 0 {
				t.Errorf("%d rows stored after the rollback", got)
			}
		})
	}
}

// A context that ends while the pipeline waits fails the Query at once;
// nothing is stored, and the pool drops the connection and serves on.
func TestPipedTxContextEndsMidPipeline(t *testing.T) {
	ctx := t.Context()
	pool, _ := pipedTxTest(t)
	tx := beginPipedTest(t, pool)
	queueInserts(t, ctx, tx, 1, 2)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := drained(tx.Query(short, `SELECT pg_sleep($1)`, float64(20)))
	if err == nil || time.Since(began) > 10*time.Second {
		t.Fatalf("Query: %v after %v", err, time.Since(began))
	}
	_ = tx.Rollback(ctx)
	assertNothingStored(t, pool)
}

// A nested transaction is refused, and so is a pipedTx once closed.
func TestPipedTxRefusesNestingAndReuse(t *testing.T) {
	ctx := t.Context()
	pool, _ := pipedTxTest(t)
	tx, err := beginPiped(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Begin(ctx); !errors.Is(err, errNestedPipedTx) {
		t.Errorf("Begin: %v", err)
	}
	// Nothing went out: the rollback sends nothing either.
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1`); !errors.Is(err, pgx.ErrTxClosed) {
		t.Errorf("Exec after Rollback: %v", err)
	}
	if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxClosed) {
		t.Errorf("Commit after Rollback: %v", err)
	}
	assertPoolServes(t, pool)
}

// drained reads rows to their end and returns the first error, the
// Query's or theirs.
func drained(rows pgx.Rows, err error) error {
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
	}
	return rows.Err()
}

// assertNothingStored checks that table piped is empty and the pool
// serves (assertPoolServes).
func assertNothingStored(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	if got := countPiped(t, pool); got != 0 {
		t.Errorf("%d rows stored", got)
	}
	assertPoolServes(t, pool)
}

// assertPoolServes checks that every connection the pool gives is out of
// any transaction and answers.
func assertPoolServes(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	var conns []*pgxpool.Conn
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range pool.Config().MaxConns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if st := c.Conn().PgConn().TxStatus(); st != 'I' {
			t.Errorf("a pooled connection in transaction status %c", st)
		}
		var one int
		if err := c.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil || one != 1 {
			t.Errorf("a pooled connection: %d, %v", one, err)
		}
	}
}

// A group of messages without idempotency keys takes two round trips
// (BEGIN, the rows and River's insert of their jobs; the commit), and one
// more when River notifies its producers of the insert.
func TestPgEnqueueGroupRoundTrips(t *testing.T) {
	ctx := t.Context()
	st := &statementTracer{}
	pool, tc := countedPool(t, 0, st)
	sender, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := OpenPostgres(ctx, sender, pool, &Options{Keys: []Key{NewKey()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close(context.Background()) })
	group := func(first int) {
		t.Helper()
		var calls []func() (string, error)
		for i := range 4 {
			calls = append(calls, func() (string, error) { return ob.Enqueue(ctx, groupMessage(first+i), nil) })
		}
		ids, errs := inOneEnqueueGroup(t, ob.enqueueGroup, calls)
		for i, err := range errs {
			if err != nil || ids[i] == "" {
				t.Fatalf("Enqueue %d: %q, %v", i, ids[i], err)
			}
		}
	}
	group(0) // statements prepared, River's capabilities read
	for round := range 3 {
		before := tc.count()
		st.take()
		group(10 * (round + 1))
		// Besides the group's own round trips: River's notification, and
		// preparing a statement on a connection that has not yet.
		turns, besides := tc.count()-before, 0
		for _, sql := range st.take() {
			switch {
			case sql == "COMMIT":
			case strings.Contains(sql, "pg_notify"), strings.HasPrefix(sql, "PREPARE "):
				besides++
			default:
				t.Errorf("round %d: a statement of its own: %.60q", round, sql)
			}
		}
		if turns-besides != 2 {
			t.Errorf("round %d: a group of 4 took %d round trips, %d of them notifying or preparing; want 2 besides those", round, turns, besides)
		}
	}
	var messages, jobs int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM mailsec_outbox_message`).Scan(&messages); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = $1`, deliverKind).Scan(&jobs); err != nil {
		t.Fatal(err)
	}
	if messages != 16 || jobs != 16 {
		t.Errorf("%d messages and %d jobs, want 16 of each", messages, jobs)
	}
}
