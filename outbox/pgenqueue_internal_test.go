package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
)

// openPgGroupTest opens an outbox (not started: jobs stay queued) on a
// fresh Postgres database, with a pool of its own to look at the tables.
func openPgGroupTest(t *testing.T) (*Outbox, *pgxpool.Pool) {
	t.Helper()
	url := pgtest.Start(t).NewDatabase(t)
	sender, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := Open(t.Context(), sender, url, &Options{Keys: []Key{NewKey()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close(context.Background()) })
	if ob.enqueueGroup == nil {
		t.Fatal("a Postgres outbox without its Enqueue group")
	}
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return ob, pool
}

func groupMessage(i int) *mailsec.Message {
	return &mailsec.Message{From: "app@example.com", To: []string{fmt.Sprintf("rcpt%d@example.org", i)},
		Subject: fmt.Sprintf("message %d", i), Text: "hello"}
}

// queuedOnce checks that each of ids is stored once, queued, with one
// delivery job, and that nothing else is: n messages and n jobs in all.
func queuedOnce(t *testing.T, ob *Outbox, pool *pgxpool.Pool, ids []string) {
	t.Helper()
	ctx := context.Background()
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		st, err := ob.Status(ctx, id)
		if err != nil || st.State != Queued {
			t.Errorf("message %s: %v, %v", id, st, err)
			continue
		}
		var jobs int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = $1 AND args->>'id' = $2`, deliverKind, id).Scan(&jobs); err != nil || jobs != 1 {
			t.Errorf("message %s: %d delivery jobs (%v)", id, jobs, err)
		}
	}
	var messages, jobs int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM mailsec_outbox_message`).Scan(&messages); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = $1`, deliverKind).Scan(&jobs); err != nil {
		t.Fatal(err)
	}
	if messages != len(seen) || jobs != len(seen) {
		t.Errorf("%d messages and %d delivery jobs stored, want %d of each", messages, jobs, len(seen))
	}
}

// inOneEnqueueGroup runs the calls as concurrent Enqueues that all fall
// in one group: the group is held as if others ran until every call waits
// in it (or has returned, its context ended), then led.
func inOneEnqueueGroup(t *testing.T, g *pgEnqueueGroup, calls []func() (string, error)) (ids []string, errs []error) {
	t.Helper()
	g.mu.Lock()
	if g.leaders > 0 || len(g.pending) > 0 {
		g.mu.Unlock()
		t.Fatal("the group is busy")
	}
	g.leaders = pgGroupsAtOnce
	g.mu.Unlock()
	ids, errs = make([]string, len(calls)), make([]error, len(calls))
	var wg sync.WaitGroup
	var returned atomic.Int64 // a call whose context has ended does not wait
	for i, call := range calls {
		wg.Go(func() {
			ids[i], errs[i] = call()
			returned.Add(1)
		})
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		g.mu.Lock()
		n := len(g.pending) + int(returned.Load())
		g.mu.Unlock()
		if n == len(calls) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d calls waiting in the group", n, len(calls))
		}
	}
	g.lead(g.run)
	wg.Wait()
	g.mu.Lock()
	g.leaders -= pgGroupsAtOnce - 1
	g.mu.Unlock()
	return ids, errs
}

// Many concurrent Enqueues, some sharing an idempotency key: each gets
// its own outcome, each message is queued once with one job, and what a
// nil-returning Enqueue queued is there when it returns.
func TestPgEnqueueGroupConcurrent(t *testing.T) {
	t.Parallel()
	ob, pool := openPgGroupTest(t)
	ctx := context.Background()
	// "same": four callers with one message; "clash": two messages, two
	// callers each, one of which gets there first.
	const plain = 40
	type call struct {
		m   *mailsec.Message
		key string
	}
	var calls []call
	for i := range plain {
		calls = append(calls, call{m: groupMessage(i)})
	}
	for range 4 {
		calls = append(calls, call{m: groupMessage(100), key: "same"})
	}
	for i := range 4 {
		calls = append(calls, call{m: groupMessage(200 + i%2), key: "clash"})
	}
	for round := range 3 {
		ids, errs := make([]string, len(calls)), make([]error, len(calls))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, c := range calls {
			wg.Go(func() {
				<-start
				var o *EnqueueOptions
				if c.key != "" {
					o = &EnqueueOptions{IdempotencyKey: fmt.Sprint(c.key, round)}
				}
				ids[i], errs[i] = ob.Enqueue(ctx, c.m, o)
				if errs[i] != nil {
					return
				}
				// Committed before Enqueue returned: another connection sees it.
				var n int
				if err := pool.QueryRow(ctx, `SELECT count(*) FROM mailsec_outbox_message WHERE id = $1`, ids[i]).Scan(&n); err != nil || n != 1 {
					errs[i] = fmt.Errorf("after Enqueue returned %s, %d rows (%v)", ids[i], n, err)
				}
			})
		}
		close(start)
		wg.Wait()
		var want []string
		for i := range plain {
			if errs[i] != nil {
				t.Fatalf("round %d, Enqueue %d: %v", round, i, errs[i])
			}
			want = append(want, ids[i])
		}
		same := calls[plain : plain+4]
		for i := range same {
			if err := errs[plain+i]; err != nil {
				t.Fatalf("round %d, same key and message: %v", round, err)
			}
			if ids[plain+i] != ids[plain] {
				t.Fatalf("round %d, same key and message: IDs %v", round, ids[plain:plain+4])
			}
		}
		want = append(want, ids[plain])
		// clash: the callers of one message got its ID, the others an
		// *IdempotencyError naming it.
		winner := ""
		for i := plain + 4; i < plain+8; i++ {
			if errs[i] == nil {
				if winner != "" && ids[i] != winner {
					t.Fatalf("round %d, clash: two messages queued with one key: %s, %s", round, winner, ids[i])
				}
				winner = ids[i]
			}
		}
		if winner == "" {
			t.Fatalf("round %d, clash: nothing queued: %v", round, errs[plain+4:])
		}
		wonBy := ""
		for i := plain + 4; i < plain+8; i++ {
			if errs[i] == nil {
				wonBy = calls[i].m.Subject
			}
		}
		for i := plain + 4; i < plain+8; i++ {
			var ie *IdempotencyError
			switch {
			case calls[i].m.Subject == wonBy && errs[i] != nil:
				t.Errorf("round %d, clash: the winning message's caller: %v", round, errs[i])
			case calls[i].m.Subject != wonBy && (!errors.As(errs[i], &ie) || ie.ID != winner):
				t.Errorf("round %d, clash: the other message's caller: %q, %v, want an *IdempotencyError for %s", round, ids[i], errs[i], winner)
			}
		}
		want = append(want, winner)
		if round == 0 {
			queuedOnce(t, ob, pool, want)
		}
	}
}

// In one group: plain messages, a key given twice with one message, a key
// already queued with this message and one queued with another, and a
// caller whose context has ended; then a
// group with a caller whose row Postgres refuses, and one whose context
// has ended: the others are queued once, the failing callers get their
// errors, and nothing of theirs is stored.
func TestPgEnqueueGroupOutcomes(t *testing.T) {
	t.Parallel()
	ob, pool := openPgGroupTest(t)
	ctx := context.Background()
	enqueue := func(ctx context.Context, m *mailsec.Message, key string, setID string) func() (string, error) {
		return func() (string, error) {
			var o *EnqueueOptions
			if key != "" {
				o = &EnqueueOptions{IdempotencyKey: key}
			}
			pm, err := ob.prepare(m, o)
			if err != nil {
				return "", err
			}
			if setID != "" {
				pm.id = setID
			}
			return ob.enqueuePrepared(ctx, m, pm)
		}
	}
	oldSame, err := ob.Enqueue(ctx, groupMessage(1), &EnqueueOptions{IdempotencyKey: "old-same"})
	if err != nil {
		t.Fatal(err)
	}
	oldOther, err := ob.Enqueue(ctx, groupMessage(2), &EnqueueOptions{IdempotencyKey: "old-other"})
	if err != nil {
		t.Fatal(err)
	}
	ended, cancel := context.WithCancel(ctx)
	cancel()
	ids, errs := inOneEnqueueGroup(t, ob.enqueueGroup, []func() (string, error){
		enqueue(ctx, groupMessage(10), "", ""),
		enqueue(ctx, groupMessage(11), "", ""),
		enqueue(ctx, groupMessage(12), "twice", ""),
		enqueue(ctx, groupMessage(12), "twice", ""),
		enqueue(ctx, groupMessage(1), "old-same", ""),
		enqueue(ctx, groupMessage(3), "old-other", ""),
		enqueue(ctx, groupMessage(13), "new", ""),
		enqueue(ended, groupMessage(14), "", ""),
	})
	for i := range 4 {
		if errs[i] != nil {
			t.Fatalf("Enqueue %d: %v", i, errs[i])
		}
	}
	if ids[2] != ids[3] {
		t.Errorf("one key twice in a group: IDs %s, %s", ids[2], ids[3])
	}
	if ids[4] != oldSame || errs[4] != nil {
		t.Errorf("a key queued with the same message: %q, %v, want %s", ids[4], errs[4], oldSame)
	}
	var ie *IdempotencyError
	if !errors.As(errs[5], &ie) || ie.ID != oldOther || ids[5] != "" {
		t.Errorf("a key queued with another message: %q, %v", ids[5], errs[5])
	}
	if errs[6] != nil {
		t.Fatal(errs[6])
	}
	if !errors.Is(errs[7], context.Canceled) || ids[7] != "" {
		t.Errorf("an ended context: %q, %v", ids[7], errs[7])
	}
	queued := []string{oldSame, oldOther, ids[0], ids[1], ids[2], ids[6]}
	queuedOnce(t, ob, pool, queued)

	// A row Postgres refuses (the ID of a queued message) and an ended
	// context, in a group with others.
	firstID := ids[0]
	var firstEnv []byte
	if err := pool.QueryRow(ctx, `SELECT envelope FROM mailsec_outbox_message WHERE id = $1`, firstID).Scan(&firstEnv); err != nil {
		t.Fatal(err)
	}
	ids, errs = inOneEnqueueGroup(t, ob.enqueueGroup, []func() (string, error){
		enqueue(ctx, groupMessage(20), "", ""),
		enqueue(ctx, groupMessage(21), "", firstID),
		enqueue(ctx, groupMessage(22), "k22", ""),
		enqueue(ended, groupMessage(23), "", ""),
		enqueue(ctx, groupMessage(24), "", ""),
	})
	if errs[1] == nil || ids[1] != "" {
		t.Errorf("a refused row: %q, %v", ids[1], errs[1])
	}
	if !errors.Is(errs[3], context.Canceled) || ids[3] != "" {
		t.Errorf("an ended context: %q, %v", ids[3], errs[3])
	}
	for _, i := range []int{0, 2, 4} {
		if errs[i] != nil {
			t.Fatalf("Enqueue %d beside failing ones: %v", i, errs[i])
		}
		queued = append(queued, ids[i])
	}
	queuedOnce(t, ob, pool, queued)
	var env []byte
	if err := pool.QueryRow(ctx, `SELECT envelope FROM mailsec_outbox_message WHERE id = $1`, firstID).Scan(&env); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(env, firstEnv) {
		t.Error("the refused Enqueue changed the message whose ID it had")
	}
}

// A caller whose context ends once its group has begun is told the
// group's outcome: its message committed, Enqueue returns nil.
func TestPgEnqueueGroupContextEndsLate(t *testing.T) {
	t.Parallel()
	ob, pool := openPgGroupTest(t)
	ids, errs := inOneEnqueueGroup(t, ob.enqueueGroup, []func() (string, error){
		func() (string, error) {
			return ob.Enqueue(&endsOnSecondLook{Context: context.Background()}, groupMessage(1), nil)
		},
		func() (string, error) {
			return ob.Enqueue(&endsOnSecondLook{Context: context.Background()}, groupMessage(2), nil)
		},
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Enqueue %d: %v", i, err)
		}
	}
	queuedOnce(t, ob, pool, ids)
}

// endsOnSecondLook is a context that is live the first time its Err is
// asked for, and ended from then on (its Done channel closed once Err has
// been asked).
type endsOnSecondLook struct {
	context.Context
	mu    sync.Mutex
	looks int
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *endsOnSecondLook) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.looks++
	if c.looks > 1 {
		return context.Canceled
	}
	return nil
}

func (c *endsOnSecondLook) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.looks > 0 {
		return closedChan
	}
	return nil
}

// Two outboxes on one database (two processes of an application) give
// the same idempotency keys at once, in opposite orders: their groups wait
// for each other on the keys in one order, and Postgres finds no deadlock.
func TestPgEnqueueGroupsNeverDeadlock(t *testing.T) {
	t.Parallel()
	url := pgtest.Start(t).NewDatabase(t)
	sender, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := NewKey()
	var obs [2]*Outbox
	for i := range obs {
		if obs[i], err = Open(t.Context(), sender, url, &Options{Keys: []Key{key}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = obs[i].Close(context.Background()) })
	}
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	deadlocks := func() int64 {
		var n int64
		if _, err := pool.Exec(t.Context(), `SELECT pg_stat_force_next_flush()`); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(t.Context(), `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := deadlocks()
	const keys = 16
	for round := range 8 {
		var wg sync.WaitGroup
		errs := make([]error, 2*keys)
		start := make(chan struct{})
		for i := range 2 * keys {
			k := i % keys
			if i >= keys {
				k = keys - 1 - k
			}
			wg.Go(func() {
				<-start
				_, errs[i] = obs[i/keys].Enqueue(t.Context(), groupMessage(k), &EnqueueOptions{IdempotencyKey: fmt.Sprint(round, "-", k)})
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, Enqueue %d: %v", round, i, err)
			}
		}
	}
	// Each backend reports its counts when its transaction ends, at most
	// once a second.
	time.Sleep(1500 * time.Millisecond)
	if n := deadlocks() - before; n != 0 {
		t.Errorf("%d deadlocks", n)
	}
}

// A group's work ends at its callers' latest deadline: with the table
// locked, callers with deadlines are told so in time, and nothing of
// theirs is stored once the lock is gone.
func TestPgEnqueueGroupHonoursDeadlines(t *testing.T) {
	t.Parallel()
	ob, pool := openPgGroupTest(t)
	unlock := lockMessages(t, pool, 8*time.Second)
	defer unlock()
	began := time.Now()
	var calls []func() (string, error)
	for i := range 3 {
		calls = append(calls, func() (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(300+100*i)*time.Millisecond)
			defer cancel()
			return ob.Enqueue(ctx, groupMessage(i), nil)
		})
	}
	ids, errs := inOneEnqueueGroup(t, ob.enqueueGroup, calls)
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("the callers returned after %v", took)
	}
	for i, err := range errs {
		if !errors.Is(err, context.DeadlineExceeded) || ids[i] != "" {
			t.Errorf("Enqueue %d: %q, %v, want its deadline's error", i, ids[i], err)
		}
	}
	unlock()
	queuedOnce(t, ob, pool, nil)
}

// An Enqueue that waits for a group while every group is held up (here
// by a lock on the table) returns when its context ends, and queues
// nothing.
func TestPgEnqueueWaitingCallerKeepsItsDeadline(t *testing.T) {
	ob, pool := openPgGroupTest(t)
	unlock := lockMessages(t, pool, 8*time.Second)
	defer unlock()
	g := ob.enqueueGroup
	var wg sync.WaitGroup
	for i := range pgGroupsAtOnce {
		wg.Go(func() { _, _ = ob.Enqueue(context.Background(), groupMessage(i), nil) })
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			g.mu.Lock()
			leaders, pending := g.leaders, len(g.pending)
			g.mu.Unlock()
			if leaders == i+1 && pending == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the groups did not start")
			}
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	id, err := ob.Enqueue(ctx, groupMessage(9), nil)
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("a caller with a 300 ms deadline waiting for a group returned after %v", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) || id != "" {
		t.Errorf("got %q, %v; want the deadline's error", id, err)
	}
	unlock()
	wg.Wait()
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM mailsec_outbox_message`).Scan(&n); err != nil || n != pgGroupsAtOnce {
		t.Errorf("%d messages queued (%v), want the %d held up only", n, err, pgGroupsAtOnce)
	}
}

// lockMessages locks the message table against every other transaction
// until the returned function is called, or for hold at most.
func lockMessages(t *testing.T, pool *pgxpool.Pool, hold time.Duration) (unlock func()) {
	t.Helper()
	lock, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(t.Context(), `LOCK TABLE mailsec_outbox_message IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unlock = func() { once.Do(func() { _ = lock.Rollback(context.Background()) }) }
	time.AfterFunc(hold, unlock)
	return unlock
}
