package outbox_test

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// An attempt re-seals a message's status under the first key, while its
// content keeps the key of Enqueue. A message queued under oldKey and
// deferred once during a rotation ([newKey, oldKey]) still needs oldKey:
// WaitingForKeys counts it with newKey alone, and Status.KeyID names
// oldKey.
func TestWaitingForKeysAfterRotatedAttempt(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{RcptReply: map[string]*mailsec.Reply{
		"later@example.org": {Code: 451, EnhancedCode: mailsec.EnhancedCode{4, 3, 0}, Text: "try again later"},
	}})
	s := newSender(t, srv.Transport(), nil)
	ctx := context.Background()
	oldKey, newKey := outbox.NewKey(), outbox.NewKey()
	path := filepath.Join(t.TempDir(), "mail.db")

	ob := openAt(t, s, path, fast(&outbox.Options{Keys: []outbox.Key{oldKey}}), false)
	id, err := ob.Enqueue(ctx, messageTo("later@example.org"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Mid-rotation: one attempt, deferred.
	ob = openAt(t, s, path, fast(&outbox.Options{Keys: []outbox.Key{newKey, oldKey}, MinBackoff: time.Hour, MaxBackoff: 2 * time.Hour}), false)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := ob.RunDue(rctx); err != nil {
		t.Fatal(err)
	}
	st, err := ob.Status(ctx, id)
	if err != nil || st.State != outbox.Queued || len(st.Attempts) != 1 {
		t.Fatalf("after the deferred attempt: %+v, %v", st, err)
	}
	if err := ob.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// The old key dropped.
	ob = openAt(t, s, path, fast(&outbox.Options{Keys: []outbox.Key{newKey}}), false)
	var envKey string
	// The envelope is still under oldKey: bytes 1..9 of the stored value.
	if err := rawDB(t, path).QueryRow(`SELECT hex(substr(envelope, 2, 8)) FROM mailsec_outbox_message WHERE id = ?`, id).Scan(&envKey); err != nil {
		t.Fatal(err)
	}
	t.Logf("envelope sealed under %s; oldKey %s, newKey %s", envKey, oldKey.ID(), newKey.ID())
	n, err := ob.WaitingForKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("WaitingForKeys = %d with the old key dropped, want 1 (the message's envelope is sealed under %s)", n, oldKey.ID())
	}
	if st, err := ob.Status(ctx, id); err != nil {
		t.Errorf("Status: %v", err)
	} else if st.KeyID != oldKey.ID() {
		t.Errorf("Status.KeyID = %s, want %s (the key the message needs: its envelope is sealed under it)", st.KeyID, oldKey.ID())
	}
}

// An Open with SkipMigrations writes nothing, not even the storage record
// of a database Migrate made (which records none).
func TestSkipMigrationsWritesNoStorageRecord(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mail.db")
	if err := outbox.Migrate(ctx, path); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		var n int
		if err := rawDB(t, path).QueryRow(`SELECT COUNT(*) FROM mailsec_outbox_meta`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("Migrate wrote %d meta rows", n)
	}
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	ob := openAt(t, s, path, &outbox.Options{Keys: []outbox.Key{testKey}, SkipMigrations: true}, false)
	_ = ob.Close(ctx)
	if n := count(); n != 0 {
		t.Errorf("Open with SkipMigrations wrote %d rows into mailsec_outbox_meta (the storage record)", n)
	}
}

// A database Migrate made records no storage mode, and an Open with
// SkipMigrations writes none. An outbox that stores otherwise than the
// messages already in it is still refused, with or without
// SkipMigrations, and writes nothing: not a plaintext message beside
// sealed ones, not a record of its own mode.
func testStorageModeWithoutRecord(t *testing.T, newDB func() string) {
	ctx := context.Background()
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	sealedOpts := func(skip bool) *outbox.Options {
		return &outbox.Options{Keys: []outbox.Key{testKey}, SkipMigrations: skip}
	}
	plainOpts := func(skip bool) *outbox.Options { return &outbox.Options{Plaintext: true, SkipMigrations: skip} }
	for _, c := range []struct {
		name        string
		made, other func(skip bool) *outbox.Options
		field       string
	}{
		{"sealed, then plaintext", sealedOpts, plainOpts, "Options.Plaintext"},
		{"plaintext, then sealed", plainOpts, sealedOpts, "Options.Keys"},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := newDB()
			if err := outbox.Migrate(ctx, db); err != nil {
				t.Fatal(err)
			}
			ob := openAt(t, s, db, c.made(true), false)
			id, err := ob.Enqueue(ctx, message(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := ob.Close(ctx); err != nil {
				t.Fatal(err)
			}
			for _, skip := range []bool{true, false} {
				ob, err := outbox.Open(ctx, s, db, c.other(skip))
				var ce *mailsec.ConfigError
				if !errors.As(err, &ce) || ce.Field != c.field {
					if err == nil {
						_, _ = ob.Enqueue(ctx, message(), nil)
						_ = ob.Close(ctx)
					}
					t.Fatalf("Open (SkipMigrations %v) of an outbox made %s: %v; want a ConfigError on %s", skip, c.name, err, c.field)
				}
			}
			// Nothing was written: the one message, no record.
			ob = openAt(t, s, db, c.made(true), false)
			defer ob.Close(ctx)
			if st, err := ob.Stats(ctx); err != nil || st.Depth != 1 {
				t.Fatalf("Stats = %+v, %v; want the one message", st, err)
			}
			if st, err := ob.Status(ctx, id); err != nil || st.State != outbox.Queued {
				t.Fatalf("Status: %+v, %v", st, err)
			}
		})
	}
}

func TestStorageModeWithoutRecordSQLite(t *testing.T) {
	testStorageModeWithoutRecord(t, func() string { return filepath.Join(t.TempDir(), "mail.db") })
}

func TestStorageModeWithoutRecordPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	testStorageModeWithoutRecord(t, func() string { return pg.NewDatabase(t) })
}

// On a database Migrate made and no Open recorded a storage mode in
// (every Open with SkipMigrations), outboxes of both modes open while it
// holds no message. The first Enqueue records its outbox's mode, and
// the other outbox's Enqueues are refused, having stored nothing, even
// when both enqueue at once: the messages stored are of one form.
func testStorageClaimedAtFirstEnqueue(t *testing.T, newDB func() string, forms func(t *testing.T, db string) map[string]int) {
	ctx := context.Background()
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	db := newDB()
	if err := outbox.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	sealedOB := openAt(t, s, db, &outbox.Options{Keys: []outbox.Key{testKey}, SkipMigrations: true}, false)
	plainOB := openAt(t, s, db, &outbox.Options{Plaintext: true, SkipMigrations: true}, false)
	withAttachment := func() *mailsec.Message {
		m := message()
		m.Attachments = []mailsec.Attachment{{Filename: "a.txt", Content: strings.NewReader("statement")}}
		return m
	}
	var wg sync.WaitGroup
	errs := make([][]error, 2)
	for i, ob := range []*outbox.Outbox{sealedOB, plainOB} {
		errs[i] = make([]error, 16)
		for j := range errs[i] {
			wg.Go(func() {
				m := message()
				if j%4 == 0 {
					m = withAttachment()
				}
				_, errs[i][j] = ob.Enqueue(ctx, m, nil)
			})
		}
	}
	wg.Wait()
	ok := [2]int{}
	for i := range errs {
		for _, err := range errs[i] {
			var ce *mailsec.ConfigError
			switch {
			case err == nil:
				ok[i]++
			case !errors.As(err, &ce):
				t.Fatalf("Enqueue: %v; want a *mailsec.ConfigError or nothing", err)
			}
		}
	}
	if (ok[0] > 0) == (ok[1] > 0) {
		t.Fatalf("sealed Enqueues queued %d, plaintext ones %d: want one outbox's, all of them", ok[0], ok[1])
	}
	want := map[string]int{"01": ok[0], "00": ok[1]}
	for form, n := range want {
		if n == 0 {
			delete(want, form)
		}
	}
	if got := forms(t, db); !maps.Equal(got, want) {
		t.Fatalf("stored forms %v, want %v", got, want)
	}
	// The loser goes on being refused; the winner goes on.
	loser, winner := plainOB, sealedOB
	if ok[1] > 0 {
		loser, winner = sealedOB, plainOB
	}
	if _, err := loser.Enqueue(ctx, message(), nil); err == nil {
		t.Fatal("the other mode's Enqueue succeeded after the mode was recorded")
	}
	if _, err := winner.Enqueue(ctx, withAttachment(), nil); err != nil {
		t.Fatal(err)
	}
}

func TestStorageClaimedAtFirstEnqueueSQLite(t *testing.T) {
	testStorageClaimedAtFirstEnqueue(t, func() string { return filepath.Join(t.TempDir(), "mail.db") },
		func(t *testing.T, db string) map[string]int {
			rows, err := rawDB(t, db).Query(`SELECT lower(hex(substr(progress, 1, 1))), COUNT(*) FROM mailsec_outbox_message GROUP BY 1`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			return countForms(t, rows)
		})
}

func TestStorageClaimedAtFirstEnqueuePostgres(t *testing.T) {
	pg := pgtest.Start(t)
	testStorageClaimedAtFirstEnqueue(t, func() string { return pg.NewDatabase(t) },
		func(t *testing.T, db string) map[string]int {
			conn, err := pgx.Connect(context.Background(), db)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			rows, err := conn.Query(context.Background(), `SELECT encode(substring(progress from 1 for 1), 'hex'), COUNT(*) FROM mailsec_outbox_message GROUP BY 1`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			return countForms(t, rows)
		})
}

// countForms reads rows of a form and a count.
func countForms(t *testing.T, rows interface {
	Next() bool
	Scan(...any) error
	Err() error
}) map[string]int {
	t.Helper()
	got := map[string]int{}
	for rows.Next() {
		var form string
		var n int
		if err := rows.Scan(&form, &n); err != nil {
			t.Fatal(err)
		}
		got[form] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// A plaintext outbox is logged at every Open, SkipMigrations or not.
func TestPlaintextLoggedAtEveryOpen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mail.db")
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	for _, skip := range []bool{false, true, false} {
		var logs syncBuffer
		ob, err := outbox.Open(ctx, s, path, &outbox.Options{Plaintext: true, SkipMigrations: skip,
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := ob.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if got := strings.Count(logs.String(), "stored in plaintext"); got != 1 {
			t.Fatalf("Open (SkipMigrations %v) of a plaintext outbox logged %d warnings: %q", skip, got, logs.String())
		}
	}
}

// The outbox's tables are found where its statements find them, through
// the search path, as River's own check does. With a schema earlier in the
// search path that does not hold the outbox ("$user", made after it), an
// Open with SkipMigrations finds the outbox, and the storage-mode check
// reads its record: a Plaintext Open of the sealed outbox is refused.
func TestOutboxFoundThroughSearchPath(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	ctx := context.Background()
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	ob := openAt(t, s, url, &outbox.Options{Keys: []outbox.Key{testKey}}, false)
	id, err := ob.Enqueue(ctx, message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = ob.Close(ctx)

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA other`); err != nil {
		t.Fatal(err)
	}
	url2 := url + "&search_path=other,public"
	// The tables are reachable through the search path.
	c2, err := pgx.Connect(ctx, url2)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c2.QueryRow(ctx, `SELECT COUNT(*) FROM mailsec_outbox_message`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("through the search path: %d, %v", n, err)
	}
	c2.Close(ctx)

	ob2, err := outbox.Open(ctx, s, url2, &outbox.Options{Keys: []outbox.Key{testKey}, SkipMigrations: true})
	if err != nil {
		t.Fatalf("Open with SkipMigrations on a real outbox: %v (ErrNoOutbox: %v)", err, errors.Is(err, outbox.ErrNoOutbox))
	}
	if _, err := ob2.Status(ctx, id); err != nil {
		t.Fatal(err)
	}
	_ = ob2.Close(ctx)

	ob3, err := outbox.Open(ctx, s, url2, &outbox.Options{Plaintext: true})
	if err == nil {
		_ = ob3.Close(ctx)
		var tables []string
		rows, _ := conn.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'other' ORDER BY 1`)
		for rows.Next() {
			var s string
			_ = rows.Scan(&s)
			tables = append(tables, s)
		}
		rows.Close()
		t.Errorf("Plaintext Open of a sealed outbox (reached through search_path other,public) succeeded; tables made in schema other: %v", tables)
	}
}

// Several processes opening a fresh database at once, each with a pool of
// one connection, and Opens interrupted half-way through the migrations:
// the next Open finishes them.
func TestConcurrentAndInterruptedMigrations(t *testing.T) {
	pg := pgtest.Start(t)
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	ctx := context.Background()

	url := pg.NewDatabase(t) + "&pool_max_conns=1"
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			octx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			ob, err := outbox.Open(octx, s, url, &outbox.Options{Keys: []outbox.Key{testKey}})
			if err == nil {
				_ = ob.Close(ctx)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Open %d: %v", i, err)
		}
	}

	url = pg.NewDatabase(t) + "&pool_max_conns=1"
	for d := time.Millisecond; d < 2*time.Second; d = d * 3 / 2 {
		octx, cancel := context.WithTimeout(ctx, d)
		ob, err := outbox.Open(octx, s, url, &outbox.Options{Keys: []outbox.Key{testKey}})
		cancel()
		if err == nil {
			_ = ob.Close(ctx)
			break
		}
		if c, cerr := pgx.Connect(ctx, url[:len(url)-len("&pool_max_conns=1")]); cerr == nil {
			var rv, ov int
			_ = c.QueryRow(ctx, `SELECT COUNT(*) FROM river_migration`).Scan(&rv)
			_ = c.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM mailsec_outbox_schema`).Scan(&ov)
			t.Logf("Open interrupted after %v: River versions %d, outbox version %d", d, rv, ov)
			c.Close(ctx)
		}
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ob, err := outbox.Open(octx, s, url, &outbox.Options{Keys: []outbox.Key{testKey}})
	if err != nil {
		t.Fatalf("Open after interrupted ones: %v", err)
	}
	_ = ob.Close(ctx)
	ob, err = outbox.Open(octx, s, url, &outbox.Options{Keys: []outbox.Key{testKey}, SkipMigrations: true})
	if err != nil {
		t.Fatalf("SkipMigrations after: %v", err)
	}
	_ = ob.Close(ctx)
	// The lock is free.
	conn, err := pgx.Connect(ctx, url[:len(url)-len("&pool_max_conns=1")])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var locks int
	if err := conn.QueryRow(ctx, `SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = hashtext('mailsec_outbox_migrate')::oid`).Scan(&locks); err != nil {
		t.Fatal(err)
	}
	if locks != 0 {
		t.Errorf("%d advisory locks held after the Opens", locks)
	}

}

// Two first Opens of a fresh database at once, one sealed and one
// Plaintext: exactly one of them succeeds.
func TestStorageRaceFirstOpens(t *testing.T) {
	pg := pgtest.Start(t)
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	ctx := context.Background()
	for i := range 6 {
		dbs := []string{pg.NewDatabase(t) + "&pool_max_conns=2", filepath.Join(t.TempDir(), "mail.db")}
		for _, db := range dbs {
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for j, o := range []*outbox.Options{{Keys: []outbox.Key{testKey}}, {Plaintext: true}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ob, err := outbox.Open(ctx, s, db, o)
					if err == nil {
						_ = ob.Close(ctx)
					}
					errs[j] = err
				}()
			}
			wg.Wait()
			if (errs[0] == nil) == (errs[1] == nil) {
				t.Errorf("round %d %s: sealed %v, plaintext %v: want exactly one to succeed", i, db[:8], errs[0], errs[1])
			}
		}
	}
}

// An Open with SkipMigrations of a SQLite database that holds no outbox
// (another application's, in rollback-journal mode) reports ErrNoOutbox
// having written nothing: the file keeps its journal mode.
func TestNoOutboxSQLiteLeftAsIs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "app.db")
	db := rawDB(t, path)
	for _, q := range []string{`PRAGMA journal_mode=DELETE`, `CREATE TABLE app (x INTEGER)`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	_ = db.Close()
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	_, err := outbox.Open(ctx, s, path, &outbox.Options{Keys: []outbox.Key{testKey}, SkipMigrations: true})
	if !errors.Is(err, outbox.ErrNoOutbox) {
		t.Fatalf("Open: %v, want ErrNoOutbox", err)
	}
	var mode string
	if err := rawDB(t, path).QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "delete" {
		t.Errorf("journal_mode of a database that holds no outbox is %q after Open with SkipMigrations reported ErrNoOutbox; was \"delete\"", mode)
	}
}

// Paths with special characters, a symlink, a relative path: the file
// written is the one named.
func TestSQLitePaths(t *testing.T) {
	ctx := context.Background()
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	for _, name := range []string{"a%41b.db", "a b.db", "ü n.db", "x;y&z=1.db", "q'u\"o.db", "back\\slash.db", "%2e%2e.db", "semi:colon.db", "-dash.db", "100%.db"} {
		dir := t.TempDir()
		path := filepath.Join(dir, name)
		ob, err := outbox.Open(ctx, s, path, &outbox.Options{Keys: []outbox.Key{testKey}})
		if err != nil {
			t.Errorf("%q: %v", name, err)
			continue
		}
		if _, err := ob.Enqueue(ctx, message(), nil); err != nil {
			t.Errorf("%q: enqueue: %v", name, err)
		}
		_ = ob.Close(ctx)
		ents, _ := os.ReadDir(dir)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		var n int
		if err := rawDB(t, strings.ReplaceAll(path, "%", "%25")).QueryRow(`SELECT COUNT(*) FROM mailsec_outbox_message`).Scan(&n); err != nil || n != 1 {
			t.Errorf("%q: files %q; messages in the named file: %d, %v", name, names, n, err)
		}
		for _, nm := range names {
			if nm != name && nm != name+"-wal" && nm != name+"-shm" {
				t.Errorf("%q: stray file %q", name, nm)
			}
		}
	}
	// A symlink: the WAL must be the target's, shared with an Open by the
	// real path.
	dir := t.TempDir()
	real := filepath.Join(dir, "real", "mail.db")
	_ = os.Mkdir(filepath.Dir(real), 0o700)
	link := filepath.Join(dir, "link.db")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	obL, err := outbox.Open(ctx, s, link, &outbox.Options{Keys: []outbox.Key{testKey}})
	if err != nil {
		t.Fatalf("symlink: %v", err)
	}
	defer obL.Close(ctx)
	if _, err := obL.Enqueue(ctx, message(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(link + "-wal"); err == nil {
		t.Errorf("the WAL of %s is beside the link, not the file", link)
	}
	obR, err := outbox.Open(ctx, s, real, &outbox.Options{Keys: []outbox.Key{testKey}})
	if err != nil {
		t.Fatalf("real path: %v", err)
	}
	defer obR.Close(ctx)
	if st, err := obR.Stats(ctx); err != nil || st.Depth != 1 {
		t.Errorf("through the real path: %+v, %v", st, err)
	}
	// A directory.
	if _, err := outbox.Open(ctx, s, dir, &outbox.Options{Keys: []outbox.Key{testKey}}); err == nil {
		t.Error("a directory opened")
	}
	// Relative path.
	t.Chdir(t.TempDir())
	obRel, err := outbox.Open(ctx, s, "rel.db", &outbox.Options{Keys: []outbox.Key{testKey}})
	if err != nil {
		t.Fatal(err)
	}
	_ = obRel.Close(ctx)
	if _, err := os.Stat("rel.db-wal"); err != nil {
		if fi, err := os.Stat("rel.db"); err != nil || fi.Size() == 0 {
			t.Errorf("relative path: rel.db %v", err)
		}
	}
}

// Open's documentation: "A smaller pool is slower, never stuck: even one
// connection migrates ... and delivers." With Start (River's client, whose
// notifier holds a connection for LISTEN), rather than RunDue as
// TestOpenPostgresPoolOfOne does.
func TestPoolOfOneStarted(t *testing.T) {
	pg := pgtest.Start(t)
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s := newSender(t, srv.Transport(), nil)
	ctx := context.Background()
	db := pg.NewDatabase(t) + "&pool_max_conns=1"
	ob := openAt(t, s, db, fast(&outbox.Options{Workers: 4}), true)
	ectx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var ids []string
	for range 3 {
		id, err := ob.Enqueue(ectx, message(), nil)
		if err != nil {
			t.Fatalf("Enqueue with a started outbox on a pool of one: %v", err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		waitFor(t, ob, id, outbox.Delivered, 30*time.Second)
	}
}
