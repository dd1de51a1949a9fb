package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// bounce ingest records a bounce for a message the outbox sent, exits 0
// for one it cannot match (a pipe transport must not keep it), and 75
// when the database cannot be reached (a pipe transport tries again).
func TestBounceIngest(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	environ, _ := queueEnv(t)
	db := filepath.Join(t.TempDir(), "mail.db")
	id := enqueueCmd(t, environ, db, "-to", "nobody@example.org,ann@example.org")
	wantCode(t, runCmd(t, "", environ, "queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", caFile(t, srv)), 0)
	st := showJSON(t, environ, db, id)
	if st.State != outbox.Delivered || !strings.HasPrefix(srv.Messages()[0].EnvelopeID, st.EnvelopeID+".") || st.EnvelopeID == "" {
		t.Fatalf("status %+v, sent ENVID %q", st, srv.Messages()[0].EnvelopeID)
	}
	raw, err := os.ReadFile("../../bounce/testdata/postfix-failed.eml")
	if err != nil {
		t.Fatal(err)
	}
	other := string(raw)

	// Not ours: unmatched, exit 0, nothing changed.
	r := runCmd(t, other, environ, "bounce", "ingest", "-db", db)
	wantCode(t, r, 0)
	if !strings.Contains(r.stderr, "unmatched") {
		t.Fatalf("stderr %q", r.stderr)
	}
	r = runCmd(t, "Subject: hello\r\n\r\nnot a bounce\r\n", environ, "bounce", "ingest", "-db", db)
	wantCode(t, r, 0)
	if !strings.Contains(r.stderr, "unmatched") {
		t.Fatalf("stderr %q", r.stderr)
	}
	if st := showJSON(t, environ, db, id); st.State != outbox.Delivered || len(st.Bounces) != 0 {
		t.Fatalf("an unmatched bounce changed the message: %+v", st)
	}

	ours := strings.Replace(other, "Original-Envelope-Id: ms-7f3a9c2e41", "Original-Envelope-Id: "+srv.Messages()[0].EnvelopeID, 1)
	r = runCmd(t, ours, environ, "bounce", "ingest", "-db", db, "-json")
	wantCode(t, r, 0)
	var res outbox.IngestResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.ID != id || len(res.Bounced) != 1 || res.Bounced[0] != "nobody@example.org" {
		t.Fatalf("%v %+v", err, res)
	}
	st = showJSON(t, environ, db, id)
	if st.State != outbox.PartlyDelivered || st.Recipients[0].State != outbox.Bounced || st.Recipients[1].State != outbox.Accepted {
		t.Fatalf("after the bounce: %+v", st)
	}
	r = runCmd(t, "", environ, "queue", "show", id, "-db", db)
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "nobody@example.org (to): bounced, 1 attempt: bounced: ") {
		t.Fatalf("queue show:\n%s", r.stdout)
	}

	// The database unreachable: 75, so that the mail system keeps it.
	r = runCmd(t, ours, environ, "bounce", "ingest", "-db", "postgres://mailsec@127.0.0.1:1/none?connect_timeout=2")
	wantCode(t, r, 75)
	// Usage.
	wantCode(t, runCmd(t, ours, environ, "bounce", "ingest"), 2)
	wantCode(t, runCmd(t, ours, environ, "bounce", "ingest", "-db", filepath.Join(t.TempDir(), "none.db")), 2)
	wantCode(t, runCmd(t, ours, map[string]string{}, "bounce", "ingest", "-db", db), 2)
	wantCode(t, runCmd(t, ours, environ, "bounce"), 2)
}

// bounce ingest never makes or migrates an outbox: pointed at a database
// that holds none (an application's own file, say), or one of an earlier
// version, it exits 75, so that the mail server keeps the bounce, and
// leaves the database as it was.
func TestBounceIngestMakesNoOutbox(t *testing.T) {
	environ, _ := queueEnv(t)
	raw, err := os.ReadFile("../../bounce/testdata/postfix-failed.eml")
	if err != nil {
		t.Fatal(err)
	}
	app := filepath.Join(t.TempDir(), "app.db")
	sdb, err := outbox.OpenSQLiteDB(app)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	if _, err := sdb.Exec(`CREATE TABLE users (id INTEGER)`); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, string(raw), environ, "bounce", "ingest", "-db", app)
	wantCode(t, r, 75)
	if !strings.Contains(r.stderr, "holds no outbox") {
		t.Errorf("stderr %q", r.stderr)
	}
	var n int
	if err := sdb.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name <> 'users'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("bounce ingest added %d tables to the application's database", n)
	}

	db := filepath.Join(t.TempDir(), "mail.db")
	enqueueCmd(t, environ, db, "-to", "ann@example.org")
	old, err := outbox.OpenSQLiteDB(db)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, err := old.Exec(`UPDATE mailsec_outbox_schema SET version = 3`); err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, string(raw), environ, "bounce", "ingest", "-db", db)
	wantCode(t, r, 75)
	if !strings.Contains(r.stderr, "not up to date") {
		t.Errorf("stderr %q", r.stderr)
	}
	var v int
	if err := old.QueryRow(`SELECT version FROM mailsec_outbox_schema`).Scan(&v); err != nil || v != 3 {
		t.Errorf("schema version %d (%v) after bounce ingest, want 3 (not migrated)", v, err)
	}
}
