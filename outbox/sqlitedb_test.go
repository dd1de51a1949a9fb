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
	for _, path := range []string{"", "mail.db?mode=memory", "mail.db#x", filepath.Join(t.TempDir(), "missing", "mail.db")} {
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
