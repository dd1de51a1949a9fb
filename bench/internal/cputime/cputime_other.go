//go:build !unix

// Package cputime reads the CPU time the benchmark process has used.
package cputime

import "time"

// Process is not available here: it returns false, and no cpu-µs/msg
// metric is reported.
func Process() (time.Duration, bool) { return 0, false }
