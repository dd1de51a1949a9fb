//go:build unix

package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// umask sets the process's umask for the test.
func umask(t *testing.T, m int) {
	old := syscall.Umask(m)
	t.Cleanup(func() { syscall.Umask(old) })
}

// A % in the SQLite path is part of the file's name: the messages go into
// the file send -queue names, created readable by its owner alone, not
// into one SQLite would name by decoding the %, created with the umask.
func TestQueueSQLitePathWithPercent(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	umask(t, 0o022)
	environ, _ := queueEnv(t)
	db := filepath.Join(dir, "mail%20x.db")
	id := enqueueCmd(t, environ, db, "-to", "b@example.org")
	if fi, err := os.Stat(filepath.Join(dir, "mail x.db")); err == nil {
		t.Errorf("send -queue %s stored the outbox in another file, %q (mode %v)", filepath.Base(db), fi.Name(), fi.Mode().Perm())
	}
	fi, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("the file named by -queue: %d bytes, mode %v; want the outbox, readable by its owner alone", fi.Size(), fi.Mode().Perm())
	}
	if st := showJSON(t, environ, "mail%20x.db", id); st.ID != id {
		t.Errorf("show in the file: %+v", st)
	}
}
