package outboxbench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
)

// Kind is a kind of database.
type Kind string

// The databases measured.
const (
	// SQLite is a SQLite file on disk (modernc.org/sqlite, River's
	// riversqlite driver).
	SQLite Kind = "sqlite"
	// Postgres is a database on a Postgres server on loopback (pgx v5,
	// River's riverpgxv5 driver).
	Postgres Kind = "postgres"
)

// Target is one fresh, empty database.
type Target struct {
	Kind Kind
	// Path is the SQLite file (Kind SQLite); it does not exist yet.
	Path string
	// URL is the postgres:// URL of the database (Kind Postgres).
	URL string
}

// Env hands out fresh databases: SQLite files in a directory, databases on
// a Postgres server.
type Env struct {
	dir      string // SQLite files go here
	adminURL string // a database of the Postgres server to run CREATE DATABASE in; "" if none
	seq      atomic.Int64
	prefix   string
}

// NewEnv returns an Env that makes SQLite files in dir (which must be on
// the disk to be measured: not a tmpfs) and Postgres databases on the
// server of adminURL, through which it creates and drops them. An empty
// adminURL leaves Postgres out.
func NewEnv(dir, adminURL string) *Env {
	return &Env{dir: dir, adminURL: adminURL, prefix: fmt.Sprintf("bench_%d_", os.Getpid())}
}

// HasPostgres reports whether the Env has a Postgres server.
func (e *Env) HasPostgres() bool { return e.adminURL != "" }

// Fresh returns a new, empty database of kind and a function that removes
// it.
func (e *Env) Fresh(ctx context.Context, kind Kind) (Target, func() error, error) {
	n := e.seq.Add(1)
	switch kind {
	case SQLite:
		path := filepath.Join(e.dir, fmt.Sprintf("%s%d.db", e.prefix, n))
		return Target{Kind: SQLite, Path: path}, func() error {
			var errs []error
			for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
				if err := os.Remove(path + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		}, nil
	case Postgres:
		if e.adminURL == "" {
			return Target{}, nil, errors.New("no Postgres server")
		}
		name := fmt.Sprintf("%s%d", e.prefix, n)
		if err := e.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return Target{}, nil, fmt.Errorf("creating database %s: %w", name, err)
		}
		u, err := url.Parse(e.adminURL)
		if err != nil {
			return Target{}, nil, err
		}
		u.Path = "/" + name
		return Target{Kind: Postgres, URL: u.String()}, func() error {
			return e.exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		}, nil
	}
	return Target{}, nil, fmt.Errorf("unknown kind of database %q", kind)
}

func (e *Env) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, e.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}
