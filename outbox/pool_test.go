package outbox

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
)

// TestPostgresPoolConfig: Open sizes its pool for the workers, unless the
// URL says otherwise.
func TestPostgresPoolConfig(t *testing.T) {
	const url = "postgres://u@127.0.0.1:5432/db?sslmode=disable"
	for _, tc := range []struct {
		name string
		url  string
		o    *Options
		want int32
	}{
		{"default workers", url, nil, DefaultWorkers + PoolMargin},
		{"default workers, options", url, &Options{}, DefaultWorkers + PoolMargin},
		{"8 workers", url, &Options{Workers: 8}, 8 + PoolMargin},
		{"100 workers", url, &Options{Workers: 100}, 100 + PoolMargin},
		{"pool_max_conns in the URL", url + "&pool_max_conns=7", &Options{Workers: 50}, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := postgresPoolConfig(tc.url, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MaxConns != tc.want {
				t.Errorf("MaxConns %d, want %d", cfg.MaxConns, tc.want)
			}
		})
	}
	if _, err := postgresPoolConfig("postgres://u@127.0.0.1/db?pool_max_conns=many", nil); err == nil {
		t.Error("pool_max_conns=many: no error")
	}
}

// TestOpenPostgresPoolSize: the pool Open makes on a Postgres URL has
// room for every worker.
func TestOpenPostgresPoolSize(t *testing.T) {
	pg := pgtest.Start(t)
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s, err := mailsec.NewSender(srv.Transport(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		query string
		o     *Options
		want  int32
	}{
		{"default workers", "", &Options{Plaintext: true}, DefaultWorkers + PoolMargin},
		{"30 workers", "", &Options{Plaintext: true, Workers: 30}, 30 + PoolMargin},
		{"pool_max_conns", "&pool_max_conns=6", &Options{Plaintext: true}, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ob, err := Open(ctx, s, pg.NewDatabase(t)+tc.query, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				_ = ob.Close(cctx)
			}()
			pool := ob.eng.(*riverEngine[pgx.Tx]).q.(pgQ).r.(*pgxpool.Pool)
			if got := pool.Stat().MaxConns(); got != tc.want {
				t.Errorf("pool of %d connections, want %d", got, tc.want)
			}
		})
	}
}

// Open takes a postgres URL whose scheme is in capitals for one, and its
// errors never hold the URL's password, in its userinfo or its query
// (pgx's own errors quote the URL with both hidden).
func TestOpenPostgresURLSecrets(t *testing.T) {
	for _, db := range []string{"POSTGRES://u:pw", "PostgreSQL://u", "postgres://u", "mail.db"} {
		if got, want := isPostgresURL(db), db != "mail.db"; got != want {
			t.Errorf("isPostgresURL(%q) = %v", db, got)
		}
	}
	const secret = "s3cretPW"
	s, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range []string{
		"postgres://u@127.0.0.1:x/db?password=" + secret,
		"postgres://u@127.0.0.1:x/db?sslpassword=" + secret + "&sslmode=disable",
		"postgres://u@127.0.0.1:x/db?password=%73" + secret[1:],
		"POSTGRES://u:" + secret + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=5",
	} {
		ob, err := Open(t.Context(), s, db, &Options{Plaintext: true})
		if err == nil {
			_ = ob.Close(t.Context())
			t.Fatalf("Open(%q) opened", db)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Open's error holds the password: %v", err)
		}
		if !strings.Contains(err.Error(), "127.0.0.1") {
			t.Errorf("Open(%q) did not take it for a postgres URL: %v", db, err)
		}
	}
}

// TestOpenPostgresPoolOfOne: a pool of one connection (pool_max_conns=1)
// migrates a new database (River's migrations run on the connection that
// holds the migration lock) and delivers, rather than wait for a second
// connection for ever.
func TestOpenPostgresPoolOfOne(t *testing.T) {
	pg := pgtest.Start(t)
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s, err := mailsec.NewSender(srv.Transport(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	db := pg.NewDatabase(t) + "&pool_max_conns=1"
	for range 2 { // a new database, then one migrated
		ob, err := Open(ctx, s, db, &Options{Plaintext: true, Workers: 4})
		if err != nil {
			t.Fatalf("Open with a pool of one connection: %v", err)
		}
		for range 5 {
			if _, err := ob.Enqueue(ctx, &mailsec.Message{From: "a@example.com", To: []string{"b@example.org"}, Subject: "x", Text: "y"}, nil); err != nil {
				t.Fatal(err)
			}
		}
		if st, err := ob.RunDue(ctx); err != nil || st.Depth != 0 {
			t.Fatalf("RunDue with a pool of one connection: %+v, %v", st, err)
		}
		if err := ob.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(srv.Messages()); n != 10 {
		t.Errorf("%d delivered, want 10", n)
	}
}

// An outbox on a pool in any of pgx's query modes queues and delivers,
// its Enqueues grouped (an idempotency key given twice included) and its
// records too. An application sets a mode other than pgx's default behind
// a pooler that keeps no prepared statements: in those modes the pool
// here forgets every statement prepared by name whenever a connection is
// taken from it, as such a pooler does between transactions, and nothing
// of the outbox may count on one.
func TestPostgresQueryExecModes(t *testing.T) {
	pg := pgtest.Start(t)
	for _, mode := range []string{"cache_statement", "cache_describe", "describe_exec", "exec", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			srv := mailsectest.NewServer(t, mailsectest.Config{})
			s, err := mailsec.NewSender(srv.Transport(), nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			cfg, err := pgxpool.ParseConfig(pg.NewDatabase(t) + "&pool_max_conns=24&default_query_exec_mode=" + mode)
			if err != nil {
				t.Fatal(err)
			}
			tr := &statementTracer{}
			cfg.ConnConfig.Tracer = tr
			forgot := 0
			var mu sync.Mutex
			if mode != "cache_statement" {
				cfg.PrepareConn = func(ctx context.Context, c *pgx.Conn) (bool, error) {
					if _, err := c.Exec(ctx, "DEALLOCATE ALL"); err != nil {
						return false, err
					}
					mu.Lock()
					forgot++
					mu.Unlock()
					return true, nil
				}
			}
			pool, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			ob, err := OpenPostgres(ctx, s, pool, &Options{Keys: []Key{NewKey()}})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = ob.Close(ctx) }()
			const n = 8
			ids := make([]string, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for range 2 { // the second time on connections that prepared before
				for i := range n {
					wg.Go(func() {
						var o *EnqueueOptions
						if i >= n-2 {
							o = &EnqueueOptions{IdempotencyKey: "twice"}
						}
						ids[i], errs[i] = ob.Enqueue(ctx, &mailsec.Message{From: "a@example.com", To: []string{"b@example.org"},
							Subject: "x", Text: strings.Repeat("y", 5000)}, o)
					})
				}
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Fatalf("Enqueue %d: %v", i, err)
					}
				}
				if ids[n-1] != ids[n-2] {
					t.Errorf("one key twice: %s and %s", ids[n-2], ids[n-1])
				}
				if st, err := ob.RunDue(ctx); err != nil || st.Depth != 0 {
					t.Fatalf("RunDue: %+v, %v", st, err)
				}
				for _, id := range ids {
					if st, err := ob.Status(ctx, id); err != nil || st.State != Delivered {
						t.Fatalf("message %s: %v, %v", id, st, err)
					}
				}
			}
			if got := len(srv.Messages()); got != n-1+n-2 {
				t.Errorf("%d delivered, want %d", got, n-1+n-2)
			}
			if mode != "cache_statement" && forgot == 0 {
				t.Error("the pool never forgot its prepared statements")
			}
			// The outbox's own named statements: in pgx's default mode
			// the groups' (sent through pgconn), in any other none.
			own := tr.with("mailsec_outbox_")
			want := []string{stmtInsertMessage, stmtInsertKeyedMessage, stmtFindIdems, stmtRecordManyPG}
			if mode != "cache_statement" {
				want = nil
			}
			for _, name := range want {
				if !slices.Contains(own, name) {
					t.Errorf("%s was not prepared", name)
				}
			}
			if want == nil && len(own) > 0 {
				t.Errorf("prepared by name in mode %s: %v", mode, own)
			}
		})
	}
}

// statementTracer records what pgx sends through Query, Exec and Prepare
// (not what goes through a pipeline): the names of the statements it is
// asked to prepare, and the statements it sends, each prepare that goes
// out as "PREPARE " and its SQL.
type statementTracer struct {
	mu    sync.Mutex
	names []string
	sqls  []string
}

// preparedSQL is the context key of the statement being prepared.
type preparedSQL struct{}

func (st *statementTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sqls = append(st.sqls, d.SQL)
	return ctx
}

func (st *statementTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (st *statementTracer) TracePrepareStart(ctx context.Context, _ *pgx.Conn, d pgx.TracePrepareStartData) context.Context {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.names = append(st.names, d.Name)
	return context.WithValue(ctx, preparedSQL{}, d.SQL)
}

func (st *statementTracer) TracePrepareEnd(ctx context.Context, _ *pgx.Conn, d pgx.TracePrepareEndData) {
	if d.AlreadyPrepared {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sqls = append(st.sqls, "PREPARE "+ctx.Value(preparedSQL{}).(string))
}

// take returns the statements sent since the last take.
func (st *statementTracer) take() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.sqls
	st.sqls = nil
	return s
}

// with lists the names recorded that begin with prefix, once each.
func (st *statementTracer) with(prefix string) []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []string
	for _, n := range st.names {
		if strings.HasPrefix(n, prefix) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}
