package tlsrpt_test

import (
	"encoding/json"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec/transport/tlsrpt"
)

// rfcExample is the example report of RFC 8460 Appendix B, with the
// "mx-host" array of erratum 6241.
const rfcExample = `{
     "organization-name": "Company-X",
     "date-range": {
       "start-datetime": "2016-04-01T00:00:00Z",
       "end-datetime": "2016-04-01T23:59:59Z"
     },
     "contact-info": "sts-reporting@company-x.example",
     "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
     "policies": [{
       "policy": {
         "policy-type": "sts",
         "policy-string": ["version: STSv1","mode: testing",
               "mx: *.mail.company-y.example","max_age: 86400"],
         "policy-domain": "company-y.example",
         "mx-host": ["*.mail.company-y.example"]
       },
       "summary": {
         "total-successful-session-count": 5326,
         "total-failure-session-count": 303
       },
       "failure-details": [{
         "result-type": "certificate-expired",
         "sending-mta-ip": "2001:db8:abcd:0012::1",
         "receiving-mx-hostname": "mx1.mail.company-y.example",
         "failed-session-count": 100
       }, {
         "result-type": "starttls-not-supported",
         "sending-mta-ip": "2001:db8:abcd:0013::1",
         "receiving-mx-hostname": "mx2.mail.company-y.example",
         "receiving-ip": "203.0.113.56",
         "failed-session-count": 200,
         "additional-information": "https://reports.company-x.example/report_info ? id = 5065427 c - 23 d3# StarttlsNotSupported "
       }, {
         "result-type": "validation-failure",
         "sending-mta-ip": "198.51.100.62",
         "receiving-ip": "203.0.113.58",
         "receiving-mx-hostname": "mx-backup.mail.company-y.example",
         "failed-session-count": 3,
         "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"
       }]
     }]
   }`

// The field list of RFC 8460 §4.4: for each object, every key it may have
// and whether it must.
type fieldSpec struct {
	kind     string // "string", "array", "object", "count", "strings", "ip", "datetime"
	required bool
}

var (
	reportFields = map[string]fieldSpec{
		"organization-name": {"string", true},
		"date-range":        {"object", true},
		"contact-info":      {"string", true},
		"report-id":         {"string", true},
		"policies":          {"array", true},
	}
	dateRangeFields = map[string]fieldSpec{
		"start-datetime": {"datetime", true},
		"end-datetime":   {"datetime", true},
	}
	policiesFields = map[string]fieldSpec{
		"policy":          {"object", true},
		"summary":         {"object", true},
		"failure-details": {"array", true},
	}
	policyFields = map[string]fieldSpec{
		"policy-type":   {"string", true},
		"policy-string": {"strings", false}, // absent for no-policy-found
		"policy-domain": {"string", true},
		"mx-host":       {"strings", false},
	}
	summaryFields = map[string]fieldSpec{
		"total-successful-session-count": {"count", true},
		"total-failure-session-count":    {"count", true},
	}
	failureFields = map[string]fieldSpec{
		"result-type":            {"string", true},
		"sending-mta-ip":         {"ip", false},
		"receiving-mx-hostname":  {"string", false},
		"receiving-mx-helo":      {"string", false},
		"receiving-ip":           {"ip", false},
		"failed-session-count":   {"count", true},
		"additional-information": {"string", false},
		"failure-reason-code":    {"string", false},
	}
	resultTypes = []string{"starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
		"certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid", "dane-required",
		"sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"}
)

// checkObject checks that o has every required key of spec, no key spec
// lacks, and values of the right JSON types.
func checkObject(t *testing.T, where string, o map[string]any, spec map[string]fieldSpec) {
	t.Helper()
	for k, fs := range spec {
		if _, ok := o[k]; !ok && fs.required {
			t.Errorf("%s: required %q missing", where, k)
		}
	}
	for k, v := range o {
		fs, ok := spec[k]
		if !ok {
			t.Errorf("%s: unknown key %q", where, k)
			continue
		}
		bad := false
		switch fs.kind {
		case "string":
			s, ok := v.(string)
			bad = !ok || s == ""
		case "object":
			_, ok := v.(map[string]any)
			bad = !ok
		case "array":
			_, ok := v.([]any)
			bad = !ok
		case "strings":
			a, ok := v.([]any)
			bad = !ok
			for _, e := range a {
				if _, ok := e.(string); !ok {
					bad = true
				}
			}
		case "count":
			n, ok := v.(float64)
			bad = !ok || n < 0 || n != math.Trunc(n)
		case "ip":
			s, ok := v.(string)
			_, err := netip.ParseAddr(s)
			bad = !ok || err != nil
		case "datetime":
			s, ok := v.(string)
			_, err := time.Parse(time.RFC3339, s)
			bad = !ok || err != nil
		}
		if bad {
			t.Errorf("%s: %q is %T %v, want %s", where, k, v, v, fs.kind)
		}
	}
}

// checkReport validates the JSON of a report against the RFC 8460 §4.4
// field list, and checks that failure counts add up and that the date
// range is one whole UTC day.
func checkReport(t *testing.T, js []byte) {
	t.Helper()
	var top map[string]any
	if err := json.Unmarshal(js, &top); err != nil {
		t.Fatal(err)
	}
	checkObject(t, "report", top, reportFields)
	dr, _ := top["date-range"].(map[string]any)
	checkObject(t, "date-range", dr, dateRangeFields)
	start, _ := dr["start-datetime"].(string)
	end, _ := dr["end-datetime"].(string)
	st, err1 := time.Parse(time.RFC3339, start)
	et, err2 := time.Parse(time.RFC3339, end)
	if err1 != nil || err2 != nil || !strings.HasSuffix(start, "T00:00:00Z") || !strings.HasSuffix(end, "T23:59:59Z") ||
		et.Sub(st) != 24*time.Hour-time.Second {
		t.Errorf("date range %s to %s is not one UTC day", start, end)
	}
	policies, _ := top["policies"].([]any)
	if len(policies) == 0 {
		t.Error("no policies")
	}
	for _, p := range policies {
		po, _ := p.(map[string]any)
		checkObject(t, "policies[]", po, policiesFields)
		pol, _ := po["policy"].(map[string]any)
		checkObject(t, "policy", pol, policyFields)
		switch pol["policy-type"] {
		case "sts", "tlsa":
			if _, ok := pol["policy-string"]; !ok {
				t.Errorf("policy %v without policy-string", pol)
			}
		case "no-policy-found":
		default:
			t.Errorf("policy-type %v", pol["policy-type"])
		}
		sum, _ := po["summary"].(map[string]any)
		checkObject(t, "summary", sum, summaryFields)
		fds, _ := po["failure-details"].([]any)
		total := 0.0
		for _, fd := range fds {
			f, _ := fd.(map[string]any)
			checkObject(t, "failure-details[]", f, failureFields)
			if !slices.Contains(resultTypes, f["result-type"].(string)) {
				t.Errorf("result-type %v", f["result-type"])
			}
			n, _ := f["failed-session-count"].(float64)
			total += n
		}
		if want, _ := sum["total-failure-session-count"].(float64); total != want {
			t.Errorf("failure details add up to %v, summary says %v", total, want)
		}
	}
}

func TestRFCExampleReport(t *testing.T) {
	checkReport(t, []byte(rfcExample))

	var rep tlsrpt.Report
	if err := json.Unmarshal([]byte(rfcExample), &rep); err != nil {
		t.Fatal(err)
	}
	want := tlsrpt.Report{
		OrganizationName: "Company-X",
		DateRange: tlsrpt.DateRange{
			Start: time.Date(2016, 4, 1, 0, 0, 0, 0, time.UTC),
			End:   time.Date(2016, 4, 1, 23, 59, 59, 0, time.UTC),
		},
		ContactInfo: "sts-reporting@company-x.example",
		ReportID:    "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
		Policies: []tlsrpt.PolicyResult{{
			Policy: tlsrpt.PolicyDetails{
				Type:   tlsrpt.PolicySTS,
				String: []string{"version: STSv1", "mode: testing", "mx: *.mail.company-y.example", "max_age: 86400"},
				Domain: "company-y.example",
				MXHost: []string{"*.mail.company-y.example"},
			},
			Summary: tlsrpt.Summary{TotalSuccessfulSessionCount: 5326, TotalFailureSessionCount: 303},
			FailureDetails: []tlsrpt.FailureDetails{{
				ResultType:          tlsrpt.CertificateExpired,
				SendingMTAIP:        netip.MustParseAddr("2001:db8:abcd:12::1"),
				ReceivingMXHostname: "mx1.mail.company-y.example",
				FailedSessionCount:  100,
			}, {
				ResultType:            tlsrpt.StartTLSNotSupported,
				SendingMTAIP:          netip.MustParseAddr("2001:db8:abcd:13::1"),
				ReceivingMXHostname:   "mx2.mail.company-y.example",
				ReceivingIP:           netip.MustParseAddr("203.0.113.56"),
				FailedSessionCount:    200,
				AdditionalInformation: "https://reports.company-x.example/report_info ? id = 5065427 c - 23 d3# StarttlsNotSupported ",
			}, {
				ResultType:          tlsrpt.ValidationFailure,
				SendingMTAIP:        netip.MustParseAddr("198.51.100.62"),
				ReceivingIP:         netip.MustParseAddr("203.0.113.58"),
				ReceivingMXHostname: "mx-backup.mail.company-y.example",
				FailedSessionCount:  3,
				FailureReasonCode:   "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
			}},
		}},
	}
	if !reflect.DeepEqual(rep, want) {
		t.Errorf("unmarshalled\n%+v\nwant\n%+v", rep, want)
	}

	// Marshalling it again gives the same document, up to white space and
	// the spelling of IPv6 addresses.
	js, err := json.Marshal(&rep)
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, js)
	var a, b any
	_ = json.Unmarshal(js, &a)
	orig := strings.NewReplacer(":0012::", ":12::", ":0013::", ":13::").Replace(rfcExample)
	_ = json.Unmarshal([]byte(orig), &b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("round trip changed the report:\n%s", js)
	}
}

// The example as first published had "mx-host" as a single string.
func TestMXHostString(t *testing.T) {
	var p tlsrpt.PolicyDetails
	if err := json.Unmarshal([]byte(`{"policy-type":"sts","policy-domain":"d.example","mx-host":"*.mail.d.example"}`), &p); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.MXHost, []string{"*.mail.d.example"}) || p.Domain != "d.example" || p.Type != tlsrpt.PolicySTS {
		t.Errorf("%+v", p)
	}
	if err := json.Unmarshal([]byte(`{"mx-host":42}`), &p); err == nil {
		t.Error("a number as mx-host was accepted")
	}
}

// A report the Aggregator produces, with every kind of policy and every
// optional field, keeps to the schema.
func TestProducedReportSchema(t *testing.T) {
	day := time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC)
	agg := &tlsrpt.Aggregator{Now: func() time.Time { return day.Add(30 * time.Hour) }}
	at := day.Add(13 * time.Hour)
	sts := tlsrpt.Result{PolicyDomain: "example.org", PolicyType: tlsrpt.PolicySTS, Time: at,
		PolicyString: []string{"version: STSv1", "mode: enforce", "mx: *.example.org", "max_age: 604800"},
		MXHost:       []string{"*.example.org"}}
	tlsa := tlsrpt.Result{PolicyDomain: "example.org", PolicyType: tlsrpt.PolicyTLSA, Time: at,
		PolicyString: []string{"3 1 1 0123456789abcdef"}, MXHost: []string{"mx2.example.org"}}
	none := tlsrpt.Result{PolicyDomain: "example.org", Time: at, PolicyString: []string{"ignored"}}
	for i := range 5 {
		for _, r := range []tlsrpt.Result{sts, tlsa, none} {
			r.Success = i%2 == 0
			r.Failure = []tlsrpt.ResultType{tlsrpt.CertificateExpired, tlsrpt.TLSAInvalid, tlsrpt.StartTLSNotSupported}[i%3]
			r.ReceivingMXHostname = "mx1.example.org"
			r.ReceivingMXHelo = "mx1.example.org"
			r.ReceivingIP = netip.MustParseAddr("::ffff:192.0.2.1")
			r.SendingMTAIP = netip.MustParseAddr("2001:db8::25")
			r.FailureReasonCode = "x509: certificate has expired"
			r.AdditionalInformation = "https://reports.example.com/info/1"
			agg.Record(r)
		}
	}
	rep, err := agg.Report("example.org", at, tlsrpt.Organization{Name: "Example", ContactInfo: "tlsrpt@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, js)
	if len(rep.Policies) != 3 {
		t.Fatalf("%d policies, want 3:\n%s", len(rep.Policies), js)
	}
	for _, p := range rep.Policies {
		if p.Summary != (tlsrpt.Summary{TotalSuccessfulSessionCount: 3, TotalFailureSessionCount: 2}) {
			t.Errorf("%s: summary %+v", p.Policy.Type, p.Summary)
		}
		if p.Policy.Type == tlsrpt.PolicyNone && (p.Policy.String != nil || p.Policy.MXHost != nil) {
			t.Errorf("no-policy-found carries a policy: %+v", p.Policy)
		}
	}
	if !strings.Contains(string(js), `"receiving-ip": "192.0.2.1"`) {
		t.Errorf("mapped address not unmapped:\n%s", js)
	}

	// Unmarshal gives the report back.
	var back tlsrpt.Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, rep) {
		t.Errorf("round trip:\n%+v\n%+v", back, *rep)
	}

	// A policy with successes only still has its (empty) failure details.
	agg2 := &tlsrpt.Aggregator{Now: func() time.Time { return at }}
	agg2.Record(tlsrpt.Result{PolicyDomain: "example.net", Success: true})
	rep2, err := agg2.Report("example.net", at, tlsrpt.Organization{Name: "Example", ContactInfo: "tlsrpt@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	js2, _ := json.Marshal(rep2)
	checkReport(t, js2)
	if !strings.Contains(string(js2), `"failure-details":[]`) {
		t.Errorf("%s", js2)
	}
}

func FuzzUnmarshalReport(f *testing.F) {
	f.Add([]byte(rfcExample))
	f.Add([]byte(`{"policies":[{"policy":{"mx-host":"a"}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 16<<10 {
			return
		}
		var r tlsrpt.Report
		if json.Unmarshal(data, &r) != nil {
			return
		}
		js, err := json.Marshal(&r)
		if err != nil {
			return // a time outside what RFC 3339 can write
		}
		var r2 tlsrpt.Report
		if err := json.Unmarshal(js, &r2); err != nil {
			t.Fatalf("cannot read back %s: %v", js, err)
		}
		js2, err := json.Marshal(&r2)
		if err != nil || string(js) != string(js2) {
			t.Fatalf("not stable:\n%s\n%s", js, js2)
		}
	})
}
