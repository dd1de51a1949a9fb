package outbox_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// Canaries a message carries in its subject, body, an attachment, a
// header field and a recipient's address: none may be found at rest.
const (
	canarySubject    = "SUBJECTCANARY7f3a"
	canaryBody       = "BODYCANARY91c2"
	canaryAttachment = "ATTACHMENTCANARY5d0e"
	canaryRecipient  = "rcptcanary4b8f"
	canaryHeader     = "HEADERCANARY22aa"
)

var canaries = []string{canarySubject, canaryBody, canaryAttachment, canaryRecipient, canaryHeader}

func canaryMessage() *mailsec.Message {
	return &mailsec.Message{
		From:        "App <app@example.com>",
		To:          []string{canaryRecipient + "@example.org"},
		Bcc:         []string{"hidden-" + canaryRecipient + "@example.net"},
		Subject:     "Results " + canarySubject,
		Text:        "Your results: " + canaryBody,
		HTML:        "<p>" + canaryBody + "</p>",
		Headers:     []mailsec.Header{{Name: "X-Case", Value: canaryHeader}},
		Attachments: []mailsec.Attachment{{Filename: "results.txt", Content: strings.NewReader(strings.Repeat(canaryAttachment+"\n", 20000))}},
		Reference:   "order-42",
	}
}

// found returns the canaries in b, as text or in hex (how pg_dump writes
// bytea).
func found(b []byte) []string {
	var out []string
	lower := bytes.ToLower(b)
	for _, c := range canaries {
		if bytes.Contains(lower, bytes.ToLower([]byte(c))) || bytes.Contains(lower, []byte(hex.EncodeToString([]byte(c)))) {
			out = append(out, c)
		}
	}
	return out
}

// sqliteFiles reads the database file and its WAL, as they are on disk.
func sqliteFiles(t *testing.T, path string) []byte {
	t.Helper()
	var all []byte
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		b, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// Nothing readable at rest, in the SQLite file: not while the message is
// queued, not after its attempts are recorded; the logs name no address
// either. With Plaintext, the same grep finds every canary, which shows
// the grep can find them.
func TestCanariesNotAtRestSQLite(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{RcptReply: map[string]*mailsec.Reply{
		"hidden-" + canaryRecipient + "@example.net": {Code: 450, EnhancedCode: mailsec.EnhancedCode{4, 2, 0}, Text: "mailbox busy"},
	}})
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newSender(t, srv.Transport(), nil)
	ob, path := openFile(t, s, fast(&outbox.Options{Logger: logger, MaxAge: 2 * time.Second}), false)
	id, err := ob.Enqueue(context.Background(), canaryMessage(), &outbox.EnqueueOptions{IdempotencyKey: "welcome " + canaryRecipient})
	if err != nil {
		t.Fatal(err)
	}
	if got := found(sqliteFiles(t, path)); len(got) > 0 {
		t.Fatalf("queued message readable at rest: %v", got)
	}
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, "", 20*time.Second)
	if st.State != outbox.PartlyDelivered || len(st.Attempts) == 0 || st.Attempts[0].Receipt == nil {
		t.Fatalf("state %s after %d attempts", st.State, len(st.Attempts))
	}
	if len(srv.Messages()) == 0 || len(found(srv.Messages()[0].Data)) == 0 {
		t.Fatal("the server did not get the canaries: the test proves nothing")
	}
	if got := found(sqliteFiles(t, path)); len(got) > 0 {
		t.Fatalf("readable at rest after delivery: %v", got)
	}
	if got := found(logs.Bytes()); len(got) > 0 {
		t.Fatalf("logged: %v\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "mailsec outbox attempt") {
		t.Fatalf("no attempt logged:\n%s", logs.String())
	}

	// Control: a plaintext outbox keeps everything readable.
	plain, ppath := openFile(t, s, fast(&outbox.Options{Plaintext: true}), false)
	if _, err := plain.Enqueue(context.Background(), canaryMessage(), nil); err != nil {
		t.Fatal(err)
	}
	if got := found(sqliteFiles(t, ppath)); len(got) != len(canaries) {
		t.Fatalf("plaintext control found only %v", got)
	}
}

// The same in Postgres: a pg_dump of the database holds no canary.
func TestCanariesNotAtRestPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ob := openAt(t, newSender(t, srv.Transport(), nil), url, fast(nil), false)
	id, err := ob.Enqueue(context.Background(), canaryMessage(), &outbox.EnqueueOptions{IdempotencyKey: canaryRecipient})
	if err != nil {
		t.Fatal(err)
	}
	if got := found(pg.Dump(t, url)); len(got) > 0 {
		t.Fatalf("queued message readable in pg_dump: %v", got)
	}
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := waitFor(t, ob, id, "", 20*time.Second); st.State != outbox.Delivered {
		t.Fatalf("state %s", st.State)
	}
	if got := found(pg.Dump(t, url)); len(got) > 0 {
		t.Fatalf("readable in pg_dump after delivery: %v", got)
	}

	purl := pg.NewDatabase(t)
	plain := openAt(t, newSender(t, srv.Transport(), nil), purl, fast(&outbox.Options{Plaintext: true}), false)
	if _, err := plain.Enqueue(context.Background(), canaryMessage(), nil); err != nil {
		t.Fatal(err)
	}
	if got := found(pg.Dump(t, purl)); len(got) != len(canaries) {
		t.Fatalf("plaintext control found only %v", got)
	}
}

// An outbox without a key does not open, unless plaintext is asked for;
// that choice is recorded in the database and in every Status.
func TestKeyRequired(t *testing.T) {
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	path := t.TempDir() + "/mail.db"
	for _, o := range []*outbox.Options{nil, {}, {Keys: []outbox.Key{{}}}, {Keys: []outbox.Key{testKey}, Plaintext: true}, {Keys: []outbox.Key{testKey, testKey}}} {
		ob, err := outbox.Open(context.Background(), s, path, o)
		var ce *mailsec.ConfigError
		if !errors.As(err, &ce) || ob != nil {
			t.Fatalf("Open(%+v): %v, %v; want a ConfigError", o, ob, err)
		}
	}
	ob := openAt(t, s, path, &outbox.Options{Plaintext: true}, false)
	id, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ob.Status(context.Background(), id)
	if err != nil || st.Sealed {
		t.Fatalf("plaintext message: sealed=%v, %v", st.Sealed, err)
	}
	var mode string
	if err := rawDB(t, path).QueryRow(`SELECT value FROM mailsec_outbox_meta WHERE name = 'storage'`).Scan(&mode); err != nil || mode != "plaintext" {
		t.Fatalf("recorded storage %q, %v", mode, err)
	}
}

// Keys rotate: a message sealed under the old key is delivered by an
// outbox that has the new key first and the old one after; new messages
// are sealed under the new key; without the old key the old message is
// not sent, waits, and says why.
func TestKeyRotation(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s := newSender(t, srv.Transport(), nil)
	oldKey, newKey := outbox.NewKey(), outbox.NewKey()
	path := t.TempDir() + "/mail.db"
	ob := openAt(t, s, path, fast(&outbox.Options{Keys: []outbox.Key{oldKey}}), false)
	old, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// The new key alone: the old message does not open, and is not sent.
	ob = openAt(t, s, path, fast(&outbox.Options{Keys: []outbox.Key{newKey}}), true)
	if _, err := ob.Status(context.Background(), old); !errors.Is(err, outbox.ErrUnknownKey) {
		t.Fatalf("Status without the old key: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var problem *string
		if err := rawDB(t, path).QueryRow(`SELECT problem FROM mailsec_outbox_message WHERE id = ?`, old).Scan(&problem); err != nil {
			t.Fatal(err)
		}
		if problem != nil {
			if !strings.Contains(*problem, oldKey.ID()) {
				t.Fatalf("problem %q does not name the key", *problem)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no attempt recorded the missing key")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("%d messages sent without their key", n)
	}
	if err := ob.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	ob = openAt(t, s, path, fast(&outbox.Options{Keys: []outbox.Key{newKey, oldKey}}), true)
	fresh, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for id, key := range map[string]outbox.Key{old: oldKey, fresh: newKey} {
		st := waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
		if id == fresh && st.KeyID != key.ID() {
			t.Fatalf("new message sealed under %s, want %s", st.KeyID, key.ID())
		}
	}
	if n := len(srv.Messages()); n != 2 {
		t.Fatalf("%d messages delivered, want 2", n)
	}
}

// A tampered row is never sent, and the failure is reported: a changed
// byte in the envelope, an envelope copied from another message, a
// changed attachment chunk, a plaintext envelope slipped into a sealed
// outbox.
func TestTamperedNotSent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, db *sql.DB, id, other string)
	}{
		{"flipped byte in the envelope", func(t *testing.T, db *sql.DB, id, _ string) {
			exec(t, db, `UPDATE mailsec_outbox_message SET envelope = substr(envelope, 1, 40) || x'00' || substr(envelope, 42) WHERE id = ?`, id)
		}},
		{"envelope of another message", func(t *testing.T, db *sql.DB, id, other string) {
			exec(t, db, `UPDATE mailsec_outbox_message SET envelope = (SELECT envelope FROM mailsec_outbox_message WHERE id = ?) WHERE id = ?`, other, id)
		}},
		{"progress of another message", func(t *testing.T, db *sql.DB, id, other string) {
			exec(t, db, `UPDATE mailsec_outbox_message SET progress = (SELECT progress FROM mailsec_outbox_message WHERE id = ?) WHERE id = ?`, other, id)
		}},
		{"changed attachment chunk", func(t *testing.T, db *sql.DB, id, _ string) {
			exec(t, db, `UPDATE mailsec_outbox_chunk SET data = substr(data, 1, 100) || x'41' || substr(data, 102) WHERE message_id = ? AND seq = 1`, id)
		}},
		{"attachment chunk of another message", func(t *testing.T, db *sql.DB, id, other string) {
			exec(t, db, `UPDATE mailsec_outbox_chunk SET data = (SELECT data FROM mailsec_outbox_chunk WHERE message_id = ? AND seq = 0) WHERE message_id = ? AND seq = 0`, other, id)
		}},
		{"attachment chunk removed", func(t *testing.T, db *sql.DB, id, _ string) {
			exec(t, db, `DELETE FROM mailsec_outbox_chunk WHERE message_id = ? AND seq = 2`, id)
		}},
		{"plaintext envelope", func(t *testing.T, db *sql.DB, id, _ string) {
			exec(t, db, `UPDATE mailsec_outbox_message SET envelope = x'00' || CAST('{"from":"app@example.com","to":["mallory@example.net"],"text":"hi"}' AS BLOB) WHERE id = ?`, id)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := mailsectest.NewServer(t, mailsectest.Config{})
			var logs syncBuffer
			ob, path := openFile(t, newSender(t, srv.Transport(), nil), fast(&outbox.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}), false)
			big := func() *mailsec.Message {
				m := message()
				m.Attachments = []mailsec.Attachment{{Filename: "a.bin", Content: bytes.NewReader(bytes.Repeat([]byte("0123456789abcdef"), 20000))}}
				return m
			}
			id, err := ob.Enqueue(context.Background(), big(), nil)
			if err != nil {
				t.Fatal(err)
			}
			other, err := ob.Enqueue(context.Background(), big(), nil)
			if err != nil {
				t.Fatal(err)
			}
			tc.tamper(t, rawDB(t, path), id, other)
			// The other message is there to be copied from, not sent.
			if err := ob.Cancel(context.Background(), other); err != nil {
				t.Fatal(err)
			}
			if err := ob.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			st := waitFor(t, ob, id, outbox.Failed, 20*time.Second)
			if st.Problem == "" || !strings.Contains(st.Problem, "does not authenticate") {
				t.Fatalf("problem %q", st.Problem)
			}
			if !strings.Contains(logs.String(), "does not authenticate") {
				t.Fatalf("not logged:\n%s", logs.String())
			}
			for _, m := range srv.Messages() {
				t.Fatalf("a tampered message was delivered to %v", m.To)
			}
			if n := srv.Transactions(); n > 0 && !strings.Contains(tc.name, "chunk") {
				t.Fatalf("%d transactions started", n)
			}
		})
	}
}

func exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	res, err := db.Exec(q, args...)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%d rows changed by %s", n, q)
	}
}

// An outbox opened otherwise than the database's records it (with keys on
// a plaintext outbox, plaintext on a sealed one) is refused with a
// ConfigError, and the record and the messages are left as they were.
func testStorageModeKept(t *testing.T, db func() string) {
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	for _, c := range []struct {
		made, other *outbox.Options
		field       string
	}{
		{&outbox.Options{Plaintext: true}, &outbox.Options{Keys: []outbox.Key{testKey}}, "Options.Keys"},
		{&outbox.Options{Keys: []outbox.Key{testKey}}, &outbox.Options{Plaintext: true}, "Options.Plaintext"},
	} {
		path := db()
		ob, err := outbox.Open(context.Background(), s, path, c.made)
		if err != nil {
			t.Fatal(err)
		}
		id, err := ob.Enqueue(context.Background(), message(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := ob.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, skip := range []bool{false, true} {
			o := *c.other
			o.SkipMigrations = skip
			ob, err := outbox.Open(context.Background(), s, path, &o)
			var ce *mailsec.ConfigError
			if !errors.As(err, &ce) || ce.Field != c.field || ob != nil {
				if ob != nil {
					_ = ob.Close(context.Background())
				}
				t.Fatalf("Open (SkipMigrations %v) of an outbox made otherwise: %v; want a ConfigError on %s", skip, err, c.field)
			}
		}
		ob = openAt(t, s, path, c.made, false)
		st, err := ob.Status(context.Background(), id)
		if err != nil || st.State != outbox.Queued || st.Sealed == c.made.Plaintext {
			t.Fatalf("after the refusal: %+v, %v", st, err)
		}
		if err := ob.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStorageModeKeptSQLite(t *testing.T) {
	testStorageModeKept(t, func() string { return filepath.Join(t.TempDir(), "mail.db") })
}

func TestStorageModeKeptPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	testStorageModeKept(t, func() string { return pg.NewDatabase(t) })
}

// WaitingForKeys counts the unfinished messages sealed under a key the
// outbox was not given.
func testWaitingForKeys(t *testing.T, db string) {
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	oldKey, newKey := outbox.NewKey(), outbox.NewKey()
	ob := openAt(t, s, db, &outbox.Options{Keys: []outbox.Key{oldKey}}, false)
	for range 2 {
		if _, err := ob.Enqueue(context.Background(), message(), nil); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := ob.WaitingForKeys(context.Background()); err != nil || n != 0 {
		t.Fatalf("WaitingForKeys with the key: %d, %v", n, err)
	}
	if err := ob.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	ob = openAt(t, s, db, &outbox.Options{Keys: []outbox.Key{newKey}}, false)
	if _, err := ob.Enqueue(context.Background(), message(), nil); err != nil {
		t.Fatal(err)
	}
	if n, err := ob.WaitingForKeys(context.Background()); err != nil || n != 2 {
		t.Fatalf("WaitingForKeys without the old key: %d, %v; want 2 of 3", n, err)
	}
	if err := ob.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	ob = openAt(t, s, db, &outbox.Options{Keys: []outbox.Key{newKey, oldKey}}, false)
	if n, err := ob.WaitingForKeys(context.Background()); err != nil || n != 0 {
		t.Fatalf("WaitingForKeys with both keys: %d, %v", n, err)
	}
}

func TestWaitingForKeysSQLite(t *testing.T) {
	testWaitingForKeys(t, filepath.Join(t.TempDir(), "mail.db"))
}

func TestWaitingForKeysPostgres(t *testing.T) {
	testWaitingForKeys(t, pgtest.Start(t).NewDatabase(t))
}
