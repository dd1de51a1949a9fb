package pgtest

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// connect opens a pgx connection to url, closed when t ends.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestStartConnect(t *testing.T) {
	pg := Start(t)
	if !strings.HasPrefix(pg.URL(), "postgres://postgres@127.0.0.1:") {
		t.Errorf("URL() = %q, want a postgres:// URL on 127.0.0.1", pg.URL())
	}
	conn := connect(t, pg.URL())
	if v := queryString(t, conn, "SELECT version()"); !strings.Contains(v, "PostgreSQL") {
		t.Errorf("version() = %q", v)
	}
	for setting, want := range map[string]string{
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": "",
		"fsync":                   "off",
		"synchronous_commit":      "on",
		"server_encoding":         "UTF8",
	} {
		if got := queryString(t, conn, "SELECT current_setting($1)", setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if u := queryString(t, conn, "SELECT current_user"); u != Superuser {
		t.Errorf("current_user = %q, want %q", u, Superuser)
	}
	if db := queryString(t, conn, "SELECT current_database()"); db != DefaultDatabase {
		t.Errorf("current_database() = %q, want %q", db, DefaultDatabase)
	}
	if !pg.Running() {
		t.Error("Running() = false for a started server")
	}
}

func TestNewDatabase(t *testing.T) {
	pg := Start(t)
	a, b := pg.NewDatabase(t), pg.NewDatabase(t)
	if a == b {
		t.Fatalf("NewDatabase returned %q twice", a)
	}
	ca, cb := connect(t, a), connect(t, b)
	mustExec(t, ca, "CREATE TABLE only_in_a (x int)")
	if got := queryString(t, cb, "SELECT count(*)::text FROM pg_tables WHERE tablename = 'only_in_a'"); got != "0" {
		t.Errorf("a table created in %s is visible in %s", a, b)
	}

	// A database made in a subtest is dropped when the subtest ends, even
	// with a session the subtest left open.
	var name string
	t.Run("sub", func(t *testing.T) {
		url := pg.NewDatabase(t)
		c := connect(t, url)
		name = queryString(t, c, "SELECT current_database()")
		if !strings.HasPrefix(name, "t") || !strings.Contains(name, "sub") {
			t.Errorf("database name %q does not name the test", name)
		}
		open, err := pgx.Connect(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		_ = open // left open on purpose
	})
	admin := connect(t, pg.URL())
	if got := queryString(t, admin, "SELECT count(*)::text FROM pg_database WHERE datname = $1", name); got != "0" {
		t.Errorf("database %q still exists after its test ended", name)
	}
}

// TestNewDatabaseLongName checks that a long test name still gives a
// valid, unique database name.
func TestNewDatabaseLongName(t *testing.T) {
	pg := Start(t)
	long := strings.Repeat("x", 100)
	var names []string
	for range 2 {
		t.Run(long, func(t *testing.T) {
			c := connect(t, pg.NewDatabase(t))
			names = append(names, queryString(t, c, "SELECT current_database()"))
		})
	}
	if len(names) != 2 || names[0] == names[1] || len(names[0]) > 63 {
		t.Errorf("database names %q: want two distinct names of at most 63 bytes", names)
	}
}

func TestRestart(t *testing.T) {
	pg := Start(t)
	url := pg.NewDatabase(t)
	conn := connect(t, url)
	mustExec(t, conn, "CREATE TABLE jobs (id int PRIMARY KEY, note text)")
	mustExec(t, conn, "INSERT INTO jobs VALUES (1, 'committed')")

	// A transaction still open when the server goes down is lost; a
	// committed one is not.
	pending, err := connect(t, url).Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pending.Exec(context.Background(), "INSERT INTO jobs VALUES (2, 'uncommitted')"); err != nil {
		t.Fatal(err)
	}

	port := pg.Port()
	pg.Restart(t)
	if pg.Port() != port || !strings.Contains(url, ":"+strconv.Itoa(port)+"/") {
		t.Fatalf("port changed across Restart: %d, then %d", port, pg.Port())
	}
	if err := conn.Ping(context.Background()); err == nil {
		t.Error("a session from before the restart still works")
	}
	after := connect(t, url)
	if got := queryString(t, after, "SELECT string_agg(note, ',' ORDER BY id) FROM jobs"); got != "committed" {
		t.Errorf("after Restart the table holds %q, want only the committed row", got)
	}
}

func TestOutage(t *testing.T) {
	pg := Start(t)
	url := pg.NewDatabase(t)
	conn := connect(t, url)
	mustExec(t, conn, "CREATE TABLE t (x int)")
	mustExec(t, conn, "INSERT INTO t VALUES (42)")

	pg.Stop(t)
	if pg.Running() {
		t.Error("Running() = true after Stop")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := pgx.Connect(ctx, url); err == nil {
		c.Close(ctx)
		t.Fatal("connected to a stopped server")
	}
	if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (43)"); err == nil {
		t.Fatal("an insert succeeded during the outage")
	}

	pg.Start(t)
	if !pg.Running() {
		t.Error("Running() = false after Start")
	}
	if got := queryString(t, connect(t, url), "SELECT string_agg(x::text, ',') FROM t"); got != "42" {
		t.Errorf("after the outage the table holds %q, want 42", got)
	}
}

func TestDump(t *testing.T) {
	pg := Start(t)
	url := pg.NewDatabase(t)
	conn := connect(t, url)
	const textCanary, byteaCanary = "canary-in-text-7f3a", "canary-in-bytea-91c2"
	mustExec(t, conn, "CREATE TABLE messages (subject text, body bytea)")
	mustExec(t, conn, "INSERT INTO messages VALUES ($1, $2)", textCanary, []byte(byteaCanary))

	dump := pg.Dump(t, url)
	if !bytes.Contains(dump, []byte("CREATE TABLE public.messages")) {
		t.Errorf("the dump has no CREATE TABLE for messages:\n%s", dump)
	}
	if !bytes.Contains(dump, []byte(textCanary)) {
		t.Errorf("the dump lacks the text column's value %q", textCanary)
	}
	// As the doc says: bytea values are dumped in hex.
	if !bytes.Contains(dump, []byte(hex.EncodeToString([]byte(byteaCanary)))) {
		t.Errorf("the dump lacks the hex form of the bytea value %q", byteaCanary)
	}
	if bytes.Contains(dump, []byte(byteaCanary)) {
		t.Errorf("the dump holds the bytea value %q in clear; Dump's doc says hex", byteaCanary)
	}
	// Another database's rows are not in this dump.
	other := pg.NewDatabase(t)
	if bytes.Contains(pg.Dump(t, other), []byte(textCanary)) {
		t.Error("the dump of another database holds the canary")
	}
}

// TestCleanup checks that a server started in a subtest is gone, with its
// directory, when the subtest ends.
func TestCleanup(t *testing.T) {
	var pg *Instance
	var pid int
	t.Run("sub", func(t *testing.T) {
		pg = Start(t)
		pg.mu.Lock()
		pid = pg.proc.cmd.Process.Pid
		pg.mu.Unlock()
		if _, err := os.Stat(pg.data); err != nil {
			t.Fatal(err)
		}
	})
	if pg == nil {
		t.Fatal("the subtest did not start a server")
	}
	if _, err := os.Stat(pg.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("instance directory %s: %v, want it removed", pg.dir, err)
	}
	if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("server process %d still exists", pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := pgx.Connect(ctx, pg.URL()); err == nil {
		c.Close(ctx)
		t.Error("connected to a server after its test ended")
	}
	if pg.Running() {
		t.Error("Running() = true after cleanup")
	}
}

// TestTemplate checks that instances are independent and that, once one
// instance ran initdb, the next copies the cached template.
func TestTemplate(t *testing.T) {
	first, second := Start(t), Start(t)
	if first.Port() == second.Port() || first.dir == second.dir {
		t.Fatalf("two instances share port %d or directory %s", first.Port(), first.dir)
	}
	mustExec(t, connect(t, first.URL()), "CREATE TABLE only_in_first (x int)")
	if got := queryString(t, connect(t, second.URL()), "SELECT count(*)::text FROM pg_tables WHERE tablename = 'only_in_first'"); got != "0" {
		t.Error("a table created in one instance is visible in another")
	}
	tmpl, err := templatePath(first.tl)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(tmpl), 0o700)
	}
	if err != nil {
		t.Skipf("no usable cache directory, so no template: %v", err)
	}
	if !isCluster(tmpl) {
		t.Fatalf("no template in %s after two starts", tmpl)
	}
	if !second.FromTemplate {
		t.Error("the second instance ran initdb although a template was cached")
	}
	t.Logf("start-up: %v (template: %v), %v (template: %v)",
		first.StartupTime, first.FromTemplate, second.StartupTime, second.FromTemplate)
}

func TestUnavailable(t *testing.T) {
	_, err := findToolsIn(t.TempDir())
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("findToolsIn(empty directory) = %v, want ErrUnavailable", err)
	}
	// A version too old to be used is skipped.
	dir := t.TempDir()
	bin := filepath.Join(dir, "12", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"initdb", "postgres", "pg_dump"} {
		if err := os.WriteFile(filepath.Join(bin, p), []byte("#!/bin/sh\necho 'postgres (PostgreSQL) 12'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := findToolsIn(dir); !errors.Is(err, ErrUnavailable) {
		t.Errorf("findToolsIn(only version 12) = %v, want ErrUnavailable", err)
	}
}

func TestSanitize(t *testing.T) {
	if got := sanitize("TestX/Sub-Case#01"); got != "testx_sub_case_01" {
		t.Errorf("sanitize = %q", got)
	}
}

// TestLaunchDurable checks Launch for programs: fsync on with Durable, and
// Close stops the server and removes its directory.
func TestLaunchDurable(t *testing.T) {
	if _, err := findTools(); err != nil {
		Start(t) // skips, or fails in CI
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg, err := Launch(ctx, Options{Durable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	var fsync string
	err = conn.QueryRow(ctx, "SELECT current_setting('fsync')").Scan(&fsync)
	conn.Close(ctx)
	if err != nil || fsync != "on" {
		t.Errorf("fsync = %q (%v), want on", fsync, err)
	}
	if err := pg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pg.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("instance directory %s: %v, want it removed", pg.dir, err)
	}
	if err := pg.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
