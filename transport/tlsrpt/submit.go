package tlsrpt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/netguard"
	"github.com/mailsec/mailsec/internal/typednil"
)

// MediaTypeGzip is the media type of a gzip-compressed report (RFC 8460
// §5.3, §5.4).
const MediaTypeGzip = "application/tlsrpt+gzip"

// Submitter delivers reports to the URIs of a domain's policy (RFC 8460
// §5). Nothing in this package sends anything unless the application
// calls Submit.
type Submitter struct {
	// Sender sends reports to mailto: URIs, through its own Transport and
	// Policy. Nil means mailto: URIs fail.
	//
	// RFC 8460 §3 requires reports sent by mail to carry a DKIM signature
	// of the submitter's domain: give this Sender a Transport wrapped with
	// dkimsign.NewTransport and a Signer for the domain of From (or a
	// smarthost that signs). The same section asks that a
	// report be delivered "despite any TLS-related failures", which a
	// Sender's default policy (verified TLS) does not do; and that the
	// session carrying a report be left out of the next one, so a Sender
	// whose Transport records into the Aggregator that made the report
	// should not be used here.
	Sender *mailsec.Sender
	// From is the author of report messages, an address of the
	// submitter's domain ("tlsrpt@mail.example.com"); required for mailto:.
	From string
	// HTTPClient posts reports to https: URIs. Nil means a client with a
	// one-minute timeout and the system roots. Whatever the client, a
	// redirect to anything but https: is refused, and so is a response
	// that did not come over a TLS connection with a verified chain.
	// Unless AllowPrivate is set, its Transport must be nil or an
	// *http.Transport (whose connections are then checked; no proxy is
	// used).
	HTTPClient *http.Client
	// AllowPrivate lets https: submissions connect to addresses that are
	// not global unicast (loopback, private, link-local, the cloud
	// metadata address 169.254.169.254, ...; see mailsec.AddressError).
	// By default a report URI whose host resolves to one is not
	// connected to, checked on the address of each connection, redirects
	// included: the URI comes from the recipient domain's DNS, and a POST
	// to this host's own network is not its to ask for. Set it for tests
	// and internal deployments.
	AllowPrivate bool
}

// SubmitError reports a failed delivery to one URI.
type SubmitError struct {
	// URI is the destination, as in the policy.
	URI string
	// StatusCode is the HTTP status of an https: delivery that got one.
	StatusCode int
	Err        error
}

func (e *SubmitError) Error() string {
	s := "tlsrpt: submitting to " + e.URI + ": "
	if e.StatusCode != 0 {
		s += "HTTP " + strconv.Itoa(e.StatusCode)
		if e.Err != nil {
			s += ": "
		}
	}
	if e.Err != nil {
		s += e.Err.Error()
	}
	return s
}

func (e *SubmitError) Unwrap() error { return e.Err }

// Temporary reports whether trying again later may help (RFC 8460 §5.5
// suggests retrying for up to a day): an HTTP 408, 429 or 5xx, a network
// failure, or a temporary mail failure.
func (e *SubmitError) Temporary() bool {
	switch {
	case e.StatusCode == http.StatusRequestTimeout, e.StatusCode == http.StatusTooManyRequests, e.StatusCode >= 500:
		return true
	case e.StatusCode != 0:
		return false
	}
	return e.Err != nil && mailsec.IsTemporary(e.Err)
}

// ErrDomainMismatch: the report is about another domain than the policy
// it was to be sent by.
var ErrDomainMismatch = errors.New("tlsrpt: report and policy are for different domains")

// Submit sends rep, gzip-compressed, to every URI of p (RFC 8460 §5): an
// HTTPS POST of type application/tlsrpt+gzip, or a message through
// Sender with the report attached. A failure at one URI does not stop the
// others; the error joins one *SubmitError per failed URI, so nil means
// every URI accepted the report. RFC 8460 §3 counts a report as delivered
// once one URI accepted it: compare the number of *SubmitErrors with
// len(p.RUA) to tell a partial failure from a total one. A report is only
// sent by a policy of the domain it is about (else ErrDomainMismatch),
// and a policy with no URI is an error matching ErrNoUsableURI.
func (s *Submitter) Submit(ctx context.Context, rep *Report, p *Policy) error {
	if rep == nil || p == nil {
		return invalid("report", "", "nil report or policy")
	}
	domain, ok := normalizeDomain(p.Domain)
	if !ok {
		return invalid("Policy.Domain", p.Domain, "not a domain name")
	}
	if len(rep.Policies) == 0 {
		return invalid("Report.Policies", "", "empty")
	}
	for _, pr := range rep.Policies {
		if d, _ := normalizeDomain(pr.Policy.Domain); d != domain {
			return fmt.Errorf("%w: report for %q, policy of %q", ErrDomainMismatch, pr.Policy.Domain, domain)
		}
	}
	if len(p.RUA) == 0 {
		return &RecordError{Domain: domain, Kind: ErrNoUsableURI, Reason: "the policy names no URI"}
	}
	for i, u := range p.RUA {
		if u == nil {
			return invalid("Policy.RUA["+strconv.Itoa(i)+"]", "", "a nil URI")
		}
	}
	submitter, reason := splitAddrSpec(rep.ContactInfo)
	if reason != "" {
		return invalid("Report.ContactInfo", rep.ContactInfo, reason)
	}
	body, err := rep.gzipJSON()
	if err != nil {
		return err
	}
	var errs []error
	for _, u := range p.RUA {
		if err := ctx.Err(); err != nil {
			errs = append(errs, &SubmitError{URI: u.String(), Err: err})
			continue
		}
		switch strings.ToLower(u.Scheme) {
		case "https":
			err = s.post(ctx, u, body)
		case "mailto":
			err = s.mail(ctx, u, rep, domain, submitter, body)
		default:
			err = &SubmitError{URI: u.String(), Err: errors.New("only https: and mailto: URIs are supported")}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// post delivers by HTTPS (RFC 8460 §5.4): any 2xx status is success.
func (s *Submitter) post(ctx context.Context, u *url.URL, body []byte) error {
	fail := func(code int, err error) error { return &SubmitError{URI: u.String(), StatusCode: code, Err: err} }
	if u.Host == "" {
		return fail(0, errors.New("no host"))
	}
	client, err := s.httpClient()
	if err != nil {
		return fail(0, err)
	}
	if t, ok := client.Transport.(*http.Transport); ok && t.TLSClientConfig != nil && t.TLSClientConfig.InsecureSkipVerify {
		return fail(0, errors.New("the HTTP client does not verify certificates"))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return fail(0, err)
	}
	req.Header.Set("Content-Type", MediaTypeGzip)
	resp, err := client.Do(req)
	if err != nil {
		if ge, ok := netguard.As(err); ok {
			err = &mailsec.AddressError{Host: u.Hostname(), Addr: ge.Addr, Reason: ge.Reason}
		}
		return fail(0, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.TLS == nil || len(resp.TLS.VerifiedChains) == 0 {
		return fail(0, errors.New("the response did not come over verified TLS"))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fail(resp.StatusCode, nil)
	}
	return nil
}

// httpClient returns a copy of the configured client (or of the default)
// that refuses redirects to anything but https: and, unless AllowPrivate,
// connections to addresses that are not global unicast.
func (s *Submitter) httpClient() (*http.Client, error) {
	c := &http.Client{Timeout: time.Minute}
	if s.HTTPClient != nil {
		cc := *s.HTTPClient
		c = &cc
	}
	if c.Transport != nil && typednil.Is(c.Transport) {
		// Not the field left nil: net/http would panic on it.
		return nil, &mailsec.ConfigError{Field: "Submitter.HTTPClient.Transport", Value: fmt.Sprintf("%T", c.Transport), Reason: "a nil pointer; leave the field nil for the default transport"}
	}
	if !s.AllowPrivate {
		t, ok := netguard.HTTPTransport(c.Transport)
		if !ok {
			return nil, &mailsec.ConfigError{Field: "Submitter.HTTPClient.Transport", Reason: "not an *http.Transport, so its connections cannot be checked for non-global addresses; use one, or set AllowPrivate"}
		}
		c.Transport = t
	}
	next := c.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" {
			return errors.New("redirect to a URL that is not https: refused")
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return c, nil
}

// mail delivers by email (RFC 8460 §5.3). The message has the header
// fields TLS-Report-Domain and TLS-Report-Submitter, the subject the RFC
// gives, a text part that says what it is and the report attached as
// application/tlsrpt+gzip under the file name of §5.1, in a
// multipart/report; report-type=tlsrpt message (mailsec.Message's
// ReportType).
func (s *Submitter) mail(ctx context.Context, u *url.URL, rep *Report, domain, submitter string, body []byte) error {
	fail := func(err error) error { return &SubmitError{URI: u.String(), Err: err} }
	addr, ok := mailtoAddress(u)
	if !ok {
		return fail(errors.New("no single address in the mailto: URI"))
	}
	if s.Sender == nil {
		return fail(errors.New("no Sender configured for mailto: URIs"))
	}
	if s.From == "" {
		return fail(errors.New("no From address configured"))
	}
	start, end := rep.DateRange.Start.UTC(), rep.DateRange.End.UTC()
	// filename = sender "!" policy-domain "!" begin-timestamp "!"
	//            end-timestamp [ "!" unique-id ] "." extension (§5.1)
	name := submitter + "!" + domain + "!" + strconv.FormatInt(start.Unix(), 10) + "!" + strconv.FormatInt(end.Unix(), 10)
	if isAlnum(rep.ReportID) {
		name += "!" + rep.ReportID
	}
	name += ".json.gz"
	text := "This is an aggregate TLS report (RFC 8460) from " + submitter + " for " + domain + ",\n" +
		"covering " + start.Format(time.RFC3339) + " to " + end.Format(time.RFC3339) + ".\n" +
		"The report is attached as " + name + " (" + MediaTypeGzip + ").\n"
	_, err := s.Sender.Send(ctx, &mailsec.Message{
		From:    s.From,
		To:      []string{addr},
		Subject: "Report Domain: " + domain + " Submitter: " + submitter + " Report-ID: <" + rep.ReportID + ">",
		Text:    text,
		Headers: []mailsec.Header{
			{Name: "TLS-Report-Domain", Value: domain},
			{Name: "TLS-Report-Submitter", Value: submitter},
		},
		Attachments: []mailsec.Attachment{{Filename: name, ContentType: MediaTypeGzip, Content: bytes.NewReader(body)}},
		ReportType:  "tlsrpt",
	})
	if err != nil {
		return fail(err)
	}
	return nil
}

func isAlnum(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// invalid reports a report or policy that cannot be submitted as given.
func invalid(field, value, reason string) error {
	return &mailsec.ValidationError{Field: field, Value: value, Reason: reason}
}
