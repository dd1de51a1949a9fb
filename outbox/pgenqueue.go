package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
)

// pgEnqueueGroup queues the messages of concurrent Enqueues on Postgres in
// one transaction: their rows in one pipelined batch, their delivery jobs
// in one InsertManyTx, one commit. A caller that finds fewer than
// pgGroupsAtOnce groups running leads one; the calls that arrive
// meanwhile form the next, so that nothing waits for a timer, and a group
// sends its rows while the one before waits for its commit. Each caller
// returns only once the transaction holding its message has committed. A
// group that fails before its commit has stored nothing, and each of its
// callers then runs alone, as an Enqueue of its own, so that one caller's
// failure is its own.
type pgEnqueueGroup struct {
	ob     *Outbox
	pool   *pgxpool.Pool
	client *river.Client[pgx.Tx]

	coalescer[*pgEnqueueOp] // pgGroupsAtOnce groups at once
}

// pgGroupsAtOnce is how many groups run at once. Two keep the connection
// busy while a commit waits for the disk; more make the groups smaller,
// and each costs a commit.
const pgGroupsAtOnce = 2

type pgEnqueueOp struct {
	ctx context.Context
	pm  *preparedMessage

	// The outcome: the ID and error to return, or alone to run the
	// Enqueue on its own.
	id    string
	err   error
	alone bool

	inserted bool // its row was inserted in the group's transaction
	ofGroup  bool // its outcome is a message of the group's transaction
	done     chan struct{}
}

// enqueue queues pm, a message without attachments, with others, and
// reports whether it did: when not, the caller is to queue it alone.
func (g *pgEnqueueGroup) enqueue(ctx context.Context, pm *preparedMessage) (id string, grouped bool, err error) {
	op := &pgEnqueueOp{ctx: ctx, pm: pm, done: make(chan struct{})}
	g.add(op, g.run)
	// Withdrawn before a group took it, it fails alone, as an Enqueue
	// whose context ended.
	if g.wait(ctx, op, op.done) || op.alone {
		return "", false, nil
	}
	return op.id, true, op.err
}

const (
	sqlInsertMessage = sqlInsertMessageInto + `
VALUES ($1, $2, $3, $4, $5, 0, 0, NULL, NULL, $6, $7)`
	// A message with an idempotency key is inserted only when no message
	// holds one of the key's digests (the current key's or an older
	// one's; an earlier row of the same group included), and the unique
	// index settles a concurrent insert of the current one.
	sqlInsertKeyedMessage = sqlInsertMessageInto + `
SELECT $1::text, $2::text, $3::bigint, $4::bigint, $5::bigint, 0, 0, $6::bytea, $7::bytea, $8::bytea, $9::bytea
WHERE NOT EXISTS (SELECT 1 FROM mailsec_outbox_message WHERE idem = ANY($10::bytea[]))
ON CONFLICT (idem) DO NOTHING`
	sqlFindIdems = `SELECT id, idem, fingerprint FROM mailsec_outbox_message WHERE idem = ANY($1::bytea[])`
)

// run queues ops in one transaction and wakes their callers.
func (g *pgEnqueueGroup) run(ops []*pgEnqueueOp) {
	var live []*pgEnqueueOp
	defer func() {
		if v := recover(); v != nil {
			for _, op := range live {
				op.id, op.err = "", errors.New("outbox: internal error: a database operation panicked")
			}
		}
		for _, op := range ops {
			close(op.done)
		}
	}()
	for _, op := range ops {
		if op.ctx.Err() != nil {
			// Alone, it fails as an Enqueue of its own does.
			op.alone = true
			continue
		}
		live = append(live, op)
	}
	// The keyed rows in the order of their keys' digests: two groups
	// (of this process or another) that give the same keys wait for
	// each other on the unique index in one order, never in a circle.
	slices.SortStableFunc(live, func(a, b *pgEnqueueOp) int {
		return bytes.Compare(idemOf(a), idemOf(b))
	})
	if len(live) == 0 {
		return
	}
	// The transaction serves callers with their own contexts: it is not
	// cancelled with any of them, and its work before the commit ends at
	// the latest of their deadlines (when each has one). The commit
	// itself has none, so that no caller is told its message failed
	// when the commit went through.
	ctx := context.WithoutCancel(live[0].ctx)
	ctxs := make([]context.Context, len(live))
	for i, op := range live {
		ctxs[i] = op.ctx
	}
	latest, _ := latestDeadline(ctxs...)
	committed, err := g.commit(ctx, latest, live)
	switch {
	case err == nil:
	case committed && !rolledBack(err):
		// The commit's outcome is unknown: the messages may be queued,
		// and queueing them again could queue them twice.
		for _, op := range live {
			if op.inserted || op.ofGroup {
				op.id, op.err = "", fmt.Errorf("outbox: Enqueue: %w", err)
			}
		}
	default:
		// Nothing was stored.
		for _, op := range live {
			op.id, op.err, op.alone = "", nil, true
		}
	}
}

// commit runs the group's transaction. It reports whether it sent the
// commit, whose failure leaves the outcome unknown.
func (g *pgEnqueueGroup) commit(ctx context.Context, deadline time.Time, live []*pgEnqueueOp) (committing bool, err error) {
	work := ctx
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		work, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	tx, err := g.pool.Begin(work)
	if err != nil {
		return false, err
	}
	defer func() {
		if !committing {
			_ = tx.Rollback(ctx)
		}
	}()
	ob := g.ob
	now := time.Now()
	b := &pgx.Batch{}
	var digests [][]byte
	for _, op := range live {
		pm := op.pm
		created, expires := now.UnixMicro(), now.Add(ob.o.maxAge).UnixMicro()
		if pm.idem == nil {
			b.Queue(sqlInsertMessage, pm.id, string(Queued), created, expires, created, pm.env, pm.prog)
			continue
		}
		b.Queue(sqlInsertKeyedMessage, pm.id, string(Queued), created, expires, created,
			pm.idem[0], ob.keys.fingerprint(0, pm.fp.Sum(nil)), pm.env, pm.prog, pm.idem)
		digests = append(digests, pm.idem...)
	}
	if digests != nil {
		// After the inserts, in the same round trip: the messages that
		// hold the keys of those not inserted.
		b.Queue(sqlFindIdems, digests)
	}
	type prevMessage struct {
		id       string
		idem, fp []byte
	}
	var prev []prevMessage
	br := tx.SendBatch(work, b)
	for _, op := range live {
		tag, err := br.Exec()
		if err != nil {
			_ = br.Close()
			return false, err
		}
		op.inserted = tag.RowsAffected() == 1
	}
	if digests != nil {
		rows, err := br.Query()
		if err != nil {
			_ = br.Close()
			return false, err
		}
		for rows.Next() {
			var p prevMessage
			if err := rows.Scan(&p.id, &p.idem, &p.fp); err != nil {
				rows.Close()
				_ = br.Close()
				return false, err
			}
			prev = append(prev, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			_ = br.Close()
			return false, err
		}
	}
	if err := br.Close(); err != nil {
		return false, err
	}

	var jobs []string
	for _, op := range live {
		pm := op.pm
		if op.inserted {
			op.id = pm.id
			jobs = append(jobs, pm.id)
			continue
		}
		// Its key is taken: by the first message queued with it, maybe
		// in this group.
		found := false
		for _, p := range prev {
			if p.id == pm.id || !slices.ContainsFunc(pm.idem, func(d []byte) bool { return bytes.Equal(d, p.idem) }) {
				continue
			}
			e, err := ob.sameMessage(p.id, p.idem, p.fp, pm.idem, pm.fp.Sum(nil))
			op.id, op.err = e.id, err
			op.ofGroup = slices.ContainsFunc(live, func(o *pgEnqueueOp) bool { return o.inserted && o.pm.id == p.id })
			found = true
			break
		}
		if !found {
			// Taken by a message this transaction cannot see yet.
			op.alone = true
		}
	}
	if jobs != nil {
		if err := insertJobs(work, g.client, tx, jobs); err != nil {
			return false, fmt.Errorf("queueing the delivery jobs: %w", err)
		}
	}
	committing = true
	return true, tx.Commit(ctx)
}

// rolledBack reports whether a failed commit is known to have stored
// nothing: Postgres refused it with an ERROR (a FATAL ends the session,
// and is not taken as proof), or pgx rolled back a failed transaction.
func rolledBack(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Severity == "ERROR" || errors.Is(err, pgx.ErrTxCommitRollback)
}

// idemOf is the current digest of op's idempotency key, or nil.
func idemOf(op *pgEnqueueOp) []byte {
	if op.pm.idem == nil {
		return nil
	}
	return op.pm.idem[0]
}
