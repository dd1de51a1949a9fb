// Package outboxbench measures durable queues side by side on the same
// databases in the same run: how long one enqueue takes (p50 and p99 from
// several goroutines at once) and how many queued items per second are
// worked end to end. River itself, bare, is the floor: every other peer's
// figures are read as ratios to River's on the same database.
//
// A peer is a named pair of functions (see [Peer]): one prepares an
// [Enqueuer] on a fresh, empty database, the other prepares a [Deliverer]
// with n items already queued. The measurements ([MeasureEnqueue],
// [MeasureDeliver]) time only what the peer's Enqueue and Run do; opening,
// migrating and filling the queue are not timed. Each measurement gets a
// database of its own from [Env.Fresh]: a new SQLite file on disk, or a new
// database on a Postgres server.
//
// The functions live here, outside a _test.go file, so that both `go test
// -bench` (outbox_test.go in the module root) and cmd/outbox run the very
// same code.
package outboxbench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailsec/mailsec/bench/internal/cputime"
)

// Defaults of the measurements.
const (
	// MessageSize is the size of the message each job stands for: a
	// 10 KB message, as the project's targets say.
	MessageSize = 10 << 10
	// SealOverhead is what sealing adds to a message: a 12-byte nonce and
	// a 16-byte tag (AES-GCM or ChaCha20-Poly1305).
	SealOverhead = 12 + 16
	// Concurrency is the number of goroutines that enqueue at once.
	Concurrency = 8
	// DeliverCount is the number of items worked end to end.
	DeliverCount = 2000
)

// Payload is what one queued item carries.
type Payload struct {
	// MessageSize is the size of the plaintext message an item stands
	// for; a peer that seals messages itself builds one of this size.
	MessageSize int
	// Sealed stands in for the sealed message: MessageSize+SealOverhead
	// random (so incompressible, like ciphertext) bytes, the same in
	// every run.
	Sealed []byte
}

// NewPayload returns the payload for a message of messageSize bytes.
func NewPayload(messageSize int) Payload {
	r := rand.New(rand.NewChaCha8([32]byte{'o', 'u', 't', 'b', 'o', 'x'}))
	b := make([]byte, messageSize+SealOverhead)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return Payload{MessageSize: messageSize, Sealed: b}
}

// Enqueuer enqueues items on one database.
type Enqueuer interface {
	// Enqueue durably queues one item. It is timed, and called from
	// several goroutines at once.
	Enqueue(ctx context.Context) error
	// Close releases what the Enqueuer opened; it is not timed.
	Close() error
}

// Deliverer works the items queued on one database.
type Deliverer interface {
	// Run works every queued item and returns once each is recorded as
	// done in the database. It is timed.
	Run(ctx context.Context) error
	// Close releases what the Deliverer opened; it is not timed. It must
	// fail when fewer items are recorded as done than were queued.
	Close() error
}

// Peer is one system measured. Either function may be nil when the peer
// does not take part in that measurement.
type Peer struct {
	// Name names the peer in reports, e.g. "river".
	Name string
	// Enqueue prepares an Enqueuer on db, a fresh, empty database: open,
	// migrate, warm up. It is not timed.
	Enqueue func(ctx context.Context, db Target, p Payload) (Enqueuer, error)
	// Deliver prepares a Deliverer on db, a fresh, empty database, with n
	// items of p queued and nothing worked yet. It is not timed.
	Deliver func(ctx context.Context, db Target, p Payload, n int) (Deliverer, error)
}

// EnqueueResult is the outcome of [MeasureEnqueue].
type EnqueueResult struct {
	N       int           // items enqueued
	P50     time.Duration // median latency of one Enqueue
	P99     time.Duration // 99th percentile
	Max     time.Duration
	Elapsed time.Duration // wall time of all N
}

// PerSecond is the enqueue throughput of all goroutines together.
func (r EnqueueResult) PerSecond() float64 { return float64(r.N) / r.Elapsed.Seconds() }

// MeasureEnqueue has concurrency goroutines call Enqueue until n items are
// queued, on a fresh database of kind, and returns the latency percentiles.
// Before the clock starts it enqueues warm items from as many goroutines
// (pools filled with the connections they use, statements prepared on
// each, pages cached); they are not counted.
func MeasureEnqueue(ctx context.Context, env *Env, kind Kind, peer Peer, p Payload, n, concurrency, warm int) (res EnqueueResult, err error) {
	if peer.Enqueue == nil {
		return res, fmt.Errorf("%s does not enqueue", peer.Name)
	}
	if n < 1 || concurrency < 1 {
		return res, errors.New("n and concurrency must be at least 1")
	}
	db, drop, err := env.Fresh(ctx, kind)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, drop()) }()
	e, err := peer.Enqueue(ctx, db, p)
	if err != nil {
		return res, fmt.Errorf("%s on %s: preparing: %w", peer.Name, kind, err)
	}
	defer func() { err = errors.Join(err, e.Close()) }()
	if _, err := enqueueFrom(ctx, e, warm, concurrency); err != nil {
		return res, fmt.Errorf("%s on %s: warm-up enqueue: %w", peer.Name, kind, err)
	}
	began := time.Now()
	lat, err := enqueueFrom(ctx, e, n, concurrency)
	res.Elapsed = time.Since(began)
	if err != nil {
		return res, fmt.Errorf("%s on %s: enqueue: %w", peer.Name, kind, err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	res.N = len(all)
	res.P50, res.P99, res.Max = percentile(all, 50), percentile(all, 99), all[len(all)-1]
	return res, nil
}

// enqueueFrom has concurrency goroutines call Enqueue until n items are
// queued, and returns each goroutine's latencies.
func enqueueFrom(ctx context.Context, e Enqueuer, n, concurrency int) ([][]time.Duration, error) {
	var next atomic.Int64
	lat := make([][]time.Duration, concurrency)
	errs := make([]error, concurrency)
	var wg sync.WaitGroup
	for g := range concurrency {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				t0 := time.Now()
				if err := e.Enqueue(ctx); err != nil {
					errs[g] = err
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		})
	}
	wg.Wait()
	return lat, errors.Join(errs...)
}

// percentile returns the p-th percentile of sorted (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100 // ceil(len*p/100), 1-based rank
	return sorted[max(i, 1)-1]
}

// DeliverResult is the outcome of [MeasureDeliver].
type DeliverResult struct {
	N       int // items worked
	Elapsed time.Duration
	// CPU is the user and system CPU time this process used while the
	// items were worked (the peer, River, and the in-process sink; not a
	// Postgres server's), when the platform reports it; zero otherwise.
	// On a machine shared with other work it moves less than Elapsed.
	CPU time.Duration
	// MachineCPU is the CPU time the whole machine spent busy while the
	// items were worked (this process, a Postgres server on it, the
	// kernel, and whatever else ran), summed over all CPUs to a
	// resolution of 10 ms, when the platform reports it (Linux); zero
	// otherwise. Where the database and the process share the CPUs, it
	// is the cost that bounds the throughput.
	MachineCPU time.Duration
}

// CPUPerItem is CPU divided by N.
func (r DeliverResult) CPUPerItem() time.Duration { return r.CPU / time.Duration(max(r.N, 1)) }

// MachineCPUPerItem is MachineCPU divided by N.
func (r DeliverResult) MachineCPUPerItem() time.Duration {
	return r.MachineCPU / time.Duration(max(r.N, 1))
}

// PerSecond is the number of items worked per second.
func (r DeliverResult) PerSecond() float64 { return float64(r.N) / r.Elapsed.Seconds() }

// MeasureDeliver queues n items on a fresh database of kind (not timed) and
// times the peer's Run, which works them all.
func MeasureDeliver(ctx context.Context, env *Env, kind Kind, peer Peer, p Payload, n int) (res DeliverResult, err error) {
	if peer.Deliver == nil {
		return res, fmt.Errorf("%s does not deliver", peer.Name)
	}
	db, drop, err := env.Fresh(ctx, kind)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, drop()) }()
	d, err := peer.Deliver(ctx, db, p, n)
	if err != nil {
		return res, fmt.Errorf("%s on %s: preparing %d items: %w", peer.Name, kind, n, err)
	}
	defer func() { err = errors.Join(err, d.Close()) }()
	cpu0, _ := cputime.Process()
	machine0, _ := cputime.Machine()
	began := time.Now()
	if err := d.Run(ctx); err != nil {
		return res, fmt.Errorf("%s on %s: working %d items: %w", peer.Name, kind, n, err)
	}
	res = DeliverResult{N: n, Elapsed: time.Since(began)}
	if cpu1, ok := cputime.Process(); ok {
		res.CPU = cpu1 - cpu0
	}
	if machine1, ok := cputime.Machine(); ok {
		res.MachineCPU = machine1 - machine0
	}
	return res, nil
}
