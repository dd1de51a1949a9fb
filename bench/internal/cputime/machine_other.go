//go:build !linux

package cputime

import "time"

// Machine is not available here: it returns false, and no machine
// cpu-µs/item is reported.
func Machine() (time.Duration, bool) { return 0, false }
