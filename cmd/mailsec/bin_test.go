package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests in this file and the tests that call runBin drive the built
// binary as an operator would: its exit status is what a shell sees, its
// environment only what is given, its standard streams separate files.

var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// binary builds the command once per test run and returns its path; with
// MAILSEC_TEST_BINARY set, it returns that path instead, to run the tests
// against another build.
func binary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MAILSEC_TEST_BINARY"); p != "" {
		return p
	}
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "mailsec-bin-")
		if built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "mailsec")
		cmd := exec.Command("go", "build", "-o", built.path, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// runBin runs the built binary with args, stdin and only the environment
// given (plus PATH, and HOME and XDG_CACHE_HOME in a directory of the
// test's unless environ sets them), and returns its exit status and
// output.
func runBin(t *testing.T, stdin string, environ map[string]string, args ...string) result {
	t.Helper()
	return runBinCtx(t, t.Context(), stdin, environ, args...)
}

func runBinCtx(t *testing.T, ctx context.Context, stdin string, environ map[string]string, args ...string) result {
	t.Helper()
	bin := binary(t)
	home := t.TempDir()
	env := map[string]string{
		"PATH":           os.Getenv("PATH"),
		"HOME":           home,
		"XDG_CACHE_HOME": filepath.Join(home, ".cache"),
	}
	for k, v := range environ {
		env[k] = v
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running mailsec: %v", err)
	}
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	t.Logf("$ mailsec %s\nexit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// lines returns s's lines without their line endings.
func lines(s string) []string {
	var out []string
	for l := range strings.Lines(s) {
		out = append(out, strings.TrimRight(l, "\n"))
	}
	return out
}
