package sqlitedb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"modernc.org/sqlite"
)

// pair opens two file databases alike: one plain modernc.org/sqlite, one
// through Open.
func pair(t *testing.T) (plain, wrapped *sql.DB) {
	t.Helper()
	mk := func(w bool) *sql.DB {
		path := filepath.Join(t.TempDir(), "r.db")
		dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate"
		db := openEither(t, w, dsn, Options{})
		db.SetMaxOpenConns(1)
		t.Cleanup(func() {
			if err := db.Close(); err != nil {
				t.Errorf("close (wrapped=%v): %v", w, err)
			}
		})
		if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL, d DATETIME)`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`INSERT INTO t VALUES (1, 'main', '2020-01-01 00:00:00')`); err != nil {
			t.Fatal(err)
		}
		return db
	}
	return mk(false), mk(true)
}

// openEither opens dsn through Open (wrapped) or plain modernc.org/sqlite.
func openEither(t *testing.T, wrapped bool, dsn string, o Options) *sql.DB {
	t.Helper()
	if wrapped {
		return mustOpen(t, dsn, o)
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func both(t *testing.T, f func(t *testing.T, db *sql.DB) string) {
	p, w := pair(t)
	a, b := f(t, p), f(t, w)
	if a != b {
		t.Errorf("plain modernc.org/sqlite: %q\nthrough Open:            %q", a, b)
	}
}

// Rows tell their column types (DatabaseTypeName, ScanType, Nullable) as
// modernc.org/sqlite's do.
func TestAsModerncColumnTypes(t *testing.T) {
	both(t, func(t *testing.T, db *sql.DB) string {
		rows, err := db.Query(`SELECT id, v, d FROM t`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		cts, err := rows.ColumnTypes()
		if err != nil {
			t.Fatal(err)
		}
		s := ""
		for _, ct := range cts {
			n, nok := ct.Nullable()
			s += ct.DatabaseTypeName() + "/" + ct.ScanType().String() + "/"
			if nok && n {
				s += "nullable "
			} else {
				s += "? "
			}
		}
		return s
	})
}

// a TEMP table created after the statement was cached shadows main.t.
func TestAsModerncTempShadow(t *testing.T) {
	both(t, func(t *testing.T, db *sql.DB) string {
		var v string
		if err := db.QueryRow(`SELECT v FROM t WHERE id = 1`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`CREATE TEMP TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL, d DATETIME)`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`INSERT INTO temp.t VALUES (1, 'temp', NULL)`); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow(`SELECT v FROM t WHERE id = 1`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	})
}

// a TEMP trigger on main.t created after the INSERT was cached.
func TestAsModerncTempTrigger(t *testing.T) {
	both(t, func(t *testing.T, db *sql.DB) string {
		if _, err := db.Exec(`CREATE TABLE log (x TEXT)`); err != nil {
			t.Fatal(err)
		}
		ins := `INSERT INTO t (v) VALUES (?)`
		if _, err := db.Exec(ins, "a"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`CREATE TEMP TRIGGER tr AFTER INSERT ON main.t BEGIN INSERT INTO log VALUES (new.v); END`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(ins, "b"); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM log`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return string(rune('0' + n))
	})
}

// Schema change: DROP + CREATE with other columns; and error after DROP.
func TestAsModerncSchemaChange(t *testing.T) {
	both(t, func(t *testing.T, db *sql.DB) string {
		q := `SELECT * FROM u`
		db.Exec(`CREATE TABLE u (a INTEGER)`)
		db.Exec(`INSERT INTO u VALUES (1)`)
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		c1, _ := rows.Columns()
		rows.Close()
		db.Exec(`DROP TABLE u`)
		_, err = db.Query(q)
		var se *sqlite.Error
		s := ""
		if errors.As(err, &se) {
			s += se.Error() + "|"
		} else {
			s += "noAs:" + errors.Unwrap(err).Error() + "|"
		}
		db.Exec(`CREATE TABLE u (x TEXT, y TEXT, z TEXT)`)
		db.Exec(`INSERT INTO u VALUES ('1','2','3')`)
		rows, err = db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		c2, _ := rows.Columns()
		rows.Close()
		return s + commaJoin(c1) + "|" + commaJoin(c2)
	})
}

func commaJoin(s []string) string {
	out := ""
	for _, x := range s {
		out += x + ","
	}
	return out
}

// Cancellation: a cancelled long exec must not poison the next use of the same cached text.
func TestAsModerncCancelThenReuse(t *testing.T) {
	both(t, func(t *testing.T, db *sql.DB) string {
		q := `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < ?) SELECT count(*) FROM c`
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		var n int
		err1 := db.QueryRowContext(ctx, q, 100000000).Scan(&n)
		_, err2 := db.ExecContext(ctx, q, 100000000)
		err3 := db.QueryRowContext(context.Background(), q, 5000).Scan(&n)
		_, err4 := db.ExecContext(context.Background(), q, 5000)
		f := func(e error) string {
			if e == nil {
				return "nil"
			}
			if errors.Is(e, context.DeadlineExceeded) {
				return "deadline"
			}
			return e.Error()
		}
		return f(err1) + " " + f(err2) + " " + f(err3) + " " + f(err4)
	})
}

// Snapshot: after cached statements ran, another handle writes and checkpoints (TRUNCATE);
// this connection must see the new data and not block the checkpoint.
func TestAsModerncSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(2000)&_txlock=immediate"
	db := mustOpen(t, dsn, Options{})
	db.SetMaxOpenConns(1)
	defer db.Close()
	other, _ := sql.Open("sqlite", dsn)
	defer other.Close()
	db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`)
	db.Exec(`INSERT INTO t VALUES (1, 'a')`)
	var v string
	for i := 0; i < 3; i++ {
		db.QueryRow(`SELECT v FROM t WHERE id = ?`, 1).Scan(&v)
		rows, _ := db.Query(`SELECT v FROM t`)
		rows.Next()
		rows.Close()
	}
	if _, err := other.Exec(`UPDATE t SET v = 'b'`); err != nil {
		t.Fatal(err)
	}
	var busy, logp, ckp int
	if err := other.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logp, &ckp); err != nil || busy != 0 {
		t.Errorf("checkpoint: busy=%d err=%v", busy, err)
	}
	db.QueryRow(`SELECT v FROM t WHERE id = ?`, 1).Scan(&v)
	if v != "b" {
		t.Errorf("stale read %q", v)
	}
}

// Close after a cached statement's last run failed.
func TestAsModerncCloseAfterFailure(t *testing.T) {
	both(t, func(t *testing.T, db *sql.DB) string {
		_, err := db.Exec(`INSERT INTO t (id, v) VALUES (?, ?)`, 1, "dup")
		rows, err2 := db.Query(`INSERT INTO t (id, v) VALUES (?, ?) RETURNING id`, 1, "dup")
		if err2 == nil {
			rows.Close()
		}
		return errString(err) + "|" + errString(err2)
	})
}

func errString(e error) string {
	if e == nil {
		return "nil"
	}
	return e.Error()
}

// PRAGMAs whose result SQLite computes when it prepares them.
func TestAsModerncPragmaAfterChange(t *testing.T) {
	both(t, func(t *testing.T, db *sql.DB) string {
		get := func(q string, args ...any) string {
			rows, err := db.Query(q, args...)
			if err != nil {
				return "err:" + err.Error()
			}
			defer rows.Close()
			cols, _ := rows.Columns()
			out := ""
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				rows.Scan(ptrs...)
				for _, v := range vals {
					switch x := v.(type) {
					case []byte:
						out += string(x) + ","
					default:
						out += fmtAny(x) + ","
					}
				}
				out += ";"
			}
			return out
		}
		qs := []string{
			`PRAGMA busy_timeout`,
			`PRAGMA table_info(t)`,
			`SELECT count(*) FROM pragma_table_info('t')`,
			`PRAGMA cache_size`,
			`PRAGMA database_list`,
			`PRAGMA index_list(t)`,
			`PRAGMA foreign_keys`,
			`PRAGMA synchronous`,
			`PRAGMA temp_store`,
			`PRAGMA schema_version`,
			`PRAGMA user_version`,
			`PRAGMA journal_mode`,
			`PRAGMA compile_options`,
			`PRAGMA query_only`,
			`PRAGMA automatic_index`,
			`PRAGMA cell_size_check`,
			`PRAGMA mmap_size`,
			`PRAGMA soft_heap_limit`,
			`PRAGMA hard_heap_limit`,
			`PRAGMA threads`,
			`PRAGMA analysis_limit`,
			`PRAGMA wal_autocheckpoint`,
			`PRAGMA secure_delete`,
			`PRAGMA locking_mode`,
			`PRAGMA page_size`,
			`PRAGMA max_page_count`,
			`PRAGMA journal_size_limit`,
			`PRAGMA trusted_schema`,
			`PRAGMA data_version`,
		}
		for _, q := range qs {
			get(q)
		}
		for _, s := range []string{
			`PRAGMA busy_timeout = 1234`, `ALTER TABLE t ADD COLUMN extra INTEGER`,
			`PRAGMA cache_size = -4321`, `ATTACH ':memory:' AS aux`, `CREATE INDEX ti ON t(v)`,
			`PRAGMA foreign_keys = ON`, `PRAGMA synchronous = OFF`, `PRAGMA temp_store = MEMORY`,
			`PRAGMA user_version = 7`, `PRAGMA query_only = 1`, `PRAGMA query_only = 0`, `PRAGMA automatic_index = 0`,
			`PRAGMA cell_size_check = 1`, `PRAGMA mmap_size = 65536`, `PRAGMA soft_heap_limit = 1000000`,
			`PRAGMA hard_heap_limit = 2000000`, `PRAGMA threads = 2`, `PRAGMA analysis_limit = 100`,
			`PRAGMA wal_autocheckpoint = 77`, `PRAGMA secure_delete = 1`, `PRAGMA max_page_count = 99999`,
			`PRAGMA journal_size_limit = 12345`, `PRAGMA trusted_schema = 0`,
		} {
			if _, err := db.Exec(s); err != nil {
				t.Logf("%s: %v", s, err)
			}
		}
		out := ""
		for _, q := range qs {
			if q == `PRAGMA data_version` || q == `PRAGMA database_list` {
				continue
			}
			out += q + " => " + get(q) + "\n"
		}
		return out
	})
}

func fmtAny(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case int64:
		return itoa(x)
	case string:
		return x
	default:
		return "?"
	}
}

func itoa(n int64) string {
	if n < 0 {
		return "-" + itoa(-n)
	}
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

var hookRuns atomic.Int32

func init() {
	sqlite.MustRegisterDeterministicScalarFunction("test_double", 1, func(ctx *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		return args[0].(int64) * 2, nil
	})
	sqlite.MustRegisterCollationUtf8("test_rev", func(a, b string) int { return strings.Compare(b, a) })
	sqlite.RegisterConnectionHook(func(conn sqlite.ExecQuerierContext, dsn string) error {
		hookRuns.Add(1)
		return nil
	})
}

// Functions, collations and connection hooks registered on the "sqlite"
// driver (package-level sqlite.Register*) reach Open's connections too.
func TestAsModerncPackageRegistrations(t *testing.T) {
	both(t, func(t *testing.T, db *sql.DB) string {
		var n int64
		err := db.QueryRow(`SELECT test_double(21)`).Scan(&n)
		var first string
		err2 := db.QueryRow(`SELECT v FROM (SELECT 'a' AS v UNION ALL SELECT 'b') ORDER BY v COLLATE test_rev LIMIT 1`).Scan(&first)
		return errString(err) + " " + itoa(n) + " | " + errString(err2) + " " + first
	})
}

// Errors through a cached statement (second run) keep *sqlite.Error and its code.
func TestAsModerncErrorsAs(t *testing.T) {
	both(t, func(t *testing.T, db *sql.DB) string {
		out := ""
		for i := 0; i < 2; i++ {
			_, err := db.Exec(`INSERT INTO t (id, v) VALUES (?, ?)`, 1, "dup")
			var se *sqlite.Error
			if errors.As(err, &se) {
				out += itoa(int64(se.Code())) + ":" + se.Error() + "|"
			} else {
				out += "noAs:" + errString(err) + "|"
			}
			err = db.QueryRow(`INSERT INTO t (id, v) VALUES (?, ?) RETURNING id`, 1, "dup").Scan(new(int))
			if errors.As(err, &se) {
				out += itoa(int64(se.Code())) + ":" + se.Error() + "|"
			} else {
				out += "noAs:" + errString(err) + "|"
			}
			_, err = db.Exec(`INSERT INTO t (id, v) VALUES (?, ?)`, 99, nil)
			if errors.As(err, &se) {
				out += itoa(int64(se.Code())) + ":" + se.Error() + "|"
			} else {
				out += "noAs:" + errString(err) + "|"
			}
		}
		return out
	})
}

// Transactions, savepoints and rollback through cached statements.
func TestAsModerncTxSavepoint(t *testing.T) {
	both(t, func(t *testing.T, db *sql.DB) string {
		ctx := context.Background()
		ins := `INSERT INTO t (v) VALUES (?)`
		out := ""
		for round := 0; round < 2; round++ {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			tx.Exec(ins, "x")
			tx.Exec(`SAVEPOINT sp`)
			tx.Exec(ins, "y")
			rows, _ := tx.Query(`SELECT v FROM t ORDER BY id`)
			rows.Next() // left open on purpose
			if _, err := tx.Exec(`ROLLBACK TO sp`); err != nil {
				out += "rbto:" + err.Error() + "|"
			}
			tx.Exec(`RELEASE sp`)
			if round == 0 {
				err = tx.Commit()
			} else {
				err = tx.Rollback()
			}
			out += errString(err) + "|"
			rows.Close()
			var n int
			db.QueryRow(`SELECT count(*) FROM t`).Scan(&n)
			out += itoa(int64(n)) + "|"
		}
		return out
	})
}

// Cache bound: with open Rows at the back of the list, the cache still
// keeps no more than CacheSize statements.
func TestAsModerncCacheBoundWithBusy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	db := mustOpen(t, "file:"+path, Options{CacheSize: 4})
	db.SetMaxOpenConns(1)
	defer db.Close()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rows, err := c.QueryContext(context.Background(), `SELECT 1 UNION ALL SELECT 2`)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		var n int
		if err := c.QueryRowContext(context.Background(), `SELECT `+itoa(int64(i))).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	var size int
	c.Raw(func(dc any) error { size = dc.(*conn).lru.Len(); return nil })
	rows.Close()
	if size > 4 {
		t.Errorf("cache holds %d statements, CacheSize 4", size)
	}
}

func TestAsModerncConnectionHook(t *testing.T) {
	for _, w := range []bool{false, true} {
		dsn := "file:" + filepath.Join(t.TempDir(), "h.db")
		db := openEither(t, w, dsn, Options{})
		hookRuns.Store(0)
		db.Exec(`SELECT 1`)
		db.Close()
		if hookRuns.Load() != 1 {
			t.Errorf("wrapped=%v: sqlite.RegisterConnectionHook hook ran %d times, want 1", w, hookRuns.Load())
		}
	}
}

func TestAsModerncMemoryCancelThenReuse(t *testing.T) {
	for _, w := range []bool{false, true} {
		dsn := "file:memrev?mode=memory"
		db := openEither(t, w, dsn, Options{})
		db.SetMaxOpenConns(1)
		q := `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < ?) SELECT count(*) FROM c`
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		var n int
		err1 := db.QueryRowContext(ctx, q, 100000000).Scan(&n)
		cancel()
		err2 := db.QueryRowContext(context.Background(), q, 50000).Scan(&n)
		_, err3 := db.ExecContext(context.Background(), q, 50000)
		if !errors.Is(err1, context.DeadlineExceeded) || err2 != nil || err3 != nil || n != 50000 {
			t.Errorf("wrapped=%v: timed out: %v; again: %d, %v; as Exec: %v", w, err1, n, err2, err3)
		}
		db.Close()
	}
}

func TestAsModerncVacuumJournalScripts(t *testing.T) {
	both(t, func(t *testing.T, db *sql.DB) string {
		out := ""
		for i := 0; i < 2; i++ {
			db.QueryRow(`SELECT v FROM t WHERE id = ?`, 1).Scan(new(string))
			db.Exec(`INSERT INTO t (v) VALUES (?)`, "z")
			_, err := db.Exec(`VACUUM`)
			out += errString(err) + "|"
			var m string
			err = db.QueryRow(`PRAGMA journal_mode = DELETE`).Scan(&m)
			out += errString(err) + m + "|"
			err = db.QueryRow(`PRAGMA journal_mode = WAL`).Scan(&m)
			out += errString(err) + m + "|"
			r, err := db.Exec(`INSERT INTO t (v) VALUES (?); INSERT INTO t (v) VALUES (?)`, "s1", "s2")
			if err == nil {
				n, _ := r.RowsAffected()
				id, _ := r.LastInsertId()
				out += itoa(n) + "," + itoa(id) + "|"
			} else {
				out += err.Error() + "|"
			}
			var c int
			err = db.QueryRow(`CREATE TABLE IF NOT EXISTS q (x); SELECT count(*) FROM t`).Scan(&c)
			out += errString(err) + itoa(int64(c)) + "|"
		}
		return out
	})
}

// Re-ATTACH a different file under the same name; both files have the same schema cookie.
func TestAsModerncReattach(t *testing.T) {
	dir := t.TempDir()
	for i, name := range []string{"a.db", "b.db"} {
		d, _ := sql.Open("sqlite", "file:"+filepath.Join(dir, name))
		d.Exec(`CREATE TABLE x (v TEXT)`)
		d.Exec(`INSERT INTO x VALUES (?)`, []string{"from-a", "from-b"}[i])
		d.Close()
	}
	both(t, func(t *testing.T, db *sql.DB) string {
		out := ""
		for _, name := range []string{"a.db", "b.db", "a.db"} {
			if _, err := db.Exec(`ATTACH ? AS aux`, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
			var v string
			err := db.QueryRow(`SELECT v FROM aux.x`).Scan(&v)
			out += errString(err) + v + "|"
			if _, err := db.Exec(`DETACH aux`); err != nil {
				t.Fatal(err)
			}
		}
		return out
	})
}
