package outbox

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The outbox's own tables, beside River's. Everything about a message
// that says what it is or who it is for lives in sealed columns
// (envelope, progress, chunk data, attempt data); the rest is what the
// queue needs to schedule it: an opaque ID, a state and timestamps
// (microseconds since 1970, UTC).
//
//	mailsec_outbox_message   one row per message
//	mailsec_outbox_chunk     attachment contents, in sealed 64 KiB chunks
//	mailsec_outbox_attempt   each attempt's sealed record, its Receipt
//	mailsec_outbox_meta      how the outbox stores (sealed or plaintext)
//	mailsec_outbox_schema    the version of these tables
//
// Version 2 adds the TLS-RPT counts of every instance (see
// Options.TLSRPT), by UTC day (days since 1970) and policy domain, and
// the reports done with:
//
//	mailsec_outbox_tlsrpt       one aggregate count per (day, domain, key)
//	mailsec_outbox_tlsrpt_done  the (day, domain) reports sent or given up
//
// Version 3 seals them: policy domains and MX hosts say whom the
// application mails. It drops version 2's tables (counts not yet
// reported are lost: they were kept readable) for these, in which a
// count's domain and what it counts are sealed, bound to the row, and
// rows are named by keyed digests (see tlsrptStore):
//
//	mailsec_outbox_rpt_count  one count per (day, domain, key) and outbox key
//	mailsec_outbox_rpt_done   the (day, domain) reports sent or given up
//
// Version 4 adds job_runs to a message: how many runs of its River job
// the outbox has accounted for (see jobRuns), which replaces the write
// that marked a message in flight before each attempt. A message queued
// before has none (NULL) until its next attempt writes it.
//
// Version 5 changes no table's columns. On Postgres the record of a
// finished attempt may commit after River completed the message's job
// (see lateRecords); processes of an earlier version would take such a
// message for one without a live job, and give it another. The version
// keeps them from opening a database a process of this one has opened.
// On Postgres it also stores sealed envelopes and attachment chunks as
// they are (schemaV5Postgres).
const schemaVersion = 5

func schemaV1(blob string) []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS mailsec_outbox_message (
	id TEXT PRIMARY KEY,
	state TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL,
	next_at BIGINT NOT NULL,
	finished_at BIGINT,
	attempts INTEGER NOT NULL DEFAULT 0,
	in_flight_at BIGINT,
	idem ` + blob + ` UNIQUE,
	fingerprint ` + blob + `,
	envelope ` + blob + `,
	progress ` + blob + ` NOT NULL,
	problem TEXT
)`,
		`CREATE INDEX IF NOT EXISTS mailsec_outbox_message_state ON mailsec_outbox_message (state, next_at)`,
		`CREATE INDEX IF NOT EXISTS mailsec_outbox_message_finished ON mailsec_outbox_message (finished_at)`,
		`CREATE TABLE IF NOT EXISTS mailsec_outbox_chunk (
	message_id TEXT NOT NULL,
	part INTEGER NOT NULL,
	seq INTEGER NOT NULL,
	created_at BIGINT NOT NULL,
	data ` + blob + ` NOT NULL,
	PRIMARY KEY (message_id, part, seq)
)`,
		`CREATE TABLE IF NOT EXISTS mailsec_outbox_attempt (
	message_id TEXT NOT NULL,
	n INTEGER NOT NULL,
	data ` + blob + ` NOT NULL,
	PRIMARY KEY (message_id, n)
)`,
		`CREATE TABLE IF NOT EXISTS mailsec_outbox_meta (
	name TEXT PRIMARY KEY,
	value TEXT NOT NULL
)`,
	}
}

func schemaV2() []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS mailsec_outbox_tlsrpt (
	day BIGINT NOT NULL,
	domain TEXT NOT NULL,
	key_id TEXT NOT NULL,
	key TEXT NOT NULL,
	n BIGINT NOT NULL,
	PRIMARY KEY (day, domain, key_id)
)`,
		`CREATE TABLE IF NOT EXISTS mailsec_outbox_tlsrpt_done (
	day BIGINT NOT NULL,
	domain TEXT NOT NULL,
	done_at BIGINT NOT NULL,
	PRIMARY KEY (day, domain)
)`,
	}
}

func schemaV3(blob string) []string {
	return []string{
		`DROP TABLE IF EXISTS mailsec_outbox_tlsrpt`,
		`DROP TABLE IF EXISTS mailsec_outbox_tlsrpt_done`,
		`CREATE TABLE IF NOT EXISTS mailsec_outbox_rpt_count (
	day BIGINT NOT NULL,
	row_id ` + blob + ` NOT NULL,
	domain_id ` + blob + ` NOT NULL,
	key_id TEXT NOT NULL,
	sealed ` + blob + ` NOT NULL,
	n BIGINT NOT NULL,
	PRIMARY KEY (day, row_id)
)`,
		`CREATE INDEX IF NOT EXISTS mailsec_outbox_rpt_count_domain ON mailsec_outbox_rpt_count (day, domain_id)`,
		`CREATE TABLE IF NOT EXISTS mailsec_outbox_rpt_done (
	day BIGINT NOT NULL,
	domain_id ` + blob + ` NOT NULL,
	done_at BIGINT NOT NULL,
	PRIMARY KEY (day, domain_id)
)`,
	}
}

// schemaV4Jobs leaves each message one delivery job River has not ended:
// version 3's Retry queued a second job beside a running one, and relied
// on the in-flight mark, which version 4 no longer writes, to keep the two
// from attempting the message at once. The job kept is a running one when
// there is one (its worker died: processes of an older version are
// stopped before a newer one opens the database), else the oldest.
const schemaV4Jobs = `DELETE FROM river_job WHERE id IN (
	SELECT id FROM (
		SELECT id, row_number() OVER (PARTITION BY args ->> 'id'
			ORDER BY CASE WHEN state = 'running' THEN 0 ELSE 1 END, id) AS n
		FROM river_job
		WHERE kind = '` + deliverKind + `' AND state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
	) live WHERE n > 1
)`

func schemaV4() []string {
	return []string{`ALTER TABLE mailsec_outbox_message ADD COLUMN job_runs INTEGER`}
}

// schemaV5Postgres has Postgres store the envelopes and attachment chunks
// it moves out of line (TOAST) without trying to compress them first:
// sealed, they never compress, and the try cost about a fifth of an
// Enqueue's insert of a 10 KB message on the server. It applies to values
// written from then on.
var schemaV5Postgres = []string{
	`ALTER TABLE mailsec_outbox_message ALTER COLUMN envelope SET STORAGE EXTERNAL`,
	`ALTER TABLE mailsec_outbox_chunk ALTER COLUMN data SET STORAGE EXTERNAL`,
}

// querier runs statements written with $1, $2... placeholders on a
// database, a connection pool or a transaction of either kind.
type querier interface {
	exec(ctx context.Context, q string, args ...any) (int64, error)
	queryRow(ctx context.Context, q string, args ...any) scanner
	query(ctx context.Context, q string, args ...any) (rows, error)
}

type scanner interface{ Scan(dest ...any) error }

type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// txn is a transaction: the outbox's own, or a savepoint inside the
// application's.
type txn interface {
	querier
	commit(ctx context.Context) error
	rollback(ctx context.Context) error
}

// --- SQLite, through database/sql ---

type sqlRunner interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

type sqliteQ struct {
	r    sqlRunner
	prep *sqlitePrepared // nil: every statement is prepared when run
}

// sqlitePrepared holds the statements of an attempt, prepared once when
// the outbox opens: SQLite parses a statement each time it is prepared,
// and on its one connection that time is every worker's. A transaction
// uses them through Tx.StmtContext, which reuses a statement prepared on
// its connection.
type sqlitePrepared struct {
	stmts map[string]*sql.Stmt // by the statement as rebound
}

// prepareSQLite prepares qs on db.
func prepareSQLite(ctx context.Context, db *sql.DB, qs ...string) (*sqlitePrepared, error) {
	p := &sqlitePrepared{stmts: map[string]*sql.Stmt{}}
	for _, q := range qs {
		st, err := db.PrepareContext(ctx, rebind(q))
		if err != nil {
			p.close()
			return nil, err
		}
		p.stmts[rebind(q)] = st
	}
	return p, nil
}

func (p *sqlitePrepared) close() {
	if p == nil {
		return
	}
	for _, st := range p.stmts {
		_ = st.Close()
	}
}

// stmt returns the prepared statement q (rebound) for s, or nil.
func (s sqliteQ) stmt(ctx context.Context, q string) *sql.Stmt {
	if s.prep == nil {
		return nil
	}
	st := s.prep.stmts[q]
	if st == nil {
		return nil
	}
	if tx, ok := s.r.(*sql.Tx); ok {
		return tx.StmtContext(ctx, st)
	}
	return st
}

// rebind turns $n placeholders into SQLite's ?n.
func rebind(q string) string {
	if !strings.Contains(q, "$") {
		return q
	}
	return strings.ReplaceAll(q, "$", "?")
}

func (s sqliteQ) exec(ctx context.Context, q string, args ...any) (int64, error) {
	q = rebind(q)
	var res sql.Result
	var err error
	if st := s.stmt(ctx, q); st != nil {
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = s.r.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (s sqliteQ) queryRow(ctx context.Context, q string, args ...any) scanner {
	q = rebind(q)
	if st := s.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return s.r.QueryRowContext(ctx, q, args...)
}

func (s sqliteQ) query(ctx context.Context, q string, args ...any) (rows, error) {
	r, err := s.r.QueryContext(ctx, rebind(q), args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{r}, nil
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }

// sqliteTx is the outbox's own transaction on SQLite.
type sqliteTx struct {
	sqliteQ
	tx *sql.Tx
}

func (t sqliteTx) commit(context.Context) error   { return t.tx.Commit() }
func (t sqliteTx) rollback(context.Context) error { return t.tx.Rollback() }

// sqliteSavepoint is a savepoint in the application's transaction: a
// failed Enqueue leaves the transaction as it found it.
type sqliteSavepoint struct {
	sqliteQ
	tx *sql.Tx
	// jobs, in a transaction a groupCommit shares, collects the delivery
	// jobs of new messages, queued together at the group's end (see
	// engine.queueJob).
	jobs *[]string
}

const savepoint = "mailsec_outbox_enqueue"

func beginSQLiteSavepoint(ctx context.Context, tx *sql.Tx) (sqliteSavepoint, error) {
	_, err := tx.ExecContext(ctx, "SAVEPOINT "+savepoint)
	return sqliteSavepoint{sqliteQ{tx, nil}, tx, nil}, err
}

func (t sqliteSavepoint) commit(ctx context.Context) error {
	_, err := t.tx.ExecContext(ctx, "RELEASE "+savepoint)
	return err
}

func (t sqliteSavepoint) rollback(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	if _, err := t.tx.ExecContext(ctx, "ROLLBACK TO "+savepoint); err != nil {
		return err
	}
	_, err := t.tx.ExecContext(ctx, "RELEASE "+savepoint)
	return err
}

// --- Postgres, through pgx ---

type pgRunner interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

type pgQ struct{ r pgRunner }

func (p pgQ) exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := p.r.Exec(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (p pgQ) queryRow(ctx context.Context, q string, args ...any) scanner {
	return pgRow{p.r.QueryRow(ctx, q, args...)}
}

func (p pgQ) query(ctx context.Context, q string, args ...any) (rows, error) {
	r, err := p.r.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// pgRow reports no row as sql.ErrNoRows, as database/sql does.
type pgRow struct{ r pgx.Row }

func (r pgRow) Scan(dest ...any) error {
	err := r.r.Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return sql.ErrNoRows
	}
	return err
}

// pgTx is a transaction on Postgres: the outbox's own, or a savepoint
// (pgx's nested transaction) in the application's.
type pgTx struct {
	pgQ
	tx pgx.Tx
}

func (t pgTx) commit(ctx context.Context) error { return t.tx.Commit(ctx) }
func (t pgTx) rollback(ctx context.Context) error {
	return t.tx.Rollback(context.WithoutCancel(ctx))
}

var _ pgRunner = (*pgxpool.Pool)(nil)

// placeholders returns "$from, $from+1, ..." for n values.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(from+i))
	}
	return b.String()
}
