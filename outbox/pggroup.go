package outbox

import (
	"bytes"
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// pgGroup coalesces the same statement of concurrent workers on Postgres
// (the read of a message's row at the start of a run) into one round
// trip. As groupCommit on SQLite, it waits for nothing: the first caller
// of an idle group runs its statement at once, and the callers that
// arrive meanwhile form the next group, run together.
//
// A caller alone in its group runs its statement as it would without the
// group, under its own context. A group of several runs under a context
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
						// The same message asked twice: each caller its own copy.
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
