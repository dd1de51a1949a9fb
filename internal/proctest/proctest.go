// Package proctest runs functions of a test binary as child processes, so
// that tests can kill them (SIGKILL) at a moment of their choosing: a
// worker process killed mid-delivery, say.
//
// # What to use first
//
// The test binary re-executes itself: [Main], called first in TestMain,
// turns a process that [Start] made into the child and runs the function
// named in Start instead of the tests.
//
//	func TestMain(m *testing.M) {
//		proctest.Main(map[string]proctest.Func{"worker": worker})
//		os.Exit(m.Run())
//	}
//
//	func worker(ctx context.Context, args []string) error {
//		fmt.Println("ready")
//		... // print "delivering <id>" before each delivery
//		<-ctx.Done() // SIGTERM or SIGINT: a graceful stop
//		return nil
//	}
//
//	func TestKillMidDelivery(t *testing.T) {
//		w := proctest.Start(t, "worker", dbURL)
//		w.WaitFor(t, "ready")
//		id := strings.TrimPrefix(w.WaitFor(t, "delivering "), "delivering ")
//		w.Kill()
//		... // another worker must finish id
//	}
//
// The child's standard output and standard error go to the test log line by
// line, prefixed with the child's name and pid. [Process.WaitFor] waits for
// a line of standard output that starts with a prefix. A child still
// running when the test ends is killed; on Linux a child is also killed
// when the test process dies.
package proctest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// envChild names the environment variable that carries the name of the
// function a child runs.
const envChild = "MAILSEC_PROCTEST_CHILD"

const (
	// waitForTimeout bounds Process.WaitFor.
	waitForTimeout = 30 * time.Second
	// outputDelay is how long Wait waits for the child's output after it
	// exited, should a process it started hold the pipes open.
	outputDelay = 2 * time.Second
)

// Func is the body of a child process. args are the arguments given to
// [Start]. ctx ends when the child receives SIGTERM or SIGINT, for a
// graceful stop. A nil error exits the child with status 0; an error is
// printed to standard error and exits it with status 1.
type Func func(ctx context.Context, args []string) error

// Main makes the current process a child when [Start] started it: it runs
// the function of children that Start named, then exits, and never returns.
// In any other process it returns at once. Call it first in TestMain,
// before flag.Parse or m.Run: the child's arguments are not test flags.
// A name missing from children exits the child with status 2.
func Main(children map[string]Func) {
	name, ok := os.LookupEnv(envChild)
	if !ok {
		return
	}
	// A process the child starts is not a child of this kind.
	os.Unsetenv(envChild)
	f := children[name]
	if f == nil {
		names := make([]string, 0, len(children))
		for n := range children {
			names = append(names, n)
		}
		slices.Sort(names)
		fmt.Fprintf(os.Stderr, "proctest: no child function %q (TestMain gives %q)\n", name, names)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := f(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "proctest: child %s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Process is a child started by [Start]. Its methods are safe for
// concurrent use.
type Process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the child has exited and its output is read
	err  error         // cmd.Wait's result, once done is closed

	mu      sync.Mutex
	stdout  []string
	stderr  []string
	next    int           // index in stdout where WaitFor looks next
	changed chan struct{} // closed and replaced when a line arrives
}

// Start runs the test binary again as a child that runs the function named
// name (see [Main]) with args, and returns at once. The child inherits the
// environment and the working directory. It registers t.Cleanup to kill the
// child if it still runs and to wait for it. It fails t when the child
// cannot be started.
func Start(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("proctest: finding the test binary: %v", err)
	}
	p := &Process{name: name, done: make(chan struct{}), changed: make(chan struct{})}
	p.cmd = exec.Command(exe, args...)
	p.cmd.Env = append(os.Environ(), envChild+"="+name)
	if _, ok := os.LookupEnv("GORACE"); !ok {
		// A binary built with -race otherwise sleeps a second before
		// exiting, which graceful-stop tests would wait for.
		p.cmd.Env = append(p.cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	p.cmd.Stdout = &lineWriter{p: p, t: t, stream: "stdout"}
	p.cmd.Stderr = &lineWriter{p: p, t: t, stream: "stderr"}
	p.cmd.WaitDelay = outputDelay
	p.cmd.SysProcAttr = childProcAttr()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("proctest: starting child %s: %v", name, err)
	}
	go func() {
		err := p.cmd.Wait()
		for _, w := range []any{p.cmd.Stdout, p.cmd.Stderr} {
			w.(*lineWriter).flush()
		}
		p.mu.Lock()
		p.err = err
		close(p.done)
		p.notify()
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		p.Kill()
	})
	return p
}

// Pid returns the child's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// WaitFor waits for a line of the child's standard output that starts with
// prefix and returns it (without the line break). It looks at the lines
// after the one the previous WaitFor returned, so successive calls follow
// the child's output in order. It fails t when the child exits without
// printing such a line, or after 30 seconds.
func (p *Process) WaitFor(t testing.TB, prefix string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitForTimeout)
	defer cancel()
	line, err := p.Next(ctx, prefix)
	if err != nil {
		t.Fatalf("proctest: %v", err)
	}
	return line
}

// Next is [Process.WaitFor] with a context instead of a test: it returns an
// error when the child exits without printing such a line or ctx ends.
func (p *Process) Next(ctx context.Context, prefix string) (string, error) {
	for {
		p.mu.Lock()
		for i := p.next; i < len(p.stdout); i++ {
			if strings.HasPrefix(p.stdout[i], prefix) {
				p.next = i + 1
				line := p.stdout[i]
				p.mu.Unlock()
				return line, nil
			}
		}
		p.next = len(p.stdout)
		changed := p.changed
		exited := isClosed(p.done)
		err := p.err
		p.mu.Unlock()
		if exited {
			return "", fmt.Errorf("child %s (pid %d) ended (%v) without printing a line that starts with %q", p.name, p.Pid(), exitText(err), prefix)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("child %s (pid %d) printed no line that starts with %q: %w", p.name, p.Pid(), prefix, ctx.Err())
		case <-changed:
		}
	}
}

// Kill sends SIGKILL to the child, as "kill -9" does, unless it has
// exited, and waits until it is gone.
func (p *Process) Kill() {
	if !isClosed(p.done) {
		// os.Process never signals a pid that has been reaped.
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// Signal sends sig to the child; SIGTERM and SIGINT end the context of its
// Func. It returns an error when the child has exited.
func (p *Process) Signal(sig os.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// Wait waits until the child has exited and its output has been read, and
// returns how it ended: nil for exit status 0, else an *exec.ExitError
// (see [Process.ExitCode] and [Process.Killed]).
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// ExitCode returns the child's exit status once it has exited, and -1 while
// it runs or when a signal ended it.
func (p *Process) ExitCode() int {
	if !isClosed(p.done) {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Killed reports whether the child has exited because of SIGKILL.
func (p *Process) Killed() bool {
	if !isClosed(p.done) {
		return false
	}
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// Stdout returns the lines the child has printed on standard output so far.
func (p *Process) Stdout() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.stdout)
}

// Stderr returns the lines the child has printed on standard error so far.
func (p *Process) Stderr() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.stderr)
}

// notify wakes the goroutines waiting in Next. p.mu must be held.
func (p *Process) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// lineWriter splits one of the child's output streams into lines, logs
// them and keeps them. exec.Cmd calls Write from one goroutine per stream.
type lineWriter struct {
	p       *Process
	t       testing.TB
	stream  string
	partial []byte
}

func (w *lineWriter) Write(b []byte) (int, error) {
	n := len(b)
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			w.partial = append(w.partial, b...)
			return n, nil
		}
		w.partial = append(w.partial, b[:i]...)
		w.line(strings.TrimSuffix(string(w.partial), "\r"))
		w.partial = w.partial[:0]
		b = b[i+1:]
	}
}

// flush emits a last line that has no line break.
func (w *lineWriter) flush() {
	if len(w.partial) > 0 {
		w.line(string(w.partial))
		w.partial = nil
	}
}

func (w *lineWriter) line(s string) {
	w.t.Logf("%s[%d] %s: %s", w.p.name, w.p.cmd.Process.Pid, w.stream, s)
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if w.stream == "stdout" {
		w.p.stdout = append(w.p.stdout, s)
	} else {
		w.p.stderr = append(w.p.stderr, s)
	}
	w.p.notify()
}
