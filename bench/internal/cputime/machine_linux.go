//go:build linux

package cputime

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of /proc/stat's counts: USER_HZ, 100 on every Linux
// architecture Go runs on.
const userHZ = 100

// Machine returns the CPU time every CPU of the machine has spent busy so
// far (user, nice, system, irq and softirq: this process, a Postgres
// server, the kernel's network stack, and anything else running), and
// true; false where the platform does not say. Time stolen by a
// hypervisor, idle time and time waiting for I/O are not counted. It is
// summed over all CPUs, to a resolution of 10 ms (USER_HZ).
func Machine() (time.Duration, bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, false
	}
	fields := strings.Fields(sc.Text())
	// cpu user nice system idle iowait irq softirq steal ...
	if len(fields) < 8 || fields[0] != "cpu" {
		return 0, false
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, err := strconv.ParseInt(fields[i], 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / userHZ, true
}
