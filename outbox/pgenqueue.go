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
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
)

// pgEnqueueGroup queues the messages of concurrent Enqueues on Postgres in
// one transaction: their rows in one pipeline, their delivery jobs in one
// InsertManyTx, one commit. When the pool prepares statements, BEGIN, the
// rows and River's insert of the jobs take one round trip (pipedTx), and
// the commit a second; with an idempotency key among the rows, which jobs
// to queue depends on them, and River's insert takes a round trip of its
// own. A caller that finds fewer than pgGroupsAtOnce groups running leads
// one; the calls that arrive meanwhile form the next, so that nothing
// waits for a timer, and a group sends its rows while the one before waits
// for its commit. Each caller returns only once the transaction holding
// its message has committed. A group that fails before its commit has
// stored nothing, and each of its callers then runs alone, as an Enqueue
// of its own, so that one caller's failure is its own.
type pgEnqueueGroup struct {
	ob       *Outbox
	pool     *pgxpool.Pool
	client   *river.Client[pgx.Tx]
	prepared bool // the pool prepares statements by name (prepares)

	coalescer[*pgEnqueueOp] // pgGroupsAtOnce groups at once
}

// poolTaken reports whether every connection the pool may hold is in use.
func (g *pgEnqueueGroup) poolTaken() bool {
	st := g.pool.Stat()
	return st.IdleConns() == 0 && st.TotalConns() >= st.MaxConns()
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

// The group's statements, prepared on each connection under these names
// (insertPiped). The envelope, most of a message, is the last
// parameter (see binaryParams).
const (
	sqlInsertMessage = sqlInsertMessageInto + `
VALUES ($1, $2, $3, $4, $5, 0, 0, NULL, NULL, $7, $6)`
	// A message with an idempotency key is inserted only when no message
	// holds one of the key's digests (the current key's or an older
	// one's; an earlier row of the same group included), and the unique
	// index settles a concurrent insert of the current one.
	sqlInsertKeyedMessage = sqlInsertMessageInto + `
SELECT $1::text, $2::text, $3::bigint, $4::bigint, $5::bigint, 0, 0, $6::bytea, $7::bytea, $10::bytea, $8::bytea
WHERE NOT EXISTS (SELECT 1 FROM mailsec_outbox_message WHERE idem = ANY($9::bytea[]))
ON CONFLICT (idem) DO NOTHING`
	sqlFindIdems = `SELECT id, idem, fingerprint FROM mailsec_outbox_message WHERE idem = ANY($1::bytea[])`

	stmtInsertMessage      = "mailsec_outbox_insert_message"
	stmtInsertKeyedMessage = "mailsec_outbox_insert_keyed_message"
	stmtFindIdems          = "mailsec_outbox_find_idems"
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
//
// When the pool prepares statements, the transaction is a pipedTx: BEGIN
// and the rows go out with River's insert of the jobs, in one round trip,
// unless a row has an idempotency key (insertPiped).
func (g *pgEnqueueGroup) commit(ctx context.Context, deadline time.Time, live []*pgEnqueueOp) (committing bool, err error) {
	work := ctx
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		work, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	var tx pgx.Tx
	var piped *pipedTx
	if g.prepared {
		piped, err = beginPiped(work, g.pool)
		tx = piped
	} else {
		tx, err = g.pool.Begin(work)
	}
	if err != nil {
		return false, err
	}
	defer func() {
		if !committing {
			_ = tx.Rollback(ctx)
		}
	}()
	var prev []prevMessage
	if piped != nil {
		prev, err = g.insertPiped(work, piped, live)
	} else {
		prev, err = g.insertBatch(work, tx, live)
	}
	if err != nil {
		return false, err
	}
	ob := g.ob

	var jobs []string
	for _, op := range live {
		pm := op.pm
		// A message without an idempotency key is inserted, or the
		// group fails; its row may still be on its way (insertPiped).
		if pm.idem == nil || op.inserted {
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

// prevMessage is a message found holding an idempotency key of a group's.
type prevMessage struct {
	id       string
	idem, fp []byte
}

// insertPiped queues the rows of live on tx, each row's parameters
// encoded once (binaryParams) and written out on its own: pgx's Batch
// would copy every envelope twice more into buffers that grow with the
// group. Without an idempotency key among them, the rows wait for the
// next statement, River's insert of their jobs, and each is then
// inserted or the group fails. With one, they go out at once, with BEGIN
// and a query for the messages that hold the keys of those not inserted,
// since which jobs to queue depends on them; the messages found are
// returned. The statements are prepared by name on the connection, as
// pgx's default query mode prepares its own; in any other mode (an
// application behind a pooler that keeps no prepared statements sets one)
// the group takes insertBatch.
func (g *pgEnqueueGroup) insertPiped(ctx context.Context, tx *pipedTx, live []*pgEnqueueOp) ([]prevMessage, error) {
	conn := tx.Conn()
	keyed, digests := groupDigests(live)
	stmts, err := prepareGroupStatements(ctx, conn, keyed)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	for _, op := range live {
		sd := stmts.insert
		if op.pm.idem != nil {
			sd = stmts.insertKeyed
		}
		params, err := binaryParams(conn.TypeMap(), sd, g.insertArgs(op.pm, now)...)
		if err != nil {
			return nil, err
		}
		tx.queue(sd, params, nil, func(rr *pgconn.ResultReader) error {
			tag, err := rr.Close()
			if err != nil {
				return err
			}
			op.inserted = tag.RowsAffected() == 1
			if !op.inserted && op.pm.idem == nil {
				return fmt.Errorf("outbox: message %s: %d rows inserted", op.pm.id, tag.RowsAffected())
			}
			return nil
		})
	}
	if !keyed {
		return nil, nil
	}
	params, err := binaryParams(conn.TypeMap(), stmts.findIdems, digests)
	if err != nil {
		return nil, err
	}
	var prev []prevMessage
	tx.queue(stmts.findIdems, params, binaryFormat, func(rr *pgconn.ResultReader) error {
		for rr.NextRow() {
			v := rr.Values()
			if len(v) != 3 {
				_, _ = rr.Close()
				return fmt.Errorf("outbox: finding idempotency keys: %d columns", len(v))
			}
			prev = append(prev, prevMessage{id: string(v[0]), idem: bytes.Clone(v[1]), fp: bytes.Clone(v[2])})
		}
		_, err := rr.Close()
		return err
	})
	if err := tx.flush(ctx); err != nil {
		return nil, err
	}
	return prev, nil
}

// insertBatch inserts the rows of live in tx through a pgx.Batch, in the
// pool's query mode, setting each one's inserted, and returns the
// messages that hold the idempotency keys of those with one. The group's
// statements go in one round trip.
func (g *pgEnqueueGroup) insertBatch(ctx context.Context, tx pgx.Tx, live []*pgEnqueueOp) ([]prevMessage, error) {
	_, digests := groupDigests(live)
	now := time.Now()
	b := &pgx.Batch{}
	for _, op := range live {
		q := sqlInsertMessage
		if op.pm.idem != nil {
			q = sqlInsertKeyedMessage
		}
		b.Queue(q, g.insertArgs(op.pm, now)...)
	}
	if digests != nil {
		b.Queue(sqlFindIdems, digests)
	}
	br := tx.SendBatch(ctx, b)
	defer func() { _ = br.Close() }()
	for _, op := range live {
		tag, err := br.Exec()
		if err != nil {
			return nil, err
		}
		op.inserted = tag.RowsAffected() == 1
	}
	var prev []prevMessage
	if digests != nil {
		rows, err := br.Query()
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var p prevMessage
			if err := rows.Scan(&p.id, &p.idem, &p.fp); err != nil {
				rows.Close()
				return nil, err
			}
			prev = append(prev, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return prev, br.Close()
}

// insertArgs are the arguments of pm's insert at now: sqlInsertMessage's,
// or sqlInsertKeyedMessage's when pm has an idempotency key.
func (g *pgEnqueueGroup) insertArgs(pm *preparedMessage, now time.Time) []any {
	created, expires := now.UnixMicro(), now.Add(g.ob.o.maxAge).UnixMicro()
	if pm.idem == nil {
		return []any{pm.id, string(Queued), created, expires, created, pm.prog, pm.env}
	}
	return []any{pm.id, string(Queued), created, expires, created,
		pm.idem[0], g.ob.keys.fingerprint(0, pm.fp.Sum(nil)), pm.prog, pm.idem, pm.env}
}

// groupDigests reports whether any of live has an idempotency key, and
// lists every digest of their keys.
func groupDigests(live []*pgEnqueueOp) (keyed bool, digests [][]byte) {
	for _, op := range live {
		if op.pm.idem != nil {
			keyed = true
			digests = append(digests, op.pm.idem...)
		}
	}
	return keyed, digests
}

// prepares reports whether pool's connections run in pgx's default query
// mode, which prepares statements by name on each connection: only then do
// the groups prepare theirs so (insertPiped, newPGRecords).
func prepares(pool *pgxpool.Pool) bool {
	return pool.Config().ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement
}

// groupStatements are the group's statements, prepared on one connection.
type groupStatements struct {
	insert, insertKeyed, findIdems *pgconn.StatementDescription
}

// prepareGroupStatements prepares the group's statements on conn, the keyed
// ones when keyed: pgx prepares each once a connection and keeps it.
func prepareGroupStatements(ctx context.Context, conn *pgx.Conn, keyed bool) (*groupStatements, error) {
	var st groupStatements
	var err error
	if st.insert, err = conn.Prepare(ctx, stmtInsertMessage, sqlInsertMessage); err != nil {
		return nil, err
	}
	if !keyed {
		return &st, nil
	}
	if st.insertKeyed, err = conn.Prepare(ctx, stmtInsertKeyedMessage, sqlInsertKeyedMessage); err != nil {
		return nil, err
	}
	if st.findIdems, err = conn.Prepare(ctx, stmtFindIdems, sqlFindIdems); err != nil {
		return nil, err
	}
	return &st, nil
}

// binaryFormat asks for every parameter or column in the binary format.
var binaryFormat = []int16{pgtype.BinaryFormatCode}

// binaryParams are args as sd's parameters in the binary format. A []byte
// given for a bytea parameter is sent from its own memory, its octets
// being its binary form; everything else is encoded by pgx's type map,
// an array into memory of its size. pgx's own Query would encode them
// into a buffer that grows, copying them again each time, and is made
// anew once larger than 256 octets. The Bind message holding them is
// written in parameter order into a write buffer that grows likewise: a
// statement whose last parameter is the large one grows it once for that.
func binaryParams(m *pgtype.Map, sd *pgconn.StatementDescription, args ...any) ([][]byte, error) {
	if len(args) != len(sd.ParamOIDs) {
		return nil, fmt.Errorf("outbox: statement %s: %d parameters given, %d expected", sd.Name, len(args), len(sd.ParamOIDs))
	}
	params := make([][]byte, len(args))
	for i, a := range args {
		if b, ok := a.([]byte); ok && sd.ParamOIDs[i] == pgtype.ByteaOID {
			params[i] = b // nil is NULL, as pgx sends it
			continue
		}
		v, err := m.Encode(sd.ParamOIDs[i], pgtype.BinaryFormatCode, a, make([]byte, 0, binaryArraySize(a)))
		if err != nil {
			return nil, fmt.Errorf("outbox: statement %s: parameter %d: %w", sd.Name, i+1, err)
		}
		params[i] = v
	}
	return params, nil
}

// binaryArraySize is the size of a one-dimensional array of the kinds the
// outbox sends in the binary format (its header, then each element's
// length and octets), or 0 for anything else.
func binaryArraySize(a any) int {
	const header, length = 20, 4
	switch a := a.(type) {
	case [][]byte:
		n := header
		for _, b := range a {
			n += length + len(b)
		}
		return n
	case []string:
		n := header
		for _, s := range a {
			n += length + len(s)
		}
		return n
	case []int64:
		return header + len(a)*(length+8)
	case []*int64:
		return header + len(a)*(length+8)
	case []int32:
		return header + len(a)*(length+4)
	}
	return 0
}

// pipelineResult is the next result of pl, which must be a statement's.
func pipelineResult(pl *pgconn.Pipeline) (*pgconn.ResultReader, error) {
	res, err := pl.GetResults()
	if err != nil {
		return nil, err
	}
	rr, ok := res.(*pgconn.ResultReader)
	if !ok {
		return nil, fmt.Errorf("outbox: pipeline: a statement's result expected, got %T", res)
	}
	return rr, nil
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
