package outbox

import (
	"context"
	"strings"
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
