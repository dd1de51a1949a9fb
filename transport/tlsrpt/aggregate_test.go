package tlsrpt_test

import (
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

var org = tlsrpt.Organization{Name: "Example Mail", ContactInfo: "tlsrpt@mail.example.com"}

func TestAggregatorConcurrent(t *testing.T) {
	day := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	agg := &tlsrpt.Aggregator{Now: func() time.Time { return day.Add(12 * time.Hour) }}
	const workers, each = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				r := tlsrpt.Result{PolicyDomain: "d" + strconv.Itoa(i%2) + ".example", Success: i%5 != 0,
					Failure: tlsrpt.CertificateNotTrusted, ReceivingMXHostname: "mx" + strconv.Itoa(w) + ".example"}
				agg.Record(r)
				if i%100 == 0 {
					_ = agg.Domains(day)
					_, _ = agg.Report("d0.example", day, org)
				}
			}
		})
	}
	wg.Wait()
	var ok, failed, detailed int64
	for _, d := range []string{"d0.example", "d1.example"} {
		rep, err := agg.Report(d, day, org)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range rep.Policies {
			ok += p.Summary.TotalSuccessfulSessionCount
			failed += p.Summary.TotalFailureSessionCount
			for _, f := range p.FailureDetails {
				detailed += f.FailedSessionCount
			}
		}
	}
	if ok != workers*each*4/5 || failed != workers*each/5 || detailed != failed {
		t.Errorf("ok %d failed %d detailed %d", ok, failed, detailed)
	}
	if agg.Dropped() != 0 {
		t.Errorf("dropped %d", agg.Dropped())
	}
}

func TestAggregatorBoundedFailureDetails(t *testing.T) {
	day := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	agg := &tlsrpt.Aggregator{MaxFailureDetails: 5, Now: func() time.Time { return day }}
	for i := range 1000 {
		agg.Record(tlsrpt.Result{PolicyDomain: "example.org", Failure: tlsrpt.CertificateExpired,
			ReceivingIP:       netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}),
			FailureReasonCode: "session " + strconv.Itoa(i)})
	}
	// One more of a detail already kept is counted on it.
	agg.Record(tlsrpt.Result{PolicyDomain: "example.org", Failure: tlsrpt.CertificateExpired,
		ReceivingIP: netip.AddrFrom4([4]byte{192, 0, 2, 0}), FailureReasonCode: "session 0"})
	agg.Record(tlsrpt.Result{PolicyDomain: "example.org", Failure: tlsrpt.DNSSECInvalid, ReceivingMXHostname: "mx.example.org"})
	rep, err := agg.Report("example.org", day, org)
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Policies[0]
	if p.Summary.TotalFailureSessionCount != 1002 {
		t.Errorf("failures %d", p.Summary.TotalFailureSessionCount)
	}
	var sum int64
	for _, f := range p.FailureDetails {
		sum += f.FailedSessionCount
	}
	// 5 itemised, then one entry per result type for the rest.
	if len(p.FailureDetails) != 7 || sum != 1002 {
		t.Fatalf("%d details adding up to %d: %+v", len(p.FailureDetails), sum, p.FailureDetails)
	}
	if p.FailureDetails[0].FailedSessionCount != 995 || p.FailureDetails[0].ResultType != tlsrpt.CertificateExpired ||
		p.FailureDetails[0].ReceivingIP.IsValid() {
		t.Errorf("overflow entry %+v", p.FailureDetails[0])
	}
	if p.FailureDetails[1].FailedSessionCount != 2 || p.FailureDetails[1].FailureReasonCode != "session 0" {
		t.Errorf("repeated entry %+v", p.FailureDetails[1])
	}
}

func TestAggregatorBoundedPoliciesAndDomains(t *testing.T) {
	day := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	agg := &tlsrpt.Aggregator{MaxPolicies: 3, MaxDomains: 4, Now: func() time.Time { return day }}
	for i := range 10 {
		agg.Record(tlsrpt.Result{PolicyDomain: "example.org", PolicyType: tlsrpt.PolicyTLSA, Success: true,
			PolicyString: []string{"3 1 1 " + strconv.Itoa(i)}, MXHost: []string{"mx.example.org"}})
	}
	for i := range 10 {
		agg.Record(tlsrpt.Result{PolicyDomain: "d" + strconv.Itoa(i) + ".example", Success: true})
	}
	if got := agg.Dropped(); got != 7+7 {
		t.Errorf("dropped %d, want 14", got)
	}
	if got := agg.Domains(day); len(got) != 4 {
		t.Errorf("domains %q", got)
	}
	rep, err := agg.Report("example.org", day, org)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Policies) != 3 {
		t.Errorf("%d policies", len(rep.Policies))
	}
	// Long strings are cut.
	long := make([]byte, 100000)
	for i := range long {
		long[i] = 'a'
	}
	agg2 := &tlsrpt.Aggregator{Now: func() time.Time { return day }}
	agg2.Record(tlsrpt.Result{PolicyDomain: "example.org", ReceivingMXHelo: string(long), FailureReasonCode: string(long),
		PolicyType: tlsrpt.PolicySTS, PolicyString: []string{string(long)}})
	rep, _ = agg2.Report("example.org", day, org)
	f := rep.Policies[0].FailureDetails[0]
	if len(f.ReceivingMXHelo) > 1024 || len(f.FailureReasonCode) > 1024 || len(rep.Policies[0].Policy.String[0]) > 8192 {
		t.Errorf("strings not cut: %d %d %d", len(f.ReceivingMXHelo), len(f.FailureReasonCode), len(rep.Policies[0].Policy.String[0]))
	}
}

func TestAggregatorDays(t *testing.T) {
	day1 := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	day2 := day1.Add(24 * time.Hour)
	now := day2.Add(time.Hour)
	agg := &tlsrpt.Aggregator{Now: func() time.Time { return now }}
	// The last second of day 1 and the first of day 2, the second given in
	// another zone.
	agg.Record(tlsrpt.Result{PolicyDomain: "example.org", Success: true, Time: day2.Add(-time.Second)})
	agg.Record(tlsrpt.Result{PolicyDomain: "example.org", Failure: tlsrpt.StartTLSNotSupported,
		Time: day2.In(time.FixedZone("UTC-5", -5*3600))})
	agg.Record(tlsrpt.Result{PolicyDomain: "example.net", Success: true}) // now: day 2

	if got := agg.Domains(day1.Add(5 * time.Hour)); !slices.Equal(got, []string{"example.org"}) {
		t.Errorf("day 1 domains %q", got)
	}
	if got := agg.Domains(day2); !slices.Equal(got, []string{"example.net", "example.org"}) {
		t.Errorf("day 2 domains %q", got)
	}
	r1, err := agg.Report("example.org", day1, org)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := agg.Report("example.org", day2.Add(23*time.Hour), org)
	if err != nil {
		t.Fatal(err)
	}
	if s := r1.Policies[0].Summary; s.TotalSuccessfulSessionCount != 1 || s.TotalFailureSessionCount != 0 {
		t.Errorf("day 1 %+v", s)
	}
	if s := r2.Policies[0].Summary; s.TotalSuccessfulSessionCount != 0 || s.TotalFailureSessionCount != 1 {
		t.Errorf("day 2 %+v", s)
	}
	if !r1.DateRange.Start.Equal(day1) || !r2.DateRange.Start.Equal(day2) || r1.ReportID == r2.ReportID {
		t.Errorf("ranges %v %v, ids %s %s", r1.DateRange, r2.DateRange, r1.ReportID, r2.ReportID)
	}

	agg.Forget("Example.ORG.", day1)
	if _, err := agg.Report("example.org", day1, org); !errors.Is(err, tlsrpt.ErrNoResults) {
		t.Errorf("after Forget: %v", err)
	}
	if _, err := agg.Report("example.org", day2, org); err != nil {
		t.Errorf("Forget of day 1 touched day 2: %v", err)
	}

	// Days older than Retention are dropped, and so is what they held.
	now = now.Add(tlsrpt.Retention + 24*time.Hour)
	agg.Record(tlsrpt.Result{PolicyDomain: "example.org", Success: true, Time: day2})
	if got := agg.Domains(day2); len(got) != 0 {
		t.Errorf("old day kept: %q", got)
	}
	if agg.Dropped() != 1 {
		t.Errorf("dropped %d", agg.Dropped())
	}
}

func TestAggregatorNormalises(t *testing.T) {
	day := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	agg := &tlsrpt.Aggregator{Now: func() time.Time { return day }}
	agg.Record(tlsrpt.Result{PolicyDomain: "Bücher.Example.", Failure: "no-such-type",
		AdditionalInformation: "x509: certificate signed by unknown authority", FailureReasonCode: "X509_V_ERR"})
	agg.Record(tlsrpt.Result{PolicyDomain: "xn--bcher-kva.example", Failure: tlsrpt.CertificateExpired,
		AdditionalInformation: "https://info.example/x?id=1"})
	agg.Record(tlsrpt.Result{PolicyDomain: "", Success: true})
	agg.Record(tlsrpt.Result{PolicyDomain: "example.org", PolicyType: "dmarc", Success: true})
	if agg.Dropped() != 2 {
		t.Errorf("dropped %d, want 2", agg.Dropped())
	}
	rep, err := agg.Report("BÜCHER.example", day, org)
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Policies[0]
	if p.Policy.Domain != "xn--bcher-kva.example" || p.Policy.Type != tlsrpt.PolicyNone || len(p.FailureDetails) != 2 {
		t.Fatalf("%+v", p)
	}
	for _, f := range p.FailureDetails {
		switch f.ResultType {
		case tlsrpt.ValidationFailure:
			if f.AdditionalInformation != "" || f.FailureReasonCode != "X509_V_ERR; x509: certificate signed by unknown authority" {
				t.Errorf("text not moved to failure-reason-code: %+v", f)
			}
		case tlsrpt.CertificateExpired:
			if f.AdditionalInformation != "https://info.example/x?id=1" {
				t.Errorf("URI lost: %+v", f)
			}
		default:
			t.Errorf("result type %q", f.ResultType)
		}
	}
}

func TestReportErrors(t *testing.T) {
	day := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	agg := &tlsrpt.Aggregator{Now: func() time.Time { return day }}
	agg.Record(tlsrpt.Result{PolicyDomain: "example.org", Success: true})
	if _, err := agg.Report("example.net", day, org); !errors.Is(err, tlsrpt.ErrNoResults) || err == nil || !strings.Contains(err.Error(), "example.net") {
		t.Errorf("no results: %v", err)
	}
	for _, o := range []tlsrpt.Organization{
		{Name: "", ContactInfo: "a@example.com"},
		{Name: "X\r\nBcc: y", ContactInfo: "a@example.com"},
		{Name: "X", ContactInfo: "no-at-sign"},
		{Name: "X", ContactInfo: "a@b@"},
		{Name: "X", ContactInfo: "a b@example.com"},
	} {
		if _, err := agg.Report("example.org", day, o); !errors.Is(err, mailsec.ErrConfig) {
			t.Errorf("Report with %+v: %v", o, err)
		}
	}
}

// A report goes to the recipient domain: the failure-reason-code names no
// address of the sending side's network, and text from the peer (the
// server's greeting name, a reason quoting it) carries no controls.
func TestReportKeepsOurNetworkOut(t *testing.T) {
	a := &tlsrpt.Aggregator{}
	a.Record(tlsrpt.Result{
		PolicyDomain: "example.org", ReceivingMXHostname: "mx1.example.org",
		ReceivingIP:       netip.MustParseAddr("203.0.113.5"),
		ReceivingMXHelo:   "mx1\x1b]0;pwned\x07.example.org",
		Failure:           tlsrpt.STSPolicyFetchError,
		FailureReasonCode: "lookup mta-sts.example.org on 10.1.2.3:53: read udp 10.9.9.9:4000->10.1.2.3:53: timeout (resolver [fd00::53]:5353)",
	})
	rep, err := a.Report("example.org", time.Now(), tlsrpt.Organization{Name: "Sender", ContactInfo: "tlsrpt@sender.example"})
	if err != nil {
		t.Fatal(err)
	}
	rep.ReportID = "id" // random hex, which may hold "fd00" or "fe80" itself
	js, _ := json.Marshal(rep)
	for _, s := range []string{"10.1.2.3", "10.9.9.9", "fd00", `\u001b`, `\u0007`} {
		if strings.Contains(string(js), s) {
			t.Errorf("report carries %q: %s", s, js)
		}
	}
	fd := rep.Policies[0].FailureDetails[0]
	if fd.ReceivingIP != netip.MustParseAddr("203.0.113.5") || !strings.Contains(fd.FailureReasonCode, "lookup mta-sts.example.org on [address]") ||
		fd.ReceivingMXHelo != "mx1?]0;pwned?.example.org" {
		t.Fatalf("failure details = %+v", fd)
	}
}

// sending-mta-ip says which address the receiver saw: a global one. A
// transport that records the local end of a connection behind NAT or on
// a private network would tell the recipient domain about our network;
// such an address is left out of the report, a global one kept.
func TestReportKeepsPrivateSendingAddressOut(t *testing.T) {
	a := &tlsrpt.Aggregator{}
	for _, ip := range []string{"10.0.0.7", "192.168.1.20", "fd00::7", "127.0.0.1", "100.64.0.9", "fe80::1%eth0", "::ffff:172.16.0.3"} {
		a.Record(tlsrpt.Result{PolicyDomain: "example.org", ReceivingMXHostname: "mx1.example.org",
			SendingMTAIP: netip.MustParseAddr(ip), Failure: tlsrpt.CertificateExpired})
	}
	a.Record(tlsrpt.Result{PolicyDomain: "example.org", ReceivingMXHostname: "mx2.example.org",
		SendingMTAIP: netip.MustParseAddr("8.8.4.4"), Failure: tlsrpt.CertificateExpired})
	rep, err := a.Report("example.org", time.Now(), org)
	if err != nil {
		t.Fatal(err)
	}
	rep.ReportID = "id" // random hex, which may hold "fd00" or "fe80" itself
	js, _ := json.Marshal(rep)
	for _, s := range []string{"10.0.0.7", "192.168.1.20", "fd00", "127.0.0.1", "100.64.0.9", "fe80", "172.16.0.3"} {
		if strings.Contains(string(js), s) {
			t.Errorf("report carries %q: %s", s, js)
		}
	}
	if !strings.Contains(string(js), `"sending-mta-ip":"8.8.4.4"`) {
		t.Errorf("global sending address left out: %s", js)
	}
	if f := rep.Policies[0].Summary.TotalFailureSessionCount; f != 8 {
		t.Errorf("%d failures counted, want 8", f)
	}
}
