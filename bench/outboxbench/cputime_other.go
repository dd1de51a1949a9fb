//go:build !unix

package outboxbench

import "time"

// cpuTime is not available here: no cpu-µs/msg metric is reported.
func cpuTime() (time.Duration, bool) { return 0, false }
