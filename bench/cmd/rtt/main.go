// Command rtt counts the round trips each client waits for per message,
// through a delay proxy (package rttbench: 10 ms round-trip time, 5 ms each
// way, TCP handshake included) in front of an in-process go-smtp server
// that offers PIPELINING and CHUNKING, over STARTTLS and over implicit TLS:
// mailsec, a bare go-smtp client and go-mail, warm (one session, one
// message after another from one goroutine) and cold (a new connection per
// message), all through the same proxies in the same run. It prints, per
// case, the median over the rounds of the wall time per message in
// round-trip times and of the client flights per message, and the
// project's targets for mailsec:
//
//	warm ≤ 1.2, cold STARTTLS ≤ 7, cold implicit TLS ≤ 5 round trips per message
//
// Usage:
//
//	go run ./cmd/rtt [-count 5] [-warm 50] [-cold 10] [-rtt 10ms] [-check]
//
// With -check it exits with status 1 when a target is missed. It exits
// with status 2 when a case fails.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailsec/mailsec/bench/rttbench"
)

func main() {
	count := flag.Int("count", 5, "rounds; the median of each case is reported")
	warm := flag.Int("warm", 50, "messages per round in the warm cases")
	cold := flag.Int("cold", 10, "messages per round in the cold cases")
	rtt := flag.Duration("rtt", rttbench.DefaultRTT, "round-trip time the proxy adds")
	check := flag.Bool("check", false, "exit with status 1 when a target is missed")
	flag.Parse()
	if *count < 1 || *warm < 1 || *cold < 1 || *rtt <= 0 {
		fmt.Fprintln(os.Stderr, "rtt: -count, -warm, -cold and -rtt must be positive")
		os.Exit(2)
	}
	env, err := rttbench.Start(*rtt)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rtt: starting the servers:", err)
		os.Exit(2)
	}
	defer env.Close()

	fmt.Printf("%s/%s, GOMAXPROCS=%d, NumCPU=%d, %s\n", runtime.GOOS, runtime.GOARCH,
		runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.Version())
	fmt.Printf("proxy RTT %s; %d rounds of %d warm and %d cold messages per case, median reported\n\n",
		*rtt, *count, *warm, *cold)

	ctx := context.Background()
	cases := env.Cases()
	rtts := make(map[string][]float64, len(cases))
	counted := make(map[string][]float64, len(cases))
	flights := make(map[string][]float64, len(cases))
	// Interleaved, round by round, so that a slow spell of the machine
	// spreads over every case.
	for r := range *count {
		for _, c := range cases {
			n := *cold
			if strings.Contains(c.Name, "warm") {
				n = *warm
			}
			res, err := c.Run(ctx, n)
			if err != nil {
				fmt.Fprintf(os.Stderr, "rtt: %s (round %d) failed: %v\n", c.Name, r+1, err)
				os.Exit(2)
			}
			rtts[c.Name] = append(rtts[c.Name], res.RTTsPerMsg())
			counted[c.Name] = append(counted[c.Name], res.RoundTripsPerMsg())
			flights[c.Name] = append(flights[c.Name], res.FlightsPerMsg())
			fmt.Fprintf(os.Stderr, "round %d/%d  %-26s %4d msgs  %6.2f RTT/msg (timed)  %5.2f counted  %5.2f flights/msg  %d conns  %s\n",
				r+1, *count, c.Name, res.Msgs, res.RTTsPerMsg(), res.RoundTripsPerMsg(), res.FlightsPerMsg(), res.Conns,
				(res.Wall / time.Duration(res.Msgs)).Round(10*time.Microsecond))
		}
	}
	fmt.Fprintln(os.Stderr)

	missed := 0
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tround trips/msg, counted\ttimed ÷ RTT\tmin\tmax\tms/msg\tflights/msg\ttarget (counted)\t")
	for _, c := range cases {
		med, cnt := median(rtts[c.Name]), median(counted[c.Name])
		verdict := ""
		if c.Target > 0 {
			verdict = fmt.Sprintf("≤ %g met", c.Target)
			if cnt > c.Target {
				verdict = fmt.Sprintf("≤ %g MISSED", c.Target)
				missed++
			}
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.2f\t%s\t\n", c.Name, cnt, med,
			slices.Min(rtts[c.Name]), slices.Max(rtts[c.Name]), med*rtt.Seconds()*1e3,
			median(flights[c.Name]), verdict)
	}
	_ = tw.Flush()
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
