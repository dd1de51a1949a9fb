package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/mailsec/mailsec"
)

// engine is the database and River client under an Outbox: SQLite or
// Postgres.
type engine interface {
	pool() querier
	begin(ctx context.Context) (txn, error)
	// inTx runs fn in a transaction, committed when fn returns nil. On
	// SQLite the transaction may hold other callers' work too (see
	// groupCommit); fn must not commit or roll back.
	inTx(ctx context.Context, fn func(ctx context.Context, t txn) error) error
	// postgres reports whether the database is Postgres.
	postgres() bool
	// readRow reads message id's row (loadRow); on Postgres, in one
	// statement with the reads of concurrent callers (see pgGroup).
	readRow(ctx context.Context, id string) (*row, error)
	// recordRow records an attempt in the usual case, on Postgres, in one
	// statement with the records of concurrent callers (see
	// newPGRecords), and reports whether it did: false, having changed
	// nothing, when the row is not as the attempt read it, or another
	// transaction holds it. It is not for SQLite, whose records share
	// transactions already (see groupCommit).
	recordRow(ctx context.Context, r pgRecord) (bool, error)
	// insertJob queues the delivery job for the message id in t.
	insertJob(ctx context.Context, t txn, id string) error
	// wakeJob and replaceJob are the functions of those names on the
	// engine.
	wakeJob(ctx context.Context, t txn, id string) error
	replaceJob(ctx context.Context, t txn, id string) error
	// recentlyEnded is how long after River completed a delivery job the
	// job still counts as live: the record of its run's attempt may not have
	// committed yet (see lateRecords). Zero on SQLite, whose runs record
	// their attempts before they return.
	recentlyEnded() time.Duration
	// queueJob is insertJob for a message t has just inserted: in a
	// transaction a groupCommit shares, the job is inserted when the
	// group's work is done, with the other new messages' jobs, in one
	// statement.
	queueJob(ctx context.Context, t txn, id string) error
	start(ctx context.Context) error
	stop(ctx context.Context) error
	stopAndCancel(ctx context.Context) error
	migrate(ctx context.Context) error
	// prepare readies the engine for work once the tables are there.
	prepare(ctx context.Context) error
	validate(ctx context.Context) error
	close()
}

// The River queue and job kind of deliveries.
const (
	queueName   = "mailsec_outbox"
	deliverKind = "mailsec_outbox_deliver"
	cleanKind   = "mailsec_outbox_clean"
)

// deliverArgs are a delivery job's arguments, all River stores about a
// message: the outbox's opaque ID for it.
type deliverArgs struct {
	ID string `json:"id"`
}

func (deliverArgs) Kind() string { return deliverKind }

// cleanArgs are the periodic clean-up's: none.
type cleanArgs struct{}

func (cleanArgs) Kind() string { return cleanKind }

type deliverWorker struct {
	river.WorkerDefaults[deliverArgs]
	ob *Outbox
}

func (w *deliverWorker) Work(ctx context.Context, job *river.Job[deliverArgs]) error {
	return w.ob.work(ctx, job.Args.ID, jobRuns(job.JobRow))
}

// jobRuns is how many times River has started job, this run included,
// or 0 when its metadata cannot tell.
//
// River commits a run's start (state running, attempt counted) before the
// worker is given the job, so the count is durable before the attempt
// sends anything. A run that ends in a snooze is not counted as an attempt
// by River (it takes one off "attempt" and adds one to the metadata's
// "snoozes", part of River's cross-language protocol); a run that fails,
// or whose worker dies (River's rescue), leaves "attempt" as it was. So
// attempt plus snoozes grows by exactly one with each run, whatever the
// runs before ended with (TestJobRunsCountEveryRun holds River to it).
func jobRuns(job *rivertype.JobRow) int {
	var md struct {
		Snoozes *json.Number `json:"snoozes"`
	}
	if len(job.Metadata) > 0 {
		if err := json.Unmarshal(job.Metadata, &md); err != nil {
			return 0
		}
	}
	snoozes := int64(0)
	if md.Snoozes != nil {
		n, err := md.Snoozes.Int64()
		if err != nil || n < 0 {
			return 0
		}
		snoozes = n
	}
	if job.Attempt < 1 {
		return 0
	}
	return job.Attempt + int(snoozes)
}

// retryPolicy is River's default (the job's errors, plus one, to the
// fourth power, in seconds, give or take 10%) for the runs that end in
// an error, with a delivery job's wait at most max (Options.MaxBackoff,
// as between attempts): a panic in the outbox, or the database
// unreachable when the message is read. River's own would grow past a
// day by the twentieth error, and leave a message whose runs keep
// failing that long past its expiry.
type retryPolicy struct {
	river.DefaultClientRetryPolicy
	max time.Duration
}

func (p retryPolicy) NextRetry(job *rivertype.JobRow) time.Time {
	next := p.DefaultClientRetryPolicy.NextRetry(job)
	if job.Kind != deliverKind {
		// The clean-up runs every cleanEvery anyway; a failed run of it
		// waits as River's default says.
		return next
	}
	if limit := time.Now().Add(p.max); next.After(limit) {
		return limit
	}
	return next
}

type cleanWorker struct {
	river.WorkerDefaults[cleanArgs]
	ob *Outbox
}

func (w *cleanWorker) Work(ctx context.Context, _ *river.Job[cleanArgs]) error {
	return w.ob.clean(ctx)
}

// cleanEvery is how often the leader deletes what retention no longer
// keeps and gives a job to each message without one. On Postgres it runs
// every RescueStuckJobsAfter when that is shorter, so that a message
// whose job was completed before its attempt's record committed (see
// lateRecords), the process having died in between, is taken up about as
// soon as one whose worker died during its run.
const cleanEvery = 10 * time.Minute

// maxJobAttempts is River's limit on a delivery job's failed runs. The
// outbox retries deliveries by snoozing the job, which River does not
// count; a run counts only when its worker died (a rescue), the database
// failed, or the run panicked. The message's MaxAge usually ends it
// first; should River discard the job first (its runs failing, each at
// most MaxBackoff after the last, a thousand times), the clean-up gives
// the message a new job (requeueJobless).
const maxJobAttempts = 1000

// riverConfig is the River client configuration the outbox runs with.
//
//   - One queue of Options.Workers workers.
//   - FetchCooldown 10 ms (River's default, 100 ms, caps a SQLite queue at
//     about 80 jobs a second); FetchPollInterval 1 s, a fallback: new jobs
//     wake the workers through River's notifications (LISTEN/NOTIFY on
//     Postgres, a polled table on SQLite).
//   - JobTimeout DeliveryTimeout plus a margin to record the outcome (a
//     quarter of DeliveryTimeout, at least 5 s and at most 30 s), and
//     RescueStuckJobsAfter two margins more: a message whose worker died is
//     taken up by another within minutes (3.5 with the defaults), not
//     River's default hour, and never while its worker may still be at it.
//   - Completed and cancelled jobs are kept a day (River's default): they
//     hold only an ID; the outbox keeps its own records.
func riverConfig(ob *Outbox, postgres bool) *river.Config {
	workers := river.NewWorkers()
	river.AddWorker(workers, &deliverWorker{ob: ob})
	river.AddWorker(workers, &cleanWorker{ob: ob})
	river.AddWorker(workers, &tlsrptWorker{ob: ob})
	every := cleanEvery
	if postgres {
		every = min(every, ob.o.rescueAfter)
	}
	periodic := []*river.PeriodicJob{
		river.NewPeriodicJob(river.PeriodicInterval(every), func() (river.JobArgs, *river.InsertOpts) {
			return cleanArgs{}, &river.InsertOpts{Queue: queueName}
		}, &river.PeriodicJobOpts{ID: cleanKind, RunOnStart: true}),
	}
	if ob.tlsrpt != nil {
		periodic = append(periodic, tlsrptPeriodicJob())
	}
	return &river.Config{
		Queues: map[string]river.QueueConfig{
			queueName: {MaxWorkers: ob.o.workers},
		},
		Workers:              workers,
		FetchCooldown:        10 * time.Millisecond,
		FetchPollInterval:    time.Second,
		JobTimeout:           ob.o.jobTimeout,
		RescueStuckJobsAfter: ob.o.rescueAfter,
		MaxAttempts:          maxJobAttempts,
		RetryPolicy:          retryPolicy{max: ob.o.maxBackoff},
		Logger:               ob.log.With(slog.String("component", "river")),
		PeriodicJobs:         periodic,
	}
}

func newClient[TTx any](driver riverdriver.Driver[TTx], ob *Outbox, postgres bool) (*river.Client[TTx], error) {
	if ob == nil {
		return nil, nil
	}
	client, err := river.NewClient(driver, riverConfig(ob, postgres))
	if err != nil {
		return nil, fmt.Errorf("outbox: River: %w", err)
	}
	return client, nil
}

// riverEngine is an engine on one of River's drivers.
type riverEngine[TTx any] struct {
	driver  riverdriver.Driver[TTx]
	client  *river.Client[TTx]
	q       querier
	beginTx func(ctx context.Context) (txn, error)
	group   *groupCommit             // SQLite's
	reads   *pgGroup[string, *row]   // Postgres's
	records *pgGroup[pgRecord, bool] // Postgres's
	sqlDB   *sql.DB                  // SQLite's
	ended   time.Duration            // recentlyEnded
	prep    *sqlitePrepared          // SQLite's attempt statements, once prepared
	rawTx   func(t txn) (TTx, bool)
	// lock serialises migrations, and gives the transactions that run
	// them: on Postgres, on the connection that holds the lock, so that a
	// pool of one connection migrates too.
	lock      func(ctx context.Context) (begin func(context.Context) (txn, error), unlock func(), err error)
	riverInTx bool   // River's migrations run in the outbox's transaction
	blob      string // the binary column type
	closeDB   func()
	dbName    string
	wrongKind string // the EnqueueTx variant of the other database
}

func (e *riverEngine[TTx]) pool() querier                          { return e.q }
func (e *riverEngine[TTx]) begin(ctx context.Context) (txn, error) { return e.beginTx(ctx) }
func (e *riverEngine[TTx]) postgres() bool                         { return e.group == nil }
func (e *riverEngine[TTx]) readRow(ctx context.Context, id string) (*row, error) {
	if e.reads == nil {
		return loadRow(ctx, e.q, id)
	}
	r, err := e.reads.do(ctx, id)
	if r == nil && err == nil {
		err = sql.ErrNoRows
	}
	return r, err
}
func (e *riverEngine[TTx]) recordRow(ctx context.Context, r pgRecord) (bool, error) {
	if e.records == nil {
		return false, errors.New("outbox: internal error: a grouped record on SQLite")
	}
	return e.records.do(ctx, r)
}
func (e *riverEngine[TTx]) inTx(ctx context.Context, fn func(ctx context.Context, t txn) error) error {
	if e.group != nil {
		return e.group.do(ctx, fn)
	}
	t, err := e.beginTx(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = t.rollback(ctx) }()
	if err := fn(ctx, t); err != nil {
		return err
	}
	return t.commit(ctx)
}
func (e *riverEngine[TTx]) start(ctx context.Context) error { return e.client.Start(ctx) }
func (e *riverEngine[TTx]) stop(ctx context.Context) error  { return e.client.Stop(ctx) }
func (e *riverEngine[TTx]) stopAndCancel(ctx context.Context) error {
	return e.client.StopAndCancel(ctx)
}
func (e *riverEngine[TTx]) close() {
	e.prep.close()
	e.closeDB()
}

// prepare prepares the statements of an attempt on SQLite.
func (e *riverEngine[TTx]) prepare(ctx context.Context) error {
	if e.sqlDB == nil || e.prep != nil {
		return nil
	}
	p, err := prepareSQLite(ctx, e.sqlDB, attemptStatements...)
	if err != nil {
		return fmt.Errorf("outbox: preparing statements: %w", err)
	}
	e.prep = p
	e.q = sqliteQ{e.sqlDB, p}
	e.group.prep = p
	return nil
}

// insertJob queues the job available at once: a job given a time, even
// now, is "scheduled" and waits for River's scheduler, which runs every
// few seconds.
func (e *riverEngine[TTx]) insertJob(ctx context.Context, t txn, id string) error {
	tx, ok := e.rawTx(t)
	if !ok {
		return fmt.Errorf("outbox: internal error: a transaction of another database")
	}
	_, err := e.client.InsertTx(ctx, tx, deliverArgs{ID: id}, deliverOpts())
	return err
}

func (e *riverEngine[TTx]) recentlyEnded() time.Duration { return e.ended }

func (e *riverEngine[TTx]) wakeJob(ctx context.Context, t txn, id string) error {
	return wakeJob(ctx, e, t, id)
}

func (e *riverEngine[TTx]) replaceJob(ctx context.Context, t txn, id string) error {
	return replaceJob(ctx, e, t, id)
}

// deliverOpts are the insert options of a delivery job.
func deliverOpts() *river.InsertOpts {
	return &river.InsertOpts{Queue: queueName, MaxAttempts: maxJobAttempts}
}

func (e *riverEngine[TTx]) queueJob(ctx context.Context, t txn, id string) error {
	if sp, ok := t.(sqliteSavepoint); ok && sp.jobs != nil {
		*sp.jobs = append(*sp.jobs, id)
		return nil
	}
	return e.insertJob(ctx, t, id)
}

// insertJobs queues the delivery jobs of the messages ids in tx, in one
// statement (River prepares every statement it runs on SQLite anew, and
// its insert is long to parse; on Postgres, one round trip).
func insertJobs[TTx any](ctx context.Context, client *river.Client[TTx], tx TTx, ids []string) error {
	params := make([]river.InsertManyParams, len(ids))
	for i, id := range ids {
		params[i] = river.InsertManyParams{Args: deliverArgs{ID: id}, InsertOpts: deliverOpts()}
	}
	_, err := client.InsertManyTx(ctx, tx, params)
	return err
}

// migrate brings River's tables and the outbox's up to date. Concurrent
// Opens wait for each other: SQLite serialises the transaction; on
// Postgres an advisory lock is held throughout, and River's migrations run
// each in a transaction of its own (some cannot share one), all on the
// connection that holds the lock: migrating takes one connection of the
// pool, however small.
func (e *riverEngine[TTx]) migrate(ctx context.Context) error {
	begin, unlock, err := e.lock(ctx)
	if err != nil {
		return fmt.Errorf("outbox: migrating: %w", err)
	}
	defer unlock()
	m, err := rivermigrate.New(e.driver, &rivermigrate.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("outbox: migrating River's tables: %w", err)
	}
	if !e.riverInTx {
		for {
			n, err := migrateStep(ctx, m, begin, e.rawTx)
			if err != nil {
				return fmt.Errorf("outbox: migrating River's tables: %w", err)
			}
			if n == 0 {
				break
			}
		}
	}
	t, err := begin(ctx)
	if err != nil {
		return fmt.Errorf("outbox: migrating: %w", err)
	}
	defer func() { _ = t.rollback(ctx) }()
	if e.riverInTx {
		tx, _ := e.rawTx(t)
		// On SQLite, River's migrations all run in one transaction, and
		// running them in the outbox's is what serialises two processes
		// opening a new file at once (SQLite has no advisory lock).
		//lint:ignore SA1019 Migrate cannot join the outbox's transaction; River deprecates MigrateTx for Postgres migrations that cannot share one, which the Postgres path runs with Migrate.
		if _, err := m.MigrateTx(ctx, tx, rivermigrate.DirectionUp, nil); err != nil {
			return fmt.Errorf("outbox: migrating River's tables: %w", err)
		}
	}
	if _, err := t.exec(ctx, `CREATE TABLE IF NOT EXISTS mailsec_outbox_schema (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("outbox: migrating: %w", err)
	}
	v, err := ourVersion(ctx, t)
	if err != nil {
		return err
	}
	if v < 1 {
		for _, stmt := range schemaV1(e.blob) {
			if _, err := t.exec(ctx, stmt); err != nil {
				return fmt.Errorf("outbox: migrating the outbox's tables: %w", err)
			}
		}
	}
	if v < 2 {
		for _, stmt := range schemaV2() {
			if _, err := t.exec(ctx, stmt); err != nil {
				return fmt.Errorf("outbox: migrating the outbox's tables: %w", err)
			}
		}
	}
	if v < 3 {
		for _, stmt := range schemaV3(e.blob) {
			if _, err := t.exec(ctx, stmt); err != nil {
				return fmt.Errorf("outbox: migrating the outbox's tables: %w", err)
			}
		}
	}
	if v < 4 {
		// A database whose version was set back by hand may have it.
		has, err := e.hasColumn(ctx, t, "mailsec_outbox_message", "job_runs")
		if err != nil {
			return fmt.Errorf("outbox: migrating the outbox's tables: %w", err)
		}
		if !has {
			for _, stmt := range schemaV4() {
				if _, err := t.exec(ctx, stmt); err != nil {
					return fmt.Errorf("outbox: migrating the outbox's tables: %w", err)
				}
			}
		}
		if _, err := t.exec(ctx, schemaV4Jobs); err != nil {
			return fmt.Errorf("outbox: migrating the outbox's delivery jobs: %w", err)
		}
	}
	if v < 5 && e.postgres() {
		for _, stmt := range schemaV5Postgres {
			if _, err := t.exec(ctx, stmt); err != nil {
				return fmt.Errorf("outbox: migrating the outbox's tables: %w", err)
			}
		}
	}
	if v < schemaVersion {
		if _, err := t.exec(ctx, `DELETE FROM mailsec_outbox_schema`); err != nil {
			return err
		}
		if _, err := t.exec(ctx, `INSERT INTO mailsec_outbox_schema (version) VALUES ($1)`, schemaVersion); err != nil {
			return err
		}
	}
	return t.commit(ctx)
}

// migrateStep applies River's next migration, if any, in a transaction
// of its own from begin, and says how many it applied: River's Migrate
// runs each in a transaction of its own too, on a connection of the pool
// of its own choosing.
func migrateStep[TTx any](ctx context.Context, m *rivermigrate.Migrator[TTx], begin func(context.Context) (txn, error), rawTx func(txn) (TTx, bool)) (int, error) {
	t, err := begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = t.rollback(ctx) }()
	tx, ok := rawTx(t)
	if !ok {
		return 0, fmt.Errorf("outbox: internal error: a transaction of another database")
	}
	//lint:ignore SA1019 River deprecates MigrateTx for running several migrations in one transaction; this runs one.
	res, err := m.MigrateTx(ctx, tx, rivermigrate.DirectionUp, &rivermigrate.MigrateOpts{MaxSteps: 1})
	if err != nil {
		return 0, err
	}
	return len(res.Versions), t.commit(ctx)
}

// hasColumn reports whether table has column.
func (e *riverEngine[TTx]) hasColumn(ctx context.Context, q querier, table, column string) (bool, error) {
	query := `SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2`
	if e.postgres() {
		query = `SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2`
	}
	var n int
	err := q.queryRow(ctx, query, table, column).Scan(&n)
	return n > 0, err
}

func ourVersion(ctx context.Context, q querier) (int, error) {
	var v sql.NullInt64
	if err := q.queryRow(ctx, `SELECT MAX(version) FROM mailsec_outbox_schema`).Scan(&v); err != nil {
		return 0, fmt.Errorf("outbox: reading the schema version: %w", err)
	}
	if v.Int64 > schemaVersion {
		return 0, &mailsec.ConfigError{Field: "outbox database", Value: fmt.Sprint("schema version ", v.Int64),
			Reason: fmt.Sprintf("made by a newer version of package outbox (this one knows version %d)", schemaVersion)}
	}
	return int(v.Int64), nil
}

// validate checks, without changing anything, that the tables are up to
// date.
func (e *riverEngine[TTx]) validate(ctx context.Context) error {
	notMigrated := func(why string) error {
		return &mailsec.ConfigError{Field: "Options.SkipMigrations", Value: "true",
			Reason: "the database's tables are not up to date (" + why + "): run outbox.Migrate first, or let Open migrate", Err: ErrNotMigrated}
	}
	has, err := hasTable(ctx, e.q, e.postgres(), "mailsec_outbox_schema")
	if err != nil {
		return fmt.Errorf("outbox: reading the schema version: %w", err)
	}
	if !has {
		return noOutbox()
	}
	m, err := rivermigrate.New(e.driver, &rivermigrate.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	res, err := m.Validate(ctx, nil)
	if err != nil {
		return notMigrated("River's: " + err.Error())
	}
	if !res.OK {
		return notMigrated("River's")
	}
	v, err := ourVersion(ctx, e.q)
	if err != nil {
		var ce *mailsec.ConfigError
		if errors.As(err, &ce) {
			return err
		}
		return notMigrated("the outbox's")
	}
	if v < schemaVersion {
		return notMigrated(fmt.Sprintf("the outbox's are of schema version %d, this package's is %d", v, schemaVersion))
	}
	return nil
}

// --- SQLite ---

// newSQLiteEngine makes the engine of ob on db; with a nil ob, one that
// can only migrate.
func newSQLiteEngine(ob *Outbox, db *sql.DB, closeDB func()) (*riverEngine[*sql.Tx], error) {
	driver := riversqlite.New(db)
	client, err := newClient(driver, ob, false)
	if err != nil {
		return nil, err
	}
	e := &riverEngine[*sql.Tx]{
		driver: driver,
		client: client,
		q:      sqliteQ{db, nil},
		group:  &groupCommit{db: db, client: client},
		sqlDB:  db,
		rawTx: func(t txn) (*sql.Tx, bool) {
			switch t := t.(type) {
			case sqliteTx:
				return t.tx, true
			case sqliteSavepoint:
				return t.tx, true
			}
			return nil, false
		},
		riverInTx: true,
		blob:      "BLOB",
		closeDB:   closeDB,
		dbName:    "SQLite",
		wrongKind: "EnqueuePgxTx",
	}
	e.beginTx = func(ctx context.Context) (txn, error) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		return sqliteTx{sqliteQ{tx, e.prep}, tx}, nil
	}
	// SQLite serialises writing transactions itself.
	e.lock = func(context.Context) (func(context.Context) (txn, error), func(), error) {
		return e.beginTx, func() {}, nil
	}
	return e, nil
}

func openSQLite(ctx context.Context, s *mailsec.Sender, db *sql.DB, o *Options, closeDB func()) (*Outbox, error) {
	ob, err := newOutbox(s, o)
	if err != nil {
		return nil, err
	}
	if ob.eng, err = newSQLiteEngine(ob, db, closeDB); err != nil {
		return nil, err
	}
	if err := ob.ready(ctx); err != nil {
		return nil, err
	}
	return ob, nil
}

// --- Postgres ---

// newPostgresEngine makes the engine of ob on pool; with a nil ob, one
// that can only migrate.
func newPostgresEngine(ob *Outbox, pool *pgxpool.Pool, closeDB func()) (*riverEngine[pgx.Tx], error) {
	driver := riverpgxv5.New(pool)
	client, err := newClient(driver, ob, true)
	if err != nil {
		return nil, err
	}
	return &riverEngine[pgx.Tx]{
		driver:  driver,
		client:  client,
		q:       pgQ{pool},
		reads:   newPGReads(pool),
		records: newPGRecords(pool, prepares(pool)),
		beginTx: func(ctx context.Context) (txn, error) {
			tx, err := pool.Begin(ctx)
			if err != nil {
				return nil, err
			}
			return pgTx{pgQ{tx}, tx}, nil
		},
		rawTx: func(t txn) (pgx.Tx, bool) {
			if t, ok := t.(pgTx); ok {
				return t.tx, true
			}
			return nil, false
		},
		lock: func(ctx context.Context) (func(context.Context) (txn, error), func(), error) {
			conn, err := pool.Acquire(ctx)
			if err != nil {
				return nil, nil, err
			}
			if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext('mailsec_outbox_migrate'))`); err != nil {
				conn.Release()
				return nil, nil, err
			}
			begin := func(ctx context.Context) (txn, error) {
				tx, err := conn.Begin(ctx)
				if err != nil {
					return nil, err
				}
				return pgTx{pgQ{tx}, tx}, nil
			}
			return begin, func() {
				_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext('mailsec_outbox_migrate'))`)
				conn.Release()
			}, nil
		},
		blob:      "BYTEA",
		closeDB:   closeDB,
		dbName:    "Postgres",
		wrongKind: "EnqueueTx",
	}, nil
}

func openPostgres(ctx context.Context, s *mailsec.Sender, pool *pgxpool.Pool, o *Options, closeDB func()) (*Outbox, error) {
	ob, err := newOutbox(s, o)
	if err != nil {
		return nil, err
	}
	e, err := newPostgresEngine(ob, pool, closeDB)
	if err != nil {
		return nil, err
	}
	e.ended = lateWindow(ob.o.margin)
	ob.eng = e
	ob.later = newLateRecords(ob.o.workers, ob.log)
	ob.enqueueGroup = &pgEnqueueGroup{ob: ob, pool: pool, client: e.client, prepared: prepares(pool),
		coalescer: coalescer[*pgEnqueueOp]{atOnce: pgGroupsAtOnce, yield: true}}
	if err := ob.ready(ctx); err != nil {
		return nil, err
	}
	return ob, nil
}
