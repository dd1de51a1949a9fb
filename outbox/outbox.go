package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	neturl "net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/internal/sqlitedb"
)

// Defaults of the Options.
const (
	// DefaultMaxMessageSize bounds what Enqueue stores of one message:
	// Postfix's default message_size_limit, 10 MB.
	DefaultMaxMessageSize = 10 << 20
	// DefaultMaxAge is how long a message is retried: Postfix's
	// maximal_queue_lifetime, 5 days.
	DefaultMaxAge = 5 * 24 * time.Hour
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between two
	// attempts: it doubles from the first to the second, each drawn at
	// random from its upper half (jitter, so that messages deferred
	// together are not retried together).
	DefaultMinBackoff = time.Minute
	DefaultMaxBackoff = time.Hour
	// DefaultDeliveryTimeout bounds one attempt: every SMTP session it
	// needs, protection included.
	DefaultDeliveryTimeout = 2 * time.Minute
	// DefaultReceiptRetention is how long a finished message's status and
	// Receipts are kept (its content is deleted when it finishes).
	DefaultReceiptRetention = 30 * 24 * time.Hour
	// DefaultWorkers is how many messages one process delivers at once.
	DefaultWorkers = 20
)

// Options configures an Outbox. Every process that opens the same
// database should be given the same keys and durations.
type Options struct {
	// Keys seal everything the outbox stores about a message (content,
	// header fields, addresses, attachments, Receipts): the first seals,
	// all of them open, so that a key is rotated by putting a new one
	// first and removing the old one once no message sealed with it is
	// left (Status says which key each message needs; an attempt that
	// finds its key missing waits for it, until the message's MaxAge).
	// Keep them out of the database and its backups. Without a key, Open
	// fails unless Plaintext is set.
	Keys []Key

	// Plaintext stores messages without sealing them, readable by anyone
	// who can read the database or its backups, and without any check
	// that they were not changed there. It must be asked for explicitly;
	// the choice is recorded in the database and in every Status, and
	// logged at Open. It cannot be combined with Keys, and a plaintext
	// outbox cannot read what a sealed one stored, nor the reverse: Open
	// refuses a database whose outbox stores otherwise than the Options
	// say (Plaintext on a sealed outbox, Keys on a plaintext one) with a
	// *mailsec.ConfigError, and never changes the record. Open records
	// the mode, unless SkipMigrations (which writes nothing): a database
	// Migrate made then records it at the first Enqueue, which refuses an
	// outbox of the other mode from then on, and until then the database
	// is taken to store as the messages in it are stored.
	Plaintext bool

	// MaxMessageSize bounds what Enqueue stores of one message: its
	// Subject, addresses, Headers, Text, HTML, attachment names, media
	// types, Content-IDs and contents together, in octets, as given, and
	// 64 octets for each attachment's record (MIME encoding adds about a
	// third to attachments). Zero means DefaultMaxMessageSize. A larger
	// message fails with a *SizeError.
	MaxMessageSize int64

	// MaxAge is how long a message whose recipients are deferred is
	// retried, counted from Enqueue: a recipient still deferred by an
	// attempt that ends after it expires. Zero means DefaultMaxAge.
	MaxAge time.Duration

	// MinBackoff is the wait before the second attempt, MaxBackoff the
	// longest wait between two; zero means the defaults.
	MinBackoff, MaxBackoff time.Duration

	// DeliveryTimeout bounds one attempt. Zero means
	// DefaultDeliveryTimeout. It also sets when a message whose worker
	// died is taken up by another: see the package documentation.
	DeliveryTimeout time.Duration

	// ReceiptRetention is how long a finished message's status and
	// Receipts are kept; zero means DefaultReceiptRetention, a negative
	// value forever. Its content (envelope, header fields, body and
	// attachments) is deleted as soon as it finishes.
	ReceiptRetention time.Duration

	// Workers is how many messages this process delivers at once, after
	// Start; zero means DefaultWorkers.
	Workers int

	// OnReceipt is called after every attempt has been recorded, with its
	// record: the Receipt of the Send it made, or why it made none. It
	// must be safe for concurrent use; a panic in it is recovered and
	// logged. The attempt's run waits for it until its context ends (a
	// margin after the attempt), and no longer: a run kept going past its
	// lease is taken for one whose worker died.
	OnReceipt func(context.Context, *Attempt)

	// Logger receives one record per attempt (the outbox's ID for the
	// message, its Message-ID, the attempt's number and outcome, how many
	// recipients were accepted, deferred and refused, and when it is tried
	// next) and the queue's own events. Records carry no content, no
	// address and no key. Nil means none.
	Logger *slog.Logger

	// SkipMigrations leaves the database's tables as they are: Open then
	// only checks that Migrate (or MigrateSQLite, MigratePostgres) has
	// brought them up to date, for applications that change their schema
	// in a deployment step of their own, and for tools that inspect an
	// outbox and must not make one where there is none. A database that
	// holds no outbox, or one of an earlier schema version, is then a
	// *mailsec.ConfigError that wraps ErrNoOutbox or ErrNotMigrated.
	SkipMigrations bool

	// TLSRPT, when set, keeps the TLS-RPT results this process records
	// in the database, where the counts of every process sharing it add
	// up, and has the leader send each day's reports once the day is
	// over. See TLSRPTOptions.
	TLSRPT *TLSRPTOptions

	// VERP, when set, lets IngestReturnPath match a bounce by the signed
	// return path it was delivered to (bounce.VERP), for servers that do
	// not return the ENVID. Give the Sender the same VERP's ReturnPath
	// (mailsec.Options.ReturnPath), so that each delivery is sent from
	// its own signed return path; the Sender then gives each recipient a
	// delivery of its own (one SMTP transaction per recipient), and a
	// bounce by return path counts only for the one recipient its
	// delivery carried.
	VERP *bounce.VERP
}

// Outbox queues messages in a database and delivers them through a
// mailsec.Sender. It is safe for concurrent use.
type Outbox struct {
	sender *mailsec.Sender
	eng    engine
	keys   *keyring
	o      settings
	log    *slog.Logger
	tlsrpt *tlsrptState // nil without Options.TLSRPT
	verp   *bounce.VERP // nil without Options.VERP
	// enqueueGroup queues concurrent Enqueues together on Postgres.
	enqueueGroup *pgEnqueueGroup
	// beforeSend, when set (by tests, before Start), runs in each attempt
	// before its Send.
	beforeSend func(id string)
	// later makes the records of finished attempts after their runs
	// return, on Postgres (nil on SQLite).
	later *lateRecords

	// storageRecorded is set once the database is known to record this
	// outbox's storage mode (committed): until then, each Enqueue claims
	// it (claimStorage).
	storageRecorded atomic.Bool
	// storageClaims counts the claims this outbox wrote in
	// transactions, which may not have committed.
	storageClaims atomic.Int32

	mu      sync.Mutex
	started bool
	closed  bool
}

// settings are the Options with their defaults resolved.
type settings struct {
	maxSize                int64
	maxAge                 time.Duration
	minBackoff, maxBackoff time.Duration
	deliveryTimeout        time.Duration
	margin                 time.Duration // to open a message and record an attempt
	jobTimeout             time.Duration // River's JobTimeout
	rescueAfter            time.Duration // River's RescueStuckJobsAfter, and an attempt's lease
	retention              time.Duration
	workers                int
	onReceipt              func(context.Context, *Attempt)
	skipMigrations         bool
}

func (o *Options) resolve() (settings, *keyring, error) {
	if o == nil {
		o = &Options{}
	}
	bad := func(field, value, reason string) (settings, *keyring, error) {
		return settings{}, nil, &mailsec.ConfigError{Field: "Options." + field, Value: value, Reason: reason}
	}
	switch {
	case len(o.Keys) == 0 && !o.Plaintext:
		return bad("Keys", "", "no key: give the outbox a Key to seal messages with (NewKey makes one; keep it out of the database), or set Plaintext to store them readable, on purpose")
	case len(o.Keys) > 0 && o.Plaintext:
		return bad("Plaintext", "true", "set together with Keys; choose one")
	}
	for field, d := range map[string]time.Duration{"MaxAge": o.MaxAge, "MinBackoff": o.MinBackoff, "MaxBackoff": o.MaxBackoff, "DeliveryTimeout": o.DeliveryTimeout} {
		if d < 0 {
			return bad(field, d.String(), "negative; zero means the default")
		}
	}
	if o.MaxMessageSize < 0 {
		return bad("MaxMessageSize", strconv.FormatInt(o.MaxMessageSize, 10), "negative; zero means the default")
	}
	if o.Workers < 0 {
		return bad("Workers", strconv.Itoa(o.Workers), "negative; zero means the default")
	}
	kr, err := newKeyring(o.Keys)
	if err != nil {
		return settings{}, nil, err
	}
	s := settings{
		maxSize:         orDefault(o.MaxMessageSize, DefaultMaxMessageSize),
		maxAge:          orDefault(o.MaxAge, DefaultMaxAge),
		minBackoff:      orDefault(o.MinBackoff, DefaultMinBackoff),
		maxBackoff:      orDefault(o.MaxBackoff, DefaultMaxBackoff),
		deliveryTimeout: orDefault(o.DeliveryTimeout, DefaultDeliveryTimeout),
		retention:       orDefault(o.ReceiptRetention, DefaultReceiptRetention),
		workers:         orDefault(o.Workers, DefaultWorkers),
		onReceipt:       o.OnReceipt,
		skipMigrations:  o.SkipMigrations,
	}
	if s.maxBackoff < s.minBackoff {
		return bad("MaxBackoff", s.maxBackoff.String(), "shorter than MinBackoff ("+s.minBackoff.String()+")")
	}
	// An attempt gets DeliveryTimeout for its SMTP sessions and a margin
	// to open the message and record the outcome; River cancels it after
	// that (JobTimeout), and its record may take one margin more. A job
	// still running a margin after that was left by a worker that died:
	// River rescues it then, and another worker takes the message up (the
	// last margin covers the time between River's start of the run and
	// the worker's, and clocks that differ). The margin is a quarter of
	// DeliveryTimeout, between minRecordMargin and recordMargin, so that a
	// short DeliveryTimeout gives a short rescue.
	s.margin = min(recordMargin, max(minRecordMargin, s.deliveryTimeout/4))
	s.jobTimeout = s.deliveryTimeout + s.margin
	s.rescueAfter = s.jobTimeout + 2*s.margin
	return s, kr, nil
}

// recordMargin and minRecordMargin bound the time an attempt is given,
// beyond DeliveryTimeout, to open the message and record its outcome.
const (
	recordMargin    = 30 * time.Second
	minRecordMargin = 5 * time.Second
)

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Open opens the outbox in db, a SQLite database file (created if
// missing; nothing else to run) or a Postgres database named by a
// "postgres://" or "postgresql://" URL, the scheme in any case (for
// several processes sharing one queue), and brings its tables up to date unless Options.SkipMigrations
// is set. The messages it queues are delivered through s, by this process
// once Start is called, or by any other that opened the same database and
// started.
//
// A SQLite file is opened as OpenSQLiteDB opens it: one connection, WAL
// mode, synchronous=FULL so that a message is on disk before Enqueue
// returns, and its statements kept prepared.
// A Postgres URL is opened with a pool of Options.Workers plus PoolMargin
// connections (24 with the default Workers), unless it sets
// pool_max_conns; pgxpool's default, 4 on a small machine, would leave
// the workers waiting for connections and halve the delivery rate. A
// smaller pool is slower, never stuck: even one connection migrates
// (River's migrations run on the connection that holds the migration
// lock) and delivers.
// To enqueue inside the application's own transactions, open the
// application's database with OpenSQLite (on a file opened with
// OpenSQLiteDB) or OpenPostgres instead.
func Open(ctx context.Context, s *mailsec.Sender, db string, o *Options) (*Outbox, error) {
	if isPostgresURL(db) {
		db = lowerScheme(db)
		cfg, err := postgresPoolConfig(db, o)
		if err != nil {
			return nil, &mailsec.ConfigError{Field: "outbox database", Value: "postgres URL", Reason: "cannot be parsed", Err: err}
		}
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, &mailsec.ConfigError{Field: "outbox database", Value: "postgres URL", Reason: "cannot be parsed or opened", Err: err}
		}
		ob, err := openPostgres(ctx, s, pool, o, pool.Close)
		if err != nil {
			pool.Close()
		}
		return ob, err
	}
	if o != nil && o.SkipMigrations {
		// OpenSQLiteDB would make the file, and put it in WAL mode for
		// good: a file that holds no outbox is left as it is.
		if err := sqliteHoldsOutbox(ctx, db); err != nil {
			return nil, err
		}
	}
	sdb, err := OpenSQLiteDB(db)
	if err != nil {
		return nil, err
	}
	ob, err := openSQLite(ctx, s, sdb, o, func() { _ = sdb.Close() })
	if err != nil {
		_ = sdb.Close()
	}
	return ob, err
}

// PoolMargin is how many connections beyond Options.Workers Open gives
// the Postgres pool it makes, unless the URL sets pool_max_conns: River
// holds some of its own (its notifier's LISTEN, its producer's fetches and
// completions, its leader's maintenance), the outbox one to commit its
// deliveries' records, and the application's Enqueue calls take one each.
const PoolMargin = 4

// postgresPoolConfig is the configuration of the pool Open makes for url:
// pool_max_conns as the URL sets it, or Workers plus PoolMargin (pgxpool's
// default, the larger of 4 and the number of CPUs, leaves the workers
// waiting for connections).
func postgresPoolConfig(url string, o *Options) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	u, err := neturl.Parse(url)
	if err != nil {
		return nil, err
	}
	if !u.Query().Has("pool_max_conns") {
		workers := DefaultWorkers
		if o != nil && o.Workers > 0 {
			workers = o.Workers
		}
		cfg.MaxConns = int32(min(workers+PoolMargin, math.MaxInt32))
	}
	return cfg, nil
}

// isPostgresURL reports whether db is a postgres:// or postgresql:// URL,
// its scheme in any case (RFC 3986).
func isPostgresURL(db string) bool {
	scheme, _, ok := strings.Cut(db, "://")
	return ok && (strings.EqualFold(scheme, "postgres") || strings.EqualFold(scheme, "postgresql"))
}

// lowerScheme is the URL db with its scheme in lower case: pgx takes a
// connection string for a URL only then, and for key=value settings
// otherwise.
func lowerScheme(db string) string {
	scheme, rest, _ := strings.Cut(db, "://")
	return strings.ToLower(scheme) + "://" + rest
}

// sqlitePragmas are the settings of a SQLite file the outbox opens: WAL so
// that readers do not wait for the writer, FULL synchronous so that a
// committed message survives a power loss, checkpoints every 200 pages of
// WAL (see OpenSQLiteDB), a busy timeout for the other processes sharing
// the file, and writing transactions that take the write lock when they
// begin.
const sqlitePragmas = "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=wal_autocheckpoint(200)&_pragma=busy_timeout(10000)&_txlock=immediate"

// OpenSQLiteDB opens the SQLite file at path (created, readable by its
// owner alone, when it does not exist) as Open does, for an application
// that keeps its own tables in it and queues messages in its own
// transactions: pass the handle to OpenSQLite, and use it for the
// application's queries too. Its settings:
//
//   - one connection, which River's SQLite driver wants (SQLite runs one
//     writer at a time);
//   - WAL, so that readers do not wait for the writer; synchronous=FULL,
//     so that a committed message survives a power loss; a busy timeout
//     of 10 s for other processes sharing the file; and transactions that
//     take the write lock when they begin (BEGIN IMMEDIATE);
//   - a checkpoint whenever the WAL reaches 200 pages (SQLite's default is
//     1,000). SQLite checkpoints inside the commit that reaches the
//     limit, on the one connection, so every write waiting behind it waits
//     for the copy of those pages into the database and its sync: smaller,
//     more frequent checkpoints brought the slowest 1% of concurrent
//     Enqueues from 21 to 23 ms down to 10 to 13, for 7.5% of their
//     throughput on average (1 to 14%) and 0.4 ms of their median;
//   - a cache of prepared statements: the connection keeps the last 64
//     statements it ran, by their text, and runs them again without
//     parsing them. modernc.org/sqlite prepares every statement given as
//     text anew, River's SQLite driver sends all its queries as text, and
//     parsing them took more of the connection's time than running them:
//     with the cache the outbox delivers about 1.7 times as fast.
//
// The handle runs on the modernc.org/sqlite driver registered as "sqlite"
// (pure Go, no cgo; functions and hooks registered with it apply), through
// a thin layer that keeps the statements: that driver's own connection
// interfaces (backups, commit hooks, serialization) are not reachable
// through database/sql's Conn.Raw. The caller closes it, after the
// outbox.
//
// The path names a file, and no more: the database must be durable, and
// the file the outbox writes must be the one created for it. A path that
// is empty, SQLite's in-memory ":memory:", a SQLite URI ("file:..."),
// one that holds ? or #, one that names something other than a regular
// file, or one that cannot be opened is a *mailsec.ConfigError. Any other
// character, % included, is part of the file's name.
func OpenSQLiteDB(path string) (*sql.DB, error) {
	bad := func(reason string, err error) (*sql.DB, error) {
		return nil, &mailsec.ConfigError{Field: "outbox database", Value: path, Reason: reason, Err: err}
	}
	if why := notAFilePath(path); why != "" {
		return bad(why, nil)
	}
	// Created readable by its owner alone; SQLite gives its -wal and -shm
	// files the same mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return bad("cannot be opened", err)
	}
	fi, err := f.Stat()
	_ = f.Close()
	if err != nil {
		return bad("cannot be opened", err)
	}
	if !fi.Mode().IsRegular() {
		return bad("not a regular file", nil)
	}
	uri, err := sqliteURI(path)
	if err != nil {
		return bad("cannot be opened", err)
	}
	db, err := sqlitedb.Open(uri+sqlitePragmas, sqlitedb.Options{})
	if err != nil {
		return nil, &mailsec.ConfigError{Field: "outbox database", Value: path, Reason: "cannot be opened", Err: err}
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// noOutbox is the error of an Open with SkipMigrations of a database that
// holds no outbox.
func noOutbox() error {
	return &mailsec.ConfigError{Field: "Options.SkipMigrations", Value: "true",
		Reason: "run outbox.Migrate first, or let Open make the outbox", Err: ErrNoOutbox}
}

// notAFilePath says why path does not name a file OpenSQLiteDB opens:
// "" when it does.
func notAFilePath(path string) string {
	switch {
	case path == "":
		return "empty: give a SQLite file path"
	case path == ":memory:":
		return "an in-memory SQLite database, which loses every message at Close: give a file path"
	case len(path) >= 5 && strings.EqualFold(path[:5], "file:"):
		return "a SQLite URI: give a file path (the outbox sets the file's options itself)"
	case strings.ContainsAny(path, "?#"):
		return "a SQLite file path, without ? or #"
	}
	return ""
}

// sqliteURI is the SQLite URI of the file path, without parameters.
// SQLite decodes %XX in a URI's path: the file it opens is the one path
// names only with % escaped.
func sqliteURI(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	return "file:" + strings.ReplaceAll(filepath.ToSlash(abs), "%", "%25"), nil
}

// sqliteHoldsOutbox returns the error of an Open with SkipMigrations of
// the SQLite file path when it does not exist or holds no outbox, having
// read it without writing, not even its journal mode.
func sqliteHoldsOutbox(ctx context.Context, path string) error {
	none := noOutbox()
	if notAFilePath(path) != "" {
		return nil // OpenSQLiteDB says what is wrong with it
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return none
	case err != nil || !fi.Mode().IsRegular():
		return nil // as above
	}
	uri, err := sqliteURI(path)
	if err != nil {
		return nil
	}
	ro, err := sql.Open("sqlite", uri+"?mode=ro")
	if err != nil {
		return nil
	}
	defer ro.Close()
	var n int
	if err := ro.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'mailsec_outbox_schema'`).Scan(&n); err != nil {
		return nil // Open reports what it finds
	}
	if n == 0 {
		return none
	}
	return nil
}

// OpenSQLite opens the outbox in the application's own SQLite database,
// so that EnqueueTx can queue a message in the application's
// transactions. Open db with OpenSQLiteDB, which gives it the settings
// Open uses. A database opened otherwise must run on the
// modernc.org/sqlite driver ("sqlite"), should allow one connection
// (db.SetMaxOpenConns(1)), as River wants, and for a durable Enqueue
// should run with journal_mode=WAL and synchronous=FULL; without
// OpenSQLiteDB's cache of statements, River's are parsed anew on every
// call. Close leaves db open.
//
// River's tables are the outbox's alone: see OpenPostgres.
func OpenSQLite(ctx context.Context, s *mailsec.Sender, db *sql.DB, o *Options) (*Outbox, error) {
	if db == nil {
		return nil, &mailsec.ConfigError{Field: "outbox database", Reason: "nil *sql.DB"}
	}
	return openSQLite(ctx, s, db, o, func() {})
}

// OpenPostgres opens the outbox in the Postgres database of pool, so that
// EnqueuePgxTx can queue a message in the application's transactions and
// several processes share one queue. Close leaves pool open.
//
// The outbox's deliveries share the pool with the application: size it
// for both, with room for at least Options.Workers plus PoolMargin
// connections for the outbox (pool_max_conns in the URL given to
// pgxpool.New, or pgxpool.Config.MaxConns). pgxpool's default, the larger
// of 4 and the number of CPUs, is too small for the default 20 workers.
//
// River's tables are the outbox's alone. An application that runs River
// clients of its own keeps them in another schema (River's Config.Schema)
// or database: River elects one leader among all the clients on a set of
// tables, and a leader without the outbox's workers discards the
// outbox's jobs whose worker died (River's rescuer knows no worker for
// them) and never queues the outbox's periodic work.
func OpenPostgres(ctx context.Context, s *mailsec.Sender, pool *pgxpool.Pool, o *Options) (*Outbox, error) {
	if pool == nil {
		return nil, &mailsec.ConfigError{Field: "outbox database", Reason: "nil *pgxpool.Pool"}
	}
	return openPostgres(ctx, s, pool, o, func() {})
}

// newOutbox checks what every Open needs and makes the Outbox its engine
// will deliver for.
func newOutbox(s *mailsec.Sender, o *Options) (*Outbox, error) {
	if s == nil {
		return nil, &mailsec.ConfigError{Field: "Sender", Reason: "nil; the outbox delivers through a *mailsec.Sender made by mailsec.NewSender"}
	}
	st, kr, err := o.resolve()
	if err != nil {
		return nil, err
	}
	ob := &Outbox{sender: s, keys: kr, o: st, log: slog.New(slog.DiscardHandler)}
	if o != nil && o.Logger != nil {
		ob.log = o.Logger
	}
	if o != nil {
		if err := ob.initTLSRPT(o.TLSRPT); err != nil {
			return nil, err
		}
		if o.VERP != nil {
			if err := o.VERP.Check(); err != nil {
				return nil, err
			}
			ob.verp = o.VERP
		}
	}
	return ob, nil
}

// ready runs or checks the migrations and records how the outbox stores.
func (ob *Outbox) ready(ctx context.Context) error {
	// An outbox that stores otherwise than the one in the database is
	// refused before anything is written.
	if err := ob.checkStorage(ctx); err != nil {
		return err
	}
	if ob.keys.plaintext() {
		ob.log.LogAttrs(ctx, slog.LevelWarn, "mailsec outbox: messages are stored in plaintext (Options.Plaintext)")
	}
	if ob.o.skipMigrations {
		// Nothing is written: an outbox Migrate made records its storage
		// mode at the first Open that migrates, or the first Enqueue
		// (claimStorage); checkStorage goes by the messages stored until
		// then.
		if err := ob.eng.validate(ctx); err != nil {
			return err
		}
	} else {
		if err := ob.eng.migrate(ctx); err != nil {
			return err
		}
		if err := ob.recordStorage(ctx); err != nil {
			return err
		}
	}
	return ob.eng.prepare(ctx)
}

// storageMode is how this outbox stores messages, as the database
// records it: "sealed" or "plaintext".
func (ob *Outbox) storageMode() string {
	if ob.keys.plaintext() {
		return "plaintext"
	}
	return "sealed"
}

// recordedStorage reads how the outbox in the database stores messages:
// "" when the database records none (it holds no outbox yet).
func (ob *Outbox) recordedStorage(ctx context.Context) (string, error) {
	q := ob.eng.pool()
	has, err := hasTable(ctx, q, ob.eng.postgres(), "mailsec_outbox_meta")
	if err != nil {
		return "", fmt.Errorf("outbox: reading how the outbox stores: %w", err)
	}
	if !has {
		return "", nil
	}
	return readStorage(ctx, q)
}

// hasTable reports whether the database of q (Postgres or SQLite) has
// the table name where the outbox's statements find it (on Postgres,
// through the search path).
func hasTable(ctx context.Context, q querier, postgres bool, name string) (bool, error) {
	query := `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1`
	if postgres {
		// Where the statements find it: through the search path, as
		// River's own check does.
		query = `SELECT COUNT(*) FROM (SELECT to_regclass($1::text) AS t) r WHERE t IS NOT NULL`
	}
	var n int
	err := q.queryRow(ctx, query, name).Scan(&n)
	return n > 0, err
}

// checkStorage refuses a database whose outbox stores messages otherwise
// than this one would: a plaintext outbox's messages do not open under a
// key (they would be taken for tampered with and end failed), and a
// plaintext outbox cannot open sealed ones. A database that records no
// mode (Migrate made its tables, and every Open since skipped the
// migrations) is taken to store as the messages in it are stored.
func (ob *Outbox) checkStorage(ctx context.Context) error {
	cur, err := ob.recordedStorage(ctx)
	if err != nil {
		return err
	}
	if cur != "" {
		ob.storageRecorded.Store(cur == ob.storageMode())
		return ob.storageMismatch(cur)
	}
	if cur, err = ob.storedForm(ctx); err != nil {
		return err
	}
	return ob.storageMismatch(cur)
}

// claimStorage records this outbox's storage mode when the database
// records none yet, and refuses an Enqueue (a *mailsec.ConfigError) when
// it records another. Open records the mode, unless SkipMigrations: then
// the first Enqueue does, so that two outboxes of different modes cannot
// both store messages in a database that Migrate made and that held none
// when they opened.
//
// The record is read in t: the Enqueue's transaction, the application's,
// or the pool. A missing record is written in t when inTx, else by a
// statement of its own on the pool. On Postgres the pool is the place: a
// claim held in an application's open transaction would hold up every
// other Enqueue until it ended. On SQLite, with one writer, it is t, and
// the caller sets storageRecorded once its own transaction has committed.
func (ob *Outbox) claimStorage(ctx context.Context, t querier, inTx bool) error {
	if ob.storageRecorded.Load() {
		return nil
	}
	cur, err := readStorage(ctx, t)
	if err != nil {
		return err
	}
	if cur != "" {
		if err := ob.storageMismatch(cur); err != nil {
			return err
		}
		// Committed, unless a transaction of this outbox's wrote it (an
		// application's may yet roll back).
		if ob.storageClaims.Load() == 0 {
			ob.storageRecorded.Store(true)
		}
		return nil
	}
	q := ob.eng.pool()
	if inTx {
		q = t
		ob.storageClaims.Add(1)
	}
	if err := insertStorage(ctx, q, ob.storageMode()); err != nil {
		return err
	}
	if cur, err = readStorage(ctx, q); err != nil {
		return err
	}
	if err := ob.storageMismatch(cur); err != nil {
		return err
	}
	if !inTx {
		ob.storageRecorded.Store(true)
	}
	return nil
}

// readStorage reads the recorded storage mode in q; "" when none is.
func readStorage(ctx context.Context, q querier) (string, error) {
	var cur string
	err := q.queryRow(ctx, `SELECT value FROM mailsec_outbox_meta WHERE name = 'storage'`).Scan(&cur)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("outbox: reading how the outbox stores: %w", err)
	}
	return cur, nil
}

// insertStorage records mode, and the time it started, unless the
// database records a mode already.
func insertStorage(ctx context.Context, q querier, mode string) error {
	now := strconv.FormatInt(time.Now().UnixMicro(), 10)
	for _, kv := range [][2]string{{"storage", mode}, {"storage_since", now}} {
		if _, err := q.exec(ctx, `INSERT INTO mailsec_outbox_meta (name, value) VALUES ($1, $2)
ON CONFLICT (name) DO NOTHING`, kv[0], kv[1]); err != nil {
			return fmt.Errorf("outbox: recording how the outbox stores: %w", err)
		}
	}
	return nil
}

// storedForm is how the messages already in the database are stored,
// "sealed" or "plaintext", read from one message's progress (which every
// message has) or, when none is left, one attempt's record; "" when it
// holds neither.
func (ob *Outbox) storedForm(ctx context.Context) (string, error) {
	q := ob.eng.pool()
	for _, c := range [][2]string{
		{"mailsec_outbox_message", `SELECT progress FROM mailsec_outbox_message LIMIT 1`},
		{"mailsec_outbox_attempt", `SELECT data FROM mailsec_outbox_attempt LIMIT 1`},
	} {
		has, err := hasTable(ctx, q, ob.eng.postgres(), c[0])
		if err != nil {
			return "", fmt.Errorf("outbox: reading how the outbox stores: %w", err)
		}
		if !has {
			continue
		}
		var b []byte
		err = q.queryRow(ctx, c[1]).Scan(&b)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			continue
		case err != nil:
			return "", fmt.Errorf("outbox: reading how the outbox stores: %w", err)
		case sealed(b):
			return "sealed", nil
		default:
			return "plaintext", nil
		}
	}
	return "", nil
}

// storageMismatch is the error of an outbox opened on a database whose
// recorded storage mode, cur, is not its own; nil when it is ("" is
// none yet).
func (ob *Outbox) storageMismatch(cur string) error {
	switch mode := ob.storageMode(); {
	case cur == "" || cur == mode:
		return nil
	case cur == "plaintext":
		return &mailsec.ConfigError{Field: "Options.Keys", Reason: "the outbox in this database stores its messages in plaintext (it was opened with Options.Plaintext): a key does not open them; open it with Plaintext, as it was made"}
	case cur == "sealed":
		return &mailsec.ConfigError{Field: "Options.Plaintext", Value: "true", Reason: "the outbox in this database seals its messages: a plaintext outbox does not open them; open it with its Keys"}
	default:
		return &mailsec.ConfigError{Field: "outbox database", Value: cur, Reason: "an unknown storage mode is recorded (sealed or plaintext expected)"}
	}
}

// recordStorage writes how this outbox stores messages into the database
// (and the time it started to) when the database records none yet. A mode recorded already is never
// changed: an outbox that stores otherwise is refused.
func (ob *Outbox) recordStorage(ctx context.Context) error {
	mode := ob.storageMode()
	cur, err := ob.recordedStorage(ctx)
	if err != nil {
		return err
	}
	if cur == "" {
		if err := insertStorage(ctx, ob.eng.pool(), mode); err != nil {
			return err
		}
		// Another process may have recorded its own mode first.
		if cur, err = ob.recordedStorage(ctx); err != nil {
			return err
		}
	}
	ob.storageRecorded.Store(cur == mode)
	return ob.storageMismatch(cur)
}

// Start begins delivering queued messages in the background, with up to
// Options.Workers at once, until Close. Only ctx's values are kept: its
// cancellation does not stop deliveries (Close does).
func (ob *Outbox) Start(ctx context.Context) error {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	switch {
	case ob.closed:
		return ErrClosed
	case ob.started:
		return nil
	}
	if err := ob.eng.start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("outbox: starting the queue: %w", err)
	}
	ob.started = true
	ob.startTLSRPT()
	return nil
}

// Close stops delivering: no new attempt starts, and the attempts under
// way are given until ctx is done to finish. Those still running then
// are interrupted (their SMTP sessions are dropped before the end of the
// message where they have not reached it) and their messages stay
// queued, to be tried again at once by the next process that starts;
// Close then returns an error that wraps ctx's. Every message not
// finished stays queued. With Options.TLSRPT, Close flushes the
// Aggregator into the database. Close closes the database when Open
// opened it.
func (ob *Outbox) Close(ctx context.Context) error {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if ob.closed {
		return nil
	}
	ob.closed = true
	var err error
	if ob.started {
		if err = ob.eng.stop(ctx); err != nil {
			// Interrupt what is left, and give each attempt its margin to
			// record what happened.
			hard, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordMargin)
			_ = ob.eng.stopAndCancel(hard)
			cancel()
			err = fmt.Errorf("outbox: Close: deliveries under way were interrupted and stay queued: %w", err)
		}
		// The records of finished attempts, each bounded by its margin.
		ob.later.wait()
	}
	if ferr := ob.closeTLSRPT(ctx); ferr != nil {
		err = errors.Join(err, ferr)
	}
	ob.eng.close()
	return err
}

// ErrClosed is returned by an Outbox after Close.
var ErrClosed = errors.New("outbox: closed")

// ErrNoOutbox and ErrNotMigrated are wrapped by the *mailsec.ConfigError
// of an Open with Options.SkipMigrations whose database holds no outbox
// (Open without SkipMigrations, or Migrate, makes one), or an outbox whose
// tables are of an earlier schema version (Migrate brings them up to
// date). Either way Open has written nothing.
var (
	ErrNoOutbox    = errors.New("outbox: the database holds no outbox")
	ErrNotMigrated = errors.New("outbox: the outbox's tables are not up to date")
)

func (ob *Outbox) isClosed() bool {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return ob.closed
}

// newID returns a fresh outbox ID: 26 random base32 characters, which
// say nothing about the message.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}
