package outbox

import (
	"bytes"
	"context"
	"database/sql"

	"github.com/jackc/pgx/v5/pgxpool"
)

// pgGroup coalesces the same statement of concurrent workers on Postgres
// (the read of a message's row at the start of a run, the record of an
// attempt) into one round trip. As groupCommit on SQLite, it waits for no
// timer: the first caller of an idle group runs its statement with the
// calls of the goroutines ready to run (see coalescer.yield), and the
// callers that arrive meanwhile form the next group, run together.
//
// A caller alone in its group runs one, the statement for a single call,
// under its own context. A group of several runs under a context
// of its own, without their cancellation and with the latest of their
// deadlines (none when one of them has none). A caller whose context ends
// before a group takes its call withdraws it; once taken, it waits for the
// group's answer. When the group fails as a whole, each caller runs its
// statement again alone.
type pgGroup[In, Out any] struct {
	one  func(ctx context.Context, in In) (Out, error)
	many func(ctx context.Context, ins []In) ([]Out, error)

	coalescer[*pgCall[In, Out]]
}

type pgCall[In, Out any] struct {
	ctx   context.Context
	in    In
	out   Out
	err   error
	alone bool // the group failed: the caller runs its statement alone
	done  chan struct{}
}

func (g *pgGroup[In, Out]) do(ctx context.Context, in In) (Out, error) {
	c := &pgCall[In, Out]{ctx: ctx, in: in, done: make(chan struct{})}
	g.add(c, g.run)
	if g.wait(ctx, c, c.done) {
		var none Out
		return none, ctx.Err()
	}
	if c.alone {
		return g.one(ctx, in)
	}
	return c.out, c.err
}

// run runs calls and wakes their callers.
func (g *pgGroup[In, Out]) run(calls []*pgCall[In, Out]) {
	live := make([]*pgCall[In, Out], 0, len(calls))
	ctxs := make([]context.Context, 0, len(calls))
	for _, c := range calls {
		if c.err = c.ctx.Err(); c.err != nil {
			close(c.done)
			continue
		}
		live = append(live, c)
		ctxs = append(ctxs, c.ctx)
	}
	defer func() {
		if v := recover(); v != nil {
			// Each caller tries alone, and meets the panic itself.
			for _, c := range live {
				c.alone = true
			}
		}
		for _, c := range live {
			close(c.done)
		}
	}()
	switch len(live) {
	case 0:
		return
	case 1:
		live[0].out, live[0].err = g.one(live[0].ctx, live[0].in)
		return
	}
	ctx := context.WithoutCancel(live[0].ctx)
	if deadline, ok := latestDeadline(ctxs...); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	ins := make([]In, len(live))
	for i, c := range live {
		ins[i] = c.in
	}
	outs, err := g.many(ctx, ins)
	for i, c := range live {
		if err != nil {
			c.alone = true
		} else {
			c.out = outs[i]
		}
	}
}

// newPGReads groups the reads of messages' rows (loadRow): one SELECT for
// the group, a nil row for an ID not found.
func newPGReads(pool *pgxpool.Pool) *pgGroup[string, *row] {
	return &pgGroup[string, *row]{
		coalescer: coalescer[*pgCall[string, *row]]{yield: true},
		one: func(ctx context.Context, id string) (*row, error) {
			return loadRow(ctx, pgQ{pool}, id)
		},
		many: func(ctx context.Context, ids []string) ([]*row, error) {
			rs, err := pool.Query(ctx, sqlLoadRows, ids)
			if err != nil {
				return nil, err
			}
			defer rs.Close()
			out := make([]*row, len(ids))
			for rs.Next() {
				r, err := scanRow(rs)
				if err != nil {
					return nil, err
				}
				given := false
				for i, id := range ids {
					if id != r.id {
						continue
					}
					if given {
						// The same message asked twice: each caller its own
						// copy, since an attempt opens its row's envelope in
						// place (openMessage).
						cp := *r
						cp.envelope, cp.progress = bytes.Clone(r.envelope), bytes.Clone(r.progress)
						out[i] = &cp
						continue
					}
					out[i], given = r, true
				}
			}
			return out, rs.Err()
		},
	}
}

const sqlLoadRows = `SELECT ` + rowColumns + ` FROM mailsec_outbox_message WHERE id = ANY($1)`

// pgRecord is the record of an attempt in the usual case (recordPostgres):
// the message's row set to the attempt's outcome, its attempt inserted,
// and, when the message is finished, its content deleted, provided the
// row is still as the attempt read it (wasAttempts, wasProgress) and not
// cancelled.
type pgRecord struct {
	id          string
	state       string
	finished    sql.NullInt64 // valid when the message is finished
	next        int64
	progress    []byte // sealed
	n           int
	attempt     []byte // sealed
	run         int
	wasProgress []byte
	wasAttempts int
}

// newPGRecords groups the records of attempts (pgRecord): one statement,
// one commit, for the attempts that end together. Each output says
// whether the attempt was recorded. Only the first record of a message
// named twice in a group is tried; the others report false, as when the
// record of another run came first. A message whose row another
// transaction holds reports false too, having changed nothing; its caller
// then records it alone (recordIn), waiting for that transaction without
// holding up the group. A record alone in its group runs the same
// statement, and so leaves a held row to recordIn too. prepared says that
// the pool's connections prepare statements by name (prepares).
func newPGRecords(pool *pgxpool.Pool, prepared bool) *pgGroup[pgRecord, bool] {
	g := &pgGroup[pgRecord, bool]{coalescer: coalescer[*pgCall[pgRecord, bool]]{yield: true}}
	g.many = func(ctx context.Context, rs []pgRecord) ([]bool, error) {
		var (
			ids, states            = make([]string, 0, len(rs)), make([]string, 0, len(rs))
			finished               = make([]*int64, 0, len(rs))
			next                   = make([]int64, 0, len(rs))
			progress, attempt, was = make([][]byte, 0, len(rs)), make([][]byte, 0, len(rs)), make([][]byte, 0, len(rs))
			ns, runs, wasAttempts  = make([]int32, 0, len(rs)), make([]int32, 0, len(rs)), make([]int32, 0, len(rs))
			first                  = make(map[string]int, len(rs))
		)
		for i, r := range rs {
			if _, twice := first[r.id]; twice {
				continue
			}
			first[r.id] = i
			ids, states, next = append(ids, r.id), append(states, r.state), append(next, r.next)
			var f *int64
			if r.finished.Valid {
				f = &r.finished.Int64
			}
			finished = append(finished, f)
			progress, attempt, was = append(progress, r.progress), append(attempt, r.attempt), append(was, r.wasProgress)
			ns, runs, wasAttempts = append(ns, int32(r.n)), append(runs, int32(r.run)), append(wasAttempts, int32(r.wasAttempts))
		}
		// In sqlRecordManyPG's order: the attempts, the largest, last.
		args := []any{ids, states, finished, next, progress, ns, runs, was, wasAttempts, attempt}
		c, err := pool.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer c.Release()
		out := make([]bool, len(rs))
		if !prepared {
			// In another of pgx's query modes (an application behind a
			// pooler that keeps no prepared statements sets one), through
			// pgx in that mode.
			rows, err := c.Query(ctx, sqlRecordManyPG, args...)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return nil, err
				}
				if i, ok := first[id]; ok {
					out[i] = true
				}
			}
			return out, rows.Err()
		}
		// Through pgconn, prepared by name as pgx's default mode prepares
		// its own, with the parameters encoded once each (binaryParams),
		// and run on its generic plan (sqlGenericPlan, in the same round
		// trip and transaction).
		generic, err := c.Conn().Prepare(ctx, stmtGenericPlan, sqlGenericPlan)
		if err != nil {
			return nil, err
		}
		sd, err := c.Conn().Prepare(ctx, stmtRecordManyPG, sqlRecordManyPG)
		if err != nil {
			return nil, err
		}
		params, err := binaryParams(c.Conn().TypeMap(), sd, args...)
		if err != nil {
			return nil, err
		}
		pl := c.Conn().PgConn().StartPipeline(ctx)
		defer func() { _ = pl.Close() }()
		pl.SendQueryStatement(generic, nil, nil, nil)
		pl.SendQueryStatement(sd, params, binaryFormat, binaryFormat)
		if err := pl.Sync(); err != nil {
			return nil, err
		}
		rr, err := pipelineResult(pl)
		if err != nil {
			return nil, err
		}
		if _, err := rr.Close(); err != nil {
			return nil, err
		}
		if rr, err = pipelineResult(pl); err != nil {
			return nil, err
		}
		for rr.NextRow() {
			if v := rr.Values(); len(v) == 1 {
				if i, ok := first[string(v[0])]; ok {
					out[i] = true
				}
			}
		}
		if _, err := rr.Close(); err != nil {
			return nil, err
		}
		// The Sync's answer: the transaction committed.
		if err := pl.Close(); err != nil {
			return nil, err
		}
		return out, nil
	}
	// A record alone is the same statement for one message: it does not
	// wait for a row another transaction holds either, which would keep
	// the records arriving meanwhile waiting behind it.
	g.one = func(ctx context.Context, r pgRecord) (bool, error) {
		out, err := g.many(ctx, []pgRecord{r})
		if err != nil {
			return false, err
		}
		return out[0], nil
	}
	return g
}

// stmtRecordManyPG is sqlRecordManyPG's name, prepared on each
// connection.
const stmtRecordManyPG = "mailsec_outbox_record_many"

// sqlGenericPlan has the statements after it in its transaction run on
// their generic plans. Postgres plans a prepared statement anew at each
// run while the plan for the values given looks cheaper than the generic
// one, as it does for sqlRecordManyPG, whose arrays' lengths it then
// knows: planning it costs about half as much as running it for a group
// of six, for the same plan. The setting ends with the transaction: the
// connection goes back to the pool as it was.
const (
	sqlGenericPlan  = `SELECT set_config('plan_cache_mode', 'force_generic_plan', true)`
	stmtGenericPlan = "mailsec_outbox_generic_plan"
)

const (
	// sqlRecordManyPG records a group's attempts: the arrays $1 to $10
	// hold each one's fields, in the order of pgRecord's but for the
	// sealed attempts, the largest, which are last ($10); a message
	// finished ($3 not null) loses its content. It returns the IDs
	// recorded. A message whose row another transaction holds is left
	// out (SKIP LOCKED), to be recorded alone: one locked row holds up its
	// own record, never the group's.
	sqlRecordManyPG = `WITH v AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bytea[], $6::integer[], $10::bytea[], $7::integer[], $8::bytea[], $9::integer[])
		AS v(id, state, finished_at, next_at, progress, n, attempt, job_runs, was_progress, was_attempts)
), l AS MATERIALIZED (
	SELECT t.id FROM mailsec_outbox_message t WHERE t.id IN (SELECT id FROM v) FOR NO KEY UPDATE OF t SKIP LOCKED
), m AS (
	UPDATE mailsec_outbox_message t SET state = v.state, finished_at = v.finished_at, next_at = v.next_at, in_flight_at = NULL, progress = v.progress,
		problem = NULL, attempts = v.n, job_runs = v.job_runs, envelope = CASE WHEN v.finished_at IS NULL THEN t.envelope END
	FROM v
	WHERE t.id = v.id AND t.id IN (SELECT id FROM l) AND t.attempts = v.was_attempts AND t.state <> 'cancelled' AND t.progress = v.was_progress
	RETURNING t.id, v.finished_at, v.n, v.attempt
), d AS (
	DELETE FROM mailsec_outbox_chunk WHERE message_id IN (SELECT id FROM m WHERE finished_at IS NOT NULL)
), a AS (
	INSERT INTO mailsec_outbox_attempt (message_id, n, data) SELECT id, n, attempt FROM m
	ON CONFLICT (message_id, n) DO UPDATE SET data = excluded.data
)
SELECT id FROM m`
)
