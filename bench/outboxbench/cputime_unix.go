//go:build unix

package outboxbench

import (
	"syscall"
	"time"
)

// cpuTime returns the user and system CPU time the process has used so
// far: client and sink together, since the sink runs in the process.
func cpuTime() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
