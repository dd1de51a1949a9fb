package bench_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec/bench/outboxbench"
	"github.com/mailsec/mailsec/internal/pgtest"
)

// outboxEnv is the Postgres server and SQLite directory every outbox
// benchmark in this process uses, started by the first that needs it.
var outboxEnv struct {
	once sync.Once
	pg   *pgtest.Instance
	dir  string
	env  *outboxbench.Env
	sink *outboxbench.Sink
	err  error // from starting Postgres
}

// benchEnv returns the shared Env, starting Postgres the first time. When
// Postgres is not available the Env has none (see needPostgres).
func benchEnv(b *testing.B) *outboxbench.Env {
	b.Helper()
	o := &outboxEnv
	o.once.Do(func() {
		if o.dir, o.err = os.MkdirTemp("", "outboxbench-"); o.err != nil {
			return
		}
		if o.sink, o.err = outboxbench.StartSink(); o.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		o.pg, o.err = pgtest.Launch(ctx, pgtest.Options{Durable: true})
		admin := ""
		if o.err == nil {
			admin = o.pg.URL()
		}
		o.env = outboxbench.NewEnv(o.dir, admin)
	})
	if o.env == nil {
		b.Fatalf("outbox benchmarks: %v", o.err)
	}
	return o.env
}

// closeOutboxEnv stops Postgres and removes the SQLite directory.
func closeOutboxEnv() error {
	o := &outboxEnv
	var errs []error
	if o.pg != nil {
		errs = append(errs, o.pg.Close())
	}
	if o.sink != nil {
		errs = append(errs, o.sink.Close())
	}
	if o.dir != "" {
		errs = append(errs, os.RemoveAll(o.dir))
	}
	return errors.Join(errs...)
}

// needPostgres skips b when there is no Postgres, unless CI is set: then
// it fails b.
func needPostgres(b *testing.B, env *outboxbench.Env) {
	b.Helper()
	if env.HasPostgres() {
		return
	}
	if os.Getenv("CI") != "" {
		b.Fatalf("%v (not skipping because CI is set)", outboxEnv.err)
	}
	b.Skip(outboxEnv.err)
}

// forEach runs f as a sub-benchmark for every peer on every database.
func forEach(b *testing.B, f func(b *testing.B, env *outboxbench.Env, kind outboxbench.Kind, peer outboxbench.Peer)) {
	env := benchEnv(b)
	for _, kind := range []outboxbench.Kind{outboxbench.SQLite, outboxbench.Postgres} {
		for _, peer := range outboxbench.Peers(outboxbench.Outbox(), outboxEnv.sink) {
			b.Run(fmt.Sprintf("%s/%s", kind, peer.Name), func(b *testing.B) {
				if kind == outboxbench.Postgres {
					needPostgres(b, env)
				}
				f(b, env, kind, peer)
			})
		}
	}
}

// BenchmarkOutboxEnqueue: 8 goroutines enqueue b.N items, each carrying a
// sealed 10 KB message, on a fresh database. ns/op is wall time per item
// (all goroutines together); p50-ms and p99-ms are the latency of one
// enqueue. The fresh database and the warm-up are not in ns/op, but are in
// the benchmark's running time: use -benchtime 2000x, not a duration.
func BenchmarkOutboxEnqueue(b *testing.B) {
	forEach(b, func(b *testing.B, env *outboxbench.Env, kind outboxbench.Kind, peer outboxbench.Peer) {
		if peer.Enqueue == nil {
			b.Skipf("%s does not enqueue", peer.Name)
		}
		p := outboxbench.NewPayload(outboxbench.MessageSize)
		res, err := outboxbench.MeasureEnqueue(context.Background(), env, kind, peer, p, b.N, outboxbench.Concurrency, 10*outboxbench.Concurrency)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(res.Elapsed.Nanoseconds())/float64(res.N), "ns/op")
		b.ReportMetric(float64(res.P50.Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(res.P99.Microseconds())/1000, "p99-ms")
		b.ReportMetric(res.PerSecond(), "enq/s")
	})
}

// BenchmarkOutboxDeliver: b.N items queued on a fresh database (not
// timed), then worked end to end. ns/op is wall time per item; items/s is
// the throughput. Use -benchtime 2000x.
func BenchmarkOutboxDeliver(b *testing.B) {
	forEach(b, func(b *testing.B, env *outboxbench.Env, kind outboxbench.Kind, peer outboxbench.Peer) {
		if peer.Deliver == nil {
			b.Skipf("%s does not deliver", peer.Name)
		}
		p := outboxbench.NewPayload(outboxbench.MessageSize)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		res, err := outboxbench.MeasureDeliver(ctx, env, kind, peer, p, b.N)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(res.Elapsed.Nanoseconds())/float64(res.N), "ns/op")
		b.ReportMetric(res.PerSecond(), "items/s")
	})
}
