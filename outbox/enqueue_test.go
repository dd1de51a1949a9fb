package outbox_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// count returns the number of rows of a table in a SQLite file.
func count(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Enqueue refuses what Send would refuse, AllowedSenders included, and a
// message over MaxMessageSize, and stores nothing of them.
func TestEnqueueRefuses(t *testing.T) {
	s := newSender(t, &mailsectest.RecordingTransport{}, &mailsec.Options{AllowedSenders: []string{"example.com"}})
	ob, path := openFile(t, s, fast(&outbox.Options{MaxMessageSize: 100_000}), false)
	bigAttachment := func() *mailsec.Message {
		m := message()
		m.Attachments = []mailsec.Attachment{
			{Filename: "small.txt", Content: strings.NewReader("small")},
			{Filename: "big.bin", Content: bytes.NewReader(make([]byte, 200_000))},
		}
		return m
	}
	for _, tc := range []struct {
		name  string
		m     *mailsec.Message
		check func(error) bool
	}{
		{"nil", nil, func(err error) bool { return errors.Is(err, mailsec.ErrInvalid) }},
		{"sender not allowed", &mailsec.Message{From: "ceo@example.net", To: []string{"ann@example.org"}}, func(err error) bool {
			return errors.Is(err, mailsec.ErrSenderNotAllowed)
		}},
		{"header injection", &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Subject: "a\r\nBcc: x@example.net"}, func(err error) bool {
			var ve *mailsec.ValidationError
			return errors.As(err, &ve) && ve.Field == "Subject"
		}},
		{"text too large", &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Text: strings.Repeat("x", 100_001)}, func(err error) bool {
			var se *outbox.SizeError
			return errors.As(err, &se) && se.Field == "Text" && se.Limit == 100_000
		}},
		{"header fields too large", &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"},
			Headers: slices.Repeat([]mailsec.Header{{Name: "X-Entity-Ref-ID", Value: strings.Repeat("v", 900)}}, 120)}, func(err error) bool {
			var se *outbox.SizeError
			return errors.As(err, &se) && se.Field == "Headers"
		}},
		{"header fields and text together", &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"},
			Headers: slices.Repeat([]mailsec.Header{{Name: "X-Entity-Ref-ID", Value: strings.Repeat("v", 900)}}, 60), Text: strings.Repeat("x", 50_000)}, func(err error) bool {
			var se *outbox.SizeError
			return errors.As(err, &se) && se.Field == "Text"
		}},
		{"date beyond year 9999", &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Date: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, func(err error) bool {
			var ve *mailsec.ValidationError
			return errors.As(err, &ve) && ve.Field == "Date"
		}},
		{"attachment too large", bigAttachment(), func(err error) bool {
			var se *outbox.SizeError
			return errors.As(err, &se) && se.Field == "Attachments[1]" && errors.Is(err, outbox.ErrTooLarge) && errors.Is(err, mailsec.ErrInvalid) && !mailsec.IsTemporary(err)
		}},
	} {
		id, err := ob.Enqueue(context.Background(), tc.m, nil)
		if err == nil || id != "" || !tc.check(err) {
			t.Errorf("%s: Enqueue gave %q, %v", tc.name, id, err)
		}
	}
	db := rawDB(t, path)
	for _, table := range []string{"mailsec_outbox_message", "mailsec_outbox_chunk", "river_job"} {
		if n := count(t, db, table); n != 0 {
			t.Errorf("%d rows in %s after refusals", n, table)
		}
	}
}

// The Message-ID and Date are fixed when the message is queued, and
// River's job holds nothing but the outbox's opaque ID.
func TestEnqueueFixesIdentity(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ob, path := openFile(t, newSender(t, srv.Transport(), &mailsec.Options{MessageIDDomain: "mail.example.com"}), fast(nil), false)
	before := time.Now()
	id, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	queued := time.Now()
	st, err := ob.Status(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != outbox.Queued || !strings.HasSuffix(st.MessageID, "@mail.example.com") || len(st.Recipients) != 1 || st.Recipients[0].State != outbox.Pending {
		t.Fatalf("queued status: %+v", st)
	}
	var args string
	if err := rawDB(t, path).QueryRow(`SELECT json(args) FROM river_job WHERE kind = 'mailsec_outbox_deliver'`).Scan(&args); err != nil {
		t.Fatal(err)
	}
	if args != `{"id":"`+id+`"}` {
		t.Fatalf("River's job args: %s", args)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	got := srv.Messages()[0]
	if got.Header("Message-Id") != "<"+st.MessageID+">" {
		t.Fatalf("sent Message-ID %q, queued %q", got.Header("Message-Id"), st.MessageID)
	}
	date, err := time.Parse("Mon, 02 Jan 2006 15:04:05 -0700", got.Header("Date"))
	if err != nil {
		t.Fatal(err)
	}
	// The Date has whole seconds: it falls within the Enqueue call, not
	// at the delivery more than a second later.
	if date.Before(before.Truncate(time.Second)) || date.After(queued) {
		t.Fatalf("Date %v is not when the message was queued (between %v and %v)", date, before, queued)
	}
}

// An idempotency key queues a message once; a second Enqueue with the key
// and the same message returns its ID, one with another message fails.
func TestIdempotency(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ob, path := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), false)
	withAttachment := func(b byte) *mailsec.Message {
		m := message()
		m.Attachments = []mailsec.Attachment{{Filename: "a.bin", Content: bytes.NewReader(bytes.Repeat([]byte{b}, 150_000))}}
		return m
	}
	key := &outbox.EnqueueOptions{IdempotencyKey: "welcome:user-17"}
	first, err := ob.Enqueue(context.Background(), withAttachment('a'), key)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ob.Enqueue(context.Background(), withAttachment('a'), key)
	if err != nil || again != first {
		t.Fatalf("second Enqueue: %q, %v; want %q", again, err, first)
	}
	for name, m := range map[string]*mailsec.Message{
		"another attachment": withAttachment('b'),
		"another subject":    func() *mailsec.Message { m := withAttachment('a'); m.Subject = "Other"; return m }(),
	} {
		id, err := ob.Enqueue(context.Background(), m, key)
		var ie *outbox.IdempotencyError
		if !errors.As(err, &ie) || ie.ID != first || !errors.Is(err, outbox.ErrIdempotencyConflict) || id != "" {
			t.Fatalf("%s: %q, %v", name, id, err)
		}
	}
	// Concurrent handlers with one key: one message.
	var wg sync.WaitGroup
	ids := make([]string, 8)
	errs := make([]error, 8)
	ckey := &outbox.EnqueueOptions{IdempotencyKey: "reset:user-18"}
	for i := range ids {
		wg.Go(func() { ids[i], errs[i] = ob.Enqueue(context.Background(), message(), ckey) })
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("concurrent Enqueue %d: %q, %v (first %q)", i, ids[i], errs[i], ids[0])
		}
	}
	db := rawDB(t, path)
	if n := count(t, db, "mailsec_outbox_message"); n != 2 {
		t.Fatalf("%d messages queued, want 2", n)
	}
	if n := count(t, db, "mailsec_outbox_chunk"); n != 3 {
		t.Fatalf("%d chunks stored, want the first message's 3", n)
	}
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ob, first, outbox.Delivered, 20*time.Second)
	waitFor(t, ob, ids[0], outbox.Delivered, 20*time.Second)
	if n := len(srv.Messages()); n != 2 {
		t.Fatalf("%d messages delivered, want 2", n)
	}
	// Still remembered once delivered.
	if again, err := ob.Enqueue(context.Background(), withAttachment('a'), key); err != nil || again != first {
		t.Fatalf("Enqueue after delivery: %q, %v", again, err)
	}
}

// The message is queued with the application's transaction: rolled back,
// nothing is queued or sent; committed, it is delivered. A failed
// EnqueueTx leaves the transaction usable.
func TestEnqueueTxSQLite(t *testing.T) {
	path := t.TempDir() + "/app.db"
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.Exec(`CREATE TABLE users (email TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ob, err := outbox.OpenSQLite(context.Background(), newSender(t, srv.Transport(), nil), db, fast(&outbox.Options{MaxMessageSize: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close(context.Background()) })
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	signUp := func(email string, commit bool, m *mailsec.Message) (string, error) {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO users (email) VALUES (?)`, email); err != nil {
			t.Fatal(err)
		}
		id, qerr := ob.EnqueueTx(context.Background(), tx, m, nil)
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
		return id, qerr
	}
	rolledBack, err := signUp("ann@example.org", false, message())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ob.Status(context.Background(), rolledBack); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("rolled-back message: %v", err)
	}
	big := message()
	big.Text = strings.Repeat("x", 2000)
	if _, err := signUp("bob@example.org", true, big); !errors.Is(err, outbox.ErrTooLarge) {
		t.Fatalf("large message: %v", err)
	}
	if n := count(t, db, "users"); n != 1 {
		t.Fatalf("%d users after a failed EnqueueTx and a commit", n)
	}
	id, err := signUp("carl@example.org", true, message())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	time.Sleep(200 * time.Millisecond)
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d messages delivered, want only the committed one", n)
	}
	if n := count(t, db, "mailsec_outbox_message"); n != 1 {
		t.Fatalf("%d messages in the outbox", n)
	}
	if _, err := ob.EnqueuePgxTx(context.Background(), nil, message(), nil); !errors.Is(err, mailsec.ErrConfig) {
		t.Fatalf("EnqueuePgxTx on SQLite: %v", err)
	}
}

// The same in Postgres, with pgx transactions.
func TestEnqueueTxPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(context.Background(), `CREATE TABLE users (email TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ob, err := outbox.OpenPostgres(context.Background(), newSender(t, srv.Transport(), nil), pool, fast(&outbox.Options{MaxMessageSize: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close(context.Background()) })
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	signUp := func(email string, commit bool, m *mailsec.Message) (string, error) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO users (email) VALUES ($1)`, email); err != nil {
			t.Fatal(err)
		}
		id, qerr := ob.EnqueuePgxTx(ctx, tx, m, &outbox.EnqueueOptions{IdempotencyKey: email})
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		return id, qerr
	}
	rolledBack, err := signUp("ann@example.org", false, message())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ob.Status(ctx, rolledBack); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("rolled-back message: %v", err)
	}
	big := message()
	big.Text = strings.Repeat("x", 2000)
	if _, err := signUp("bob@example.org", true, big); !errors.Is(err, outbox.ErrTooLarge) {
		t.Fatalf("large message: %v", err)
	}
	var users int
	if err := pool.QueryRow(ctx, `SELECT COUNT(*) FROM users`).Scan(&users); err != nil || users != 1 {
		t.Fatalf("%d users after a failed EnqueuePgxTx and a commit: %v", users, err)
	}
	id, err := signUp("carl@example.org", true, message())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	time.Sleep(200 * time.Millisecond)
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d messages delivered, want only the committed one", n)
	}
	if _, err := ob.EnqueueTx(ctx, &sql.Tx{}, message(), nil); !errors.Is(err, mailsec.ErrConfig) {
		t.Fatalf("EnqueueTx on Postgres: %v", err)
	}
}

// With SkipMigrations, Open refuses a database without an outbox
// (ErrNoOutbox), and makes no table in it, and tables that are not up to
// date (ErrNotMigrated), and says to run Migrate; after Migrate it opens.
func TestSkipMigrations(t *testing.T) {
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	path := t.TempDir() + "/mail.db"
	_, err := outbox.Open(context.Background(), s, path, fast(&outbox.Options{SkipMigrations: true}))
	var ce *mailsec.ConfigError
	if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "Migrate") || !errors.Is(err, outbox.ErrNoOutbox) {
		t.Fatalf("Open without migrations: %v", err)
	}
	var tables int
	if err := rawDB(t, path).QueryRow(`SELECT COUNT(*) FROM sqlite_master`).Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("Open with SkipMigrations made %d tables (%v)", tables, err)
	}
	if err := outbox.Migrate(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	// An earlier schema version.
	if _, err := rawDB(t, path).Exec(`UPDATE mailsec_outbox_schema SET version = 3`); err != nil {
		t.Fatal(err)
	}
	_, err = outbox.Open(context.Background(), s, path, fast(&outbox.Options{SkipMigrations: true}))
	if !errors.As(err, &ce) || !errors.Is(err, outbox.ErrNotMigrated) || !strings.Contains(err.Error(), "version 3") {
		t.Fatalf("Open with SkipMigrations on schema version 3: %v", err)
	}
	if err := outbox.Migrate(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Migrate(context.Background(), path); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	ob := openAt(t, s, path, fast(&outbox.Options{SkipMigrations: true}), false)
	if _, err := ob.Enqueue(context.Background(), message(), nil); err != nil {
		t.Fatal(err)
	}
}
