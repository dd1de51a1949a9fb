package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

// DefaultTLSRPTFlushInterval is the default of TLSRPTOptions.FlushInterval.
const DefaultTLSRPTFlushInterval = time.Minute

// TLSRPTOptions has the outbox keep TLS-RPT results (RFC 8460) in its
// database and send the daily reports. Give every process that opens the
// database the same options, each its own Aggregator.
type TLSRPTOptions struct {
	// Aggregator is what this process's transports record into (the
	// Reports field of transport.Direct). The outbox flushes it into the
	// database every FlushInterval after Start, and at Close. Required.
	Aggregator *tlsrpt.Aggregator
	// Submitter, Organization and Resolver send the reports, as for
	// tlsrpt.Reporter. Required.
	Submitter    *tlsrpt.Submitter
	Organization tlsrpt.Organization
	Resolver     dns.Resolver
	// FlushInterval is how often the Aggregator is flushed; zero means
	// DefaultTLSRPTFlushInterval. The reports of a day are sent twice
	// this interval after midnight UTC at the earliest, so that every
	// instance's last counts of the day are in.
	FlushInterval time.Duration
}

// The periodic job that sends the TLS-RPT reports.
const (
	tlsrptKind = "mailsec_outbox_tlsrpt"
	// tlsrptEvery is how often the leader looks for reports due.
	tlsrptEvery = 15 * time.Minute
	// tlsrptTimeout bounds one run: DNS lookups and a submission per
	// domain. It is shorter than tlsrptEvery, so that runs do not overlap.
	tlsrptTimeout = 10 * time.Minute
)

type tlsrptArgs struct{}

func (tlsrptArgs) Kind() string { return tlsrptKind }

type tlsrptWorker struct {
	river.WorkerDefaults[tlsrptArgs]
	ob *Outbox
}

func (w *tlsrptWorker) Timeout(*river.Job[tlsrptArgs]) time.Duration { return tlsrptTimeout }

func (w *tlsrptWorker) Work(ctx context.Context, _ *river.Job[tlsrptArgs]) error {
	if w.ob.tlsrpt == nil {
		return nil // queued by a process with Options.TLSRPT; this one has none
	}
	if err := w.ob.sendTLSReports(ctx); err != nil {
		// A failed report is tried again at the next run, not by River.
		w.ob.log.LogAttrs(ctx, slog.LevelWarn, "mailsec outbox: TLS-RPT reports", slog.String("error", err.Error()))
	}
	return nil
}

func tlsrptPeriodicJob() *river.PeriodicJob {
	return river.NewPeriodicJob(river.PeriodicInterval(tlsrptEvery), func() (river.JobArgs, *river.InsertOpts) {
		return tlsrptArgs{}, &river.InsertOpts{Queue: queueName, MaxAttempts: 1}
	}, &river.PeriodicJobOpts{ID: tlsrptKind, RunOnStart: true})
}

// tlsrptState is what an Outbox with Options.TLSRPT keeps.
type tlsrptState struct {
	o        TLSRPTOptions
	reporter *tlsrpt.Reporter
	sendMu   sync.Mutex // one SendTLSReports at a time in this process

	stop chan struct{} // closed to end the flushing loop
	done chan struct{} // closed when it has ended
}

func (o *TLSRPTOptions) resolve() (TLSRPTOptions, error) {
	r := *o
	if r.FlushInterval < 0 {
		return r, &mailsec.ConfigError{Field: "Options.TLSRPT.FlushInterval", Value: r.FlushInterval.String(), Reason: "negative; zero means the default"}
	}
	if r.FlushInterval == 0 {
		r.FlushInterval = DefaultTLSRPTFlushInterval
	}
	return r, nil
}

// initTLSRPT checks Options.TLSRPT and sets up what it needs.
func (ob *Outbox) initTLSRPT(o *TLSRPTOptions) error {
	if o == nil {
		return nil
	}
	opts, err := o.resolve()
	if err != nil {
		return err
	}
	for field, missing := range map[string]bool{"Aggregator": opts.Aggregator == nil, "Submitter": opts.Submitter == nil, "Resolver": opts.Resolver == nil} {
		if missing {
			return &mailsec.ConfigError{Field: "Options.TLSRPT." + field, Reason: "nil; required to keep and send TLS-RPT reports"}
		}
	}
	st := &tlsrptState{o: opts}
	st.reporter = &tlsrpt.Reporter{
		Aggregator:   opts.Aggregator,
		Store:        &tlsrptStore{ob: ob},
		Organization: opts.Organization,
		Submitter:    opts.Submitter,
		Resolver:     opts.Resolver,
		Grace:        2 * opts.FlushInterval,
		Logger:       ob.log,
	}
	if err := st.reporter.Check(); err != nil {
		return err
	}
	ob.tlsrpt = st
	return nil
}

// startTLSRPT starts flushing the Aggregator.
func (ob *Outbox) startTLSRPT() {
	st := ob.tlsrpt
	if st == nil {
		return
	}
	st.stop, st.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(st.done)
		tick := time.NewTicker(st.o.FlushInterval)
		defer tick.Stop()
		for {
			select {
			case <-st.stop:
				return
			case <-tick.C:
				ctx, cancel := context.WithTimeout(context.Background(), st.o.FlushInterval)
				if err := st.o.Aggregator.Flush(ctx, st.reporter.Store); err != nil {
					ob.log.LogAttrs(ctx, slog.LevelWarn, "mailsec outbox: TLS-RPT flush", slog.String("error", err.Error()))
				}
				cancel()
			}
		}
	}()
}

// closeTLSRPT stops flushing and flushes what is left.
func (ob *Outbox) closeTLSRPT(ctx context.Context) error {
	st := ob.tlsrpt
	if st == nil {
		return nil
	}
	if st.stop != nil {
		close(st.stop)
		<-st.done
	}
	if err := st.o.Aggregator.Flush(ctx, st.reporter.Store); err != nil {
		return fmt.Errorf("outbox: Close: TLS-RPT results not saved: %w", err)
	}
	return nil
}

// SendTLSReports flushes this process's Aggregator into the database and
// sends the TLS-RPT reports due: those of the days over (the day before,
// from twice FlushInterval after midnight UTC), each (day, domain) once
// across every process sharing the database, never the day still
// running; see tlsrpt.Reporter.Run. The leader among the started
// processes runs it at start and every 15 minutes; call it to send at
// once. It fails with a *mailsec.ConfigError when Options.TLSRPT is not
// set.
func (ob *Outbox) SendTLSReports(ctx context.Context) error {
	st := ob.tlsrpt
	if st == nil {
		return &mailsec.ConfigError{Field: "Options.TLSRPT", Reason: "not set: the outbox keeps no TLS-RPT results"}
	}
	if ob.isClosed() {
		return ErrClosed
	}
	return ob.sendTLSReports(ctx)
}

func (ob *Outbox) sendTLSReports(ctx context.Context) error {
	st := ob.tlsrpt
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	return st.reporter.Run(ctx)
}

// TLSRPTStore returns the tlsrpt.Store in the outbox's database, which
// every process sharing the database adds to. It works whether or not
// Options.TLSRPT is set.
func (ob *Outbox) TLSRPTStore() tlsrpt.Store { return &tlsrptStore{ob: ob} }

// tlsrptStore is a tlsrpt.Store in the outbox's tables.
type tlsrptStore struct{ ob *Outbox }

// maxTLSRPTRows bounds what one read returns.
const maxTLSRPTRows = 100000

func dayOf(t time.Time) int64 { return t.UTC().Unix() / 86400 }

func (s *tlsrptStore) Add(ctx context.Context, counts []tlsrpt.Count) error {
	t, err := s.ob.eng.begin(ctx)
	if err != nil {
		return fmt.Errorf("outbox: TLS-RPT counts: %w", err)
	}
	defer func() { _ = t.rollback(ctx) }()
	for _, c := range counts {
		if c.N <= 0 {
			continue
		}
		if _, err := t.exec(ctx, `INSERT INTO mailsec_outbox_tlsrpt (day, domain, key_id, key, n) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (day, domain, key_id) DO UPDATE SET n = mailsec_outbox_tlsrpt.n + excluded.n`,
			dayOf(c.Day), c.Domain, c.ID(), c.Key, c.N); err != nil {
			return fmt.Errorf("outbox: TLS-RPT counts: %w", err)
		}
	}
	if err := t.commit(ctx); err != nil {
		return fmt.Errorf("outbox: TLS-RPT counts: %w", err)
	}
	return nil
}

func (s *tlsrptStore) Pending(ctx context.Context, before time.Time) ([]tlsrpt.DayDomain, error) {
	rs, err := s.ob.eng.pool().query(ctx, `SELECT DISTINCT c.day, c.domain FROM mailsec_outbox_tlsrpt c
WHERE c.day < $1 AND NOT EXISTS (SELECT 1 FROM mailsec_outbox_tlsrpt_done d WHERE d.day = c.day AND d.domain = c.domain)
ORDER BY c.day, c.domain LIMIT $2`, dayOf(before), maxTLSRPTRows)
	if err != nil {
		return nil, fmt.Errorf("outbox: TLS-RPT reports pending: %w", err)
	}
	defer rs.Close()
	var out []tlsrpt.DayDomain
	for rs.Next() {
		var day int64
		var domain string
		if err := rs.Scan(&day, &domain); err != nil {
			return nil, fmt.Errorf("outbox: TLS-RPT reports pending: %w", err)
		}
		out = append(out, tlsrpt.DayDomain{Day: time.Unix(day*86400, 0).UTC(), Domain: domain})
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("outbox: TLS-RPT reports pending: %w", err)
	}
	return out, nil
}

func (s *tlsrptStore) Counts(ctx context.Context, day time.Time, domain string) ([]tlsrpt.Count, error) {
	rs, err := s.ob.eng.pool().query(ctx, `SELECT key, n FROM mailsec_outbox_tlsrpt WHERE day = $1 AND domain = $2 ORDER BY key_id LIMIT $3`,
		dayOf(day), domain, maxTLSRPTRows)
	if err != nil {
		return nil, fmt.Errorf("outbox: TLS-RPT counts of %s: %w", domain, err)
	}
	defer rs.Close()
	start := time.Unix(dayOf(day)*86400, 0).UTC()
	var out []tlsrpt.Count
	for rs.Next() {
		c := tlsrpt.Count{Day: start, Domain: domain}
		if err := rs.Scan(&c.Key, &c.N); err != nil {
			return nil, fmt.Errorf("outbox: TLS-RPT counts of %s: %w", domain, err)
		}
		out = append(out, c)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("outbox: TLS-RPT counts of %s: %w", domain, err)
	}
	return out, nil
}

func (s *tlsrptStore) MarkDone(ctx context.Context, day time.Time, domain string) error {
	if _, err := s.ob.eng.pool().exec(ctx, `INSERT INTO mailsec_outbox_tlsrpt_done (day, domain, done_at) VALUES ($1, $2, $3)
ON CONFLICT (day, domain) DO NOTHING`, dayOf(day), domain, time.Now().UnixMicro()); err != nil {
		return fmt.Errorf("outbox: TLS-RPT report of %s: %w", domain, err)
	}
	return nil
}

func (s *tlsrptStore) Forget(ctx context.Context, before time.Time) error {
	t, err := s.ob.eng.begin(ctx)
	if err != nil {
		return fmt.Errorf("outbox: TLS-RPT clean-up: %w", err)
	}
	defer func() { _ = t.rollback(ctx) }()
	for _, table := range []string{"mailsec_outbox_tlsrpt", "mailsec_outbox_tlsrpt_done"} {
		if _, err := t.exec(ctx, `DELETE FROM `+table+` WHERE day < $1`, dayOf(before)); err != nil {
			return fmt.Errorf("outbox: TLS-RPT clean-up: %w", err)
		}
	}
	return t.commit(ctx)
}
