package tlsrpt_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dkimsign"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

var reportDay = time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)

func testReport(t *testing.T, domain string) *tlsrpt.Report {
	t.Helper()
	agg := &tlsrpt.Aggregator{Now: func() time.Time { return reportDay }}
	agg.Record(tlsrpt.Result{PolicyDomain: domain, Success: true})
	agg.Record(tlsrpt.Result{PolicyDomain: domain, Failure: tlsrpt.StartTLSNotSupported, ReceivingMXHostname: "mx." + domain})
	rep, err := agg.Report(domain, reportDay, org)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func policyFor(t *testing.T, domain string, uris ...string) *tlsrpt.Policy {
	t.Helper()
	p := &tlsrpt.Policy{Domain: domain}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		p.RUA = append(p.RUA, u)
	}
	return p
}

func gunzipReport(t *testing.T, b []byte) *tlsrpt.Report {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	js, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, js)
	var rep tlsrpt.Report
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatal(err)
	}
	return &rep
}

// reportServer is an HTTPS server that records the reports posted to it.
type reportServer struct {
	*httptest.Server
	status  int
	hits    atomic.Int32
	ctype   atomic.Value
	body    atomic.Value
	methods atomic.Value
}

func newReportServer(t *testing.T, status int) *reportServer {
	rs := &reportServer{status: status}
	rs.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs.hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		rs.ctype.Store(r.Header.Get("Content-Type"))
		rs.methods.Store(r.Method)
		rs.body.Store(b)
		w.WriteHeader(rs.status)
	}))
	// Handshakes refused by distrustful clients are expected here.
	rs.Config.ErrorLog = log.New(io.Discard, "", 0)
	rs.StartTLS()
	t.Cleanup(rs.Close)
	return rs
}

func TestSubmitHTTPS(t *testing.T) {
	rs := newReportServer(t, http.StatusCreated)
	rep := testReport(t, "example.org")
	sub := &tlsrpt.Submitter{AllowPrivate: true, HTTPClient: rs.Client()}
	if err := sub.Submit(context.Background(), rep, policyFor(t, "example.org", rs.URL+"/v1/tlsrpt")); err != nil {
		t.Fatal(err)
	}
	if rs.hits.Load() != 1 || rs.methods.Load() != http.MethodPost || rs.ctype.Load() != "application/tlsrpt+gzip" {
		t.Fatalf("hits %d, method %v, content type %v", rs.hits.Load(), rs.methods.Load(), rs.ctype.Load())
	}
	if got := gunzipReport(t, rs.body.Load().([]byte)); !reflect.DeepEqual(got, rep) {
		t.Errorf("posted\n%+v\nwant\n%+v", got, rep)
	}
}

func TestSubmitHTTPSFailures(t *testing.T) {
	ctx := context.Background()
	rep := testReport(t, "example.org")

	for _, tc := range []struct {
		status int
		temp   bool
	}{{http.StatusInternalServerError, true}, {http.StatusTooManyRequests, true}, {http.StatusBadRequest, false}, {http.StatusFound, false}} {
		rs := newReportServer(t, tc.status)
		err := (&tlsrpt.Submitter{AllowPrivate: true, HTTPClient: rs.Client()}).Submit(ctx, rep, policyFor(t, "example.org", rs.URL))
		var se *tlsrpt.SubmitError
		if !errors.As(err, &se) || se.StatusCode != tc.status || se.URI != rs.URL || mailsec.IsTemporary(err) != tc.temp {
			t.Errorf("status %d: %v (temporary %v)", tc.status, err, mailsec.IsTemporary(err))
		}
	}

	// A plaintext http: URI gets nothing.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("plain HTTP server reached") }))
	defer plain.Close()
	err := (&tlsrpt.Submitter{AllowPrivate: true}).Submit(ctx, rep, policyFor(t, "example.org", plain.URL))
	if err == nil || !strings.Contains(err.Error(), plain.URL) {
		t.Errorf("http: URI: %v", err)
	}

	// A server whose certificate the client does not trust gets nothing.
	rs := newReportServer(t, http.StatusOK)
	if err := (&tlsrpt.Submitter{AllowPrivate: true}).Submit(ctx, rep, policyFor(t, "example.org", rs.URL)); err == nil || rs.hits.Load() != 0 {
		t.Errorf("untrusted server: %v, %d hits", err, rs.hits.Load())
	}
	// Nor does one the client would not verify.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if err := (&tlsrpt.Submitter{AllowPrivate: true, HTTPClient: insecure}).Submit(ctx, rep, policyFor(t, "example.org", rs.URL)); err == nil || rs.hits.Load() != 0 {
		t.Errorf("unverified client: %v, %d hits", err, rs.hits.Load())
	}

	// A redirect to http: is not followed.
	redirect := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/x", http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	err = (&tlsrpt.Submitter{AllowPrivate: true, HTTPClient: redirect.Client()}).Submit(ctx, rep, policyFor(t, "example.org", redirect.URL))
	if err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Errorf("redirect to http: %v", err)
	}
}

// attachment finds the part of e with a Content-Disposition filename.
func attachment(t *testing.T, e *message.Entity) (name, ctype string, body []byte, text string) {
	t.Helper()
	mr := e.MultipartReader()
	if mr == nil {
		t.Fatalf("not multipart: %v", e.Header.Get("Content-Type"))
	}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.MultipartReader() != nil {
			_, _, _, text = attachment(t, p)
			continue
		}
		ct, _, _ := p.Header.ContentType()
		_, params, _ := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
		b, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatal(err)
		}
		if params["filename"] != "" {
			name, ctype, body = params["filename"], ct, b
		} else if ct == "text/plain" {
			text = string(b)
		}
	}
}

func TestSubmitMail(t *testing.T) {
	rt := &mailsectest.RecordingTransport{}
	sender, err := mailsec.NewSender(rt, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep := testReport(t, "example.org")
	sub := &tlsrpt.Submitter{AllowPrivate: true, Sender: sender, From: "tlsrpt@mail.example.com"}
	pol := policyFor(t, "example.org", "mailto:tlsrpt@example.org", "mailto:other%2Breports@example.org")
	if err := sub.Submit(context.Background(), rep, pol); err != nil {
		t.Fatal(err)
	}
	ds := rt.Deliveries()
	if len(ds) != 2 || ds[0].To[0] != "tlsrpt@example.org" || ds[1].To[0] != "other+reports@example.org" {
		t.Fatalf("deliveries %+v", ds)
	}
	e, err := ds[0].Entity()
	if err != nil {
		t.Fatal(err)
	}
	h := mail.Header{Header: e.Header}
	if mt, params, _ := h.ContentType(); mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Errorf("Content-Type %q, want multipart/report; report-type=tlsrpt (RFC 8460 §5.3)", h.Get("Content-Type"))
	}
	subject, _ := h.Subject()
	if want := "Report Domain: example.org Submitter: mail.example.com Report-ID: <" + rep.ReportID + ">"; subject != want {
		t.Errorf("subject %q, want %q", subject, want)
	}
	if h.Get("TLS-Report-Domain") != "example.org" || h.Get("TLS-Report-Submitter") != "mail.example.com" {
		t.Errorf("header %v", e.Header)
	}
	if from, _ := h.AddressList("From"); len(from) != 1 || from[0].Address != "tlsrpt@mail.example.com" {
		t.Errorf("From %v", from)
	}
	name, ctype, body, text := attachment(t, e)
	wantName := "mail.example.com!example.org!" + strconv.FormatInt(reportDay.Unix(), 10) + "!" +
		strconv.FormatInt(reportDay.Add(24*time.Hour-time.Second).Unix(), 10) + "!" + rep.ReportID + ".json.gz"
	if name != wantName || ctype != "application/tlsrpt+gzip" {
		t.Errorf("attachment %q (%s), want %q", name, ctype, wantName)
	}
	if got := gunzipReport(t, body); !reflect.DeepEqual(got, rep) {
		t.Errorf("attached\n%+v\nwant\n%+v", got, rep)
	}
	if !strings.Contains(text, "aggregate TLS report") || !strings.Contains(text, "example.org") {
		t.Errorf("text part %q", text)
	}
}

// A failed HTTPS delivery does not stop the mail one, and the error names
// each URI that failed.
func TestSubmitCollectsErrors(t *testing.T) {
	rs := newReportServer(t, http.StatusServiceUnavailable)
	rt := &mailsectest.RecordingTransport{}
	sender, _ := mailsec.NewSender(rt, nil)
	rep := testReport(t, "example.org")
	sub := &tlsrpt.Submitter{AllowPrivate: true, Sender: sender, From: "tlsrpt@mail.example.com", HTTPClient: rs.Client()}
	err := sub.Submit(context.Background(), rep, policyFor(t, "example.org", rs.URL, "mailto:tlsrpt@example.org", "mailto:bad"))
	if len(rt.Deliveries()) != 1 {
		t.Errorf("%d mail deliveries, want 1", len(rt.Deliveries()))
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok || len(joined.Unwrap()) != 2 {
		t.Fatalf("error %v", err)
	}
	for i, want := range []string{rs.URL, "mailto:bad"} {
		var se *tlsrpt.SubmitError
		if !errors.As(joined.Unwrap()[i], &se) || se.URI != want || !strings.Contains(se.Error(), want) {
			t.Errorf("error %d: %v, want one for %s", i, joined.Unwrap()[i], want)
		}
	}

	// A mail failure is reported too, and no Sender means mailto: fails.
	rt.Fail = func(*mailsec.Delivery) error {
		return &mailsec.SMTPError{Host: "recording", Command: "RCPT", Code: 451, Message: "try later"}
	}
	err = sub.Submit(context.Background(), rep, policyFor(t, "example.org", "mailto:tlsrpt@example.org"))
	var se *tlsrpt.SubmitError
	if !errors.As(err, &se) || se.URI != "mailto:tlsrpt@example.org" || !mailsec.IsTemporary(err) {
		t.Errorf("mail failure: %v", err)
	}
	if err := (&tlsrpt.Submitter{AllowPrivate: true}).Submit(context.Background(), rep, policyFor(t, "example.org", "mailto:tlsrpt@example.org")); err == nil {
		t.Error("mailto: without a Sender succeeded")
	}
}

// A report goes only to the policy of the domain it is about.
func TestSubmitDomainMismatch(t *testing.T) {
	rs := newReportServer(t, http.StatusOK)
	rt := &mailsectest.RecordingTransport{}
	sender, _ := mailsec.NewSender(rt, nil)
	sub := &tlsrpt.Submitter{AllowPrivate: true, Sender: sender, From: "tlsrpt@mail.example.com", HTTPClient: rs.Client()}
	err := sub.Submit(context.Background(), testReport(t, "example.org"), policyFor(t, "example.net", rs.URL, "mailto:r@example.net"))
	if !errors.Is(err, tlsrpt.ErrDomainMismatch) || rs.hits.Load() != 0 || len(rt.Deliveries()) != 0 {
		t.Errorf("%v; %d hits, %d mails", err, rs.hits.Load(), len(rt.Deliveries()))
	}
	if err := sub.Submit(context.Background(), nil, policyFor(t, "example.org")); !errors.Is(err, mailsec.ErrInvalid) {
		t.Errorf("nil report: %v", err)
	}
	if err := sub.Submit(context.Background(), testReport(t, "example.org"), policyFor(t, "example.org")); !errors.Is(err, tlsrpt.ErrNoUsableURI) {
		t.Errorf("policy without URIs: %v", err)
	}
}

// A report URI whose host is a loopback, private or link-local address
// gets nothing: the URI is the recipient domain's choice. The report
// server is on loopback; with AllowPrivate the same submission goes
// through.
func TestSubmitRefusesNonGlobal(t *testing.T) {
	ctx := context.Background()
	rep := testReport(t, "example.org")
	rs := newReportServer(t, http.StatusOK)
	err := (&tlsrpt.Submitter{HTTPClient: rs.Client()}).Submit(ctx, rep, policyFor(t, "example.org", rs.URL))
	var ae *mailsec.AddressError
	if !errors.As(err, &ae) || ae.Addr != netip.MustParseAddr("127.0.0.1") || ae.Host != "127.0.0.1" || rs.hits.Load() != 0 {
		t.Fatalf("err = %v, %d hits; want an AddressError and nothing posted", err, rs.hits.Load())
	}
	// A RoundTripper whose connections cannot be checked is refused.
	odd := &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		t.Error("the unchecked RoundTripper was used")
		return nil, errors.New("no")
	})}
	if err := (&tlsrpt.Submitter{HTTPClient: odd}).Submit(ctx, rep, policyFor(t, "example.org", rs.URL)); !errors.Is(err, mailsec.ErrConfig) {
		t.Fatalf("opaque RoundTripper: %v", err)
	}
	if err := (&tlsrpt.Submitter{HTTPClient: rs.Client(), AllowPrivate: true}).Submit(ctx, rep, policyFor(t, "example.org", rs.URL)); err != nil || rs.hits.Load() != 1 {
		t.Fatalf("with AllowPrivate: %v, %d hits", err, rs.hits.Load())
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A nil URI in a Policy, a nil *http.Transport in the Submitter's client
// and a nil resolver pointer given to LookupPolicy are refused with an
// error naming what is wrong (a ValidationError for the policy, a
// ConfigError for the client and the resolver), instead of panicking;
// nothing is posted.
func TestSubmitTypedNil(t *testing.T) {
	ctx := context.Background()
	rep := testReport(t, "example.org")
	rs := newReportServer(t, http.StatusOK)
	noPanic := func(what string, f func() error) error {
		t.Helper()
		var err error
		func() {
			defer func() {
				if v := recover(); v != nil {
					t.Fatalf("%s panicked: %v", what, v)
				}
			}()
			err = f()
		}()
		return err
	}
	p := policyFor(t, "example.org", rs.URL)
	p.RUA = append(p.RUA, nil)
	err := noPanic("nil URI", func() error {
		return (&tlsrpt.Submitter{HTTPClient: rs.Client(), AllowPrivate: true}).Submit(ctx, rep, p)
	})
	var ve *mailsec.ValidationError
	if !errors.As(err, &ve) || ve.Field != "Policy.RUA[1]" || rs.hits.Load() != 0 {
		t.Fatalf("nil URI: %v, %d hits", err, rs.hits.Load())
	}
	for _, allow := range []bool{false, true} {
		sub := &tlsrpt.Submitter{HTTPClient: &http.Client{Transport: (*http.Transport)(nil)}, AllowPrivate: allow}
		err := noPanic("nil *http.Transport", func() error { return sub.Submit(ctx, rep, policyFor(t, "example.org", rs.URL)) })
		var ce *mailsec.ConfigError
		if !errors.As(err, &ce) || ce.Field != "Submitter.HTTPClient.Transport" {
			t.Fatalf("nil *http.Transport (AllowPrivate %v): %v", allow, err)
		}
	}
	err = noPanic("LookupPolicy", func() error {
		_, err := tlsrpt.LookupPolicy(ctx, (*mailsectest.Resolver)(nil), "example.org")
		return err
	})
	if !errors.Is(err, mailsec.ErrConfig) {
		t.Fatalf("LookupPolicy with a nil resolver: %v", err)
	}
	if rs.hits.Load() != 0 {
		t.Fatalf("%d hits", rs.hits.Load())
	}
}

// A report sent through a Transport wrapped with dkimsign carries a DKIM
// signature of the submitter's domain (RFC 8460 §3) that verifies, over
// the multipart/report.
func TestSubmitMailDKIMSigned(t *testing.T) {
	key, err := dkimsign.GenerateKey("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := dkimsign.NewSigner("mail.example.com", "tlsrpt", key)
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	signing, err := dkimsign.NewTransport(rt, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"mail.example.com": {signer}}})
	if err != nil {
		t.Fatal(err)
	}
	sender, err := mailsec.NewSender(signing, nil)
	if err != nil {
		t.Fatal(err)
	}
	sub := &tlsrpt.Submitter{AllowPrivate: true, Sender: sender, From: "tlsrpt@mail.example.com"}
	if err := sub.Submit(context.Background(), testReport(t, "example.org"), policyFor(t, "example.org", "mailto:tlsrpt@example.org")); err != nil {
		t.Fatal(err)
	}
	ds := rt.Deliveries()
	if len(ds) != 1 || !bytes.Contains(ds[0].Data, []byte("multipart/report")) {
		t.Fatalf("%d deliveries", len(ds))
	}
	vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(ds[0].Data), &msgdkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if name != signer.RecordName() {
				return nil, errors.New("no such record")
			}
			return []string{signer.Record()}, nil
		},
	})
	if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "mail.example.com" {
		t.Fatalf("verifications %+v, %v", vs, err)
	}
}
