package outbox

import (
	"cmp"
	"context"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
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
// Options.TLSRPT is set. What it stores is sealed as the messages are:
// see tlsrptStore.
func (ob *Outbox) TLSRPTStore() tlsrpt.Store { return &tlsrptStore{ob: ob} }

// tlsrptStore is a tlsrpt.Store in the outbox's tables. A count's policy
// domain and Key (the policy, the MX host, the failure) are sealed with
// the outbox's sealing key, bound to the count's day and row; what is
// readable is the day, the count, the ID of the key, and two keyed
// digests (HMAC-SHA-256 under a key derived from the outbox key) that
// name the row: of (day, domain, Key), which the counts of every process
// using the same key add up in (one atomic increment), and of (day,
// domain), under which a report is recorded done.
//
// A rotation changes the sealing key, and with it the digests: a process
// with the new key adds to rows of its own. Nothing is lost: Counts opens
// every row of the day, whatever key it is under, and adds up the counts
// of the domain's equal Keys. A row of the day it cannot open (under a
// key this outbox lacks: one added elsewhere and not given to it yet, or
// rotated out before its day was reported; or changed, copied, or moved
// to another row or report) fails Counts for every domain of that day, so
// that no report is sent with a count missing and none is marked done;
// the process with every key sends them. Pending logs, at level Error, a
// row that does not open, whose domain it cannot know. MarkDone records a
// report done under every key, so that counts added later under any of
// them do not bring it back.
//
// The count n is not sealed: processes add to it in one atomic increment.
// Someone who can write to the database can change it, or delete a row,
// undetected; the seal and the digests keep the domain and Key
// confidential and stop a row from passing for another day, domain or
// Key.
type tlsrptStore struct{ ob *Outbox }

// maxTLSRPTRows bounds what one read returns.
const maxTLSRPTRows = 100000

func dayOf(t time.Time) int64 { return t.UTC().Unix() / 86400 }

// rptValue is what a count row seals.
type rptValue struct {
	Domain string `json:"d"`
	Key    string `json:"k"`
}

// rptDigest is a keyed digest naming a count row ("row": of day, domain
// and Key) or a report ("domain": of day and domain).
func rptDigest(key []byte, purpose string, day int64, parts ...string) []byte {
	fields := []any{purpose, day}
	for _, p := range parts {
		fields = append(fields, p)
	}
	b, _ := json.Marshal(fields) // unambiguous: no part can pass for two
	return mac(key, "tlsrpt", b)
}

// rptAAD binds a row's sealed value to its day and row digest.
func rptAAD(day int64, rowID []byte) []byte {
	return aad("tlsrpt", hex.EncodeToString(rowID), strconv.FormatInt(day, 10))
}

// rptWhat is OpenError.What for a TLS-RPT count.
const rptWhat = "TLS-RPT count"

// rptName names a row in errors and logs (OpenError.ID): its day and the
// start of its digest, nothing it seals.
func rptName(day int64, rowID []byte) string {
	h := hex.EncodeToString(rowID)
	return time.Unix(day*86400, 0).UTC().Format(time.DateOnly) + "/" + h[:min(len(h), 16)]
}

// open opens a count row, checking that its digests are the ones its
// sealed domain and Key have under the key it names: a row moved to
// another day, row or report does not open.
func (s *tlsrptStore) open(day int64, rowID, domainID []byte, keyID string, sealed []byte) (rptValue, error) {
	var v rptValue
	name := rptName(day, rowID)
	plain, err := s.ob.keys.open(sealed, rptAAD(day, rowID), name, rptWhat)
	if err != nil {
		return v, err
	}
	tampered := &OpenError{ID: name, What: rptWhat, KeyID: keyID, Err: ErrTampered}
	if err := json.Unmarshal(plain, &v); err != nil {
		return v, tampered
	}
	for _, rk := range s.ob.keys.rptKeys() {
		if rk.id == keyID {
			if !hmac.Equal(rptDigest(rk.key, "row", day, v.Domain, v.Key), rowID) ||
				!hmac.Equal(rptDigest(rk.key, "domain", day, v.Domain), domainID) {
				return v, tampered
			}
			return v, nil
		}
	}
	return v, &OpenError{ID: name, What: rptWhat, KeyID: keyID, Err: ErrUnknownKey}
}

func (s *tlsrptStore) Add(ctx context.Context, counts []tlsrpt.Count) error {
	kr := s.ob.keys
	rk := kr.rptKeys()[0]
	t, err := s.ob.eng.begin(ctx)
	if err != nil {
		return fmt.Errorf("outbox: TLS-RPT counts: %w", err)
	}
	defer func() { _ = t.rollback(ctx) }()
	for _, c := range counts {
		if c.N <= 0 {
			continue
		}
		day := dayOf(c.Day)
		rowID := rptDigest(rk.key, "row", day, c.Domain, c.Key)
		val, err := json.Marshal(rptValue{Domain: c.Domain, Key: c.Key})
		if err != nil {
			return fmt.Errorf("outbox: TLS-RPT counts: %w", err)
		}
		if _, err := t.exec(ctx, `INSERT INTO mailsec_outbox_rpt_count (day, row_id, domain_id, key_id, sealed, n) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (day, row_id) DO UPDATE SET n = mailsec_outbox_rpt_count.n + excluded.n`,
			day, rowID, rptDigest(rk.key, "domain", day, c.Domain), rk.id, kr.seal(val, rptAAD(day, rowID)), c.N); err != nil {
			return fmt.Errorf("outbox: TLS-RPT counts: %w", err)
		}
	}
	if err := t.commit(ctx); err != nil {
		return fmt.Errorf("outbox: TLS-RPT counts: %w", err)
	}
	return nil
}

func (s *tlsrptStore) Pending(ctx context.Context, before time.Time) ([]tlsrpt.DayDomain, error) {
	fail := func(err error) ([]tlsrpt.DayDomain, error) {
		return nil, fmt.Errorf("outbox: TLS-RPT reports pending: %w", err)
	}
	q := s.ob.eng.pool()
	done := map[string]bool{}
	rs, err := q.query(ctx, `SELECT day, domain_id FROM mailsec_outbox_rpt_done WHERE day < $1 LIMIT $2`, dayOf(before), maxTLSRPTRows)
	if err != nil {
		return fail(err)
	}
	for rs.Next() {
		var day int64
		var id []byte
		if err := rs.Scan(&day, &id); err != nil {
			rs.Close()
			return fail(err)
		}
		done[strconv.FormatInt(day, 10)+"/"+hex.EncodeToString(id)] = true
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return fail(err)
	}

	rs, err = q.query(ctx, `SELECT day, row_id, domain_id, key_id, sealed FROM mailsec_outbox_rpt_count WHERE day < $1 ORDER BY day LIMIT $2`,
		dayOf(before), maxTLSRPTRows)
	if err != nil {
		return fail(err)
	}
	defer rs.Close()
	rks := s.ob.keys.rptKeys()
	seen := map[tlsrpt.DayDomain]bool{}
	var out []tlsrpt.DayDomain
rows:
	for rs.Next() {
		var day int64
		var rowID, domainID, sealed []byte
		var keyID string
		if err := rs.Scan(&day, &rowID, &domainID, &keyID, &sealed); err != nil {
			return fail(err)
		}
		v, err := s.open(day, rowID, domainID, keyID, sealed)
		if err != nil {
			// Counts fails for every report of the day: see tlsrptStore.
			s.ob.log.LogAttrs(ctx, slog.LevelError, "mailsec outbox: a TLS-RPT count does not open; no report of its day is sent from this process",
				slog.String("error", err.Error()))
			continue
		}
		for _, rk := range rks {
			if done[strconv.FormatInt(day, 10)+"/"+hex.EncodeToString(rptDigest(rk.key, "domain", day, v.Domain))] {
				continue rows
			}
		}
		dd := tlsrpt.DayDomain{Day: time.Unix(day*86400, 0).UTC(), Domain: v.Domain}
		if !seen[dd] {
			seen[dd] = true
			out = append(out, dd)
		}
	}
	if err := rs.Err(); err != nil {
		return fail(err)
	}
	slices.SortFunc(out, func(a, b tlsrpt.DayDomain) int {
		return cmp.Or(a.Day.Compare(b.Day), strings.Compare(a.Domain, b.Domain))
	})
	return out, nil
}

// domainIDs returns the digests of (day, domain) under every key.
func (s *tlsrptStore) domainIDs(day int64, domain string) [][]byte {
	var ids [][]byte
	for _, rk := range s.ob.keys.rptKeys() {
		ids = append(ids, rptDigest(rk.key, "domain", day, domain))
	}
	return ids
}

// Counts returns the counts of domain on day. It reads and opens every
// row of the day, not only the domain's: a row this process cannot open
// (under a key it does not have, or tampered with) may be one of the
// domain's, so it fails the report rather than send it short.
func (s *tlsrptStore) Counts(ctx context.Context, day time.Time, domain string) ([]tlsrpt.Count, error) {
	fail := func(err error) ([]tlsrpt.Count, error) {
		return nil, fmt.Errorf("outbox: TLS-RPT counts of %s: %w", domain, err)
	}
	d := dayOf(day)
	rs, err := s.ob.eng.pool().query(ctx, `SELECT row_id, domain_id, key_id, sealed, n FROM mailsec_outbox_rpt_count
WHERE day = $1 LIMIT $2`, d, maxTLSRPTRows+1)
	if err != nil {
		return fail(err)
	}
	defer rs.Close()
	start := time.Unix(d*86400, 0).UTC()
	byKey := map[string]int64{}
	rows := 0
	for rs.Next() {
		var rowID, domainID, sealed []byte
		var keyID string
		var n int64
		if err := rs.Scan(&rowID, &domainID, &keyID, &sealed, &n); err != nil {
			return fail(err)
		}
		if rows++; rows > maxTLSRPTRows {
			return fail(fmt.Errorf("more than %d counts on %s", maxTLSRPTRows, start.Format(time.DateOnly)))
		}
		v, err := s.open(d, rowID, domainID, keyID, sealed)
		if err != nil {
			return fail(fmt.Errorf("no report of %s is sent from this process (one with every key the counts are under can send them): %w",
				start.Format(time.DateOnly), err))
		}
		if v.Domain != domain {
			continue
		}
		if n <= 0 {
			return fail(&OpenError{ID: rptName(d, rowID), What: rptWhat, KeyID: keyID, Err: ErrTampered})
		}
		byKey[v.Key] += n
	}
	if err := rs.Err(); err != nil {
		return fail(err)
	}
	out := make([]tlsrpt.Count, 0, len(byKey))
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		out = append(out, tlsrpt.Count{Day: start, Domain: domain, Key: k, N: byKey[k]})
	}
	return out, nil
}

func (s *tlsrptStore) MarkDone(ctx context.Context, day time.Time, domain string) error {
	fail := func(err error) error { return fmt.Errorf("outbox: TLS-RPT report of %s: %w", domain, err) }
	t, err := s.ob.eng.begin(ctx)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = t.rollback(ctx) }()
	d := dayOf(day)
	for _, id := range s.domainIDs(d, domain) {
		if _, err := t.exec(ctx, `INSERT INTO mailsec_outbox_rpt_done (day, domain_id, done_at) VALUES ($1, $2, $3)
ON CONFLICT (day, domain_id) DO NOTHING`, d, id, time.Now().UnixMicro()); err != nil {
			return fail(err)
		}
	}
	if err := t.commit(ctx); err != nil {
		return fail(err)
	}
	return nil
}

func (s *tlsrptStore) Forget(ctx context.Context, before time.Time) error {
	t, err := s.ob.eng.begin(ctx)
	if err != nil {
		return fmt.Errorf("outbox: TLS-RPT clean-up: %w", err)
	}
	defer func() { _ = t.rollback(ctx) }()
	for _, table := range []string{"mailsec_outbox_rpt_count", "mailsec_outbox_rpt_done"} {
		if _, err := t.exec(ctx, `DELETE FROM `+table+` WHERE day < $1`, dayOf(before)); err != nil {
			return fmt.Errorf("outbox: TLS-RPT clean-up: %w", err)
		}
	}
	return t.commit(ctx)
}
