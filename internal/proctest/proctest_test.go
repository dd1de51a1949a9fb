package proctest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	Main(map[string]Func{
		"worker": worker,
		"fail":   fail,
	})
	os.Exit(m.Run())
}

// worker prints a line on standard error, then "ready" and one
// "delivering <arg>" line per argument, then blocks until it is told to
// stop, says "stopping" and exits with status 0. The line on standard
// error comes first, so that a parent that has read the last line on
// standard output and then kills the child has it too.
func worker(ctx context.Context, args []string) error {
	fmt.Fprintln(os.Stderr, "worker: waiting")
	fmt.Println("ready")
	for _, a := range args {
		fmt.Println("delivering " + a)
	}
	<-ctx.Done()
	fmt.Println("stopping")
	return nil
}

// fail prints half a line and fails.
func fail(ctx context.Context, args []string) error {
	fmt.Print("no line break")
	return errors.New("boom")
}

// gone reports whether no process with this pid exists (a reaped child).
func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestKill(t *testing.T) {
	w := Start(t, "worker", "a", "b")
	if got := w.WaitFor(t, "ready"); got != "ready" {
		t.Errorf("WaitFor(ready) = %q", got)
	}
	if got := w.WaitFor(t, "delivering "); got != "delivering a" {
		t.Errorf("first WaitFor(delivering) = %q, want delivering a", got)
	}
	if got := w.WaitFor(t, "delivering "); got != "delivering b" {
		t.Errorf("second WaitFor(delivering) = %q, want delivering b", got)
	}
	if gone(w.Pid()) {
		t.Fatal("the child is gone before Kill")
	}
	w.Kill()
	err := w.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !w.Killed() {
		t.Fatalf("Wait() = %v, Killed() = %v: want an ExitError for SIGKILL", err, w.Killed())
	}
	if w.ExitCode() != -1 {
		t.Errorf("ExitCode() = %d for a killed child, want -1", w.ExitCode())
	}
	if !gone(w.Pid()) {
		t.Errorf("process %d still exists after Kill", w.Pid())
	}
	if got := w.Stdout(); !slices.Equal(got, []string{"ready", "delivering a", "delivering b"}) {
		t.Errorf("Stdout() = %q: a killed child must not have stopped gracefully", got)
	}
	if got := w.Stderr(); !slices.Equal(got, []string{"worker: waiting"}) {
		t.Errorf("Stderr() = %q", got)
	}
	w.Kill() // no effect on an exited child
}

func TestSignalGraceful(t *testing.T) {
	w := Start(t, "worker")
	w.WaitFor(t, "ready")
	if err := w.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(); err != nil {
		t.Fatalf("Wait() = %v after SIGTERM, want a clean exit", err)
	}
	if w.Killed() || w.ExitCode() != 0 {
		t.Errorf("Killed() = %v, ExitCode() = %d", w.Killed(), w.ExitCode())
	}
	// Lines stay readable after the exit.
	if got := w.WaitFor(t, "stop"); got != "stopping" {
		t.Errorf("WaitFor(stop) = %q", got)
	}
	if err := w.Signal(syscall.SIGTERM); err == nil {
		t.Error("Signal to an exited child succeeded")
	}
}

func TestExitWithoutLine(t *testing.T) {
	w := Start(t, "fail")
	began := time.Now()
	_, err := w.Next(context.Background(), "ready")
	if err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("Next(ready) = %v, want an error naming exit status 1", err)
	}
	if time.Since(began) > 10*time.Second {
		t.Errorf("Next took %v to notice the exit", time.Since(began))
	}
	if w.ExitCode() != 1 || w.Killed() {
		t.Errorf("ExitCode() = %d, Killed() = %v, want 1 and false", w.ExitCode(), w.Killed())
	}
	if got := w.Stdout(); !slices.Equal(got, []string{"no line break"}) {
		t.Errorf("Stdout() = %q, want the unterminated line", got)
	}
	if got := w.Stderr(); !slices.Equal(got, []string{"proctest: child fail: boom"}) {
		t.Errorf("Stderr() = %q", got)
	}
}

func TestUnknownChild(t *testing.T) {
	w := Start(t, "nonexistent")
	_ = w.Wait()
	if w.ExitCode() != 2 {
		t.Errorf("ExitCode() = %d for an unknown child, want 2", w.ExitCode())
	}
	if e := strings.Join(w.Stderr(), "\n"); !strings.Contains(e, `"nonexistent"`) || !strings.Contains(e, "worker") {
		t.Errorf("stderr %q does not name the missing and the known children", e)
	}
}

func TestNextTimeout(t *testing.T) {
	w := Start(t, "worker")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := w.Next(ctx, "never printed"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next = %v, want DeadlineExceeded", err)
	}
	if gone(w.Pid()) {
		t.Error("the child ended although only the wait timed out")
	}
	// The lines looked at are consumed: "ready" came before.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if line, err := w.Next(ctx2, "ready"); err == nil {
		t.Errorf("Next(ready) = %q after an earlier wait passed it", line)
	}
}

// TestCleanupKills checks that a child still running when its test ends is
// killed.
func TestCleanupKills(t *testing.T) {
	var pid int
	t.Run("sub", func(t *testing.T) {
		w := Start(t, "worker")
		w.WaitFor(t, "ready")
		pid = w.Pid()
	})
	if pid == 0 {
		t.Fatal("the subtest started no child")
	}
	if !gone(pid) {
		t.Errorf("child %d still runs after its test ended", pid)
	}
}
