// Package pgtest starts private, throwaway PostgreSQL servers for tests and
// stops and removes them when the test ends.
//
// # What to use first
//
// Call [Start] in a test, then [Instance.NewDatabase] for a database of the
// test's own, and connect to the URL it returns (pgx, River's riverpgxv5
// driver, pg_dump):
//
//	pg := pgtest.Start(t)
//	url := pg.NewDatabase(t) // postgres://postgres@127.0.0.1:PORT/NAME?sslmode=disable
//
// [Instance.Restart] stops the server (fast shutdown) and starts it again on
// the same port and data, for tests that show a restart loses nothing;
// [Instance.Stop] and [Instance.Start] open and close an outage window.
// [Instance.Dump] returns a pg_dump of a database, for tests that look for
// what must not be stored readable.
//
// # What runs
//
// Each call to Start gets its own server: its own data directory in a fresh
// temporary directory, its own free port on 127.0.0.1, no Unix socket, and
// trust authentication on loopback for the superuser "postgres" (no
// password). Tests may restart or stop their server without disturbing any
// other test. The server runs as a child of the test process and is stopped
// with a fast shutdown when the test ends; should the test process die
// first, Linux sends the server SIGQUIT (an immediate shutdown).
//
// Start does not run initdb every time. The first Start on a machine runs
// initdb and keeps a copy of the fresh data directory, before the server
// ever ran on it, as a template in the user's cache directory
// (os.UserCacheDir()/mailsec-pgtest/VERSION, about 40 MB in 1,000 files,
// one per PostgreSQL version); every later Start copies the template and
// starts the server on the copy. Measured on the project's 2-core machines:
// 1.4 to 2.1 s for a Start with initdb, 0.4 to 1.3 s with the template
// (copying the files is most of it, and varies with the load on the disk),
// of which 0.1 s is the server's own start; 0.2 to 0.4 s for NewDatabase.
// The template is only read after it has been renamed into place, so test
// processes running at the same time can share it. Should the cache
// directory be unusable, every Start runs initdb.
//
// The server runs with fsync=off: every commit is still written to the
// operating system before it returns, so a killed or restarted server loses
// no committed transaction, but a crash of the machine could. Nothing else
// differs from the defaults of the Debian package. (Benchmarks, which must
// pay for durable commits, start theirs with [Launch] and
// [Options.Durable].)
//
// # Root
//
// initdb and postgres refuse to run as root. When the tests run as root,
// pgtest runs them as the "postgres" account that Debian's package creates
// (the temporary directory is owned by it); any other user runs them as
// itself.
//
// # Requirements
//
// PostgreSQL 15 or later from Debian's postgresql package (the programs in
// /usr/lib/postgresql/VERSION/bin; the newest version installed is used).
// Start skips the test when it is not installed, unless the environment
// variable CI is set: then it fails the test, because integration tests
// must never be skipped silently in CI.
//
// # Threat model
//
// None: this is test infrastructure. The servers trust every loopback
// connection and keep their data in temporary directories.
package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the name of the superuser of every instance. It needs no
// password on loopback.
const Superuser = "postgres"

// DefaultDatabase is the database [Instance.URL] names: the "postgres"
// database initdb creates, fresh in every instance.
const DefaultDatabase = "postgres"

const (
	// startTimeout bounds Start and Instance.Start: template, server,
	// first connection.
	startTimeout = 60 * time.Second
	// stopTimeout bounds a fast shutdown before the server is killed.
	stopTimeout = 20 * time.Second
	// sqlTimeout bounds CREATE DATABASE, DROP DATABASE and pg_dump.
	sqlTimeout = 60 * time.Second
	// portAttempts is how often Launch picks a new port when another
	// process took the chosen one before the server bound it.
	portAttempts = 3
	// templateFormat changes whenever the initdb arguments change, so that
	// an old template in the cache is not used.
	templateFormat = "1"
	// minVersion is the oldest PostgreSQL major version Launch accepts:
	// DROP DATABASE ... WITH (FORCE) needs 13; the project tests with 15.
	minVersion = 13
)

// ErrUnavailable means PostgreSQL cannot run here: it is not installed,
// or the tests run as root and there is no "postgres" account to run it as.
var ErrUnavailable = errors.New("pgtest: PostgreSQL is not available")

// Instance is a PostgreSQL server started by [Start] or [Launch]. Its
// methods are safe for concurrent use.
type Instance struct {
	opts Options
	tl   tools
	acct account
	dir  string // removed by Close
	data string // the data directory, inside dir
	log  string // the server's log file, inside dir
	port int

	// FromTemplate says whether the data directory was copied from the
	// cached template (true) or made by initdb (false).
	FromTemplate bool
	// StartupTime is how long Launch took, template or initdb included.
	StartupTime time.Duration

	dbSeq atomic.Int64

	mu     sync.Mutex
	proc   *process // nil while stopped
	closed bool
}

// process is one run of the postgres server.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd.Wait returned
	err    error         // cmd.Wait's result, once exited is closed
}

// Start starts a server for t and registers t.Cleanup to stop it and remove
// its directory; the server's log is added to the test log when t has
// failed. When PostgreSQL is not available it calls t.Skip, except when the
// environment variable CI is non-empty: then it calls t.Fatal. Any other
// failure fails the test with the server's log.
func Start(t testing.TB) *Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	inst, err := Launch(ctx, Options{})
	if errors.Is(err, ErrUnavailable) {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v (not skipping because CI is set)", err)
		}
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgtest: log of the server on port %d:\n%s", inst.port, tail(inst.Log(), 60))
		}
		if err := inst.Close(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	how := "initdb"
	if inst.FromTemplate {
		how = "template"
	}
	t.Logf("pgtest: %s on 127.0.0.1:%d, ready in %v (%s)", inst.tl.version, inst.port,
		inst.StartupTime.Round(time.Millisecond), how)
	return inst
}

// Options change how [Launch] runs a server.
type Options struct {
	// Durable runs the server with fsync on, PostgreSQL's default, so
	// that every commit waits for the disk, as in production: for
	// benchmarks. Tests leave it off.
	Durable bool
}

// Launch is [Start] for programs without a testing.TB, such as benchmarks:
// it starts a server and returns when it accepts connections. The caller
// must call [Instance.Close]. The error wraps [ErrUnavailable] when
// PostgreSQL is not available.
func Launch(ctx context.Context, opts Options) (*Instance, error) {
	began := time.Now()
	tl, err := findTools()
	if err != nil {
		return nil, err
	}
	acct, err := currentAccount()
	if err != nil {
		return nil, err
	}
	dir, err := makeInstanceDir(acct)
	if err != nil {
		return nil, err
	}
	inst := &Instance{
		opts: opts,
		tl:   tl,
		acct: acct,
		dir:  dir,
		data: filepath.Join(dir, "data"),
		log:  filepath.Join(dir, "postgres.log"),
	}
	fail := func(err error) (*Instance, error) {
		if cerr := inst.Close(); cerr != nil {
			err = fmt.Errorf("%w (and cleaning up: %v)", err, cerr)
		}
		return nil, err
	}
	if inst.FromTemplate, err = makeDataDir(ctx, tl, acct, inst.data); err != nil {
		return fail(err)
	}
	for attempt := 1; ; attempt++ {
		if inst.port, err = freePort(); err != nil {
			return fail(err)
		}
		err = inst.run(ctx)
		if err == nil {
			break
		}
		// Another process may have taken the port between choosing and
		// binding it; choose again.
		if attempt < portAttempts && strings.Contains(inst.Log(), "could not bind") {
			continue
		}
		return fail(fmt.Errorf("pgtest: starting PostgreSQL in %s: %w\nserver log:\n%s", dir, err, tail(inst.Log(), 60)))
	}
	inst.StartupTime = time.Since(began)
	return inst, nil
}

// URL returns the URL of the instance's default database (the "postgres"
// database, fresh in every instance) for the superuser, without TLS.
func (i *Instance) URL() string { return i.urlFor(DefaultDatabase) }

// Port returns the instance's TCP port on 127.0.0.1. It stays the same
// across Restart, Stop and Start.
func (i *Instance) Port() int { return i.port }

// Version returns the server's version, as "postgres --version" prints it.
func (i *Instance) Version() string { return i.tl.version }

func (i *Instance) urlFor(db string) string {
	return "postgres://" + Superuser + "@" + net.JoinHostPort("127.0.0.1", strconv.Itoa(i.port)) + "/" + db + "?sslmode=disable"
}

// NewDatabase creates a database with a name no other call uses, returns its
// URL (like [Instance.URL]) and registers t.Cleanup to drop it, unless the
// server is stopped then. It fails t when the server does not run.
func (i *Instance) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", i.dbSeq.Add(1), sanitize(t.Name()))
	if len(name) > 63 { // NAMEDATALEN - 1
		name = strings.TrimRight(name[:63], "_")
	}
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	defer cancel()
	if err := i.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if !i.Running() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
		defer cancel()
		// FORCE ends the sessions the test left open.
		if err := i.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
		}
	})
	return i.urlFor(name)
}

// exec runs one statement as the superuser in the default database.
func (i *Instance) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, i.URL())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Restart stops the server with a fast shutdown (sessions are ended,
// committed data is kept) and starts it again on the same port and data.
// It fails t when either step fails.
func (i *Instance) Restart(t testing.TB) {
	t.Helper()
	i.Stop(t)
	i.Start(t)
}

// Stop stops the server with a fast shutdown: open sessions are ended and
// new connections are refused until [Instance.Start]. It fails t when the
// server is not running or does not stop.
func (i *Instance) Stop(t testing.TB) {
	t.Helper()
	if err := i.stop(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// Start starts the server again after [Instance.Stop], on the same port and
// data, and returns when it accepts connections. It fails t when the server
// is running already or does not start (for instance because another
// process took the port during the outage).
func (i *Instance) Start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := i.run(ctx); err != nil {
		t.Fatalf("pgtest: restarting PostgreSQL on port %d: %v\nserver log:\n%s", i.port, err, tail(i.Log(), 60))
	}
}

// Running reports whether the server process runs (it may still be
// starting up or shutting down).
func (i *Instance) Running() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.proc == nil {
		return false
	}
	select {
	case <-i.proc.exited:
		return false
	default:
		return true
	}
}

// Dump returns the output of pg_dump for the database at url (as returned
// by [Instance.URL] or [Instance.NewDatabase]), in plain SQL format: schema
// and every row. Text columns appear as they are stored; bytea columns
// appear in hex ("\x636f..."), so a search for a plaintext canary must
// search for its hex form too. It fails t when pg_dump fails.
func (i *Instance) Dump(t testing.TB, url string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, i.tl.pgDump, "--no-password", "--dbname="+url)
	cmd.Env = serverEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pgtest: pg_dump %s: %v\n%s", url, err, stderr.String())
	}
	return out
}

// Log returns what the server has logged so far, across restarts.
func (i *Instance) Log() string {
	b, err := os.ReadFile(i.log)
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	return string(b)
}

// Close stops the server (fast shutdown) if it runs and removes the
// instance's directory. Start registers it with t.Cleanup; programs that
// used [Launch] call it themselves. Calling it again does nothing.
func (i *Instance) Close() error {
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		return nil
	}
	i.closed = true
	i.mu.Unlock()
	var errs []error
	if err := i.stop(); err != nil && !errors.Is(err, errNotRunning) {
		errs = append(errs, err)
	}
	if err := removeAll(i.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

var errNotRunning = errors.New("the server is not running")

// run starts the server process on i.port and waits until it accepts
// connections. On failure the process is stopped again.
func (i *Instance) run(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return errors.New("the instance is closed")
	}
	if i.proc != nil {
		return errors.New("the server is running already")
	}
	logFile, err := os.OpenFile(i.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// The server writes to the file itself; ours can be closed once it
	// has started.
	defer logFile.Close()
	fsync := "off"
	if i.opts.Durable {
		fsync = "on"
	}
	cmd := exec.Command(i.tl.postgres,
		"-D", i.data,
		"-p", strconv.Itoa(i.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=",
		"-c", "fsync="+fsync,
	)
	cmd.Env = serverEnv()
	cmd.Dir = i.dir // a directory the server's account can enter
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = serverProcAttr(i.acct)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running %s: %w", i.tl.postgres, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := waitReady(ctx, i.URL(), p); err != nil {
		_ = stopProcess(p)
		return err
	}
	i.proc = p
	return nil
}

// stop shuts the server down fast and waits until it has exited.
func (i *Instance) stop() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.proc == nil {
		return errNotRunning
	}
	p := i.proc
	i.proc = nil
	return stopProcess(p)
}

// stopProcess asks the server for a fast shutdown (SIGINT), then for an
// immediate one (SIGQUIT), then kills its process group.
func stopProcess(p *process) error {
	pid := p.cmd.Process.Pid
	for _, step := range []struct {
		sig     syscall.Signal
		timeout time.Duration
	}{{syscall.SIGINT, stopTimeout}, {syscall.SIGQUIT, 5 * time.Second}} {
		// Signal through os.Process, which never signals a pid that
		// has been reaped: an error means Wait has returned.
		if err := p.cmd.Process.Signal(step.sig); err != nil {
			<-p.exited
			return nil
		}
		select {
		case <-p.exited:
			return nil
		case <-time.After(step.timeout):
		}
	}
	select {
	case <-p.exited:
		return nil
	default:
	}
	// The server leads its own process group; its children are members.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-p.exited:
		return fmt.Errorf("PostgreSQL (pid %d) ignored a fast and an immediate shutdown and was killed", pid)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("PostgreSQL (pid %d) survives SIGKILL", pid)
	}
}

// waitReady connects to url until a connection succeeds, the server exits
// or ctx ends.
func waitReady(ctx context.Context, url string, p *process) error {
	var last error
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("postgres exited during start-up: %v", p.err)
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, url)
		if err == nil {
			err = conn.Ping(cctx)
			conn.Close(context.Background())
		}
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres does not accept connections: %w (last attempt: %v)", ctx.Err(), last)
		case <-p.exited:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// tools are the PostgreSQL programs Launch runs, all of one version.
type tools struct {
	initdb, postgres, pgDump string
	version                  string // "postgres (PostgreSQL) 15.18 (Debian ...)"
}

// binRoot is where Debian's postgresql packages install each major
// version's programs: /usr/lib/postgresql/15/bin.
const binRoot = "/usr/lib/postgresql"

// findTools finds the newest PostgreSQL under binRoot with the programs
// Launch needs.
func findTools() (tools, error) {
	return findToolsIn(binRoot)
}

func findToolsIn(root string) (tools, error) {
	entries, _ := os.ReadDir(root)
	var majors []int
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && n >= minVersion {
			majors = append(majors, n)
		}
	}
	slices.Sort(majors)
	slices.Reverse(majors)
	for _, m := range majors {
		bin := filepath.Join(root, strconv.Itoa(m), "bin")
		tl := tools{
			initdb:   filepath.Join(bin, "initdb"),
			postgres: filepath.Join(bin, "postgres"),
			pgDump:   filepath.Join(bin, "pg_dump"),
		}
		if !executable(tl.initdb) || !executable(tl.postgres) || !executable(tl.pgDump) {
			continue
		}
		out, err := exec.Command(tl.postgres, "--version").Output()
		if err != nil {
			return tools{}, fmt.Errorf("pgtest: %s --version: %v", tl.postgres, err)
		}
		tl.version = strings.TrimSpace(string(out))
		return tl, nil
	}
	return tools{}, fmt.Errorf("%w: no PostgreSQL %d or later in %s/VERSION/bin (Debian package: postgresql)",
		ErrUnavailable, minVersion, root)
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// account is who runs initdb and postgres.
type account struct {
	// other is true when that is not the current user: root runs them as
	// the "postgres" account, with uid and gid.
	other    bool
	uid, gid int
}

// currentAccount decides who runs the server: the current user, or the
// "postgres" account when that is root.
func currentAccount() (account, error) {
	if os.Geteuid() != 0 {
		return account{uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return account{}, fmt.Errorf("%w: running as root, and PostgreSQL refuses root: no \"postgres\" account to run it as (%v)", ErrUnavailable, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil || uid == 0 {
		return account{}, fmt.Errorf("%w: the \"postgres\" account has uid %q and gid %q", ErrUnavailable, u.Uid, u.Gid)
	}
	return account{other: true, uid: uid, gid: gid}, nil
}

// makeInstanceDir makes a fresh directory for an instance, owned by acct,
// in a place acct can reach.
func makeInstanceDir(acct account) (string, error) {
	base := os.TempDir()
	if acct.other && !traversable(base) {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "pgtest-")
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	if acct.other {
		if err := os.Chown(dir, acct.uid, acct.gid); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("pgtest: %w", err)
		}
	}
	return dir, nil
}

// traversable reports whether every directory from / down to dir can be
// searched by anybody, so that the postgres account can reach dir.
func traversable(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// makeDataDir fills data with a fresh cluster: a copy of the cached
// template when there is one, else initdb's output, which then becomes the
// template. It reports whether the template was used.
func makeDataDir(ctx context.Context, tl tools, acct account, data string) (bool, error) {
	tmpl, cacheErr := templatePath(tl)
	if cacheErr == nil && isCluster(tmpl) {
		if err := copyTree(tmpl, data, acct); err == nil {
			return true, nil
		}
		// A damaged template: start afresh below.
		os.RemoveAll(data)
	}
	if err := initdb(ctx, tl, acct, data); err != nil {
		return false, err
	}
	if cacheErr == nil {
		saveTemplate(data, tmpl)
	}
	return false, nil
}

// initdb runs initdb for data: superuser "postgres", trust authentication
// (which initdb applies to loopback and the Unix socket), UTF-8, the C
// locale, no fsync of the result.
func initdb(ctx context.Context, tl tools, acct account, data string) error {
	cmd := exec.CommandContext(ctx, tl.initdb,
		"-D", data,
		"-U", Superuser,
		"-A", "trust",
		"-E", "UTF8",
		"--locale=C",
		"--no-sync",
	)
	cmd.Env = serverEnv()
	cmd.Dir = filepath.Dir(data) // initdb fails in a directory its account cannot enter
	cmd.SysProcAttr = toolProcAttr(acct)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: %s: %v\n%s", tl.initdb, err, out)
	}
	return nil
}

// templatePath returns where the template for tl's version is cached.
func templatePath(tl tools) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	key := regexp.MustCompile(`[^A-Za-z0-9.]+`).ReplaceAllString(tl.version, "-")
	return filepath.Join(cache, "mailsec-pgtest", key+"-t"+templateFormat), nil
}

// isCluster reports whether dir looks like a complete data directory. A
// template only ever appears complete, by rename.
func isCluster(dir string) bool {
	for _, f := range []string{"PG_VERSION", "global/pg_control", "postgresql.conf"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return false
		}
	}
	return true
}

// saveTemplate copies a fresh data directory into the cache, under a
// temporary name first, then renamed into place. When another process
// saved one first, or anything fails, nothing changes: the cache only
// saves time.
func saveTemplate(data, tmpl string) {
	parent := filepath.Dir(tmpl)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return
	}
	tmp, err := os.MkdirTemp(parent, "tmp-")
	if err != nil {
		return
	}
	if err := copyTree(data, tmp, account{}); err != nil || os.Rename(tmp, tmpl) != nil {
		os.RemoveAll(tmp)
	}
}

// copyTree copies the directory src to dst (which may exist, empty) with
// the same permissions; when acct is another account, the copies belong to
// it.
func copyTree(src, dst string, acct account) error {
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil && !(rel == "." && errors.Is(err, os.ErrExist)) {
				return err
			}
			if err := os.Chmod(target, info.Mode().Perm()); err != nil {
				return err
			}
		case d.Type()&os.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, target); err != nil {
				return err
			}
		case d.Type().IsRegular():
			if err := copyFile(path, target, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected file type %v", path, d.Type())
		}
		if acct.other {
			return os.Lchown(target, acct.uid, acct.gid)
		}
		return nil
	})
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := out.ReadFrom(in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// serverEnv is the environment of initdb, postgres and pg_dump: the test's
// own, without the PG* variables that could point them elsewhere.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: choosing a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// sanitize turns a test name into a database name part: lower case ASCII
// letters, digits and underscores.
func sanitize(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// removeAll removes dir, retrying briefly in case an exiting process still
// writes into it.
func removeAll(dir string) error {
	var err error
	for range 10 {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("removing instance directory: %w", err)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
