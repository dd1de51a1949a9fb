//go:build unix

// Package cputime reads the CPU time the benchmark process has used.
package cputime

import (
	"syscall"
	"time"
)

// Process returns the user and system CPU time the process has used so
// far (the client and, when it runs in the process, the sink together),
// and true; false where the platform does not say.
func Process() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
