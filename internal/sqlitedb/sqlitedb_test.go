package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

func open(t *testing.T, o Options) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.db")
	db := mustOpen(t, "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate", o)
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return db
}

func mustOpen(t *testing.T, dsn string, o Options) *sql.DB {
	t.Helper()
	db, err := Open(dsn, o)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// TestMalformedDSN: Open reports a DSN that cannot be parsed.
func TestMalformedDSN(t *testing.T) {
	if db, err := Open("file:x.db?_pragma=%zz", Options{}); err == nil {
		_ = db.Close()
		t.Fatal("no error")
	}
}

// cache returns the texts the handle's one connection keeps and the
// statement kept for each.
func cache(t *testing.T, db *sql.DB) map[string]any {
	t.Helper()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := map[string]any{}
	if err := c.Raw(func(dc any) error {
		cn := dc.(*conn)
		for e := cn.lru.Front(); e != nil; e = e.Next() {
			s := e.Value.(*cached)
			got[s.text] = s.stmt
		}
		if len(got) != len(cn.stmts) {
			return fmt.Errorf("%d statements in the list, %d in the map", len(got), len(cn.stmts))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

const (
	insert = `INSERT INTO t (id, v) VALUES (?, ?)`
	get    = `SELECT v FROM t WHERE id = ?`
)

func TestStatementsPreparedOnce(t *testing.T) {
	db := open(t, Options{})
	if _, err := db.Exec(insert, 1, "one"); err != nil {
		t.Fatal(err)
	}
	first := cache(t, db)[insert]
	if first == nil {
		t.Fatalf("the INSERT is not kept: %v", cache(t, db))
	}
	for i := 2; i <= 50; i++ {
		if _, err := db.Exec(insert, i, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		var v string
		if err := db.QueryRow(get, i).Scan(&v); err != nil || v != fmt.Sprint(i) {
			t.Fatalf("row %d: %q, %v", i, v, err)
		}
	}
	kept := cache(t, db)
	if kept[insert] != first {
		t.Error("the INSERT was prepared again")
	}
	if kept[get] == nil {
		t.Error("the SELECT is not kept")
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != 50 {
		t.Fatalf("count %d, %v", n, err)
	}
}

func TestNegativeCacheSizeKeepsNone(t *testing.T) {
	db := open(t, Options{CacheSize: -1})
	if _, err := db.Exec(insert, 1, "one"); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := db.QueryRow(get, 1).Scan(&v); err != nil || v != "one" {
		t.Fatalf("%q, %v", v, err)
	}
	if kept := cache(t, db); len(kept) != 0 {
		t.Errorf("kept %v", kept)
	}
}

func TestLeastRecentlyUsedGoesFirst(t *testing.T) {
	db := open(t, Options{CacheSize: 2})
	q := func(i int) string { return fmt.Sprintf("SELECT %d, count(*) FROM t", i) }
	for _, i := range []int{1, 2, 1, 3} { // 2 is the least recently used when 3 comes
		var a, n int
		if err := db.QueryRow(q(i)).Scan(&a, &n); err != nil || a != i {
			t.Fatalf("%s: %d, %v", q(i), a, err)
		}
	}
	kept := cache(t, db)
	if len(kept) != 2 || kept[q(1)] == nil || kept[q(3)] == nil {
		t.Fatalf("kept %v, want %q and %q", kept, q(1), q(3))
	}
	var a, n int
	if err := db.QueryRow(q(2)).Scan(&a, &n); err != nil || a != 2 {
		t.Fatalf("the evicted statement again: %d, %v", a, err)
	}
}

// TestOpenRowsAndTheSameText reads two result sets of one text at once:
// the second cannot share the statement the first still steps.
func TestOpenRowsAndTheSameText(t *testing.T) {
	db := open(t, Options{})
	for i := 1; i <= 5; i++ {
		if _, err := db.Exec(insert, i, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	const all = `SELECT id FROM t WHERE id >= ? ORDER BY id`
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	outer, err := tx.Query(all, 1)
	if err != nil {
		t.Fatal(err)
	}
	var pairs []string
	for outer.Next() {
		var a int
		if err := outer.Scan(&a); err != nil {
			t.Fatal(err)
		}
		inner, err := tx.Query(all, 4)
		if err != nil {
			t.Fatal(err)
		}
		for inner.Next() {
			var b int
			if err := inner.Scan(&b); err != nil {
				t.Fatal(err)
			}
			pairs = append(pairs, fmt.Sprintf("%d-%d", a, b))
		}
		if err := inner.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := outer.Err(); err != nil {
		t.Fatal(err)
	}
	if err := outer.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(pairs); got != "[1-4 1-5 2-4 2-5 3-4 3-5 4-4 4-5 5-4 5-5]" {
		t.Fatalf("pairs %s", got)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// Both closed: the kept statement is free again.
	var n int
	if err := db.QueryRow(all, 5).Scan(&n); err != nil || n != 5 {
		t.Fatalf("%d, %v", n, err)
	}
}

// TestSchemaChange runs a kept statement after the table changed under
// it: SQLite prepares it again, and the new column is read.
func TestSchemaChange(t *testing.T) {
	db := open(t, Options{})
	if _, err := db.Exec(insert, 1, "one"); err != nil {
		t.Fatal(err)
	}
	const star = `SELECT * FROM t`
	cols := func() []string {
		rows, err := db.Query(star)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		c, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if got := fmt.Sprint(cols()); got != "[id v]" {
		t.Fatalf("columns %s", got)
	}
	if _, err := db.Exec(`ALTER TABLE t ADD COLUMN w TEXT NOT NULL DEFAULT 'x'`); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(cols()); got != "[id v w]" {
		t.Fatalf("columns after ALTER TABLE %s", got)
	}
}

// TestFailureLeavesStatementUsable: a constraint violation comes back as
// modernc.org/sqlite's error, and the kept statement runs again.
func TestFailureLeavesStatementUsable(t *testing.T) {
	db := open(t, Options{})
	if _, err := db.Exec(insert, 1, "one"); err != nil {
		t.Fatal(err)
	}
	_, err := db.Exec(insert, 1, "again")
	var se *sqlite.Error
	if !errors.As(err, &se) || se.Code() != sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY {
		t.Fatalf("duplicate key: %v (%T)", err, err)
	}
	if _, err := db.Exec(insert, 2, "two"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.ExecContext(ctx, insert, 3, "three"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	var v string
	if err := db.QueryRow(get, 2).Scan(&v); err != nil || v != "two" {
		t.Fatalf("%q, %v", v, err)
	}
	if err := db.QueryRow(get, 3).Scan(&v); !errors.Is(err, sql.ErrNoRows) {
		t.Fatalf("the cancelled INSERT: %q, %v", v, err)
	}
	// A rolled-back transaction leaves the statement as it was.
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(insert, 4, "four"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(insert, 4, "four"); err != nil {
		t.Fatal(err)
	}
}

// TestConnectionsEachKeepTheirOwn runs the same statements from many
// goroutines over several connections (with -race in CI).
func TestConnectionsEachKeepTheirOwn(t *testing.T) {
	db := open(t, Options{CacheSize: 4})
	db.SetMaxOpenConns(4)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				id := g*1000 + i
				if _, err := db.Exec(insert, id, fmt.Sprint(id)); err != nil {
					errs <- err
					return
				}
				var v string
				if err := db.QueryRow(get, id).Scan(&v); err != nil || v != fmt.Sprint(id) {
					errs <- fmt.Errorf("row %d: %q, %v", id, v, err)
					return
				}
				var n int
				if err := db.QueryRow(fmt.Sprintf("SELECT %d, count(*) FROM t", i%6)).Scan(new(int), &n); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != 320 {
		t.Fatalf("count %d, %v", n, err)
	}
}
