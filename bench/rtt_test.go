package bench_test

import (
	"context"
	"strings"
	"testing"

	"github.com/mailsec/mailsec/bench/rttbench"
)

// startRTT starts the round-trip servers and proxies for one test or
// benchmark.
func startRTT(tb testing.TB) *rttbench.Env {
	tb.Helper()
	e, err := rttbench.Start(rttbench.DefaultRTT)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := e.Close(); err != nil {
			tb.Error(err)
		}
	})
	return e
}

// BenchmarkRTT sends b.N messages per case through the 10 ms delay proxy
// and reports the round trips per message the proxy counted
// ("round-trips/msg"), the wall time per message in round-trip times
// ("rtt-timed/msg") and the client's flights per message. cmd/rtt runs the
// same cases, interleaved over several rounds, and prints the table.
func BenchmarkRTT(b *testing.B) {
	e := startRTT(b)
	for _, c := range e.Cases() {
		b.Run(strings.ReplaceAll(c.Name, " ", "_"), func(b *testing.B) {
			res, err := c.Run(context.Background(), b.N)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(res.RoundTripsPerMsg(), "round-trips/msg")
			b.ReportMetric(res.RTTsPerMsg(), "rtt-timed/msg")
			b.ReportMetric(res.FlightsPerMsg(), "flights/msg")
			if c.Target > 0 && res.RoundTripsPerMsg() > c.Target {
				b.Errorf("%.2f round trips per message, want at most %g", res.RoundTripsPerMsg(), c.Target)
			}
		})
	}
}

// TestRoundTrips checks the counts the benchmark reports, for mailsec and
// for go-smtp's lockstep client as a control: counted, not timed, so they
// hold on any machine. A warm mailsec message is one flight (MAIL, RCPT
// and BDAT LAST together) and one round trip; a cold STARTTLS one is 7
// (TCP, greeting, EHLO, STARTTLS, TLS 1.3, EHLO, the transaction); a cold
// implicit-TLS one is 5 (TCP, TLS 1.3, the greeting after the client's
// Finished, EHLO, the transaction). go-smtp waits for each command.
func TestRoundTrips(t *testing.T) {
	e := startRTT(t)
	want := map[string]float64{
		"mailsec warm":              1,
		"go-smtp warm":              4, // MAIL, RCPT, DATA, content
		"mailsec cold STARTTLS":     7,
		"go-smtp cold STARTTLS":     10,
		"mailsec cold implicit TLS": 5,
		"go-smtp cold implicit TLS": 8,
	}
	for _, c := range e.Cases() {
		w, ok := want[c.Name]
		if !ok {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			res, err := c.Run(t.Context(), 3)
			if err != nil {
				t.Fatal(err)
			}
			if got := res.RoundTripsPerMsg(); got != w {
				t.Errorf("%.2f round trips per message (%d turns, %d connections, %d messages), want %g",
					got, res.Turns, res.Conns, res.Msgs, w)
			}
			// Every message waits at least its round trips of delay.
			if got := res.RTTsPerMsg(); got < w {
				t.Errorf("%.2f round-trip times per message by the clock, fewer than the %g counted", got, w)
			}
		})
	}
}
