package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
	"github.com/mailsec/mailsec/transport"
)

// Cancel stops a queued message and deletes its content; a finished or
// unknown message cannot be cancelled.
func TestCancel(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ob, path := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), false)
	m := canaryMessage()
	id, err := ob.Enqueue(context.Background(), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	keep, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Cancel(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ob, keep, outbox.Delivered, 20*time.Second)
	st, err := ob.Status(context.Background(), id)
	if err != nil || st.State != outbox.Cancelled || st.Finished.IsZero() {
		t.Fatalf("cancelled message: %+v, %v", st, err)
	}
	for _, r := range st.Recipients {
		if r.State != outbox.CancelledRecipient {
			t.Fatalf("recipient %+v", r)
		}
	}
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d messages sent, want only the one not cancelled", n)
	}
	db := rawDB(t, path)
	var envelope []byte
	if err := db.QueryRow(`SELECT envelope FROM mailsec_outbox_message WHERE id = ?`, id).Scan(&envelope); err != nil || envelope != nil {
		t.Fatalf("cancelled message's envelope kept: %d bytes, %v", len(envelope), err)
	}
	if n := count(t, db, "mailsec_outbox_chunk"); n != 0 {
		t.Fatalf("%d chunks kept", n)
	}
	if err := ob.Cancel(context.Background(), id); !errors.Is(err, outbox.ErrFinished) {
		t.Fatalf("second Cancel: %v", err)
	}
	if err := ob.Cancel(context.Background(), keep); !errors.Is(err, outbox.ErrFinished) {
		t.Fatalf("Cancel of a delivered message: %v", err)
	}
	if err := ob.Cancel(context.Background(), "nosuchid"); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("Cancel of an unknown message: %v", err)
	}
	if _, err := ob.Status(context.Background(), "nosuchid"); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("Status of an unknown message: %v", err)
	}
}

// Stats give the queue's depth and its oldest message's age.
func TestStats(t *testing.T) {
	ob, _ := openFile(t, newSender(t, &mailsectest.RecordingTransport{}, nil), fast(nil), false)
	s, err := ob.Stats(context.Background())
	if err != nil || s.Depth != 0 || !s.Oldest.IsZero() {
		t.Fatalf("empty queue: %+v, %v", s, err)
	}
	before := time.Now()
	for range 3 {
		if _, err := ob.Enqueue(context.Background(), message(), nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	s, err = ob.Stats(context.Background())
	if err != nil || s.Depth != 3 || s.Due != 3 || s.Sending != 0 || s.Oldest.Before(before.Add(-time.Millisecond)) || s.OldestAge < 50*time.Millisecond {
		t.Fatalf("3 queued: %+v, %v", s, err)
	}
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for s.Depth > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		if s, err = ob.Stats(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if s.Depth != 0 || !s.Oldest.IsZero() {
		t.Fatalf("after delivery: %+v", s)
	}
}

// A finished message's status and Receipts are deleted after
// ReceiptRetention.
func TestRetention(t *testing.T) {
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	ob, path := openFile(t, s, fast(nil), true)
	id, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	if err := ob.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	ob = openAt(t, s, path, fast(&outbox.Options{ReceiptRetention: time.Millisecond}), true)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := ob.Status(context.Background(), id)
		if errors.Is(err, outbox.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status kept past retention: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := count(t, rawDB(t, path), "mailsec_outbox_attempt"); n != 0 {
		t.Fatalf("%d attempts kept", n)
	}
}

// slowTransport takes its time over each delivery, or, with block, waits
// until its context ends.
type slowTransport struct {
	mailsec.Transport
	delay   time.Duration
	block   bool
	entered chan struct{} // told of each Deliver, when not nil
}

func (s *slowTransport) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	if s.entered != nil {
		select {
		case s.entered <- struct{}{}:
		default:
		}
	}
	if s.block {
		// Held after the end of the message went out: no verdict.
		<-ctx.Done()
		return nil, &mailsec.NetworkError{Host: "slow", Op: "DATA", Err: fmt.Errorf("%w: %w", transport.ErrNoVerdict, ctx.Err())}
	}
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, &mailsec.NetworkError{Host: "slow", Op: "MAIL", Err: ctx.Err()}
	}
	return s.Transport.Deliver(ctx, d)
}

// underWay waits until an attempt has reached the transport.
func underWay(t *testing.T, entered <-chan struct{}) {
	t.Helper()
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("no attempt reached the transport")
	}
}

// Close lets deliveries under way finish within its deadline; past it, it
// interrupts them and the messages stay queued, for the next start.
func TestCloseGraceful(t *testing.T) {
	rt := &mailsectest.RecordingTransport{}
	st := &slowTransport{Transport: rt, delay: 500 * time.Millisecond, entered: make(chan struct{}, 1)}
	at := newAttempts()
	s := newSender(t, st, nil)
	ob, path := openFile(t, s, fast(&outbox.Options{OnReceipt: at.on}), true)
	id, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	underWay(t, st.entered)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ob.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if a := at.next(t); a.ID != id || a.State != outbox.Delivered || len(rt.Deliveries()) != 1 {
		t.Fatalf("attempt under way at Close: %+v", a)
	}

	// Past the deadline: interrupted, still queued.
	blocking := &slowTransport{Transport: rt, block: true, entered: make(chan struct{}, 1)}
	ob = openAt(t, newSender(t, blocking, nil), path, fast(&outbox.Options{OnReceipt: at.on}), true)
	id, err = ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	underWay(t, blocking.entered)
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := ob.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close past its deadline: %v", err)
	}
	a := at.next(t)
	if a.State != outbox.Queued || !a.Interrupted {
		t.Fatalf("interrupted attempt: %+v", a)
	}
	ob = openAt(t, s, path, fast(nil), true)
	got := waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	if len(got.Attempts) != 2 || got.Recipients[0].Attempts != 2 {
		t.Fatalf("after restart: %d attempts, %+v", len(got.Attempts), got.Recipients)
	}
	if !got.Recipients[0].PossibleDuplicate {
		// The interrupted attempt broke off after the end of the message
		// went out (so says the transport): the server may have had it.
		t.Fatalf("recipient %+v", got.Recipients[0])
	}
}

// A worker of an outbox before schema version 4 that died during its
// attempt left the message marked in flight ("sending", in_flight_at its
// start, no job_runs); River rescues the job, a worker of this version
// takes the message up after the lease, and its attempt flags the
// recipients as possible duplicates.
func TestLeftInFlightFlagged(t *testing.T) {
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, nil)
	ob, path := openFile(t, s, fast(&outbox.Options{DeliveryTimeout: time.Second}), false)
	id, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// What a worker of an earlier version killed mid-attempt left:
	// River's job running, the message marked in flight.
	db := rawDB(t, path)
	long := time.Now().Add(-time.Hour)
	exec(t, db, `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = ? WHERE kind = 'mailsec_outbox_deliver'`, long.UTC().Format("2006-01-02 15:04:05.000"))
	exec(t, db, `UPDATE mailsec_outbox_message SET state = 'sending', attempts = 1, in_flight_at = ?, job_runs = NULL WHERE id = ?`, long.UnixMicro(), id)
	ob = openAt(t, s, path, fast(&outbox.Options{DeliveryTimeout: time.Second}), true)
	st := waitFor(t, ob, id, outbox.Delivered, 60*time.Second)
	if len(st.Attempts) != 1 || st.Attempts[0].Number != 2 || len(st.Attempts[0].PossibleDuplicates) != 1 || !st.Recipients[0].PossibleDuplicate {
		t.Fatalf("after the rescue: %+v", st)
	}
	if n := len(rt.Deliveries()); n != 1 {
		t.Fatalf("%d deliveries", n)
	}
}

// The same on Postgres.
func TestLeftInFlightFlaggedPostgres(t *testing.T) {
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, nil)
	url := pgtest.Start(t).NewDatabase(t)
	o := func() *outbox.Options { return fast(&outbox.Options{DeliveryTimeout: time.Second}) }
	ob := openAt(t, s, url, o(), false)
	id, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	long := time.Now().Add(-time.Hour)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now() - interval '1 hour' WHERE kind = 'mailsec_outbox_deliver'`, nil},
		{`UPDATE mailsec_outbox_message SET state = 'sending', attempts = 1, in_flight_at = $1, job_runs = NULL WHERE id = $2`, []any{long.UnixMicro(), id}},
	} {
		if _, err := pool.Exec(context.Background(), q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	ob = openAt(t, s, url, o(), true)
	st := waitFor(t, ob, id, outbox.Delivered, 60*time.Second)
	if len(st.Attempts) != 1 || st.Attempts[0].Number != 2 || len(st.Attempts[0].PossibleDuplicates) != 1 || !st.Recipients[0].PossibleDuplicate {
		t.Fatalf("after the rescue: %+v", st)
	}
	if n := len(rt.Deliveries()); n != 1 {
		t.Fatalf("%d deliveries", n)
	}
}

// Two outboxes on one database, each delivering: every message goes out
// once.
func TestTwoWorkersOnce(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			srv := mailsectest.NewServer(t, mailsectest.Config{})
			s := newSender(t, srv.Transport(), nil)
			where := t.TempDir() + "/mail.db"
			if db == "postgres" {
				where = pgtest.Start(t).NewDatabase(t)
			}
			a := openAt(t, s, where, fast(&outbox.Options{Workers: 4}), true)
			b := openAt(t, s, where, fast(&outbox.Options{Workers: 4}), true)
			const n = 40
			ids := make([]string, n)
			var wg sync.WaitGroup
			for i := range ids {
				wg.Go(func() {
					ob := a
					if i%2 == 1 {
						ob = b
					}
					m := message()
					m.Subject = fmt.Sprint("message ", i)
					var err error
					if ids[i], err = ob.Enqueue(context.Background(), m, nil); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			for _, id := range ids {
				waitFor(t, a, id, outbox.Delivered, 30*time.Second)
			}
			time.Sleep(200 * time.Millisecond)
			seen := map[string]int{}
			for _, m := range srv.Messages() {
				seen[m.Header("Message-Id")]++
			}
			if len(seen) != n || len(srv.Messages()) != n {
				t.Fatalf("%d messages for %d Message-IDs, want %d each", len(srv.Messages()), len(seen), n)
			}
		})
	}
}

// A Postgres restart loses nothing: messages queued before it, waiting
// for a smarthost that is down, are delivered after it once the smarthost
// is back, by the same running outbox; an Enqueue during the outage fails
// rather than returning nil.
func TestPostgresRestart(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	down := srv.Transport()
	down.Addr = deadAddr(t)
	sw := &switchTransport{t: down}
	at := newAttempts()
	ob := openAt(t, newSender(t, sw, nil), url, fast(&outbox.Options{OnReceipt: at.on}), true)
	var ids []string
	for range 5 {
		id, err := ob.Enqueue(context.Background(), message(), nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for range 5 {
		at.next(t)
	}
	pg.Stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if id, err := ob.Enqueue(ctx, message(), nil); err == nil {
		t.Fatalf("Enqueue while Postgres is down returned %q and no error", id)
	}
	pg.Start(t)
	sw.set(srv.Transport())
	for _, id := range ids {
		waitFor(t, ob, id, outbox.Delivered, 60*time.Second)
	}
	if n := len(srv.Messages()); n != len(ids) {
		t.Fatalf("%d messages delivered, want %d", n, len(ids))
	}
}

// A message cancelled while its attempt waits for the server's 250 stays
// cancelled, and the attempt is recorded with what the server said: on
// Postgres the one-statement record gives way to the transaction that
// keeps the cancellation.
func TestCancelDuringAttempt(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			h := newHoldServer(t, holdEndOfData, 1, 0)
			where := t.TempDir() + "/mail.db"
			if db == "postgres" {
				where = pgtest.Start(t).NewDatabase(t)
			}
			ob := openAt(t, newSender(t, h.Transport(), nil), where, fast(nil), true)
			ctx := context.Background()
			id, err := ob.Enqueue(ctx, message(), nil)
			if err != nil {
				t.Fatal(err)
			}
			h.waitHeld(t)
			if err := ob.Cancel(ctx, id); err != nil {
				t.Fatal(err)
			}
			h.Release()
			var st *outbox.Status
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if st, err = ob.Status(ctx, id); err != nil {
					t.Fatal(err)
				}
				if len(st.Attempts) > 0 || time.Now().After(deadline) {
					break
				}
			}
			// Status reads the message and its attempts one after the
			// other: read again once the attempt is there.
			if st, err = ob.Status(ctx, id); err != nil {
				t.Fatal(err)
			}
			if st.State != outbox.Cancelled || len(st.Attempts) != 1 || st.Attempts[0].State != outbox.Cancelled {
				t.Fatalf("after the attempt: %+v", st)
			}
			if len(st.Recipients) != 1 || st.Recipients[0].State != outbox.Accepted {
				t.Fatalf("the recipient the server accepted: %+v", st.Recipients)
			}
			if n := h.Total(); n != 1 {
				t.Fatalf("%d messages taken", n)
			}
		})
	}
}
