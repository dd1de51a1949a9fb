package tlsrpt_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

// clock is a settable time for Aggregators.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func fileStore(t *testing.T, path string) *tlsrpt.FileStore {
	t.Helper()
	s, err := tlsrpt.NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// recordSome records, for domain on day, ok successes and failed
// starttls-not-supported failures at mx.
func recordSome(a *tlsrpt.Aggregator, domain string, day time.Time, ok, failed int) {
	for range ok {
		a.Record(tlsrpt.Result{PolicyDomain: domain, Success: true, Time: day.Add(time.Hour)})
	}
	for range failed {
		a.Record(tlsrpt.Result{PolicyDomain: domain, Failure: tlsrpt.StartTLSNotSupported, ReceivingMXHostname: "mx." + domain, Time: day.Add(2 * time.Hour)})
	}
}

// checkCounts fails unless rep has one policy with the counts given and
// one failure detail that carries all the failures.
func checkCounts(t *testing.T, rep *tlsrpt.Report, ok, failed int64) {
	t.Helper()
	if len(rep.Policies) != 1 {
		t.Fatalf("%d policies, want 1: %+v", len(rep.Policies), rep.Policies)
	}
	p := rep.Policies[0]
	if p.Summary.TotalSuccessfulSessionCount != ok || p.Summary.TotalFailureSessionCount != failed {
		t.Fatalf("summary %+v, want %d successful and %d failed", p.Summary, ok, failed)
	}
	if failed > 0 && (len(p.FailureDetails) != 1 || p.FailureDetails[0].FailedSessionCount != failed || p.FailureDetails[0].ResultType != tlsrpt.StartTLSNotSupported) {
		t.Fatalf("failure details %+v, want one of %d", p.FailureDetails, failed)
	}
}

// Two Aggregators (two instances of an application) flushing into one
// store make one report with the sum of their counts; a second flush
// adds only what was recorded since the first.
func TestFlushMergesAggregators(t *testing.T) {
	ctx := context.Background()
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	clk := &clock{t: day.Add(20 * time.Hour)}
	store := fileStore(t, filepath.Join(t.TempDir(), "tlsrpt.json"))
	a := &tlsrpt.Aggregator{Now: clk.now}
	b := &tlsrpt.Aggregator{Now: clk.now}
	recordSome(a, "example.org", day, 3, 2)
	recordSome(b, "example.org", day, 4, 5)
	recordSome(b, "example.net", day, 1, 0)
	for _, agg := range []*tlsrpt.Aggregator{a, b} {
		if err := agg.Flush(ctx, store); err != nil {
			t.Fatal(err)
		}
	}
	if d := a.Domains(day); len(d) != 0 {
		t.Fatalf("after Flush the Aggregator still holds %v", d)
	}
	recordSome(a, "example.org", day, 1, 1)
	if err := a.Flush(ctx, store); err != nil {
		t.Fatal(err)
	}
	// Flushing again with nothing new adds nothing.
	if err := a.Flush(ctx, store); err != nil {
		t.Fatal(err)
	}
	rep, err := a.StoredReport(ctx, store, "EXAMPLE.org.", day.Add(5*time.Hour), org)
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, rep, 8, 8)
	if !rep.DateRange.Start.Equal(day) {
		t.Fatalf("date range %+v", rep.DateRange)
	}
	rep, err = b.StoredReport(ctx, store, "example.net", day, org)
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, rep, 1, 0)
	if _, err := a.StoredReport(ctx, store, "example.com", day, org); !errors.Is(err, tlsrpt.ErrNoResults) {
		t.Fatalf("a domain without counts: %v", err)
	}
	pending, err := store.Pending(ctx, day.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 2 || pending[0].Domain != "example.net" || pending[1].Domain != "example.org" || !pending[0].Day.Equal(day) {
		t.Fatalf("pending %+v", pending)
	}
	if pending, _ := store.Pending(ctx, day.Add(23*time.Hour)); len(pending) != 0 {
		t.Fatalf("the day still running is pending: %+v", pending)
	}
}

// failingStore fails every Add.
type failingStore struct {
	tlsrpt.Store
	err error
}

func (s failingStore) Add(context.Context, []tlsrpt.Count) error { return s.err }

// A store that fails loses nothing: the counts stay in the Aggregator
// and go with the next Flush.
func TestFlushFailureKeepsCounts(t *testing.T) {
	ctx := context.Background()
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	clk := &clock{t: day.Add(20 * time.Hour)}
	store := fileStore(t, filepath.Join(t.TempDir(), "tlsrpt.json"))
	a := &tlsrpt.Aggregator{Now: clk.now, MaxFailureDetails: 1}
	recordSome(a, "example.org", day, 2, 3)
	// Beyond MaxFailureDetails: counted without details.
	a.Record(tlsrpt.Result{PolicyDomain: "example.org", Failure: tlsrpt.CertificateExpired, ReceivingMXHostname: "mx2.example.org", Time: day})
	down := errors.New("disk gone")
	if err := a.Flush(ctx, failingStore{store, down}); !errors.Is(err, down) {
		t.Fatalf("Flush to a failing store: %v", err)
	}
	if err := a.Flush(ctx, store); err != nil {
		t.Fatal(err)
	}
	rep, err := a.StoredReport(ctx, store, "example.org", day, org)
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Policies[0]
	if p.Summary.TotalSuccessfulSessionCount != 2 || p.Summary.TotalFailureSessionCount != 4 || len(p.FailureDetails) != 2 ||
		p.FailureDetails[0].FailedSessionCount != 3 || p.FailureDetails[1].FailedSessionCount != 1 ||
		p.FailureDetails[1].ResultType != tlsrpt.CertificateExpired || p.FailureDetails[1].ReceivingMXHostname != "" {
		t.Fatalf("report after a failed flush: %+v", p)
	}
	if a.Dropped() != 0 {
		t.Fatalf("Dropped %d", a.Dropped())
	}
}

// The counts are in the file: a new process, with a new Aggregator and a
// new FileStore on the same path, reports them; a file that does not
// parse is refused, not overwritten.
func TestFileStoreSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	clk := &clock{t: day.Add(20 * time.Hour)}
	path := filepath.Join(t.TempDir(), "tlsrpt.json")
	a := &tlsrpt.Aggregator{Now: clk.now}
	recordSome(a, "example.org", day, 5, 1)
	if err := a.Flush(ctx, fileStore(t, path)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v", fi.Mode())
	}
	if err := fileStore(t, path).MarkDone(ctx, day.Add(-24*time.Hour), "example.com"); err != nil {
		t.Fatal(err)
	}

	// The next process.
	b := &tlsrpt.Aggregator{Now: clk.now}
	store := fileStore(t, path)
	rep, err := b.StoredReport(ctx, store, "example.org", day, org)
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, rep, 5, 1)
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}

	if err := os.WriteFile(path, []byte(`{"version":1,"counts":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tlsrpt.NewFileStore(path); err == nil || mailsec.IsTemporary(err) {
		t.Fatalf("a file that does not parse: %v", err)
	}
	if err := store.Add(ctx, []tlsrpt.Count{{Day: day, Domain: "example.org", Key: "{}", N: 1}}); err == nil {
		t.Fatal("Add over a file that does not parse succeeded")
	}
	if b, _ := os.ReadFile(path); string(b) != `{"version":1,"counts":[` {
		t.Fatalf("the file was overwritten: %q", b)
	}
}

// A full FileStore adds nothing, and says so.
func TestFileStoreFull(t *testing.T) {
	ctx := context.Background()
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	store := fileStore(t, filepath.Join(t.TempDir(), "tlsrpt.json"))
	store.MaxCounts = 2
	one := []tlsrpt.Count{{Day: day, Domain: "a.example", Key: "k1", N: 1}, {Day: day, Domain: "a.example", Key: "k2", N: 1}}
	if err := store.Add(ctx, one); err != nil {
		t.Fatal(err)
	}
	err := store.Add(ctx, []tlsrpt.Count{{Day: day, Domain: "a.example", Key: "k1", N: 1}, {Day: day, Domain: "b.example", Key: "k3", N: 1}})
	if !errors.Is(err, tlsrpt.ErrStoreFull) || mailsec.IsTemporary(err) {
		t.Fatalf("Add beyond MaxCounts: %v", err)
	}
	counts, err := store.Counts(ctx, day, "a.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range counts {
		if c.N != 1 {
			t.Fatalf("a failed Add changed %+v", c)
		}
	}
}

// collector is an HTTPS report endpoint that keeps every report posted.
type collector struct {
	*httptest.Server
	mu      sync.Mutex
	reports []*tlsrpt.Report
	fail    atomic.Bool // answer 503
}

func newCollector(t *testing.T) *collector {
	c := &collector{}
	c.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.fail.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		rep := gunzipReport(t, b)
		c.mu.Lock()
		c.reports = append(c.reports, rep)
		c.mu.Unlock()
	}))
	c.Config.ErrorLog = log.New(io.Discard, "", 0)
	c.StartTLS()
	t.Cleanup(c.Close)
	return c
}

func (c *collector) got() []*tlsrpt.Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*tlsrpt.Report(nil), c.reports...)
}

// The Reporter sends yesterday's report once, never today's, not again
// after a restart, and today's once the day is over.
func TestReporterRun(t *testing.T) {
	ctx := context.Background()
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	clk := &clock{t: day.Add(23 * time.Hour)}
	path := filepath.Join(t.TempDir(), "tlsrpt.json")
	col := newCollector(t)
	res := txtResolver(map[string][]string{
		"_smtp._tls.example.org": {"v=TLSRPTv1; rua=" + col.URL + "/report"},
		// example.net publishes no record: its counts are not sent.
	})
	reporter := func() *tlsrpt.Reporter {
		return &tlsrpt.Reporter{
			Aggregator:   &tlsrpt.Aggregator{Now: clk.now},
			Store:        fileStore(t, path),
			Organization: org,
			Submitter:    &tlsrpt.Submitter{AllowPrivate: true, HTTPClient: col.Client()},
			Resolver:     res,
		}
	}
	r := reporter()
	recordSome(r.Aggregator, "example.org", day, 2, 1)
	recordSome(r.Aggregator, "example.net", day, 2, 1)
	// Before midnight, and within the grace after it: nothing is due.
	for _, now := range []time.Time{day.Add(23 * time.Hour), day.Add(24*time.Hour + tlsrpt.DefaultGrace - time.Second)} {
		clk.set(now)
		if err := r.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(col.got()); n != 0 {
			t.Fatalf("at %v, %d reports sent for the day still running", now, n)
		}
	}
	next := day.Add(24 * time.Hour)
	clk.set(next.Add(time.Hour))
	recordSome(r.Aggregator, "example.org", next, 7, 0)
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	got := col.got()
	if len(got) != 1 {
		t.Fatalf("%d reports sent, want 1", len(got))
	}
	checkCounts(t, got[0], 2, 1)
	if !got[0].DateRange.Start.Equal(day) || got[0].Policies[0].Policy.Domain != "example.org" {
		t.Fatalf("report %+v", got[0])
	}

	// Again, and after a restart: nothing more.
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	r = reporter()
	recordSome(r.Aggregator, "example.org", day, 1, 0) // a late result of the day reported
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(col.got()); n != 1 {
		t.Fatalf("%d reports sent after a restart, want 1", n)
	}

	// The next day is reported once it is over; a temporary failure is
	// tried again at the next Run.
	clk.set(next.Add(24*time.Hour + time.Hour))
	col.fail.Store(true)
	if err := r.Run(ctx); err == nil || !mailsec.IsTemporary(err) {
		t.Fatalf("Run with the endpoint down: %v", err)
	}
	col.fail.Store(false)
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	got = col.got()
	if len(got) != 2 {
		t.Fatalf("%d reports sent, want 2", len(got))
	}
	checkCounts(t, got[1], 7, 0)
	if !got[1].DateRange.Start.Equal(next) {
		t.Fatalf("second report covers %+v", got[1].DateRange)
	}
}
