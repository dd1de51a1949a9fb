package outboxbench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go

	"github.com/mailsec/mailsec/internal/sqlitedb"
	"github.com/mailsec/mailsec/outbox"
)

// Settings are the database and River settings of a run. Every peer
// opens its databases and configures its River client with them, so that
// the ratios compare the same settings; the README says why each was
// chosen.
type Settings struct {
	// MaxWorkers is River's QueueConfig.MaxWorkers: jobs worked at once
	// by one client.
	MaxWorkers int
	// FetchCooldown is River's Config.FetchCooldown: the least time
	// between two fetches of available jobs (River's default: 100 ms).
	FetchCooldown time.Duration
	// FetchPollInterval is River's Config.FetchPollInterval: the longest
	// time between two fetches when no insert was signalled (River's
	// default: 1 s).
	FetchPollInterval time.Duration
	// SQLiteSynchronous is SQLite's synchronous pragma: FULL syncs the
	// write-ahead log at every commit, so a committed enqueue survives a
	// power failure; NORMAL only at checkpoints, so it survives a crash of
	// the process but not of the machine.
	SQLiteSynchronous string
	// PostgresMaxConns is the size of the pgx pool (pgxpool's default is
	// 4 on a 2-core machine, or the number of cores when more).
	PostgresMaxConns int32
	// JobTimeout, RescueStuckJobsAfter and MaxAttempts are River's
	// Config fields of the same names; zero means River's defaults. They
	// cost nothing measurable, but the floor runs with the outbox's so
	// that the two clients differ in nothing but the work.
	JobTimeout           time.Duration
	RescueStuckJobsAfter time.Duration
	MaxAttempts          int
}

// Outbox are the settings package outbox runs River with (riverConfig in
// outbox/engine.go, with the default Options), and the database settings
// of outbox.Open: the settings the outbox is measured with, and the
// floor's in the same run. Change them here when the outbox changes.
//
//   - MaxWorkers: outbox.DefaultWorkers (Options.Workers).
//   - FetchCooldown 10 ms, FetchPollInterval 1 s: riverConfig's.
//   - JobTimeout DefaultDeliveryTimeout + 30 s, RescueStuckJobsAfter
//     60 s more, MaxAttempts 1000: riverConfig's, from the default
//     DeliveryTimeout.
//   - SQLite synchronous FULL and the pragmas of outbox.Open
//     ([SQLiteDSN]), one connection.
//   - Postgres: a pool of MaxWorkers + 4 connections (24), for both. A
//     delivery takes a connection twice (read, record) and River holds
//     some of its own (the LISTEN of its notifier, its producer and
//     completer): pgxpool's default, 4 on a
//     2-core machine, leaves 20 workers waiting for connections and halves
//     the outbox's delivery rate. An application sets it with
//     pool_max_conns in the URL, or on the pool it gives OpenPostgres.
func Outbox() Settings {
	return Settings{
		MaxWorkers:           outbox.DefaultWorkers,
		FetchCooldown:        10 * time.Millisecond,
		FetchPollInterval:    time.Second,
		SQLiteSynchronous:    "FULL",
		PostgresMaxConns:     int32(outbox.DefaultWorkers) + 4,
		JobTimeout:           outbox.DefaultDeliveryTimeout + 30*time.Second,
		RescueStuckJobsAfter: outbox.DefaultDeliveryTimeout + 90*time.Second,
		MaxAttempts:          1000,
	}
}

// outboxRiver reports whether s has the River settings the outbox runs
// with: only then is the outbox measured beside the floor (the outbox's
// worker count follows MaxWorkers, the rest is fixed in the outbox).
func (s Settings) outboxRiver() bool {
	o := Outbox()
	return s.FetchCooldown == o.FetchCooldown && s.FetchPollInterval == o.FetchPollInterval &&
		s.JobTimeout == o.JobTimeout && s.RescueStuckJobsAfter == o.RescueStuckJobsAfter && s.MaxAttempts == o.MaxAttempts
}

// Tuned are River at its fastest on these machines: more workers, a
// shorter fetch cooldown and poll interval than the outbox runs with. The
// outbox is not measured with them (see [Outbox]).
func Tuned() Settings {
	return Settings{
		MaxWorkers:        100,
		FetchCooldown:     5 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
		SQLiteSynchronous: "FULL",
		PostgresMaxConns:  16,
	}
}

// RiverDefaults are River's and the drivers' defaults, with the same
// durability (synchronous FULL) and a worker count of 8, for comparison.
func RiverDefaults() Settings {
	return Settings{
		MaxWorkers:        8,
		FetchCooldown:     river.FetchCooldownDefault,
		FetchPollInterval: river.FetchPollIntervalDefault,
		SQLiteSynchronous: "FULL",
		PostgresMaxConns:  0, // pgxpool's default
	}
}

func (s Settings) String() string {
	conns := "pgxpool default"
	if s.PostgresMaxConns > 0 {
		conns = fmt.Sprint(s.PostgresMaxConns)
	}
	str := fmt.Sprintf("MaxWorkers %d, FetchCooldown %v, FetchPollInterval %v", s.MaxWorkers, s.FetchCooldown, s.FetchPollInterval)
	if s.JobTimeout > 0 || s.RescueStuckJobsAfter > 0 || s.MaxAttempts > 0 {
		str += fmt.Sprintf(", JobTimeout %v, RescueStuckJobsAfter %v, MaxAttempts %d", s.JobTimeout, s.RescueStuckJobsAfter, s.MaxAttempts)
	}
	return str + fmt.Sprintf("; SQLite: one connection, WAL, wal_autocheckpoint 200, busy_timeout 10000 ms, synchronous %s, BEGIN IMMEDIATE; Postgres pool: %s connections",
		s.SQLiteSynchronous, conns)
}

// SQLiteDSN is the modernc.org/sqlite data source name for a database file
// at path, with the pragmas outbox.Open uses: write-ahead log (readers do
// not block the writer), checkpoints every 200 pages of it, a busy
// timeout (another process holding the write lock makes us wait, not
// fail), the synchronous level of s, and BEGIN IMMEDIATE (a transaction
// takes the write lock when it begins, so two processes never deadlock
// upgrading a read lock).
func SQLiteDSN(path string, s Settings) string {
	return "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(" +
		s.SQLiteSynchronous + ")&_pragma=wal_autocheckpoint(200)&_pragma=busy_timeout(10000)&_txlock=immediate"
}

// OpenSQLite opens the SQLite file at path with [SQLiteDSN] and a single
// connection, which River's SQLite driver needs (SQLite runs one writer
// at a time; River's concurrent maintenance would otherwise fail with
// SQLITE_BUSY).
func OpenSQLite(path string, s Settings) (*sql.DB, error) {
	return oneConnection(sql.Open("sqlite", SQLiteDSN(path, s)))
}

// OpenOutboxSQLite is OpenSQLite as outbox.OpenSQLiteDB opens a file: the
// same settings, and that handle's cache of prepared statements, which
// spares River's SQLite driver the parsing of its queries on every call.
// The outbox peer runs on it; River's runs on OpenSQLite's plain
// modernc.org/sqlite handle, as River's documentation opens one.
func OpenOutboxSQLite(path string, s Settings) (*sql.DB, error) {
	return oneConnection(sqlitedb.Open(SQLiteDSN(path, s), sqlitedb.Options{}))
}

// oneConnection limits db, just opened (with err), to one connection and
// checks that it opens.
func oneConnection(db *sql.DB, err error) (*sql.DB, error) {
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// OpenPostgres opens a pgx pool on url with s.PostgresMaxConns
// connections.
func OpenPostgres(ctx context.Context, url string, s Settings) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if s.PostgresMaxConns > 0 {
		cfg.MaxConns = s.PostgresMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// noopArgs are the arguments of the floor's job: the sealed message
// itself, so that River stores, fetches and decodes as many bytes as a
// queue of sealed messages would. encoding/json writes []byte in base64,
// so the stored arguments are about 4/3 of len(Sealed).
type noopArgs struct {
	Sealed []byte `json:"sealed"`
}

func (noopArgs) Kind() string { return "bench_noop" }

// River is the floor: bare River with s, a job per item whose arguments
// carry the payload, enqueued with Client.Insert, worked by a worker that
// does nothing.
func River(s Settings) Peer {
	return Peer{
		Name: "river",
		Enqueue: func(ctx context.Context, db Target, p Payload) (Enqueuer, error) {
			return openRiver(ctx, db, s, riverOpts{payload: p})
		},
		Deliver: func(ctx context.Context, db Target, p Payload, n int) (Deliverer, error) {
			return openRiver(ctx, db, s, riverOpts{payload: p, deliver: n})
		},
	}
}

type riverOpts struct {
	payload Payload
	deliver int // when > 0: queue this many jobs and configure workers
}

// riverPeer is River on one database, as an Enqueuer or a Deliverer.
type riverPeer interface {
	Enqueuer
	Deliverer
}

func openRiver(ctx context.Context, db Target, s Settings, o riverOpts) (riverPeer, error) {
	switch db.Kind {
	case SQLite:
		sdb, err := OpenSQLite(db.Path, s)
		if err != nil {
			return nil, err
		}
		count := func(ctx context.Context) (int, error) {
			var n int
			err := sdb.QueryRowContext(ctx, "SELECT count(*) FROM river_job WHERE state = 'completed'").Scan(&n)
			return n, err
		}
		return newRiverClient(ctx, riversqlite.New(sdb), s, o, count, sdb.Close)
	case Postgres:
		pool, err := OpenPostgres(ctx, db.URL, s)
		if err != nil {
			return nil, err
		}
		count := func(ctx context.Context) (int, error) {
			var n int
			err := pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE state = 'completed'").Scan(&n)
			return n, err
		}
		return newRiverClient[pgx.Tx](ctx, riverpgxv5.New(pool), s, o, count, func() error { pool.Close(); return nil })
	}
	return nil, fmt.Errorf("unknown kind of database %q", db.Kind)
}

// riverClient is a River client on one database.
type riverClient[TTx any] struct {
	client    *river.Client[TTx]
	args      noopArgs
	n         int
	events    <-chan *river.Event
	cancelSub func()
	started   bool
	count     func(context.Context) (int, error)
	closeDB   func() error
}

// newRiverClient migrates the database, makes a client and, for delivery,
// queues o.deliver jobs.
func newRiverClient[TTx any](ctx context.Context, driver riverdriver.Driver[TTx], s Settings, o riverOpts,
	count func(context.Context) (int, error), closeDB func() error) (_ *riverClient[TTx], err error) {
	defer func() {
		if err != nil {
			closeDB()
		}
	}()
	m, err := rivermigrate.New(driver, nil)
	if err != nil {
		return nil, err
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return nil, fmt.Errorf("migrating: %w", err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, river.WorkFunc(func(context.Context, *river.Job[noopArgs]) error { return nil }))
	cfg := &river.Config{
		Workers: workers,
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if o.deliver > 0 {
		cfg.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: s.MaxWorkers}}
		cfg.FetchCooldown = s.FetchCooldown
		cfg.FetchPollInterval = s.FetchPollInterval
		cfg.JobTimeout = s.JobTimeout
		cfg.RescueStuckJobsAfter = s.RescueStuckJobsAfter
		cfg.MaxAttempts = s.MaxAttempts
	}
	client, err := river.NewClient(driver, cfg)
	if err != nil {
		return nil, err
	}
	c := &riverClient[TTx]{client: client, args: noopArgs{Sealed: o.payload.Sealed}, n: o.deliver, count: count, closeDB: closeDB}
	if o.deliver > 0 {
		const batch = 500
		for done := 0; done < o.deliver; done += batch {
			params := make([]river.InsertManyParams, min(batch, o.deliver-done))
			for i := range params {
				params[i] = river.InsertManyParams{Args: c.args}
			}
			if _, err := client.InsertMany(ctx, params); err != nil {
				return nil, fmt.Errorf("queueing jobs: %w", err)
			}
		}
		// Room for every event: a full channel drops events.
		c.events, c.cancelSub = client.SubscribeConfig(&river.SubscribeConfig{
			ChanSize: o.deliver + 100,
			Kinds:    []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobCancelled},
		})
	}
	return c, nil
}

// Enqueue inserts one job with Client.Insert, in its own transaction.
func (c *riverClient[TTx]) Enqueue(ctx context.Context) error {
	_, err := c.client.Insert(ctx, c.args, nil)
	return err
}

// Run starts the client's workers and returns when River has recorded
// every queued job as completed.
func (c *riverClient[TTx]) Run(ctx context.Context) error {
	if c.n == 0 {
		return errors.New("nothing queued")
	}
	c.started = true
	if err := c.client.Start(ctx); err != nil {
		return err
	}
	for done := 0; done < c.n; {
		select {
		case ev := <-c.events:
			if ev.Kind != river.EventKindJobCompleted {
				return fmt.Errorf("job %d: %s", ev.Job.ID, ev.Kind)
			}
			done++
		case <-ctx.Done():
			return fmt.Errorf("%d of %d jobs completed: %w", done, c.n, ctx.Err())
		}
	}
	return nil
}

// Close stops the client, checks that the database records every job as
// completed, and closes the database.
func (c *riverClient[TTx]) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if c.started {
		errs = append(errs, c.client.Stop(ctx))
	}
	if c.cancelSub != nil {
		c.cancelSub()
	}
	if c.n > 0 {
		got, err := c.count(ctx)
		if err == nil && got != c.n {
			err = fmt.Errorf("%d of %d jobs recorded as completed", got, c.n)
		}
		errs = append(errs, err)
	}
	errs = append(errs, c.closeDB())
	return errors.Join(errs...)
}
