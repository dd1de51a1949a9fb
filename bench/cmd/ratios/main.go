// Command ratios runs the submission benchmarks (package submitbench)
// side by side in one process, several times, and prints the median
// msgs/s of each and the two ratios the project targets:
//
//	mailsec (64 goroutines, pooled) ÷ go-smtp reusing one connection, msgs/s  ≥ 1.5
//	mailsec (64 goroutines, pooled) ÷ go-smtp reusing one connection, CPU/msg ≤ 1.0
//	mailsec (64 goroutines, pooled) ÷ go-mail, one connection per message     ≥ 15
//
// (CPU per message is the whole process's, client and sink together: the
// sink is the same go-smtp server for both.)
//
// Usage:
//
//	go run ./cmd/ratios [-count 5] [-benchtime 1s] [-maxconns 0] [-maxmsgs 0] [-check]
//
// With -check it exits with status 1 when a target is missed; without, it
// only reports. It exits with status 2 when a benchmark fails.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"testing"
	"text/tabwriter"

	"github.com/mailsec/mailsec/bench/submitbench"
)

// target is one of the project's performance targets: the median msgs/s
// of num divided by that of den must be at least min or, for a CPU
// target, the median CPU per message of num divided by that of den at
// most max.
type target struct {
	num, den string
	cpu      bool
	limit    float64
	what     string
}

var targets = []target{
	{"Mailsec64", "GoSMTPReuse", false, 1.5, "mailsec ÷ go-smtp reusing one connection"},
	{"Mailsec64", "GoSMTPReuse", true, 1.0, "CPU per message, mailsec ÷ go-smtp"},
	{"Mailsec64", "GoMailPerMessage", false, 15, "mailsec ÷ go-mail, one connection per message"},
}

func main() {
	testing.Init() // registers -test.benchtime, which testing.Benchmark reads
	count := flag.Int("count", 5, "run each benchmark this many times and take the median")
	benchtime := flag.String("benchtime", "1s", "run time (like 2s) or iteration count (like 2000x) of each benchmark run")
	maxConns := flag.Int("maxconns", 0, "transport.Submission.MaxConns for Mailsec64 (0: the library's default)")
	maxMsgs := flag.Int("maxmsgs", 0, "transport.Submission.MaxMessagesPerConn for Mailsec64 (0: the library's default)")
	check := flag.Bool("check", false, "exit with status 1 when a target is missed")
	flag.Parse()
	if *count < 1 {
		fmt.Fprintln(os.Stderr, "ratios: -count must be at least 1")
		os.Exit(2)
	}
	if err := flag.Set("test.benchtime", *benchtime); err != nil {
		fmt.Fprintln(os.Stderr, "ratios: -benchtime:", err)
		os.Exit(2)
	}

	env, err := submitbench.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ratios: starting the sink:", err)
		os.Exit(2)
	}
	defer env.Close()

	ms, gm, raw, err := submitbench.MessageSizes()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ratios: building the message:", err)
		os.Exit(2)
	}
	fmt.Printf("%s/%s, GOMAXPROCS=%d, NumCPU=%d, %s\n", runtime.GOOS, runtime.GOARCH,
		runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.Version())
	fmt.Printf("message: mailsec %d B, go-mail %d B, go-smtp %d B; %d runs of %s each, median reported\n",
		ms, gm, raw, *count, *benchtime)
	pool := submitbench.Pool{MaxConns: *maxConns, MaxMessagesPerConn: *maxMsgs}
	fmt.Printf("Mailsec64 pool: %s\n\n", pool)

	cases := env.Cases(pool)
	rates := make(map[string][]float64, len(cases))
	allocs := make(map[string][]float64, len(cases))
	cpu := make(map[string][]float64, len(cases))
	// Interleave the benchmarks (round r of each, then round r+1) so that
	// a slow spell of the machine spreads over all of them.
	for r := range *count {
		for _, c := range cases {
			res := testing.Benchmark(c.F)
			cpuPerMsg := res.Extra["cpu-µs/msg"] // 0 where the platform cannot say
			rate, ok := res.Extra["msgs/s"]
			if res.N == 0 || !ok {
				reason := env.TakeError()
				if reason == nil {
					reason = fmt.Errorf("no msgs/s reported")
				}
				fmt.Fprintf(os.Stderr, "ratios: %s (run %d) failed: %v\n", c.Name, r+1, reason)
				os.Exit(2)
			}
			rates[c.Name] = append(rates[c.Name], rate)
			allocs[c.Name] = append(allocs[c.Name], float64(res.AllocsPerOp()))
			cpu[c.Name] = append(cpu[c.Name], cpuPerMsg)
			fmt.Fprintf(os.Stderr, "run %d/%d  %-17s %8d msgs  %9.0f msgs/s  %6.0f CPU µs/msg\n",
				r+1, *count, c.Name, res.N, rate, cpuPerMsg)
		}
	}
	fmt.Fprintln(os.Stderr)

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "benchmark\tmedian msgs/s\tmin\tmax\twall µs/msg\tCPU µs/msg\tallocs/msg\t")
	for _, c := range cases {
		r := rates[c.Name]
		med := median(r)
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.1f\t%.1f\t%.0f\t\n", c.Name, med, slices.Min(r), slices.Max(r),
			1e6/med, median(cpu[c.Name]), median(allocs[c.Name]))
	}
	_ = tw.Flush()
	fmt.Println()

	missed := 0
	for _, t := range targets {
		got := median(rates[t.num]) / median(rates[t.den])
		ok, bound := got >= t.limit, "≥"
		if t.cpu {
			got = median(cpu[t.num]) / median(cpu[t.den])
			ok, bound = got <= t.limit, "≤"
			if median(cpu[t.den]) == 0 {
				ok = false // the platform cannot say
			}
		}
		verdict := "met"
		if !ok {
			verdict = "MISSED"
			missed++
		}
		fmt.Printf("%-48s %7.2f  (target %s %g)  %s\n", t.what, got, bound, t.limit, verdict)
	}
	if missed > 0 && *check {
		os.Exit(1)
	}
}

// median returns the median of v (the mean of the middle two when v has
// an even length).
func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
