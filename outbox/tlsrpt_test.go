package outbox_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
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

// downgraded makes a SQLite outbox at the current schema, runs stmts on
// it to take it back to an earlier one, and returns its path and a raw
// connection to it.
func downgraded(t *testing.T, stmts ...string) (string, *sql.DB) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mail.db")
	if err := outbox.Migrate(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return path, db
}

// checkMigrated fails unless db is at the current schema version.
func checkMigrated(t *testing.T, db *sql.DB) {
	t.Helper()
	var v int
	if err := db.QueryRow(`SELECT MAX(version) FROM mailsec_outbox_schema`).Scan(&v); err != nil || v != 5 {
		t.Fatalf("schema version %d, %v", v, err)
	}
}

// A database made by schema version 1 gets the TLS-RPT tables at Open.
func TestTLSRPTMigratesVersion1(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	path, db := downgraded(t, `DROP TABLE mailsec_outbox_rpt_count`, `DROP TABLE mailsec_outbox_rpt_done`, `UPDATE mailsec_outbox_schema SET version = 1`)
	clk := &rptClock{t: time.Now()}
	o := rptOptions(clk, newRptCollector(t))
	ob := openAt(t, newSender(t, srv.Transport(), nil), path, fast(&outbox.Options{TLSRPT: o}), false)
	o.Aggregator.Record(tlsrpt.Result{PolicyDomain: "example.org", Success: true})
	if err := o.Aggregator.Flush(context.Background(), ob.TLSRPTStore()); err != nil {
		t.Fatal(err)
	}
	checkMigrated(t, db)
}

// A database of schema version 2, whose TLS-RPT counts were kept
// readable, loses those tables at Open, for sealed ones.
func TestTLSRPTMigratesVersion2(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	path, db := downgraded(t, `DROP TABLE mailsec_outbox_rpt_count`, `DROP TABLE mailsec_outbox_rpt_done`,
		`CREATE TABLE mailsec_outbox_tlsrpt (day BIGINT NOT NULL, domain TEXT NOT NULL, key_id TEXT NOT NULL, key TEXT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (day, domain, key_id))`,
		`CREATE TABLE mailsec_outbox_tlsrpt_done (day BIGINT NOT NULL, domain TEXT NOT NULL, done_at BIGINT NOT NULL, PRIMARY KEY (day, domain))`,
		`INSERT INTO mailsec_outbox_tlsrpt VALUES (20000, 'example.org', 'x', '{}', 3)`,
		`UPDATE mailsec_outbox_schema SET version = 2`)
	openAt(t, newSender(t, srv.Transport(), nil), path, fast(nil), false)
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'mailsec_outbox_tlsrpt%'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d version 2 tables left, %v", n, err)
	}
	checkMigrated(t, db)
}

// Canaries for what TLS-RPT counts say about whom the application mails.
const (
	rptCanaryDomain = "rptcanarydomain.example"
	rptCanaryMX     = "mx.rptcanaryhost.example"
)

// recordCanaries records a success and a failure at the canary domain's
// MX on day.
func recordCanaries(a *tlsrpt.Aggregator, day time.Time) {
	a.Record(tlsrpt.Result{PolicyDomain: rptCanaryDomain, Success: true, Time: day.Add(time.Hour)})
	a.Record(tlsrpt.Result{PolicyDomain: rptCanaryDomain, Failure: tlsrpt.CertificateExpired,
		ReceivingMXHostname: rptCanaryMX, Time: day.Add(time.Hour)})
}

// rptCanaries returns the canaries found in b, as text or hex.
func rptCanaries(b []byte) []string {
	var out []string
	lower := bytes.ToLower(b)
	for _, c := range []string{"rptcanarydomain", "rptcanaryhost"} {
		if bytes.Contains(lower, []byte(c)) || bytes.Contains(lower, []byte(hex.EncodeToString([]byte(c)))) {
			out = append(out, c)
		}
	}
	return out
}

// rptOptionsFor is rptOptions, with the canary domain taking reports too.
func rptOptionsFor(clk *rptClock, col *rptCollector) *outbox.TLSRPTOptions {
	o := rptOptions(clk, col)
	o.Resolver.(*mailsectest.Resolver).TXT("_smtp._tls."+rptCanaryDomain, "v=TLSRPTv1; rua="+col.URL+"/report")
	return o
}

// The TLS-RPT counts are sealed: neither the policy domain nor the MX
// host is in the SQLite file; a plaintext outbox, the control, has both.
// A count row changed on disk is reported, and its report is not sent;
// the untouched database sends it.
func TestTLSRPTSealedSQLite(t *testing.T) {
	ctx := context.Background()
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	clk := &rptClock{t: day.Add(30 * time.Hour)}
	col := newRptCollector(t)
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	sender := newSender(t, srv.Transport(), nil)

	for _, plaintext := range []bool{true, false} {
		o := rptOptionsFor(clk, col)
		ob, path := openFile(t, sender, fast(&outbox.Options{TLSRPT: o, Plaintext: plaintext}), false)
		recordCanaries(o.Aggregator, day)
		if err := o.Aggregator.Flush(ctx, ob.TLSRPTStore()); err != nil {
			t.Fatal(err)
		}
		if err := ob.Close(ctx); err != nil {
			t.Fatal(err)
		}
		got := rptCanaries(sqliteFiles(t, path))
		if plaintext {
			if len(got) != 2 {
				t.Fatalf("plaintext control found only %v: the grep proves nothing", got)
			}
			continue
		}
		if len(got) != 0 {
			t.Fatalf("TLS-RPT counts readable at rest: %v", got)
		}

		// One byte of one row's sealed value changed: an error, no report.
		db := rawDB(t, path)
		var rowID, sealed []byte
		if err := db.QueryRow(`SELECT row_id, sealed FROM mailsec_outbox_rpt_count LIMIT 1`).Scan(&rowID, &sealed); err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(sealed)
		bad[len(bad)-1] ^= 1
		if _, err := db.Exec(`UPDATE mailsec_outbox_rpt_count SET sealed = $1 WHERE row_id = $2`, bad, rowID); err != nil {
			t.Fatal(err)
		}
		var logs syncBuffer
		o = rptOptionsFor(clk, col)
		ob = openAt(t, sender, path, fast(&outbox.Options{TLSRPT: o, Logger: slog.New(slog.NewTextHandler(&logs, nil))}), false)
		err := ob.SendTLSReports(ctx)
		if !errors.Is(err, outbox.ErrTampered) || len(col.got()) != 0 {
			t.Fatalf("a tampered count: %v, %d reports sent\n%s", err, len(col.got()), logs.String())
		}
		// Moved to another row: its binding to the row fails.
		var other []byte
		if err := db.QueryRow(`SELECT sealed FROM mailsec_outbox_rpt_count WHERE row_id <> $1`, rowID).Scan(&other); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`UPDATE mailsec_outbox_rpt_count SET sealed = $1 WHERE row_id = $2`, other, rowID); err != nil {
			t.Fatal(err)
		}
		if err := ob.SendTLSReports(ctx); !errors.Is(err, outbox.ErrTampered) || len(col.got()) != 0 {
			t.Fatalf("a count copied to another row: %v, %d reports sent", err, len(col.got()))
		}
		// Restored: the report goes, with both counts.
		if _, err := db.Exec(`UPDATE mailsec_outbox_rpt_count SET sealed = $1 WHERE row_id = $2`, sealed, rowID); err != nil {
			t.Fatal(err)
		}
		if err := ob.SendTLSReports(ctx); err != nil {
			t.Fatal(err)
		}
		if reps := col.got(); len(reps) != 1 || reps[0].Policies[0].Summary.TotalSuccessfulSessionCount != 1 ||
			reps[0].Policies[0].Summary.TotalFailureSessionCount != 1 || reps[0].Policies[0].FailureDetails[0].ReceivingMXHostname != rptCanaryMX {
			t.Fatalf("reports %+v", reps)
		}
	}
}

// The same in Postgres, with two instances whose counts merge: a pg_dump
// holds neither canary.
func TestTLSRPTSealedPostgres(t *testing.T) {
	ctx := context.Background()
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	clk := &rptClock{t: day.Add(20 * time.Hour)}
	col := newRptCollector(t)
	o1, o2 := rptOptionsFor(clk, col), rptOptionsFor(clk, col)
	ob1 := openAt(t, newSender(t, srv.Transport(), nil), url, fast(&outbox.Options{TLSRPT: o1}), false)
	ob2 := openAt(t, newSender(t, srv.Transport(), nil), url, fast(&outbox.Options{TLSRPT: o2}), false)
	recordCanaries(o1.Aggregator, day)
	recordCanaries(o2.Aggregator, day)
	recordCanaries(o2.Aggregator, day)
	if err := o1.Aggregator.Flush(ctx, ob1.TLSRPTStore()); err != nil {
		t.Fatal(err)
	}
	if err := o2.Aggregator.Flush(ctx, ob2.TLSRPTStore()); err != nil {
		t.Fatal(err)
	}
	if got := rptCanaries(pg.Dump(t, url)); len(got) != 0 {
		t.Fatalf("TLS-RPT counts readable in pg_dump: %v", got)
	}
	rep, err := o1.Aggregator.StoredReport(ctx, ob1.TLSRPTStore(), rptCanaryDomain, day, rptOrg)
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Policies[0].Summary; s.TotalSuccessfulSessionCount != 3 || s.TotalFailureSessionCount != 3 {
		t.Fatalf("merged report %+v", rep.Policies[0])
	}
}

// rotatingOutboxes opens two outboxes on one SQLite file in the middle of
// a key rotation, with TLS-RPT on: obOld holds only the old key, obNew the
// new key (which seals) and the old one. Both report for day, by clk, to
// col.
func rotatingOutboxes(t *testing.T) (day time.Time, clk *rptClock, col *rptCollector, oOld, oNew *outbox.TLSRPTOptions, obOld, obNew *outbox.Outbox) {
	t.Helper()
	day = time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	clk = &rptClock{t: day.Add(20 * time.Hour)}
	col = newRptCollector(t)
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	path := filepath.Join(t.TempDir(), "mail.db")
	oldKey, newKey := outbox.NewKey(), outbox.NewKey()
	oOld, oNew = rptOptions(clk, col), rptOptions(clk, col)
	obOld = openAt(t, newSender(t, srv.Transport(), nil), path, fast(&outbox.Options{TLSRPT: oOld, Keys: []outbox.Key{oldKey}}), false)
	obNew = openAt(t, newSender(t, srv.Transport(), nil), path, fast(&outbox.Options{TLSRPT: oNew, Keys: []outbox.Key{newKey, oldKey}}), false)
	return day, clk, col, oOld, oNew, obOld, obNew
}

// A key rotation: counts added under the old key and under the new one
// (two instances mid-rotation) add up in one report, which is sent once;
// counts added later under either key do not bring it back.
func TestTLSRPTKeyRotation(t *testing.T) {
	ctx := context.Background()
	day, clk, col, oOld, oNew, obOld, obNew := rotatingOutboxes(t)
	record(oOld.Aggregator, day, 3, 1)
	record(oNew.Aggregator, day, 4, 2)
	if err := oOld.Aggregator.Flush(ctx, obOld.TLSRPTStore()); err != nil {
		t.Fatal(err)
	}
	if err := oNew.Aggregator.Flush(ctx, obNew.TLSRPTStore()); err != nil {
		t.Fatal(err)
	}
	clk.set(day.Add(30 * time.Hour))
	if err := obNew.SendTLSReports(ctx); err != nil {
		t.Fatal(err)
	}
	if got := col.got(); len(got) != 1 {
		t.Fatalf("%d reports", len(got))
	} else {
		wantCounts(t, &got[0], day, 7, 3)
	}
	// Late counts of the same day, under each key: no second report.
	record(oOld.Aggregator, day, 1, 0)
	record(oNew.Aggregator, day, 1, 0)
	for _, f := range []struct {
		a  *tlsrpt.Aggregator
		ob *outbox.Outbox
	}{{oOld.Aggregator, obOld}, {oNew.Aggregator, obNew}} {
		if err := f.a.Flush(ctx, f.ob.TLSRPTStore()); err != nil {
			t.Fatal(err)
		}
	}
	if err := obNew.SendTLSReports(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(col.got()); n != 1 {
		t.Fatalf("%d reports after late counts", n)
	}
	// The old instance, which lacks the new key, cannot open the new
	// key's rows: it says so, and sends nothing.
	record(oNew.Aggregator, day.Add(24*time.Hour), 1, 0)
	if err := oNew.Aggregator.Flush(ctx, obNew.TLSRPTStore()); err != nil {
		t.Fatal(err)
	}
	clk.set(day.Add(54 * time.Hour))
	if err := obOld.SendTLSReports(ctx); err != nil {
		t.Fatalf("the old instance: %v", err)
	}
	if n := len(col.got()); n != 1 {
		t.Fatalf("the old instance sent a report from rows it cannot open: %d", n)
	}
}

// Mid-rotation, the instance that lacks the new key may be the one that
// runs the reports: it cannot open the new key's rows, so it sends no
// report of their day (not even of a domain all of whose counts it can
// open: any row may be that domain's) and marks none done; it fails with
// ErrUnknownKey. The instance with both keys then sends every report of
// the day, with every count.
func TestTLSRPTRotationInstanceLackingAKeySendsNothing(t *testing.T) {
	ctx := context.Background()
	day, clk, col, oOld, oNew, obOld, obNew := rotatingOutboxes(t)
	for _, o := range []*outbox.TLSRPTOptions{oOld, oNew} {
		o.Resolver.(*mailsectest.Resolver).TXT("_smtp._tls.example.net", "v=TLSRPTv1; rua="+col.URL+"/report")
	}
	record(oOld.Aggregator, day, 3, 1)
	record(oNew.Aggregator, day, 4, 2)
	// A domain only the old instance has counts of.
	oOld.Aggregator.Record(tlsrpt.Result{PolicyDomain: "example.net", Success: true, Time: day.Add(time.Hour)})
	if err := oOld.Aggregator.Flush(ctx, obOld.TLSRPTStore()); err != nil {
		t.Fatal(err)
	}
	if err := oNew.Aggregator.Flush(ctx, obNew.TLSRPTStore()); err != nil {
		t.Fatal(err)
	}
	clk.set(day.Add(30 * time.Hour))

	err := obOld.SendTLSReports(ctx)
	if !errors.Is(err, outbox.ErrUnknownKey) {
		t.Errorf("the instance lacking the new key: %v; want ErrUnknownKey", err)
	}
	if got := col.got(); len(got) != 0 {
		t.Fatalf("the instance lacking the new key sent %d reports", len(got))
	}

	if err := obNew.SendTLSReports(ctx); err != nil {
		t.Fatal(err)
	}
	byDomain := map[string]tlsrpt.Report{}
	for _, r := range col.got() {
		byDomain[r.Policies[0].Policy.Domain] = r
	}
	if len(byDomain) != 2 || len(col.got()) != 2 {
		t.Fatalf("reports of %v (%d); want one each of example.org and example.net", slices.Collect(maps.Keys(byDomain)), len(col.got()))
	}
	org := byDomain["example.org"]
	wantCounts(t, &org, day, 7, 3)
	net := byDomain["example.net"]
	wantCounts(t, &net, day, 1, 0)
}

// A row whose report digest was changed (so that no report's lookup
// finds it: the failure count hidden from example.org's report) does not
// open: no report of its day is sent.
func TestTLSRPTRowMovedOutOfItsReport(t *testing.T) {
	ctx := context.Background()
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	clk := &rptClock{t: day.Add(20 * time.Hour)}
	col := newRptCollector(t)
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	o := rptOptions(clk, col)
	ob, path := openFile(t, newSender(t, srv.Transport(), nil), fast(&outbox.Options{TLSRPT: o}), false)
	record(o.Aggregator, day, 2, 1)
	if err := o.Aggregator.Flush(ctx, ob.TLSRPTStore()); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	res, err := db.Exec(`UPDATE mailsec_outbox_rpt_count SET domain_id = randomblob(32) WHERE n = 1`)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("%d rows changed (%v), want the failure count's", n, err)
	}
	clk.set(day.Add(30 * time.Hour))
	if err := ob.SendTLSReports(ctx); !errors.Is(err, outbox.ErrTampered) {
		t.Errorf("SendTLSReports = %v; want ErrTampered", err)
	}
	for _, r := range col.got() {
		s := r.Policies[0].Summary
		t.Errorf("report sent: %d successful, %d failed (recorded 2 and 1)", s.TotalSuccessfulSessionCount, s.TotalFailureSessionCount)
	}
}
