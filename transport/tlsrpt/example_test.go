package tlsrpt_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"strings"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

// txtResolver is a resolver that knows the TXT records given: a
// mailsectest.Resolver, which a test uses in place of a dns.Client.
func txtResolver(recs map[string][]string) *mailsectest.Resolver {
	r := mailsectest.NewResolver()
	for name, txt := range recs {
		r.TXT(name, txt...)
	}
	return r
}

// A transport records every session's outcome; after the day, the
// Aggregator builds the domain's report.
func ExampleAggregator() {
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	agg := &tlsrpt.Aggregator{Now: func() time.Time { return day.Add(25 * time.Hour) }}
	sts := tlsrpt.Result{
		PolicyDomain: "example.org",
		PolicyType:   tlsrpt.PolicySTS,
		PolicyString: []string{"version: STSv1", "mode: enforce", "mx: mx1.example.org", "max_age: 86400"},
		MXHost:       []string{"mx1.example.org"},
		Time:         day.Add(9 * time.Hour),
	}
	for range 3 {
		ok := sts
		ok.Success = true
		agg.Record(ok)
	}
	bad := sts
	bad.ReceivingMXHostname = "mx1.example.org"
	bad.ReceivingIP = netip.MustParseAddr("192.0.2.25")
	bad.Failure = tlsrpt.CertificateExpired
	agg.Record(bad)

	fmt.Println(agg.Domains(day))
	rep, err := agg.Report("example.org", day, tlsrpt.Organization{Name: "Example Mail", ContactInfo: "tlsrpt@mail.example.com"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rep.DateRange.Start.Format(time.RFC3339), rep.DateRange.End.Format(time.RFC3339))
	for _, p := range rep.Policies {
		fmt.Println(p.Policy.Type, p.Summary.TotalSuccessfulSessionCount, p.Summary.TotalFailureSessionCount)
		for _, f := range p.FailureDetails {
			fmt.Println(f.ResultType, f.ReceivingMXHostname, f.ReceivingIP, f.FailedSessionCount)
		}
	}
	agg.Forget("example.org", day) // once the report went out
	fmt.Println(agg.Domains(day))
	// Output:
	// [example.org]
	// 2026-03-14T00:00:00Z 2026-03-14T23:59:59Z
	// sts 3 1
	// certificate-expired mx1.example.org 192.0.2.25 1
	// []
}

func ExampleParseRecord() {
	rec, err := tlsrpt.ParseRecord("v=TLSRPTv1; rua=mailto:tlsrpt@example.org,https://reports.example.org/v1/tlsrpt")
	if err != nil {
		log.Fatal(err)
	}
	for _, u := range rec.RUA {
		fmt.Println(u)
	}
	// Output:
	// mailto:tlsrpt@example.org
	// https://reports.example.org/v1/tlsrpt
}

// LookupPolicy reads _smtp._tls.<domain>; here from a test resolver.
func ExampleLookupPolicy() {
	r := mailsectest.NewResolver() // in production, a *dns.Client
	r.TXT("_smtp._tls.example.org",
		"v=spf1 -all", // not a TLSRPT record: discarded
		"v=TLSRPTv1; rua=mailto:tlsrpt@example.org,ftp://reports.example.org/")
	pol, err := tlsrpt.LookupPolicy(context.Background(), r, "Example.ORG.")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(pol.Domain, pol.RUA, pol.Ignored)

	_, err = tlsrpt.LookupPolicy(context.Background(), r, "example.net")
	fmt.Println(err)
	// Output:
	// example.org [mailto:tlsrpt@example.org] [ftp://reports.example.org/]
	// tlsrpt: no TLSRPT record for example.net: dns: TXT _smtp._tls.example.net: no such domain (NXDOMAIN)
}

// A report goes by mail through the application's Sender (here one that
// records instead of sending).
func ExampleSubmitter_Submit() {
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	agg := &tlsrpt.Aggregator{Now: func() time.Time { return day }}
	agg.Record(tlsrpt.Result{PolicyDomain: "example.org", Success: true})
	rep, err := agg.Report("example.org", day, tlsrpt.Organization{Name: "Example Mail", ContactInfo: "tlsrpt@mail.example.com"})
	if err != nil {
		log.Fatal(err)
	}
	pol, err := tlsrpt.LookupPolicy(context.Background(),
		txtResolver(map[string][]string{"_smtp._tls.example.org": {"v=TLSRPTv1; rua=mailto:tlsrpt@example.org"}}), "example.org")
	if err != nil {
		log.Fatal(err)
	}

	rt := &mailsectest.RecordingTransport{}
	sender, _ := mailsec.NewSender(rt, nil)
	sub := &tlsrpt.Submitter{Sender: sender, From: "tlsrpt@mail.example.com"}
	if err := sub.Submit(context.Background(), rep, pol); err != nil {
		log.Fatal(err)
	}
	d := rt.Deliveries()[0]
	e, _ := d.Entity()
	fmt.Println(d.To)
	fmt.Println(e.Header.Get("TLS-Report-Domain"), e.Header.Get("TLS-Report-Submitter"))
	fmt.Println(strings.HasPrefix(e.Header.Get("Subject"), "Report Domain: example.org Submitter: mail.example.com Report-ID: <"))
	// Output:
	// [tlsrpt@example.org]
	// example.org mail.example.com
	// true
}
