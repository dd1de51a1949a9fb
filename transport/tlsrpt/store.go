package tlsrpt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
)

// Count is one aggregate count as a Store keeps it: N sessions with
// Domain's policy on the UTC day Day that had the outcome Key describes.
// Counts with the same Day, Domain and Key add up, whichever Aggregator
// made them: that is how several instances of an application make one
// report.
type Count struct {
	// Day is 00:00:00 UTC of the day.
	Day time.Time
	// Domain is the policy domain, in lower-case A-label form.
	Domain string
	// Key says what was counted: the policy and the outcome (success, or
	// the failure's details), in a canonical encoding the Aggregator
	// makes and reads. A Store keeps it as it is, and compares it only
	// whole (or by ID).
	Key string
	// N is the number of sessions, at least 1.
	N int64
}

// ID returns a fixed-size name of c's Key (hex SHA-256), for stores
// that index it: equal Keys have equal IDs.
func (c Count) ID() string {
	h := sha256.Sum256([]byte(c.Key))
	return hex.EncodeToString(h[:])
}

// DayDomain names one report: a policy domain on a UTC day.
type DayDomain struct {
	Day    time.Time // 00:00:00 UTC
	Domain string
}

// Store keeps what Aggregators record beyond the life of their process,
// shared by every instance of an application that uses the same store.
// Implementations must be safe for concurrent use. FileStore keeps them
// in a file; package outbox keeps them in the outbox's database.
type Store interface {
	// Add adds each count's N to the stored count with the same Day,
	// Domain and Key (zero when there is none), all of them or, when it
	// fails, none.
	Add(ctx context.Context, counts []Count) error
	// Pending returns, sorted by day then domain, the reports of days
	// before the UTC day of before that have counts and are not marked
	// done.
	Pending(ctx context.Context, before time.Time) ([]DayDomain, error)
	// Counts returns the counts of domain on the UTC day of day.
	Counts(ctx context.Context, day time.Time, domain string) ([]Count, error)
	// MarkDone records that the report of domain on the UTC day of day
	// was sent, or will not be: Pending leaves it out from then on,
	// whatever is added later.
	MarkDone(ctx context.Context, day time.Time, domain string) error
	// Forget deletes the counts and marks of the days before the UTC day
	// of before.
	Forget(ctx context.Context, before time.Time) error
}

// countKey is what a Count's Key encodes.
type countKey struct {
	Policy PolicyDetails `json:"p"`
	// Failure is nil for successful sessions; its count is zero.
	Failure *FailureDetails `json:"f,omitempty"`
	// Overflow marks failures counted without their details.
	Overflow bool `json:"o,omitempty"`
}

// snapshotLocked returns the counts a holds.
func (a *Aggregator) snapshotLocked() ([]Count, error) {
	var out []Count
	add := func(day int64, domain string, k countKey, n int64) error {
		if n <= 0 {
			return nil
		}
		js, err := json.Marshal(k)
		if err != nil {
			return err
		}
		out = append(out, Count{Day: dayStart(day), Domain: domain, Key: string(js), N: n})
		return nil
	}
	for day, domains := range a.days {
		for domain, dd := range domains {
			for _, pa := range dd.policies {
				if err := add(day, domain, countKey{Policy: pa.details}, pa.summary.TotalSuccessfulSessionCount); err != nil {
					return nil, err
				}
				for fd, n := range pa.failures {
					if err := add(day, domain, countKey{Policy: pa.details, Failure: &fd}, n); err != nil {
						return nil, err
					}
				}
				for t, n := range pa.overflow {
					if err := add(day, domain, countKey{Policy: pa.details, Failure: &FailureDetails{ResultType: t}, Overflow: true}, n); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	return out, nil
}

// addCountLocked adds a stored count, checked as a Result would be (the
// store is outside this process). It reports false when the count is
// malformed or beyond a limit.
func (a *Aggregator) addCountLocked(c Count) bool {
	domain, ok := normalizeDomain(c.Domain)
	if !ok || c.N <= 0 {
		return false
	}
	var k countKey
	dec := json.NewDecoder(strings.NewReader(c.Key))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&k); err != nil {
		return false
	}
	pd := k.Policy
	if !pd.Type.Valid() || !strings.EqualFold(pd.Domain, domain) {
		return false
	}
	pd.Domain = domain
	if pd.Type == PolicyNone {
		pd.String, pd.MXHost = nil, nil
	} else {
		pd.String, pd.MXHost = clipLines(pd.String), clipLines(pd.MXHost)
	}
	key := policyKey{typ: pd.Type, str: strings.Join(pd.String, "\x00"), mx: strings.Join(pd.MXHost, "\x00")}
	var fd FailureDetails
	if k.Failure != nil {
		fd = *k.Failure
		fd.FailedSessionCount = 0
		if !fd.ResultType.Valid() {
			fd.ResultType = ValidationFailure
		}
		fd.ReceivingMXHostname = clip(fd.ReceivingMXHostname, maxText)
		fd.ReceivingMXHelo = clip(fd.ReceivingMXHelo, maxText)
		fd.FailureReasonCode = clip(fd.FailureReasonCode, maxText)
		fd.AdditionalInformation = clip(fd.AdditionalInformation, maxText)
		if k.Overflow {
			fd = FailureDetails{ResultType: fd.ResultType}
		}
	}
	return a.addLocked(dayNumber(c.Day), domain, key, pd, k.Failure != nil, k.Overflow, fd, c.N)
}

// Flush moves what a has recorded into s: it adds the counts to s and
// forgets them here, so that the next Flush adds only what was recorded
// since. When s fails, the counts stay in a (within its limits and
// Retention, as Record keeps them) for the next Flush, and the error is
// returned. Call it every minute or so, and before the process ends;
// package outbox does so for the Aggregator given to it.
func (a *Aggregator) Flush(ctx context.Context, s Store) error {
	if s == nil {
		return &mailsec.ConfigError{Field: "tlsrpt Store", Reason: "nil"}
	}
	a.mu.Lock()
	counts, err := a.snapshotLocked()
	if err != nil {
		a.mu.Unlock()
		return fmt.Errorf("tlsrpt: flushing: %w", err)
	}
	a.days = nil
	a.mu.Unlock()
	if len(counts) == 0 {
		return nil
	}
	err = s.Add(ctx, counts)
	if err == nil {
		return nil
	}
	oldest := dayNumber(a.now().Add(-Retention))
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range counts {
		if dayNumber(c.Day) < oldest || !a.addCountLocked(c) {
			a.dropped.Add(c.N)
		}
	}
	return fmt.Errorf("tlsrpt: flushing %d counts to the store (kept for the next flush): %w", len(counts), err)
}

// StoredReport builds the report of domain on the UTC day that contains
// day, as Report does, from the counts in s: those of every Aggregator
// that flushed into it. a's limits apply to the merged counts; stored
// counts that are malformed or beyond them are left out and counted by
// Dropped.
func (a *Aggregator) StoredReport(ctx context.Context, s Store, domain string, day time.Time, org Organization) (*Report, error) {
	if err := org.validate(); err != nil {
		return nil, err
	}
	nd, ok := normalizeDomain(domain)
	if !ok {
		return nil, &mailsec.ValidationError{Field: "domain", Value: domain, Reason: "not a domain name"}
	}
	counts, err := s.Counts(ctx, dayStart(dayNumber(day)), nd)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: reading the counts of %s: %w", nd, err)
	}
	merged := &Aggregator{MaxFailureDetails: a.MaxFailureDetails, MaxPolicies: a.MaxPolicies, MaxDomains: a.MaxDomains, Now: a.Now}
	merged.mu.Lock()
	for _, c := range counts {
		if dayNumber(c.Day) != dayNumber(day) || !merged.addCountLocked(c) {
			a.dropped.Add(max(c.N, 1))
		}
	}
	merged.mu.Unlock()
	return merged.Report(nd, day, org)
}

// DefaultGrace is the default of Reporter.Grace.
const DefaultGrace = 5 * time.Minute

// Reporter sends the reports of the days that are over from a Store:
// each (day, domain) once, whichever instance runs it, never for the day
// still running. Package outbox runs one as a periodic job; an
// application with a FileStore calls Run itself (every hour, say).
type Reporter struct {
	// Aggregator is the one this process records into: Run flushes it
	// first, and its limits and clock (Now) apply. Required.
	Aggregator *Aggregator
	// Store holds the counts of every instance. Required.
	Store Store
	// Organization signs the reports. Required.
	Organization Organization
	// Submitter delivers them. Required.
	Submitter *Submitter
	// Resolver finds each domain's reporting policy. Required.
	Resolver dns.Resolver
	// Grace is how long after 00:00 UTC the day before is left to the
	// last flushes of other instances before its reports are sent; zero
	// means DefaultGrace. Give it at least twice the interval at which
	// instances flush.
	Grace time.Duration
	// Logger receives a record per report sent or given up; nil means
	// none.
	Logger *slog.Logger
}

// Check reports a *mailsec.ConfigError when a required field is missing
// or the Organization is incomplete.
func (r *Reporter) Check() error {
	switch {
	case r.Aggregator == nil:
		return &mailsec.ConfigError{Field: "Reporter.Aggregator", Reason: "nil"}
	case r.Store == nil:
		return &mailsec.ConfigError{Field: "Reporter.Store", Reason: "nil"}
	case r.Submitter == nil:
		return &mailsec.ConfigError{Field: "Reporter.Submitter", Reason: "nil"}
	case r.Resolver == nil:
		return &mailsec.ConfigError{Field: "Reporter.Resolver", Reason: "nil"}
	}
	return r.Organization.validate()
}

// Run flushes the Aggregator into the Store, then sends the report of
// every domain with counts on a day that is over (the day before, once
// Grace has passed after midnight UTC), and marks each done when one of
// the domain's URIs took it, when the domain publishes no usable TLSRPT
// record, or when the failure is permanent. A report whose delivery
// failed temporarily is tried again at the next Run, until the end of
// the day after the one it covers (RFC 8460 §5.5 suggests retrying for a
// day); then it is given up. Last, Run deletes from the Store the days
// that ended longer ago than Retention. It returns the failures joined.
//
// Two Runs at the same time on one store may both send a report: run it
// from one process at a time (the outbox's leader does).
func (r *Reporter) Run(ctx context.Context) error {
	if err := r.Check(); err != nil {
		return err
	}
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	errFlush := r.Aggregator.Flush(ctx, r.Store)
	grace := r.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	now := r.Aggregator.now()
	due := dayNumber(now.Add(-grace)) // reports of days before this one are due
	pending, err := r.Store.Pending(ctx, dayStart(due))
	if err != nil {
		return errors.Join(errFlush, fmt.Errorf("tlsrpt: reading the pending reports: %w", err))
	}
	errs := []error{errFlush}
	for _, p := range pending {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		done, err := r.send(ctx, p, dayNumber(p.Day) < due-1, log)
		if err != nil {
			errs = append(errs, err)
		}
		if done {
			if err := r.Store.MarkDone(ctx, p.Day, p.Domain); err != nil {
				errs = append(errs, fmt.Errorf("tlsrpt: recording the report of %s on %s as done: %w", p.Domain, p.Day.Format(time.DateOnly), err))
			}
		}
	}
	if err := r.Store.Forget(ctx, now.Add(-Retention)); err != nil {
		errs = append(errs, fmt.Errorf("tlsrpt: forgetting the days past retention: %w", err))
	}
	return errors.Join(errs...)
}

// send sends one report and says whether it is done with: sent, not
// wanted, failed for good, or too late (last) to try again.
func (r *Reporter) send(ctx context.Context, p DayDomain, last bool, log *slog.Logger) (done bool, err error) {
	attrs := []slog.Attr{slog.String("domain", p.Domain), slog.String("day", p.Day.Format(time.DateOnly))}
	giveUp := func(err error) (bool, error) {
		if retryable(err) && !last {
			return false, err
		}
		log.LogAttrs(ctx, slog.LevelWarn, "tlsrpt: report given up", append(attrs, slog.String("error", err.Error()))...)
		return true, err
	}
	rep, err := r.Aggregator.StoredReport(ctx, r.Store, p.Domain, p.Day, r.Organization)
	if errors.Is(err, ErrNoResults) {
		return true, nil
	}
	if err != nil {
		// The store failed: try again at the next Run.
		return false, err
	}
	pol, err := LookupPolicy(ctx, r.Resolver, p.Domain)
	if err != nil {
		var re *RecordError
		if errors.As(err, &re) && re.Kind != ErrLookup {
			log.LogAttrs(ctx, slog.LevelDebug, "tlsrpt: the domain takes no reports", append(attrs, slog.String("reason", err.Error()))...)
			return true, nil
		}
		return giveUp(err)
	}
	err = r.Submitter.Submit(ctx, rep, pol)
	if err == nil || acceptedByOne(err, len(pol.RUA)) {
		log.LogAttrs(ctx, slog.LevelInfo, "tlsrpt: report sent", append(attrs, slog.String("report_id", rep.ReportID))...)
		return true, err
	}
	return giveUp(err)
}

// leaves returns the errors joined in err, unjoined.
func leaves(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}

// retryable reports whether trying again may help with any of the
// errors joined in err.
func retryable(err error) bool {
	for _, e := range leaves(err) {
		if mailsec.IsTemporary(e) || errors.Is(e, context.Canceled) {
			return true
		}
	}
	return false
}

// acceptedByOne reports whether fewer of the n URIs failed than there
// are: RFC 8460 §3 counts a report delivered once one URI took it.
func acceptedByOne(err error, n int) bool {
	failed := 0
	for _, e := range leaves(err) {
		var se *SubmitError
		if errors.As(e, &se) {
			failed++
		}
	}
	return failed > 0 && failed < n
}
