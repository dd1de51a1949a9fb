// Command outbox measures durable queues side by side (package
// outboxbench): for every peer, on SQLite on disk and on Postgres on
// loopback, the latency of one enqueue from 8 goroutines at once (p50,
// p99) and the throughput of 2,000 queued items worked end to end. Bare
// River is the floor; mailsec's outbox is reported as a ratio to it,
// against the project's targets:
//
//	enqueue p50 and p99 ÷ River's   ≤ 1.5, and p99 under 10 ms
//	delivery items/s ÷ River's      ≥ 0.8
//
// beside the absolute rate of a pooled Send of the same messages to the
// same in-process sink (peer "send", no database). For delivery it also
// reports this process's CPU time per item (cpu-µs/item: the peer, River
// and the sink, not a Postgres server), on Linux the whole machine's
// (machine cpu-µs/item: the Postgres server and the kernel too, and
// whatever else runs), and the median of the rounds' ratios, each round's
// peers having run one after the other. -peers measures only some peers
// (a CPU profile of one, say).
//
// Usage:
//
//	go run ./cmd/outbox [-count 3] [-n 2000] [-deliver 2000] [-size 10240] [-c 8]
//	    [-settings outbox|tuned|river] [-db sqlite,postgres] [-measure enqueue,deliver]
//	    [-dir DIR] [-pg URL] [-check] [-cpuprofile FILE] [-memprofile FILE] [-peers river,outbox,send]
//
// The default settings, outbox, are those the outbox runs River with
// (outboxbench.Outbox); the floor runs with them too. With tuned or river
// (or -fetch-cooldown, -fetch-poll) the outbox is left out: it runs with
// its own fetch settings, and would not be compared on the same ones.
//
// and, to explore other settings than -settings gives: -sqlite-sync FULL|NORMAL,
// -workers N, -fetch-cooldown D, -fetch-poll D, -pg-conns N.
//
// Without -pg it starts a private Postgres (internal/pgtest, fsync on) and
// stops it at the end; with -pg it creates and drops its databases on that
// server through URL. SQLite files go to -dir (default: the temporary
// directory), which must be on a real disk, not a tmpfs. The runs are
// interleaved (each peer once, then each again) and the medians reported.
// With -check it exits with status 1 when a peer misses a target; it exits
// with status 2 when a measurement fails.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailsec/mailsec/bench/outboxbench"
	"github.com/mailsec/mailsec/internal/pgtest"
)

// The project's targets for a peer against the floor.
const (
	maxEnqueueRatio = 1.5
	maxEnqueueP99   = 10 * time.Millisecond
	minDeliverRatio = 0.8
)

func main() {
	os.Exit(run())
}

// run does the work of main and returns the exit status, after the
// deferred clean-ups (the Postgres server, the SQLite files) have run.
func run() int {
	count := flag.Int("count", 3, "rounds; the median of each figure is reported")
	n := flag.Int("n", outboxbench.DeliverCount, "items enqueued per enqueue measurement")
	deliver := flag.Int("deliver", outboxbench.DeliverCount, "items worked per delivery measurement")
	size := flag.Int("size", outboxbench.MessageSize, "message size in bytes (the payload is this plus the seal's overhead)")
	settingsName := flag.String("settings", "outbox", "River settings: outbox (the outbox's, outboxbench.Outbox), tuned (outboxbench.Tuned) or river (River's defaults, 8 workers)")
	sqliteSync := flag.String("sqlite-sync", "", "override SQLite's synchronous pragma (FULL or NORMAL)")
	dbs := flag.String("db", "sqlite,postgres", "databases to measure, comma-separated")
	dir := flag.String("dir", os.TempDir(), "directory for the SQLite files")
	pgURL := flag.String("pg", "", "URL of a database on a Postgres server to create the benchmark's databases through (default: start a private server)")
	check := flag.Bool("check", false, "exit with status 1 when a peer misses a target")
	measure := flag.String("measure", "enqueue,deliver", "what to measure, comma-separated")
	concurrency := flag.Int("c", outboxbench.Concurrency, "goroutines that enqueue at once")
	workers := flag.Int("workers", 0, "override the settings' MaxWorkers")
	cooldown := flag.Duration("fetch-cooldown", 0, "override the settings' FetchCooldown")
	poll := flag.Duration("fetch-poll", 0, "override the settings' FetchPollInterval")
	conns := flag.Int("pg-conns", 0, "override the settings' Postgres pool size")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the measurements to this file")
	memprofile := flag.String("memprofile", "", "write a profile of the memory allocated since the process started (setup and queueing included) to this file")
	only := flag.String("peers", "", "measure only these peers, comma-separated (default: every peer)")
	flag.Parse()

	var s outboxbench.Settings
	switch *settingsName {
	case "outbox":
		s = outboxbench.Outbox()
	case "tuned":
		s = outboxbench.Tuned()
	case "river":
		s = outboxbench.RiverDefaults()
	default:
		return failed(fmt.Errorf("-settings %q: want outbox, tuned or river", *settingsName))
	}
	if *sqliteSync != "" {
		s.SQLiteSynchronous = strings.ToUpper(*sqliteSync)
	}
	if *workers > 0 {
		s.MaxWorkers = *workers
	}
	if *cooldown > 0 {
		s.FetchCooldown = *cooldown
	}
	if *poll > 0 {
		s.FetchPollInterval = *poll
	}
	if *conns > 0 {
		s.PostgresMaxConns = int32(*conns)
	}
	if *count < 1 || *n < 1 || *deliver < 1 || *size < 0 || *concurrency < 1 {
		return failed(errors.New("-count, -n, -deliver and -c must be at least 1, -size at least 0"))
	}
	known := []string{outboxbench.Floor, outboxbench.OutboxPeerName, outboxbench.SendPeerName}
	var names []string // -peers, or every peer
	for _, name := range strings.Split(*only, ",") {
		if name = strings.TrimSpace(name); name == "" && *only == "" {
			names = known
			break
		}
		if !slices.Contains(known, name) {
			return failed(fmt.Errorf("-peers: unknown peer %q (want %s)", name, strings.Join(known, ", ")))
		}
		names = append(names, name)
	}
	doEnqueue, doDeliver := false, false
	for _, m := range strings.Split(*measure, ",") {
		switch strings.TrimSpace(m) {
		case "enqueue":
			doEnqueue = true
		case "deliver":
			doDeliver = true
		default:
			return failed(fmt.Errorf("-measure: unknown measurement %q", m))
		}
	}
	var kinds []outboxbench.Kind
	for _, k := range strings.Split(*dbs, ",") {
		switch kind := outboxbench.Kind(strings.TrimSpace(k)); kind {
		case outboxbench.SQLite, outboxbench.Postgres:
			kinds = append(kinds, kind)
		default:
			return failed(fmt.Errorf("-db: unknown database %q", k))
		}
	}

	ctx := context.Background()
	admin := *pgURL
	if admin == "" && slices.Contains(kinds, outboxbench.Postgres) {
		lctx, cancel := context.WithTimeout(ctx, time.Minute)
		pg, err := pgtest.Launch(lctx, pgtest.Options{Durable: true})
		cancel()
		if err != nil {
			return failed(fmt.Errorf("starting Postgres: %w", err))
		}
		defer pg.Close()
		admin = pg.URL()
		fmt.Printf("Postgres: %s, private server on 127.0.0.1:%d, fsync on\n", pg.Version(), pg.Port())
	}
	sqliteDir, err := os.MkdirTemp(*dir, "outboxbench-")
	if err != nil {
		return failed(err)
	}
	defer os.RemoveAll(sqliteDir)
	env := outboxbench.NewEnv(sqliteDir, admin)

	sink, err := outboxbench.StartSink()
	if err != nil {
		return failed(fmt.Errorf("starting the sink: %w", err))
	}
	defer sink.Close()

	p := outboxbench.NewPayload(*size)
	peers := outboxbench.Peers(s, sink)
	peers = slices.DeleteFunc(peers, func(p outboxbench.Peer) bool { return !slices.Contains(names, p.Name) })
	fmt.Printf("%s/%s, GOMAXPROCS=%d, NumCPU=%d, %s\n", runtime.GOOS, runtime.GOARCH,
		runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.Version())
	fmt.Printf("settings (%s): %s\n", *settingsName, s)
	switch {
	case !slices.Contains(names, outboxbench.OutboxPeerName):
		fmt.Println("the outbox is not measured (-peers)")
	case !slices.ContainsFunc(peers, func(p outboxbench.Peer) bool { return p.Name == outboxbench.OutboxPeerName }):
		fmt.Println("the outbox is not measured: it runs River with its own fetch settings (-settings outbox)")
	}
	fmt.Printf("payload: a %d-byte message sealed to %d bytes; enqueue: %d items from %d goroutines; delivery: %d items; %d rounds, medians\n\n",
		p.MessageSize, len(p.Sealed), *n, *concurrency, *deliver, *count)

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return failed(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return failed(err)
		}
		defer pprof.StopCPUProfile()
	}
	if *memprofile != "" {
		defer func() {
			if err := writeAllocs(*memprofile); err != nil {
				fmt.Fprintln(os.Stderr, "outbox bench: writing the memory profile:", err)
			}
		}()
	}

	type key struct {
		kind outboxbench.Kind
		peer string
	}
	p50s := map[key][]float64{}
	p99s := map[key][]float64{}
	enqRates := map[key][]float64{}
	delRates := map[key][]float64{}
	delCPU := map[key][]float64{}
	delMachine := map[key][]float64{}
	for r := range *count {
		for _, kind := range kinds {
			for _, peer := range peers {
				k := key{kind, peer.Name}
				if peer.Enqueue != nil && doEnqueue {
					res, err := outboxbench.MeasureEnqueue(ctx, env, kind, peer, p, *n, *concurrency, 10*(*concurrency))
					if err != nil {
						return failed(err)
					}
					p50s[k] = append(p50s[k], ms(res.P50))
					p99s[k] = append(p99s[k], ms(res.P99))
					enqRates[k] = append(enqRates[k], res.PerSecond())
					fmt.Fprintf(os.Stderr, "round %d/%d  %-8s %-8s enqueue  p50 %6.2f ms  p99 %6.2f ms  max %6.2f ms  %6.0f/s\n",
						r+1, *count, kind, peer.Name, ms(res.P50), ms(res.P99), ms(res.Max), res.PerSecond())
				}
				if peer.Deliver != nil && doDeliver {
					dctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
					res, err := outboxbench.MeasureDeliver(dctx, env, kind, peer, p, *deliver)
					cancel()
					if err != nil {
						return failed(err)
					}
					delRates[k] = append(delRates[k], res.PerSecond())
					delCPU[k] = append(delCPU[k], float64(res.CPUPerItem())/float64(time.Microsecond))
					if res.MachineCPU > 0 {
						delMachine[k] = append(delMachine[k], float64(res.MachineCPUPerItem())/float64(time.Microsecond))
					}
					machine := ""
					if res.MachineCPU > 0 {
						machine = fmt.Sprintf("  %5.0f machine cpu-µs/item", float64(res.MachineCPUPerItem())/float64(time.Microsecond))
					}
					fmt.Fprintf(os.Stderr, "round %d/%d  %-8s %-8s delivery %6.0f items/s (%v)  %5.0f cpu-µs/item%s\n",
						r+1, *count, kind, peer.Name, res.PerSecond(), res.Elapsed.Round(time.Millisecond), float64(res.CPUPerItem())/float64(time.Microsecond),
						machine)
				}
			}
		}
	}
	fmt.Fprintln(os.Stderr)

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "database\tpeer\tenqueue p50 ms\tp99 ms\tenqueues/s\tdelivery items/s\tcpu-µs/item\tmachine cpu-µs/item\t")
	for _, kind := range kinds {
		for _, peer := range peers {
			k := key{kind, peer.Name}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", kind, peer.Name,
				medianText(p50s[k], "%.2f"), medianText(p99s[k], "%.2f"), medianText(enqRates[k], "%.0f"), medianText(delRates[k], "%.0f"),
				medianText(delCPU[k], "%.0f"), medianText(delMachine[k], "%.0f"))
		}
	}
	_ = tw.Flush()

	missed := 0
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		missed++
		return "MISSED"
	}
	for _, kind := range kinds {
		floor := key{kind, outboxbench.Floor}
		for _, peer := range peers {
			if !outboxbench.Ratioed(peer.Name) {
				continue
			}
			k := key{kind, peer.Name}
			fmt.Printf("\n%s, %s ÷ %s:\n", kind, peer.Name, outboxbench.Floor)
			if len(p50s[floor]) == 0 && len(delRates[floor]) == 0 {
				fmt.Printf("  %s not measured: no ratios\n", outboxbench.Floor)
			}
			if len(p50s[k]) > 0 && len(p50s[floor]) > 0 {
				r50 := median(p50s[k]) / median(p50s[floor])
				r99 := median(p99s[k]) / median(p99s[floor])
				fmt.Printf("  enqueue p50 %5.2f  (target ≤ %g)  %s\n", r50, maxEnqueueRatio, verdict(r50 <= maxEnqueueRatio))
				fmt.Printf("  enqueue p99 %5.2f  (target ≤ %g)  %s\n", r99, maxEnqueueRatio, verdict(r99 <= maxEnqueueRatio))
			}
			if len(p99s[k]) > 0 {
				p99 := median(p99s[k])
				fmt.Printf("  enqueue p99 %5.2f ms (target < %v)  %s\n", p99, maxEnqueueP99, verdict(p99 < ms(maxEnqueueP99)))
			}
			if len(delRates[k]) > 0 && len(delRates[floor]) > 0 {
				rd := median(delRates[k]) / median(delRates[floor])
				fmt.Printf("  delivery    %5.2f  (target ≥ %g)  %s\n", rd, minDeliverRatio, verdict(rd >= minDeliverRatio))
			}
			if len(delRates[k]) > 1 && len(delRates[k]) == len(delRates[floor]) {
				// Each round's peers ran one after the other: the ratio
				// within a round is the least disturbed by other work.
				var rr []float64
				for i := range delRates[k] {
					rr = append(rr, delRates[k][i]/delRates[floor][i])
				}
				fmt.Printf("  delivery    %5.2f  median of the rounds' ratios (%s)\n", median(rr), ratiosText(rr))
			}
			if len(delCPU[k]) > 0 && len(delCPU[floor]) > 0 && median(delCPU[k]) > 0 {
				fmt.Printf("  delivery CPU of this process per item: %.0f µs against %.0f (%.2f)\n",
					median(delCPU[k]), median(delCPU[floor]), median(delCPU[k])/median(delCPU[floor]))
			}
			if len(delMachine[k]) > 0 && len(delMachine[floor]) > 0 {
				fmt.Printf("  delivery CPU of the whole machine per item: %.0f µs against %.0f (%.2f)\n",
					median(delMachine[k]), median(delMachine[floor]), median(delMachine[k])/median(delMachine[floor]))
			}
			if send := delRates[key{kind, outboxbench.SendPeerName}]; len(delRates[k]) > 0 && len(send) > 0 {
				fmt.Printf("  delivery %.0f messages/s beside a pooled Send's %.0f/s (%.2f of it)\n",
					median(delRates[k]), median(send), median(delRates[k])/median(send))
			}
		}
	}
	if missed > 0 && *check {
		return 1
	}
	return 0
}

func ratiosText(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func medianText(v []float64, format string) string {
	if len(v) == 0 {
		return "-"
	}
	return fmt.Sprintf(format, median(v))
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

// failed reports err and returns exit status 2.
func failed(err error) int {
	fmt.Fprintln(os.Stderr, "outbox:", err)
	return 2
}

// writeAllocs writes the profile of the memory allocated so far to path
// (go tool pprof -sample_index=alloc_space).
func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
