package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// queueEnv is an environment with a fresh outbox key.
func queueEnv(t *testing.T) (map[string]string, outbox.Key) {
	k := outbox.NewKey()
	return map[string]string{outboxKeyEnv: k.Base64()}, k
}

// enqueueCmd queues a message with mailsec send -queue and returns its ID.
func enqueueCmd(t *testing.T, environ map[string]string, db string, extra ...string) string {
	t.Helper()
	args := append([]string{"send", "-queue", db,
		"-from", "noreply@example.com", "-subject", "Queued canary-subject", "-body", "-"}, extra...)
	r := runCmd(t, "Queued canary-body.\n", environ, args...)
	wantCode(t, r, 0)
	id := strings.TrimSpace(r.stdout)
	if len(id) != 26 || strings.ContainsAny(id, " \n") {
		t.Fatalf("send -queue printed %q, want the message's ID", r.stdout)
	}
	if !strings.Contains(r.stderr, "queued as "+id) {
		t.Errorf("stderr = %q, want it to say the message is queued", r.stderr)
	}
	return id
}

func showJSON(t *testing.T, environ map[string]string, db, id string) *outbox.Status {
	t.Helper()
	r := runCmd(t, "", environ, "queue", "show", id, "-db", db, "-json")
	wantCode(t, r, 0)
	var st outbox.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("show -json: %v\n%s", err, r.stdout)
	}
	return &st
}

// testQueueRoundTrip queues with send -queue, lists, delivers with queue
// run -once, and shows, on the database db.
func testQueueRoundTrip(t *testing.T, db string) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	environ, _ := queueEnv(t)
	id := enqueueCmd(t, environ, db, "-to", "ann@example.org,dan@example.org", "-bcc", "bob@example.org")
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("send -queue sent %d messages", n)
	}

	r := runCmd(t, "", environ, "queue", "list", "-db", db)
	wantCode(t, r, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], id) || !strings.Contains(lines[1], " queued ") || !strings.Contains(lines[1], "  3  ") {
		t.Fatalf("queue list:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, "example.org") || strings.Contains(r.stdout, "canary") {
		t.Errorf("queue list shows addresses or content:\n%s", r.stdout)
	}

	ca := caFile(t, srv)
	r = runCmd(t, "", environ, "queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", ca)
	wantCode(t, r, 0)
	if got := progressLines(r.stderr); len(got) != 3 {
		t.Errorf("queue run: %d progress lines, want 3:\n%s", len(got), r.stderr)
	}
	if !strings.Contains(r.stderr, id+" attempt 1: delivered") || !strings.Contains(r.stderr, "nothing due; 0 messages queued for later") {
		t.Errorf("queue run stderr:\n%s", r.stderr)
	}
	if got := received(t, srv); !strings.Contains(string(got), "canary-body") {
		t.Errorf("the server did not get the message:\n%s", got)
	}
	if n := len(srv.Messages()); n != 2 { // To recipients together, the Bcc one alone
		t.Errorf("%d messages delivered, want 2", n)
	}

	st := showJSON(t, environ, db, id)
	if st.ID != id || st.State != outbox.Delivered || len(st.Recipients) != 3 || len(st.Attempts) != 1 || !st.Sealed {
		t.Errorf("show -json: %+v", st)
	}
	r = runCmd(t, "", environ, "queue", "show", "-db", db, id)
	wantCode(t, r, 0)
	for _, want := range []string{"state:      delivered", "ann@example.org (to): accepted, 1 attempt", "bob@example.org (bcc): accepted",
		"1: ", "ann@example.org: accepted by 127.0.0.1 (TLS 1.3, webpki)", "storage:    sealed, key " + st.KeyID} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("queue show lacks %q:\n%s", want, r.stdout)
		}
	}

	r = runCmd(t, "", environ, "queue", "list", "-db", db, "-state", "delivered,partly-delivered", "-json")
	wantCode(t, r, 0)
	var list []outbox.Summary
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 || list[0].ID != id || list[0].Recipients != 3 {
		t.Errorf("list -json: %v %+v", err, list)
	}
	r = runCmd(t, "", environ, "queue", "list", "-db", db, "-state", "queued", "-json")
	wantCode(t, r, 0)
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("list -state queued -json = %q, want []", r.stdout)
	}
}

func TestQueueRoundTripSQLite(t *testing.T) {
	t.Parallel()
	testQueueRoundTrip(t, filepath.Join(t.TempDir(), "mail.db"))
}

func TestQueueRoundTripPostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	db := pg.NewDatabase(t)
	testQueueRoundTrip(t, db)
	testQueueRetryCancel(t, db)
}

// testQueueRetryCancel: a message deferred by a 4xx waits for its
// backoff; queue retry makes it go out at the next run; cancel stops
// another; both say what is wrong with an unknown or finished message.
func testQueueRetryCancel(t *testing.T, db string) {
	environ, _ := queueEnv(t)
	busy := mailsectest.NewServer(t, mailsectest.Config{RcptReply: map[string]*mailsec.Reply{
		"later@example.org": {Code: 451, EnhancedCode: mailsec.EnhancedCode{4, 3, 0}, Text: "try again later"},
	}})
	id := enqueueCmd(t, environ, db, "-to", "later@example.org")
	other := enqueueCmd(t, environ, db, "-to", "ann@example.org")
	if r := runCmd(t, "", environ, "queue", "cancel", other, "-db", db); r.code != 0 || !strings.Contains(r.stderr, other+" is cancelled") {
		t.Fatalf("cancel: %+v", r)
	}
	r := runCmd(t, "", environ, "queue", "run", "-db", db, "-once", "-server", busy.Addr, "-ca", caFile(t, busy))
	wantCode(t, r, 0)
	if !strings.Contains(r.stderr, id+" attempt 1: queued, next ") || !strings.Contains(r.stderr, "1 message queued for later") {
		t.Fatalf("queue run against a busy server:\n%s", r.stderr)
	}
	if st := showJSON(t, environ, db, id); st.State != outbox.Queued || time.Until(st.Next) < 10*time.Second {
		t.Fatalf("after a 451: %+v", st)
	}

	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ca := caFile(t, srv)
	// Not due: a run delivers nothing.
	r = runCmd(t, "", environ, "queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", ca)
	wantCode(t, r, 0)
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("a message not due was delivered (%d)", n)
	}
	r = runCmd(t, "", environ, "queue", "retry", id, "-db", db)
	wantCode(t, r, 0)
	if !strings.Contains(r.stderr, id+" is due now") {
		t.Errorf("retry stderr: %q", r.stderr)
	}
	r = runCmd(t, "", environ, "queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", ca)
	wantCode(t, r, 0)
	if st := showJSON(t, environ, db, id); st.State != outbox.Delivered || len(st.Attempts) != 2 {
		t.Fatalf("after retry and run: %+v", st)
	}
	if got := srv.MessagesFor("ann@example.org"); len(got) != 0 {
		t.Errorf("the cancelled message was delivered")
	}
	if st := showJSON(t, environ, db, other); st.State != outbox.Cancelled {
		t.Errorf("cancelled message: %+v", st)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"retry", id}, "already finished"},
		{[]string{"cancel", other}, "already finished"},
		{[]string{"retry", "nosuchmessage"}, "no such message"},
		{[]string{"cancel", "nosuchmessage"}, "no such message"},
		{[]string{"show", "nosuchmessage"}, "no such message"},
	} {
		r := runCmd(t, "", environ, append(append([]string{"queue"}, c.args...), "-db", db)...)
		wantCode(t, r, 1)
		if !strings.Contains(r.stderr, c.want) {
			t.Errorf("queue %v: stderr %q, want %q", c.args, r.stderr, c.want)
		}
	}
}

func TestQueueRetryCancelSQLite(t *testing.T) {
	t.Parallel()
	testQueueRetryCancel(t, filepath.Join(t.TempDir(), "mail.db"))
}

// queue run without -once delivers until interrupted, and then stops
// cleanly.
func TestQueueRunUntilInterrupted(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	environ, _ := queueEnv(t)
	db := filepath.Join(t.TempDir(), "mail.db")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- runCtx(t, ctx, "", environ, "queue", "run", "-db", db, "-server", srv.Addr, "-ca", caFile(t, srv))
	}()
	id := enqueueCmd(t, environ, db, "-to", "ann@example.org")
	deadline := time.Now().Add(20 * time.Second)
	for len(srv.Messages()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(srv.Messages()) != 1 {
		t.Fatal("queue run did not deliver the message queued while it ran")
	}
	cancel()
	select {
	case r := <-done:
		wantCode(t, r, 0)
		if !strings.Contains(r.stderr, id+" attempt 1: delivered") {
			t.Errorf("queue run stderr:\n%s", r.stderr)
		}
	case <-time.After(closeTimeout + 10*time.Second):
		t.Fatal("queue run did not stop when interrupted")
	}
}

// The key comes only from MAILSEC_OUTBOX_KEY: without it every command
// refuses, naming the variable; with it, no output and no error ever
// shows it.
func TestQueueKey(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "mail.db")
	environ, key := queueEnv(t)
	enqueueCmd(t, environ, db, "-to", "ann@example.org")
	for _, args := range [][]string{
		{"send", "-queue", db, "-from", "a@example.com", "-to", "b@example.org", "-subject", "x"},
		{"queue", "list", "-db", db},
		{"queue", "show", "x", "-db", db},
		{"queue", "retry", "x", "-db", db},
		{"queue", "cancel", "x", "-db", db},
		{"queue", "run", "-db", db, "-once", "-server", "127.0.0.1:1"},
	} {
		r := runCmd(t, "", nil, args...)
		wantCode(t, r, 2)
		if !strings.Contains(r.stderr, outboxKeyEnv) || !strings.Contains(r.stderr, "not set") {
			t.Errorf("mailsec %v without a key: stderr %q, want it to name %s", args, r.stderr, outboxKeyEnv)
		}
	}

	good := key.Base64()
	// A malformed second key: the error says which, by position.
	bad := outbox.NewKey().Base64()
	bad = bad[:len(bad)-4]
	r := runCmd(t, "", map[string]string{outboxKeyEnv: good + "," + bad}, "queue", "list", "-db", db)
	wantCode(t, r, 2)
	if !strings.Contains(r.stderr, "key 2") {
		t.Errorf("malformed key: stderr %q, want it to name key 2", r.stderr)
	}

	// Every command, its successes and its failures, with the key (and a
	// wrong one) in the environment.
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	wrong := outbox.NewKey()
	var outputs []result
	id := enqueueCmd(t, environ, db, "-to", "dan@example.org")
	for _, c := range []struct {
		env  map[string]string
		args []string
	}{
		{environ, []string{"queue", "list", "-db", db}},
		{environ, []string{"queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", caFile(t, srv)}},
		{environ, []string{"queue", "show", id, "-db", db}},
		{environ, []string{"queue", "show", id, "-db", db, "-json"}},
		{environ, []string{"queue", "retry", id, "-db", db}},
		{environ, []string{"queue", "cancel", "nosuch", "-db", db}},
		{environ, []string{"send", "-queue", db, "-from", "bad address", "-to", "b@example.org", "-subject", "x"}},
		{map[string]string{outboxKeyEnv: wrong.Base64()}, []string{"queue", "show", id, "-db", db}},
		{map[string]string{outboxKeyEnv: wrong.Base64()}, []string{"queue", "list", "-db", db}},
		{map[string]string{outboxKeyEnv: wrong.Base64() + "," + bad}, []string{"queue", "list", "-db", db}},
	} {
		outputs = append(outputs, runCmd(t, "", c.env, c.args...))
	}
	// The wrong key's status does not open, and says so.
	if r := outputs[7]; r.code != 1 || !strings.Contains(r.stderr, "key") {
		t.Errorf("show with a wrong key: %+v", r)
	}
	raw, _ := base64.StdEncoding.DecodeString(good)
	rawWrong, _ := base64.StdEncoding.DecodeString(wrong.Base64())
	for i, r := range outputs {
		for _, secret := range []string{good, wrong.Base64(), bad, hex.EncodeToString(raw), hex.EncodeToString(rawWrong), string(raw), good[:16], wrong.Base64()[:16]} {
			if strings.Contains(r.stdout, secret) || strings.Contains(r.stderr, secret) {
				t.Errorf("command %d shows a key (%q):\nstdout %s\nstderr %s", i, secret[:4], r.stdout, r.stderr)
			}
		}
	}
}

func TestQueueUsage(t *testing.T) {
	t.Parallel()
	environ, _ := queueEnv(t)
	db := filepath.Join(t.TempDir(), "mail.db")
	missing := filepath.Join(t.TempDir(), "none.db")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"send", "-queue", db, "-server", "127.0.0.1:587", "-from", "a@example.com", "-to", "b@example.org", "-subject", "x"}, "-server goes to mailsec queue run"},
		{[]string{"send", "-queue", db, "-pgp-keys", "k.asc", "-from", "a@example.com", "-to", "b@example.org", "-subject", "x"}, "-pgp-keys goes to mailsec queue run"},
		{[]string{"send", "-queue", db, "-from", "a@example.com", "-subject", "x"}, "at least one recipient"},
		{[]string{"queue"}, "no subcommand"},
		{[]string{"queue", "purge"}, `unknown subcommand "purge"`},
		{[]string{"queue", "list"}, "-db is required"},
		{[]string{"queue", "list", "-db", missing}, "no such file"},
		{[]string{"queue", "show", "-db", db}, "ID is required"},
		{[]string{"queue", "show", "a", "b", "-db", db}, "unexpected argument"},
		{[]string{"queue", "retry", "a", "-db", db, "b"}, "unexpected argument"},
		{[]string{"queue", "show", "-db", db, "a", "b"}, "unexpected argument"},
		{[]string{"queue", "show", "-db", db, "a", "-json", "b"}, "unexpected argument"},
		{[]string{"queue", "cancel", "-db", db, "a", "-json"}, "unknown flag -json"},
		{[]string{"queue", "list", "-db", db, "-state", "done"}, `-state "done"`},
		{[]string{"queue", "list", "-db", db, "-limit", "0"}, "-limit must be positive"},
		{[]string{"queue", "run", "-db", db}, "-server or -mx is required"},
		{[]string{"queue", "run", "-server", "127.0.0.1:587"}, "-db is required"},
		{[]string{"queue", "run", "-db", db, "-server", "127.0.0.1:587", "-user", "app"}, "MAILSEC_PASSWORD"},
		{[]string{"queue", "run", "-db", db, "-server", "127.0.0.1:587", "-from", "a@example.com"}, "unknown flag -from"},
	} {
		r := runCmd(t, "", environ, c.args...)
		wantCode(t, r, 2)
		if !strings.Contains(r.stderr, c.want) {
			t.Errorf("mailsec %v: stderr %q, want %q", c.args, r.stderr, c.want)
		}
	}
	if _, err := filepath.Glob(missing); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, "", environ, "help", "queue")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "mailsec queue run -db DB") || !strings.Contains(r.stdout, outboxKeyEnv) {
		t.Errorf("help queue:\n%s", r.stdout)
	}
}

// An invalid message fails at send -queue, with nothing queued.
func TestQueueInvalidMessage(t *testing.T) {
	t.Parallel()
	environ, _ := queueEnv(t)
	db := filepath.Join(t.TempDir(), "mail.db")
	r := runCmd(t, "", environ, "send", "-queue", db, "-from", "noreply@example.com", "-to", "ann@example.org\r\nRCPT TO:<x@evil.example>", "-subject", "x")
	wantCode(t, r, 1)
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing", r.stdout)
	}
	r = runCmd(t, "", environ, "queue", "list", "-db", db, "-json")
	wantCode(t, r, 0)
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("an invalid message was queued: %s", r.stdout)
	}
}

// plaintextOutbox makes an outbox the library opened with Plaintext (an
// explicit, recorded choice) and queues a message in it.
func plaintextOutbox(t *testing.T, db string) string {
	t.Helper()
	s, err := mailsec.NewSender(noDelivery{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.Open(t.Context(), s, db, &outbox.Options{Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	id, err := ob.Enqueue(t.Context(), &mailsec.Message{From: "noreply@example.com", To: []string{"ann@example.org"}, Subject: "hi", Text: "plain"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	return id
}

// The command line, which has no plaintext mode, refuses a plaintext
// outbox (exit 1, saying so) rather than open its messages under
// MAILSEC_OUTBOX_KEY, which would take them for tampered with and end
// them failed; the message stays queued, and the outbox's record of its
// storage is not changed, not even by list.
func testQueuePlaintextOutboxRefused(t *testing.T, db string) {
	id := plaintextOutbox(t, db)
	environ, _ := queueEnv(t)
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	for _, args := range [][]string{
		{"queue", "list", "-db", db},
		{"queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", caFile(t, srv)},
	} {
		r := runCmd(t, "", environ, args...)
		wantCode(t, r, 1)
		if !strings.Contains(r.stderr, "plaintext") {
			t.Errorf("mailsec %v on a plaintext outbox: stderr %q, want it to say the outbox is plaintext", args[:2], r.stderr)
		}
	}
	s, _ := mailsec.NewSender(noDelivery{}, nil)
	ob, err := outbox.Open(t.Context(), s, db, &outbox.Options{Plaintext: true})
	if err != nil {
		t.Fatalf("the plaintext outbox does not open as plaintext after the commands: %v", err)
	}
	defer ob.Close(context.Background())
	st, err := ob.Status(t.Context(), id)
	if st == nil {
		t.Fatalf("the plaintext outbox's own Status of its message fails: %v", err)
	}
	if st.State != outbox.Queued || st.Sealed {
		t.Errorf("the plaintext outbox's message is %s (sealed %v, problem %q), want it still queued in plaintext", st.State, st.Sealed, st.Problem)
	}
}

func TestQueuePlaintextOutboxRefusedSQLite(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "mail.db")
	testQueuePlaintextOutboxRefused(t, db)
	sdb, err := outbox.OpenSQLiteDB(db)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	var mode string
	if err := sdb.QueryRow(`SELECT value FROM mailsec_outbox_meta WHERE name = 'storage'`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "plaintext" {
		t.Errorf("the outbox records its storage as %q; its messages are stored in plaintext", mode)
	}
}

func TestQueuePlaintextOutboxRefusedPostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	testQueuePlaintextOutboxRefused(t, pg.NewDatabase(t))
}

// A database password given in the URL's query (password=, sslpassword=,
// which pgx reads) or in its userinfo under a scheme in capitals is never
// printed: not in the errors of a database that cannot be reached, nor
// in queue run's "delivering from" line.
func TestQueueDBPasswordNotShown(t *testing.T) {
	t.Parallel()
	environ, _ := queueEnv(t)
	const secret = "s3cretQueryPW"
	for _, db := range []string{
		// An unreachable server: every command fails opening the outbox.
		"postgres://app@127.0.0.1:1/mail?sslmode=disable&password=" + secret,
		"postgres://app@127.0.0.1:1/mail?sslmode=disable&sslpassword=" + secret,
		"POSTGRES://app:" + secret + "@127.0.0.1:1/mail?sslmode=disable",
		"PostgreSQL://app@127.0.0.1:1/mail?sslmode=disable&password=" + secret,
		// Not a port: pgx's own error quotes the URL.
		"postgres://app@127.0.0.1:x/mail?password=" + secret,
	} {
		for _, args := range [][]string{
			{"queue", "list", "-db", db},
			{"queue", "show", "x", "-db", db},
			{"queue", "run", "-db", db, "-once", "-server", "127.0.0.1:1"},
			{"send", "-queue", db, "-from", "a@example.com", "-to", "b@example.org", "-subject", "x"},
		} {
			r := runCmd(t, "", environ, args...)
			if r.code == 0 {
				t.Errorf("mailsec %v: exit 0 on an unreachable database", args[:2])
			}
			if strings.Contains(r.stderr, secret) || strings.Contains(r.stdout, secret) {
				t.Errorf("mailsec %v prints the database password:\n%s", args[:2], r.stderr)
			}
		}
	}
}

func TestQueueRunDBPasswordNotShown(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	const secret = "s3cretQueryPW"
	db := pg.NewDatabase(t) + "&password=" + secret // trust auth ignores it
	environ, _ := queueEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan result, 1)
	go func() {
		done <- runCtx(t, ctx, "", environ, "queue", "run", "-db", strings.Replace(db, "postgres://", "POSTGRES://", 1), "-server", "127.0.0.1:1")
	}()
	time.Sleep(3 * time.Second)
	cancel()
	r := <-done
	if !strings.Contains(r.stderr, "delivering from postgres://") {
		t.Errorf("queue run does not say where it delivers from:\n%s", r.stderr)
	}
	if strings.Contains(r.stderr, secret) {
		t.Errorf("queue run prints the database password:\n%s", r.stderr)
	}
}

func TestDBName(t *testing.T) {
	for _, c := range []struct{ db, want string }{
		{"mail.db", "mail.db"},
		{"postgres://app:pw@h/db", "postgres://app:xxxxx@h/db"},
		{"POSTGRES://app:pw@h/db", "postgres://app:xxxxx@h/db"},
		{"postgresql://app@h/db?sslmode=disable&password=pw", "postgresql://app@h/db?password=xxxxx&sslmode=disable"},
		{"postgres://app@h/db?sslpassword=pw&Password=pw2", "postgres://app@h/db?Password=xxxxx&sslpassword=xxxxx"},
		{"postgres://app@h/db?password=pw;x", "postgres://app@h/db?..."},
		{"postgres://app@h/db#password=pw", "postgres://app@h/db"},
		{"postgres://app:p%zz@h/db", "the postgres:// URL given"},
	} {
		if got := dbName(c.db); got != c.want {
			t.Errorf("dbName(%q) = %q, want %q", c.db, got, c.want)
		}
	}
}

// send -queue refuses a database that would not keep the message: SQLite's
// in-memory ":memory:" (and its URIs), which would say "queued" and lose
// the message at exit.
func TestQueueNotDurableRefused(t *testing.T) {
	t.Chdir(t.TempDir())
	environ, _ := queueEnv(t)
	for _, db := range []string{":memory:", "file::memory:", "file:mail.db"} {
		r := runCmd(t, "", environ, "send", "-queue", db, "-from", "a@example.com", "-to", "b@example.org", "-subject", "x")
		wantCode(t, r, 1)
		if strings.Contains(r.stderr, "queued as") || !strings.Contains(r.stderr, "give a file path") {
			t.Errorf("send -queue %s: stderr %q, want a refusal that asks for a file path", db, r.stderr)
		}
	}
	if m, _ := filepath.Glob("*"); len(m) != 0 {
		t.Errorf("send -queue made %v", m)
	}
}

// list, show, retry and cancel make and migrate nothing: on a database
// that holds no outbox (an application's SQLite file, an empty Postgres
// database) they exit 2 saying so, and add no table; on an outbox of an
// earlier schema version they exit 1, naming queue run, which brings it
// up to date.
func TestQueueInspectMakesNoOutbox(t *testing.T) {
	t.Parallel()
	environ, _ := queueEnv(t)
	app := filepath.Join(t.TempDir(), "app.db")
	sdb, err := outbox.OpenSQLiteDB(app)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sdb.Exec(`CREATE TABLE users (id INTEGER)`); err != nil {
		t.Fatal(err)
	}
	sdb.Close()
	pg := pgtest.Start(t)
	pgdb := pg.NewDatabase(t)
	for _, db := range []string{app, pgdb} {
		for _, args := range [][]string{
			{"queue", "list", "-db", db},
			{"queue", "show", "x", "-db", db},
			{"queue", "retry", "x", "-db", db},
			{"queue", "cancel", "x", "-db", db},
		} {
			r := runCmd(t, "", environ, args...)
			wantCode(t, r, 2)
			if !strings.Contains(r.stderr, "holds no outbox") {
				t.Errorf("mailsec %v on a database with no outbox: stderr %q", args[:2], r.stderr)
			}
		}
	}
	sdb, err = outbox.OpenSQLiteDB(app)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	var n int
	if err := sdb.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name <> 'users'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the queue commands added %d tables to the application's database", n)
	}
	conn, err := pgx.Connect(t.Context(), pgdb)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the queue commands added %d tables to the Postgres database", n)
	}

	// An outbox of an earlier schema version: list says to run queue run,
	// which brings it up to date.
	db := filepath.Join(t.TempDir(), "mail.db")
	id := enqueueCmd(t, environ, db, "-to", "ann@example.org")
	old, err := outbox.OpenSQLiteDB(db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec(`UPDATE mailsec_outbox_schema SET version = 3`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	r := runCmd(t, "", environ, "queue", "list", "-db", db)
	wantCode(t, r, 1)
	if !strings.Contains(r.stderr, "earlier version") || !strings.Contains(r.stderr, "mailsec queue run -db "+db) {
		t.Errorf("queue list on an outbox of schema version 3: stderr %q", r.stderr)
	}
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	wantCode(t, runCmd(t, "", environ, "queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", caFile(t, srv)), 0)
	if st := showJSON(t, environ, db, id); st.State != outbox.Delivered {
		t.Errorf("after queue run: %s", st.State)
	}
}

// A postgres URL with pool_max_conns=1 works: send -queue makes the
// outbox, list lists, run -once delivers, none of them waiting for a
// second connection.
func TestQueuePoolOfOne(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	db := pg.NewDatabase(t) + "&pool_max_conns=1"
	environ, _ := queueEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r := runCtx(t, ctx, "", environ, "send", "-queue", db, "-from", "a@example.com", "-to", "b@example.org", "-subject", "x")
	wantCode(t, r, 0)
	id := strings.TrimSpace(r.stdout)
	r = runCtx(t, ctx, "", environ, "queue", "list", "-db", db)
	wantCode(t, r, 0)
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	wantCode(t, runCtx(t, ctx, "", environ, "queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", caFile(t, srv)), 0)
	if st := showJSON(t, environ, db, id); st.State != outbox.Delivered {
		t.Errorf("with a pool of one connection: %s %q", st.State, st.Problem)
	}
}

// A key listed twice in MAILSEC_OUTBOX_KEY is a malformed variable: exit
// 2, naming it and the positions, before any file is made.
func TestQueueDuplicateKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	k := outbox.NewKey().Base64()
	environ := map[string]string{outboxKeyEnv: outbox.NewKey().Base64() + "," + k + ", " + k}
	db := filepath.Join(dir, "new.db")
	r := runCmd(t, "", environ, "send", "-queue", db, "-from", "a@example.com", "-to", "b@example.org", "-subject", "x")
	wantCode(t, r, 2)
	if !strings.Contains(r.stderr, outboxKeyEnv) || !strings.Contains(r.stderr, "keys 2 and 3") {
		t.Errorf("send -queue with a key listed twice: stderr %q; want the variable and the positions named", r.stderr)
	}
	if m, _ := filepath.Glob(db + "*"); len(m) != 0 {
		t.Errorf("send -queue with a malformed key list created %v", m)
	}
	good, _ := queueEnv(t)
	enqueueCmd(t, good, db, "-to", "b@example.org")
	for _, args := range [][]string{
		{"queue", "list", "-db", db},
		{"queue", "run", "-db", db, "-once", "-server", "127.0.0.1:1"},
	} {
		r = runCmd(t, "", environ, args...)
		wantCode(t, r, 2)
		if !strings.Contains(r.stderr, outboxKeyEnv) || !strings.Contains(r.stderr, "keys 2 and 3") {
			t.Errorf("mailsec %v with a key listed twice: stderr %q; want the variable and the positions named", args[:2], r.stderr)
		}
	}
}

// queue run -once under a MAILSEC_OUTBOX_KEY that opens none of the
// queued messages exits 1, saying how many wait for their keys, so that
// a cron job run with the wrong key does not report success; with the
// right key back, the message goes out.
func TestQueueRunOnceWrongKey(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "mail.db")
	environ, _ := queueEnv(t)
	id := enqueueCmd(t, environ, db, "-to", "ann@example.org")
	wrong := map[string]string{outboxKeyEnv: outbox.NewKey().Base64()}
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ca := caFile(t, srv)
	r := runCmd(t, "", wrong, "queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", ca)
	wantCode(t, r, 1)
	if !strings.Contains(r.stderr, "1 message sealed under keys not in "+outboxKeyEnv) {
		t.Errorf("queue run -once with a key that opens no queued message: stderr %q", r.stderr)
	}
	wantCode(t, runCmd(t, "", environ, "queue", "retry", id, "-db", db), 0)
	r = runCmd(t, "", environ, "queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", ca)
	wantCode(t, r, 0)
	if st := showJSON(t, environ, db, id); st.State != outbox.Delivered {
		t.Errorf("after the right key: %s %q", st.State, st.Problem)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, os.ErrClosed }

// send -queue exits 0 once the message is queued, with or without -json,
// even when standard output fails (a caller that retries on failure would
// queue it twice), and says on standard error that the result was not
// written, naming the ID.
func TestSendQueueStdoutFailure(t *testing.T) {
	t.Parallel()
	environ, _ := queueEnv(t)
	getenv := func(k string) string { return environ[k] }
	for _, extra := range [][]string{{"-json"}, nil} {
		db := filepath.Join(t.TempDir(), "mail.db")
		var stderr strings.Builder
		args := append([]string{"send", "-queue", db, "-from", "a@example.com", "-to", "b@example.org", "-subject", "x"}, extra...)
		code := run(t.Context(), args, strings.NewReader(""), failWriter{}, &stderr, getenv)
		r := runCmd(t, "", environ, "queue", "list", "-db", db, "-json")
		var list []outbox.Summary
		if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 {
			t.Fatalf("list: %v %q", err, r.stdout)
		}
		if code != 0 {
			t.Errorf("send -queue %v with a failing stdout: exit %d, though the message is queued (stderr %q)", extra, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), list[0].ID+" is queued, but writing the result to standard output failed") {
			t.Errorf("send -queue %v with a failing stdout: stderr %q, want it to say the result was not written", extra, stderr.String())
		}
	}
}

// show, retry and cancel take their flags before the ID, after it, or
// both.
func TestQueueFlagsAfterID(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "mail.db")
	environ, _ := queueEnv(t)
	id := enqueueCmd(t, environ, db, "-to", "ann@example.org")
	r := runCmd(t, "", environ, "queue", "show", "-db", db, id, "-json")
	wantCode(t, r, 0)
	var st outbox.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.ID != id {
		t.Errorf("show -db DB ID -json: %v %q", err, r.stdout)
	}
	wantCode(t, runCmd(t, "", environ, "queue", "show", "-json", id, "-db", db), 0)
	wantCode(t, runCmd(t, "", environ, "queue", "retry", "-db", db, id), 0)
	wantCode(t, runCmd(t, "", environ, "queue", "cancel", id, "-db", db), 0)
	r = runCmd(t, "", environ, "queue", "retry", "-db", db, id)
	wantCode(t, r, 1) // finished
}

// Rotation through the CLI: messages sealed under the old key still
// open and go out when the new key is put first; new ones are sealed
// under the new key.
func TestQueueKeyRotation(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "mail.db")
	oldEnv, oldKey := queueEnv(t)
	newKey := outbox.NewKey()
	id1 := enqueueCmd(t, oldEnv, db, "-to", "ann@example.org")
	both := map[string]string{outboxKeyEnv: newKey.Base64() + ", " + oldKey.Base64()}
	id2 := enqueueCmd(t, both, db, "-to", "bob@example.org")
	if st := showJSON(t, both, db, id1); st.KeyID != oldKey.ID() {
		t.Errorf("old message key %s", st.KeyID)
	}
	if st := showJSON(t, both, db, id2); st.KeyID != newKey.ID() {
		t.Errorf("new message key %s, want the first key's %s", st.KeyID, newKey.ID())
	}
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	r := runCmd(t, "", both, "queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", caFile(t, srv))
	wantCode(t, r, 0)
	if n := len(srv.Messages()); n != 2 {
		t.Errorf("%d delivered after rotation, want 2", n)
	}
}

// A server that withholds STARTTLS: queue run never sends in plaintext.
func TestQueueRunNoPlaintextFallback(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "mail.db")
	environ, _ := queueEnv(t)
	id := enqueueCmd(t, environ, db, "-to", "ann@example.org")
	srv := mailsectest.NewServer(t, mailsectest.Config{WithholdStartTLS: true})
	r := runCmd(t, "", environ, "queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", caFile(t, srv))
	wantCode(t, r, 0)
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("sent in plaintext")
	}
	if st := showJSON(t, environ, db, id); st.State == outbox.Delivered {
		t.Errorf("recorded as delivered without TLS")
	}
}

// Several queue run -once at once on one outbox: every message once.
func testQueueConcurrentRuns(t *testing.T, db string) {
	environ, _ := queueEnv(t)
	const n = 30
	for i := 0; i < n; i++ {
		enqueueCmd(t, environ, db, "-to", "ann@example.org")
	}
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ca := caFile(t, srv)
	done := make(chan result, 3)
	for i := 0; i < 3; i++ {
		go func() {
			done <- runCmd(t, "", environ, "queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", ca)
		}()
	}
	for i := 0; i < 3; i++ {
		r := <-done
		if r.code != 0 {
			t.Errorf("concurrent run: exit %d: %s", r.code, r.stderr)
		}
	}
	if got := len(srv.Messages()); got != n {
		t.Errorf("%d messages delivered by 3 concurrent runs, want %d", got, n)
	}
	r := runCmd(t, "", environ, "queue", "list", "-db", db, "-state", "queued,sending", "-json")
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("left queued: %s", r.stdout)
	}
}

func TestQueueConcurrentRunsSQLite(t *testing.T) {
	t.Parallel()
	testQueueConcurrentRuns(t, filepath.Join(t.TempDir(), "mail.db"))
}

func TestQueueConcurrentRunsPostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	testQueueConcurrentRuns(t, pg.NewDatabase(t))
}

// The SMTP password never appears in queue run's output or a status.
func TestQueueRunSMTPPasswordNotShown(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "mail.db")
	environ, _ := queueEnv(t)
	id := enqueueCmd(t, environ, db, "-to", "ann@example.org")
	srv := mailsectest.NewServer(t, mailsectest.Config{Users: map[string]string{"app": "rightPW"}})
	env2 := map[string]string{outboxKeyEnv: environ[outboxKeyEnv], passwordEnv: "WrongSecretPW"}
	r := runCmd(t, "", env2, "queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", caFile(t, srv), "-user", "app")
	r2 := runCmd(t, "", environ, "queue", "show", id, "-db", db, "-json")
	for _, out := range []string{r.stdout, r.stderr, r2.stdout, r2.stderr} {
		if strings.Contains(out, "WrongSecretPW") || strings.Contains(out, "V3JvbmdTZWNyZXRQVw") || strings.Contains(out, "AGFwcABXcm9uZ1NlY3JldFBX") {
			t.Errorf("the SMTP password shows:\n%s", out)
		}
	}
	if st := showJSON(t, environ, db, id); st.State == outbox.Delivered {
		t.Errorf("delivered after a failed authentication")
	}
}

// A key given on the command line, wherever it is (a stray argument, an
// ID's, a command's or a subcommand's place, a file's, a flag's value, a
// list with a trailing comma, a variable assignment put after the
// command), is refused, and not printed: standard error goes to cron
// mail, journald and CI logs.
func TestKeyOnCommandLineNotPrinted(t *testing.T) {
	db := filepath.Join(t.TempDir(), "mail.db")
	environ, key := queueEnv(t)
	id := enqueueCmd(t, environ, db, "-to", "ann@example.org")
	k, other := key.Base64(), outbox.NewKey().Base64()
	for _, secret := range []string{k, k + "," + other, k + "," + other + ",", outboxKeyEnv + "=" + k} {
		for _, args := range [][]string{
			{"queue", "list", "-db", db, secret},
			{"queue", "show", id, "-db", db, secret},
			{"queue", "show", secret, "-db", db},
			{"queue", "cancel", id, "-db", db, secret},
			{"queue", "retry", "-db", db, secret},
			{"queue", "run", "-db", db, "-once", "-server", "127.0.0.1:1", secret},
			{"queue", "run", "-db", db, "-once=" + secret},
			{"queue", "list", "-db", db, "-limit", secret},
			{"queue", secret, "list", "-db", db},
			{secret, "queue", "list"},
			{"send", "-queue", db, "-from", "a@example.com", "-to", "b@example.org", "-subject", "x", secret},
			{"send", "-dkim", secret, "-from", "a@example.com", "-to", "b@example.org"},
			{"bounce", "explain", secret},
			{"check", "example.org", secret},
			{"queue", "list", "-db", db, "-key=" + secret},
			{"queue", "list", "-db", db, "-key", secret},
		} {
			r := runCmd(t, "", environ, args...)
			if r.code == exitOK {
				t.Errorf("mailsec %q: exit 0", args)
			}
			for _, s := range []string{k, other} {
				if strings.Contains(r.stderr, s) || strings.Contains(r.stdout, s) {
					t.Errorf("mailsec %q: a key is printed:\n%s", args, r.stderr)
				}
			}
		}
	}
	// Other arguments are still shown, to help find the mistake.
	if r := runCmd(t, "", environ, "queue", "list", "-db", db, "stray"); !strings.Contains(r.stderr, `"stray"`) {
		t.Errorf("a stray argument is not named: %s", r.stderr)
	}
	if r := runCmd(t, "", environ, "queue", "show", "abcdefghijklmnopqrstuvwxyz", "-db", db); !strings.Contains(r.stderr, "abcdefghijklmnopqrstuvwxyz") {
		t.Errorf("an unknown message's ID is not named: %s", r.stderr)
	}
}
