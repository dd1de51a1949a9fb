package outboxbench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// Sink is the in-process SMTP server the outbox and a pooled Send deliver
// to: a mailsectest server on 127.0.0.1 (STARTTLS, its own CA, verified by
// the client) that reads and discards every message.
type Sink struct {
	srv *mailsectest.Server
}

// StartSink starts the sink.
func StartSink() (*Sink, error) {
	srv, err := mailsectest.Start(mailsectest.Config{Discard: true})
	if err != nil {
		return nil, err
	}
	return &Sink{srv: srv}, nil
}

// Close stops the sink.
func (k *Sink) Close() error { return k.srv.Close() }

// Transactions is the number of MAIL commands the sink has received.
func (k *Sink) Transactions() int { return k.srv.Transactions() }

// sender returns a new Sender over a new pooled transport to the sink,
// with the library's defaults (MaxConns 8 sessions, reused).
func (k *Sink) sender() (*mailsec.Sender, error) {
	return mailsec.NewSender(k.srv.Transport(), nil)
}

// Message returns the message of messageSize bytes of text the outbox
// queues and a pooled Send sends: one author, one recipient, a subject and
// a plain ASCII body in lines of 72 characters, the same in every run.
// Date and Message-ID are left to the Sender.
func Message(messageSize int) *mailsec.Message {
	return &mailsec.Message{
		From:    "Example App <noreply@example.com>",
		To:      []string{"ann@example.org"},
		Subject: "Your statement for November is ready",
		Text:    text(messageSize),
	}
}

// text returns n bytes of ASCII prose in lines of 72 characters and a
// newline.
func text(n int) string {
	const words = "statement period balance payment received thank you for your order " +
		"the details of your account are below please review them and contact support "
	var b strings.Builder
	b.Grow(n)
	for i := 0; b.Len() < n; i++ {
		if b.Len()%73 == 72 || b.Len() == n-1 {
			b.WriteByte('\n')
			continue
		}
		b.WriteByte(words[i%len(words)])
	}
	return b.String()
}

// OutboxPeerName and SendPeerName name the outbox's peers in reports.
const (
	OutboxPeerName = "outbox"
	SendPeerName   = "send"
)

// MailsecOutbox is package outbox measured: Enqueue is Outbox.Enqueue of
// [Message] (checked as Send would, sealed, committed with its River job
// in one transaction); delivery starts the outbox on n queued messages and
// ends when every one is recorded as delivered (the Send to the sink made,
// its Receipt sealed and committed, its content deleted). It opens the
// database as outbox.Open does ([OpenOutboxSQLite], [OpenPostgres]: its
// pragmas and pool, and on SQLite its cache of statements) and runs with
// s.MaxWorkers workers; the rest of
// River's settings are the outbox's own ([Outbox]).
func MailsecOutbox(s Settings, sink *Sink) Peer {
	return Peer{
		Name: OutboxPeerName,
		Enqueue: func(ctx context.Context, db Target, p Payload) (Enqueuer, error) {
			return openOutbox(ctx, db, s, sink, p, 0)
		},
		Deliver: func(ctx context.Context, db Target, p Payload, n int) (Deliverer, error) {
			return openOutbox(ctx, db, s, sink, p, n)
		},
	}
}

// outboxPeer is an Outbox on one database.
type outboxPeer struct {
	ob      *outbox.Outbox
	sink    *Sink
	msg     *mailsec.Message
	n       int
	before  int // the sink's transactions before Run
	started bool

	delivered atomic.Int64
	failed    atomic.Int64
	done      chan struct{} // closed when n attempts are recorded
	doneOnce  sync.Once
	lastErr   atomic.Value // string: the last failed attempt's error

	count   func(ctx context.Context) (int, error) // messages recorded as delivered
	closeDB func() error
}

func openOutbox(ctx context.Context, db Target, s Settings, sink *Sink, p Payload, n int) (_ *outboxPeer, err error) {
	if sink == nil {
		return nil, errors.New("the outbox needs a sink")
	}
	sender, err := sink.sender()
	if err != nil {
		return nil, err
	}
	o := &outboxPeer{sink: sink, msg: Message(p.MessageSize), n: n, done: make(chan struct{})}
	opts := &outbox.Options{
		Keys:    []outbox.Key{outbox.NewKey()},
		Workers: s.MaxWorkers,
		OnReceipt: func(_ context.Context, a *outbox.Attempt) {
			switch a.State {
			case outbox.Delivered:
				if o.delivered.Add(1)+o.failed.Load() >= int64(o.n) {
					o.doneOnce.Do(func() { close(o.done) })
				}
			default:
				o.lastErr.Store(fmt.Sprintf("message %s: %s: %s", a.ID, a.State, a.Error))
				o.failed.Add(1)
				o.doneOnce.Do(func() { close(o.done) })
			}
		},
	}
	// fill queues the n messages in transactions of 500 (not timed).
	var fill func(ctx context.Context) error
	switch db.Kind {
	case SQLite:
		sdb, err := OpenOutboxSQLite(db.Path, s)
		if err != nil {
			return nil, err
		}
		o.closeDB = sdb.Close
		if o.ob, err = outbox.OpenSQLite(ctx, sender, sdb, opts); err != nil {
			_ = sdb.Close()
			return nil, err
		}
		o.count = func(ctx context.Context) (int, error) {
			var c int
			err := sdb.QueryRowContext(ctx, "SELECT count(*) FROM mailsec_outbox_message WHERE state = 'delivered'").Scan(&c)
			return c, err
		}
		fill = func(ctx context.Context) error {
			return inBatches(n, func(k int) error {
				tx, err := sdb.BeginTx(ctx, nil)
				if err != nil {
					return err
				}
				defer func() { _ = tx.Rollback() }()
				for range k {
					if _, err := o.ob.EnqueueTx(ctx, tx, o.msg, nil); err != nil {
						return err
					}
				}
				return tx.Commit()
			})
		}
	case Postgres:
		pool, err := OpenPostgres(ctx, db.URL, s)
		if err != nil {
			return nil, err
		}
		o.closeDB = func() error { pool.Close(); return nil }
		if o.ob, err = outbox.OpenPostgres(ctx, sender, pool, opts); err != nil {
			pool.Close()
			return nil, err
		}
		o.count = func(ctx context.Context) (int, error) {
			var c int
			err := pool.QueryRow(ctx, "SELECT count(*) FROM mailsec_outbox_message WHERE state = 'delivered'").Scan(&c)
			return c, err
		}
		fill = func(ctx context.Context) error { return fillPostgres(ctx, pool, o.ob, o.msg, n) }
	default:
		return nil, fmt.Errorf("unknown kind of database %q", db.Kind)
	}
	if n > 0 {
		if err := fill(ctx); err != nil {
			return nil, errors.Join(fmt.Errorf("queueing messages: %w", err), o.Close())
		}
	}
	return o, nil
}

func fillPostgres(ctx context.Context, pool *pgxpool.Pool, ob *outbox.Outbox, m *mailsec.Message, n int) error {
	return inBatches(n, func(k int) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		for range k {
			if _, err := ob.EnqueuePgxTx(ctx, tx, m, nil); err != nil {
				return err
			}
		}
		return tx.Commit(ctx)
	})
}

// inBatches calls f with the sizes of batches of at most 500 that add up
// to n.
func inBatches(n int, f func(k int) error) error {
	const batch = 500
	for done := 0; done < n; done += batch {
		if err := f(min(batch, n-done)); err != nil {
			return err
		}
	}
	return nil
}

// Enqueue queues the message with Outbox.Enqueue, in its own transaction.
func (o *outboxPeer) Enqueue(ctx context.Context) error {
	_, err := o.ob.Enqueue(ctx, o.msg, nil)
	return err
}

// Run starts the outbox's workers and returns when every queued message
// is recorded as delivered.
func (o *outboxPeer) Run(ctx context.Context) error {
	if o.n == 0 {
		return errors.New("nothing queued")
	}
	o.before = o.sink.Transactions()
	o.started = true
	if err := o.ob.Start(ctx); err != nil {
		return err
	}
	select {
	case <-o.done:
	case <-ctx.Done():
		return fmt.Errorf("%d of %d messages delivered: %w", o.delivered.Load(), o.n, ctx.Err())
	}
	if o.failed.Load() > 0 {
		return fmt.Errorf("%d of %d messages not delivered: %s", o.failed.Load(), o.n, o.lastErr.Load())
	}
	return nil
}

// Close stops the outbox, checks that the database records every message
// as delivered and that the sink received each, and closes the database.
func (o *outboxPeer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := []error{o.ob.Close(ctx)}
	if o.n > 0 {
		got, err := o.count(ctx)
		if err == nil && got != o.n {
			err = fmt.Errorf("%d of %d messages recorded as delivered", got, o.n)
		}
		errs = append(errs, err)
		if o.started {
			if got := o.sink.Transactions() - o.before; got < o.n {
				errs = append(errs, fmt.Errorf("the sink received %d of %d messages", got, o.n))
			}
		}
	}
	errs = append(errs, o.closeDB())
	return errors.Join(errs...)
}

// PooledSend is the absolute figure the outbox's delivery is read beside:
// no database, s.MaxWorkers goroutines calling Send of [Message] on one
// Sender (a pooled transport to the sink) until n messages have gone. It
// does not enqueue.
func PooledSend(s Settings, sink *Sink) Peer {
	return Peer{
		Name: SendPeerName,
		Deliver: func(ctx context.Context, _ Target, p Payload, n int) (Deliverer, error) {
			if sink == nil {
				return nil, errors.New("a pooled Send needs a sink")
			}
			sender, err := sink.sender()
			if err != nil {
				return nil, err
			}
			d := &sendPeer{sender: sender, sink: sink, msg: Message(p.MessageSize), n: n, workers: max(s.MaxWorkers, 1)}
			// Fill the pool, as in an application that has been running.
			for range min(d.workers, 8) {
				if _, err := sender.Send(ctx, d.msg); err != nil {
					return nil, fmt.Errorf("warm-up Send: %w", err)
				}
			}
			return d, nil
		},
	}
}

type sendPeer struct {
	sender  *mailsec.Sender
	sink    *Sink
	msg     *mailsec.Message
	n       int
	workers int
	before  int
	sent    atomic.Int64
}

func (d *sendPeer) Run(ctx context.Context) error {
	d.before = d.sink.Transactions()
	var next atomic.Int64
	errs := make([]error, d.workers)
	var wg sync.WaitGroup
	for w := range d.workers {
		wg.Go(func() {
			for next.Add(1) <= int64(d.n) {
				m := *d.msg
				if _, err := d.sender.Send(ctx, &m); err != nil {
					errs[w] = err
					return
				}
				d.sent.Add(1)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (d *sendPeer) Close() error {
	if got := d.sent.Load(); got != int64(d.n) {
		return fmt.Errorf("%d of %d messages sent", got, d.n)
	}
	if got := d.sink.Transactions() - d.before; got < d.n {
		return fmt.Errorf("the sink received %d of %d messages", got, d.n)
	}
	return nil
}
