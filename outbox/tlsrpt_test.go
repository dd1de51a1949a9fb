package outbox_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

var rptOrg = tlsrpt.Organization{Name: "Example Mail", ContactInfo: "tlsrpt@mail.example.com"}

// rptClock is a settable clock for Aggregators.
type rptClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *rptClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *rptClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// rptCollector is an HTTPS endpoint that keeps the reports posted to it.
type rptCollector struct {
	*httptest.Server
	mu      sync.Mutex
	reports []tlsrpt.Report
}

func newRptCollector(t *testing.T) *rptCollector {
	c := &rptCollector{}
	c.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			t.Errorf("report not gzip: %v", err)
			return
		}
		js, _ := io.ReadAll(zr)
		var rep tlsrpt.Report
		if err := json.Unmarshal(js, &rep); err != nil {
			t.Errorf("report: %v", err)
			return
		}
		c.mu.Lock()
		c.reports = append(c.reports, rep)
		c.mu.Unlock()
	}))
	c.Config.ErrorLog = log.New(io.Discard, "", 0)
	c.StartTLS()
	t.Cleanup(c.Close)
	return c
}

func (c *rptCollector) got() []tlsrpt.Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]tlsrpt.Report(nil), c.reports...)
}

func rptOptions(clk *rptClock, col *rptCollector) *outbox.TLSRPTOptions {
	res := mailsectest.NewResolver()
	res.TXT("_smtp._tls.example.org", "v=TLSRPTv1; rua="+col.URL+"/report")
	return &outbox.TLSRPTOptions{
		Aggregator:   &tlsrpt.Aggregator{Now: clk.now},
		Submitter:    &tlsrpt.Submitter{AllowPrivate: true, HTTPClient: col.Client()},
		Organization: rptOrg,
		Resolver:     res,
	}
}

// record records ok successes and failed failures for example.org on day.
func record(a *tlsrpt.Aggregator, day time.Time, ok, failed int) {
	for range ok {
		a.Record(tlsrpt.Result{PolicyDomain: "example.org", Success: true, Time: day.Add(time.Hour)})
	}
	for range failed {
		a.Record(tlsrpt.Result{PolicyDomain: "example.org", Failure: tlsrpt.CertificateExpired, ReceivingMXHostname: "mx.example.org", Time: day.Add(time.Hour)})
	}
}

func wantCounts(t *testing.T, rep *tlsrpt.Report, day time.Time, ok, failed int64) {
	t.Helper()
	if !rep.DateRange.Start.Equal(day) {
		t.Fatalf("report covers %v, want %v", rep.DateRange.Start, day)
	}
	if len(rep.Policies) != 1 {
		t.Fatalf("%d policies", len(rep.Policies))
	}
	p := rep.Policies[0]
	if p.Summary.TotalSuccessfulSessionCount != ok || p.Summary.TotalFailureSessionCount != failed ||
		failed > 0 && (len(p.FailureDetails) != 1 || p.FailureDetails[0].FailedSessionCount != failed) {
		t.Fatalf("report %+v, want %d successful and %d failed sessions", p, ok, failed)
	}
}

// mergeInstances has two instances, each with its own Aggregator, open
// the same database: their counts add up in one report, what one flushes
// at Close included.
func mergeInstances(t *testing.T, open func(o *outbox.Options) *outbox.Outbox) {
	ctx := context.Background()
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	clk := &rptClock{t: day.Add(20 * time.Hour)}
	col := newRptCollector(t)
	o1, o2 := rptOptions(clk, col), rptOptions(clk, col)
	ob1 := open(fast(&outbox.Options{TLSRPT: o1}))
	ob2 := open(fast(&outbox.Options{TLSRPT: o2}))
	record(o1.Aggregator, day, 3, 1)
	record(o2.Aggregator, day, 4, 2)
	if err := o1.Aggregator.Flush(ctx, ob1.TLSRPTStore()); err != nil {
		t.Fatal(err)
	}
	if err := o2.Aggregator.Flush(ctx, ob2.TLSRPTStore()); err != nil {
		t.Fatal(err)
	}
	record(o2.Aggregator, day, 5, 0)
	if err := ob2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := o1.Aggregator.StoredReport(ctx, ob1.TLSRPTStore(), "example.org", day, rptOrg)
	if err != nil {
		t.Fatal(err)
	}
	wantCounts(t, rep, day, 12, 3)
}

func TestTLSRPTMergeSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.db")
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	mergeInstances(t, func(o *outbox.Options) *outbox.Outbox {
		return openAt(t, newSender(t, srv.Transport(), nil), path, o, false)
	})
}

func TestTLSRPTMergePostgres(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	mergeInstances(t, func(o *outbox.Options) *outbox.Outbox {
		return openAt(t, newSender(t, srv.Transport(), nil), url, o, true)
	})
}

// The periodic job sends yesterday's report once, at start, never
// today's; a restart sends nothing again; the next day's is sent once it
// is over.
func TestTLSRPTJob(t *testing.T) {
	ctx := context.Background()
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	today := day.Add(24 * time.Hour)
	clk := &rptClock{t: today.Add(time.Hour)}
	col := newRptCollector(t)
	path := filepath.Join(t.TempDir(), "mail.db")
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	sender := newSender(t, srv.Transport(), nil)

	o := rptOptions(clk, col)
	record(o.Aggregator, day, 2, 1)
	record(o.Aggregator, today, 9, 9)
	ob := openAt(t, sender, path, fast(&outbox.Options{TLSRPT: o}), true)
	deadline := time.Now().Add(30 * time.Second)
	for len(col.got()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	got := col.got()
	if len(got) != 1 {
		t.Fatalf("the job sent %d reports, want 1", len(got))
	}
	wantCounts(t, &got[0], day, 2, 1)
	if err := ob.SendTLSReports(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ob.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// A restart: the job runs at start again, and sends nothing.
	o = rptOptions(clk, col)
	ob = openAt(t, sender, path, fast(&outbox.Options{TLSRPT: o}), true)
	if err := ob.SendTLSReports(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // room for the job run at start
	if n := len(col.got()); n != 1 {
		t.Fatalf("%d reports after a restart, want 1", n)
	}

	// Once today is over, its report goes, once.
	clk.set(today.Add(25 * time.Hour))
	if err := ob.SendTLSReports(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ob.SendTLSReports(ctx); err != nil {
		t.Fatal(err)
	}
	got = col.got()
	if len(got) != 2 {
		t.Fatalf("%d reports, want 2", len(got))
	}
	wantCounts(t, &got[1], today, 9, 9)
}

// Options.TLSRPT is checked at Open; SendTLSReports without it says so.
func TestTLSRPTOptions(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	sender := newSender(t, srv.Transport(), nil)
	path := filepath.Join(t.TempDir(), "mail.db")
	clk := &rptClock{t: time.Now()}
	col := newRptCollector(t)
	for name, mod := range map[string]func(o *outbox.TLSRPTOptions){
		"Aggregator":   func(o *outbox.TLSRPTOptions) { o.Aggregator = nil },
		"Submitter":    func(o *outbox.TLSRPTOptions) { o.Submitter = nil },
		"Resolver":     func(o *outbox.TLSRPTOptions) { o.Resolver = nil },
		"Organization": func(o *outbox.TLSRPTOptions) { o.Organization.ContactInfo = "nobody" },
	} {
		o := rptOptions(clk, col)
		mod(o)
		_, err := outbox.Open(context.Background(), sender, path, fast(&outbox.Options{TLSRPT: o}))
		var ce *mailsec.ConfigError
		if !errors.As(err, &ce) || !bytes.Contains([]byte(ce.Field), []byte(name)) {
			t.Errorf("without %s: %v", name, err)
		}
	}
	ob := openAt(t, sender, path, fast(nil), false)
	if err := ob.SendTLSReports(context.Background()); !errors.Is(err, mailsec.ErrConfig) {
		t.Fatalf("SendTLSReports without Options.TLSRPT: %v", err)
	}
}

// A database made by schema version 1 gets the TLS-RPT tables at Open.
func TestTLSRPTMigratesVersion1(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	sender := newSender(t, srv.Transport(), nil)
	path := filepath.Join(t.TempDir(), "mail.db")
	if err := outbox.Migrate(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	for _, q := range []string{`DROP TABLE mailsec_outbox_tlsrpt`, `DROP TABLE mailsec_outbox_tlsrpt_done`, `UPDATE mailsec_outbox_schema SET version = 1`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	clk := &rptClock{t: time.Now()}
	o := rptOptions(clk, newRptCollector(t))
	ob := openAt(t, sender, path, fast(&outbox.Options{TLSRPT: o}), false)
	o.Aggregator.Record(tlsrpt.Result{PolicyDomain: "example.org", Success: true})
	if err := o.Aggregator.Flush(context.Background(), ob.TLSRPTStore()); err != nil {
		t.Fatal(err)
	}
	var v int
	if err := db.QueryRow(`SELECT MAX(version) FROM mailsec_outbox_schema`).Scan(&v); err != nil || v != 2 {
		t.Fatalf("schema version %d, %v", v, err)
	}
}
