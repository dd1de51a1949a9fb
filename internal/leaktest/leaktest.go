// Package leaktest checks that a test leaves no goroutines behind.
package leaktest

import (
	"runtime"
	"testing"
	"time"
)

// Check records how many goroutines run now and returns a function that
// fails tb if more are still running when it is called, after giving them
// five seconds to end. Call the function after closing everything the
// test opened.
func Check(tb testing.TB) func() {
	before := runtime.NumGoroutine()
	return func() {
		tb.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			tb.Fatalf("%d goroutines left behind (%d before):\n%s", n-before, before, buf[:runtime.Stack(buf, true)])
		}
	}
}
