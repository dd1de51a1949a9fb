package outbox_test

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/outbox"
)

// OpenSQLiteDB gives a file the settings its doc promises: WAL,
// synchronous=FULL, checkpoints every 200 pages, a 10 s busy timeout, one
// connection, writing transactions that take the write lock at BEGIN,
// and a file its owner alone can read.
func TestOpenSQLiteDBSettings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := outbox.OpenSQLiteDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for pragma, want := range map[string]string{
		"journal_mode":       "wal",
		"synchronous":        "2", // FULL
		"wal_autocheckpoint": "200",
		"busy_timeout":       "10000",
	} {
		var got string
		if err := db.QueryRow("PRAGMA " + pragma).Scan(&got); err != nil || got != want {
			t.Errorf("PRAGMA %s = %q (%v), want %q", pragma, got, err, want)
		}
	}
	if st := db.Stats(); st.MaxOpenConnections != 1 {
		t.Errorf("MaxOpenConnections %d, want 1", st.MaxOpenConnections)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}

	// BEGIN takes the write lock: another handle cannot write meanwhile,
	// even before this transaction has written anything.
	if _, err := db.Exec(`CREATE TABLE t (v TEXT)`); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(50)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Exec(`INSERT INTO t VALUES ('other')`); err == nil {
		t.Error("another handle wrote while a transaction of the outbox's handle was open")
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(`INSERT INTO t VALUES ('other')`); err != nil {
		t.Fatalf("after the rollback: %v", err)
	}
}

func TestOpenSQLiteDBRefusesBadPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, path := range []string{"", ":memory:", "file:mail.db", "FILE:mail.db", "file::memory:?cache=shared", "mail.db?mode=memory", "mail.db#x",
		filepath.Join(dir, "missing", "mail.db"), dir, os.DevNull} {
		db, err := outbox.OpenSQLiteDB(path)
		var ce *mailsec.ConfigError
		if !errors.As(err, &ce) {
			if db != nil {
				_ = db.Close()
			}
			t.Errorf("%q: %v, want a *mailsec.ConfigError", path, err)
		}
	}
}

// A % in the path is part of the file's name: the outbox's data goes into
// the file OpenSQLiteDB created readable by its owner alone, not into one
// SQLite would name by decoding it.
func TestOpenSQLiteDBPercentPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, name := range []string{"mail%20x.db", "mail%zz.db", "100%.db"} {
		db, err := outbox.OpenSQLiteDB(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`CREATE TABLE t (v TEXT)`); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %d bytes, mode %v; want the database, readable by its owner alone", name, fi.Size(), fi.Mode().Perm())
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "mail x.db*")); len(m) != 0 {
		t.Errorf("the data went to %v", m)
	}
}
