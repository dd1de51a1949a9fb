package tlsrpt

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/net/idna"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/netguard"
	"github.com/mailsec/mailsec/internal/syntax"
)

// Result is the outcome of one SMTP session, or of one failed attempt to
// find or apply a domain's policy, as a transport records it.
type Result struct {
	// PolicyDomain is the recipient domain whose policy applied.
	PolicyDomain string
	// PolicyType is the kind of policy; empty means PolicyNone.
	PolicyType PolicyType
	// PolicyString is the policy: for PolicySTS the lines of the policy
	// file ("version: STSv1", "mode: enforce", "mx: ...", "max_age: ..."),
	// for PolicyTLSA the TLSA records as in a zone file ("3 1 1 ab12...").
	// Ignored for PolicyNone.
	PolicyString []string
	// MXHost is, for PolicySTS, the policy's mx patterns; for
	// PolicyTLSA, the MX host whose TLSA records applied (RFC 8460 §4.4
	// "mx-host"). Ignored for PolicyNone.
	MXHost []string

	ReceivingMXHostname string
	// ReceivingMXHelo is the name the server gave in its greeting or
	// EHLO reply.
	ReceivingMXHelo string
	ReceivingIP     netip.Addr
	// SendingMTAIP is the local address of the session. The Aggregator
	// reports it only when it is a global unicast address: any other is
	// about our own network (the local end behind NAT, say), not what the
	// receiver saw.
	SendingMTAIP netip.Addr

	// Success is set when the session negotiated TLS as the policy
	// required.
	Success bool
	// Failure says why, when Success is false. Empty, or a value that is
	// not one of the RFC 8460 §4.3 types, is reported as
	// ValidationFailure.
	Failure ResultType
	// FailureReasonCode is a TLS error code or message. It goes to the
	// recipient domain: the Aggregator cleans it of control characters
	// and replaces any IP address in it by "[address]".
	FailureReasonCode string
	// AdditionalInformation is a URI (RFC 8460 §4.4: "additional-info-uri")
	// where more can be found. Text that is not an absolute URI is moved
	// to the end of FailureReasonCode, so that the report keeps to the
	// schema.
	AdditionalInformation string

	// Time is when it happened; zero means now by the Aggregator's clock.
	Time time.Time
}

// Organization identifies who sends reports.
type Organization struct {
	// Name is the report's "organization-name".
	Name string
	// ContactInfo is the report's "contact-info": an email address
	// (addr-spec, "tlsrpt@mail.example.com") whose domain is the
	// submitter named in the report's file name and message (RFC 8460
	// §5.1, §5.3).
	ContactInfo string
}

// Limits on what an Aggregator keeps, and on the length of what it keeps.
const (
	// DefaultMaxFailureDetails is the default of Aggregator.MaxFailureDetails.
	DefaultMaxFailureDetails = 100
	// DefaultMaxPolicies is the default of Aggregator.MaxPolicies.
	DefaultMaxPolicies = 32
	// DefaultMaxDomains is the default of Aggregator.MaxDomains.
	DefaultMaxDomains = 10000
	// Retention is how long an Aggregator keeps a day that was not
	// forgotten: days that ended longer ago are dropped.
	Retention = 7 * 24 * time.Hour

	maxText  = 1024 // octets of a helo, reason code or URI
	maxLine  = 8192 // octets of a policy-string line or mx pattern
	maxLines = 256  // entries of policy-string or mx-host
)

// Aggregator collects Results per policy domain and UTC day and turns
// them into reports. Its zero value is ready to use; it is safe for
// concurrent use.
//
// Memory is bounded: per domain and day it keeps at most MaxPolicies
// policies, per policy at most MaxFailureDetails distinct failure
// details (failures beyond that are still counted, in one entry per
// result type that carries only the type and the count), per day at most
// MaxDomains domains, and nothing older than Retention. Results beyond
// these limits, or malformed ones, are dropped and counted by Dropped.
//
// Set the fields before the first call; they must not change afterwards.
type Aggregator struct {
	// MaxFailureDetails is the number of distinct failure details kept
	// per policy; 0 means DefaultMaxFailureDetails.
	MaxFailureDetails int
	// MaxPolicies is the number of distinct policies kept per domain and
	// day; 0 means DefaultMaxPolicies.
	MaxPolicies int
	// MaxDomains is the number of domains kept per day; 0 means
	// DefaultMaxDomains.
	MaxDomains int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	days    map[int64]map[string]*domainDay // by days since the epoch, then domain
	dropped atomic.Int64
}

type domainDay struct {
	policies map[policyKey]*policyAgg
}

type policyKey struct {
	typ     PolicyType
	str, mx string // joined with NUL
}

type policyAgg struct {
	details  PolicyDetails
	summary  Summary
	failures map[FailureDetails]int64 // details with the count zeroed
	// overflow counts the failures that did not fit in failures, by type.
	overflow map[ResultType]int64
}

func (a *Aggregator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func limit(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func dayNumber(t time.Time) int64 {
	return t.UTC().Unix() / 86400
}

func dayStart(n int64) time.Time {
	return time.Unix(n*86400, 0).UTC()
}

// Record adds one result. It never fails: a result it cannot use (no
// policy domain, an unknown policy type, beyond a limit, older than
// Retention) is counted by Dropped.
func (a *Aggregator) Record(r Result) {
	now := a.now()
	if r.Time.IsZero() {
		r.Time = now
	}
	domain, ok := normalizeDomain(r.PolicyDomain)
	if !ok {
		a.dropped.Add(1)
		return
	}
	if r.PolicyType == "" {
		r.PolicyType = PolicyNone
	}
	if !r.PolicyType.Valid() {
		a.dropped.Add(1)
		return
	}
	day := dayNumber(r.Time)
	oldest := dayNumber(now.Add(-Retention))

	pd := PolicyDetails{Type: r.PolicyType, Domain: domain}
	if r.PolicyType != PolicyNone {
		pd.String = clipLines(r.PolicyString)
		pd.MXHost = clipLines(r.MXHost)
	}
	key := policyKey{typ: pd.Type, str: strings.Join(pd.String, "\x00"), mx: strings.Join(pd.MXHost, "\x00")}

	var fd FailureDetails
	if !r.Success {
		fd = failureDetails(r)
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(oldest)
	if day < oldest || !a.addLocked(day, domain, key, pd, !r.Success, false, fd, 1) {
		a.dropped.Add(1)
	}
}

// expireLocked drops the days before oldest.
func (a *Aggregator) expireLocked(oldest int64) {
	for d := range a.days {
		if d < oldest {
			delete(a.days, d)
		}
	}
}

// addLocked adds n sessions under the policy pd of domain on day: n
// successes, or n failures with the details fd (counted without details
// when overflow is set, or when MaxFailureDetails is reached). It reports
// false when a limit left no room.
func (a *Aggregator) addLocked(day int64, domain string, key policyKey, pd PolicyDetails, failed, overflow bool, fd FailureDetails, n int64) bool {
	if a.days == nil {
		a.days = map[int64]map[string]*domainDay{}
	}
	domains := a.days[day]
	if domains == nil {
		domains = map[string]*domainDay{}
		a.days[day] = domains
	}
	dd := domains[domain]
	if dd == nil {
		if len(domains) >= limit(a.MaxDomains, DefaultMaxDomains) {
			return false
		}
		dd = &domainDay{policies: map[policyKey]*policyAgg{}}
		domains[domain] = dd
	}
	pa := dd.policies[key]
	if pa == nil {
		if len(dd.policies) >= limit(a.MaxPolicies, DefaultMaxPolicies) {
			return false
		}
		pa = &policyAgg{details: pd, failures: map[FailureDetails]int64{}}
		dd.policies[key] = pa
	}
	if !failed {
		pa.summary.TotalSuccessfulSessionCount += n
		return true
	}
	pa.summary.TotalFailureSessionCount += n
	if !overflow {
		if _, ok := pa.failures[fd]; ok || len(pa.failures) < limit(a.MaxFailureDetails, DefaultMaxFailureDetails) {
			pa.failures[fd] += n
			return true
		}
	}
	if pa.overflow == nil {
		pa.overflow = map[ResultType]int64{}
	}
	pa.overflow[fd.ResultType] += n
	return true
}

// failureDetails is r's failure entry, its count left zero.
func failureDetails(r Result) FailureDetails {
	fd := FailureDetails{
		ResultType:          r.Failure,
		SendingMTAIP:        r.SendingMTAIP.Unmap().WithZone(""),
		ReceivingMXHostname: clip(syntax.PeerText(strings.TrimSuffix(strings.ToLower(r.ReceivingMXHostname), ".")), maxText),
		ReceivingMXHelo:     clip(syntax.PeerText(r.ReceivingMXHelo), maxText),
		ReceivingIP:         r.ReceivingIP.Unmap().WithZone(""),
		FailureReasonCode:   r.FailureReasonCode,
	}
	if !fd.ResultType.Valid() {
		fd.ResultType = ValidationFailure
	}
	if netguard.Reason(fd.SendingMTAIP) != "" {
		// The receiver saw a global address; a private, loopback or
		// link-local one (the local end of a connection behind NAT)
		// would only tell it about our own network.
		fd.SendingMTAIP = netip.Addr{}
	}
	info := strings.TrimSpace(r.AdditionalInformation)
	if isAbsoluteURI(info) {
		fd.AdditionalInformation = clip(info, maxText)
	} else if info != "" {
		if fd.FailureReasonCode != "" {
			fd.FailureReasonCode += "; "
		}
		fd.FailureReasonCode += info
	}
	// The reason goes to the recipient domain: peer text in it is
	// cleaned, and no IP address in it may tell about this side's own
	// network (the resolver asked, a local address); the addresses a
	// report may carry have fields of their own.
	fd.FailureReasonCode = clip(syntax.RedactAddresses(syntax.PeerText(fd.FailureReasonCode)), maxText)
	return fd
}

// isAbsoluteURI reports whether s looks like an absolute URI (RFC 3986
// §4.3): a scheme, and no spaces or controls.
func isAbsoluteURI(s string) bool {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f || r >= utf8.RuneSelf }) {
		return false
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme != "" && (u.Opaque != "" || u.Host != "")
}

// clip cuts s to at most n octets, at a UTF-8 boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func clipLines(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := make([]string, 0, min(len(in), maxLines))
	for _, s := range in[:min(len(in), maxLines)] {
		out = append(out, clip(s, maxLine))
	}
	return out
}

// normalizeDomain returns a domain in lower-case A-label form without a
// final dot.
func normalizeDomain(s string) (string, bool) {
	s = strings.TrimSuffix(s, ".")
	if !syntax.IsASCII(s) {
		a, err := idna.Lookup.ToASCII(s)
		if err != nil {
			return "", false
		}
		s = a
	}
	s = strings.ToLower(s)
	if _, ok := syntax.Hostname(s); !ok {
		return "", false
	}
	return s, true
}

// Dropped returns how many Results were not recorded: malformed, older
// than Retention, or beyond MaxDomains or MaxPolicies. Failures beyond
// MaxFailureDetails are not dropped; they are counted without details.
func (a *Aggregator) Dropped() int64 { return a.dropped.Load() }

// Domains returns, sorted, the policy domains with results on the UTC day
// that contains day.
func (a *Aggregator) Domains(day time.Time) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for d := range a.days[dayNumber(day)] {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// Forget discards the results for domain on the UTC day that contains
// day, once its report has been sent.
func (a *Aggregator) Forget(domain string, day time.Time) {
	domain, ok := normalizeDomain(domain)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	n := dayNumber(day)
	delete(a.days[n], domain)
	if len(a.days[n]) == 0 {
		delete(a.days, n)
	}
}

// ErrNoResults: nothing was recorded for the domain on that day.
var ErrNoResults = errors.New("tlsrpt: no results recorded")

// Report builds the aggregate report (RFC 8460 §4) for domain on the UTC
// day that contains day, from 00:00:00Z to 23:59:59Z, with a fresh random
// report-id. It fails with an error matching ErrNoResults when nothing was
// recorded, with a *mailsec.ConfigError when org is incomplete, and with
// a *mailsec.ValidationError when domain is not a domain name.
// The results stay until Forget.
func (a *Aggregator) Report(domain string, day time.Time, org Organization) (*Report, error) {
	if err := org.validate(); err != nil {
		return nil, err
	}
	nd, ok := normalizeDomain(domain)
	if !ok {
		return nil, &mailsec.ValidationError{Field: "domain", Value: domain, Reason: "not a domain name"}
	}
	n := dayNumber(day)
	start := dayStart(n)
	id, err := newReportID()
	if err != nil {
		return nil, err
	}
	rep := &Report{
		OrganizationName: org.Name,
		DateRange:        DateRange{Start: start, End: start.Add(24*time.Hour - time.Second)},
		ContactInfo:      org.ContactInfo,
		ReportID:         id,
	}

	a.mu.Lock()
	dd := a.days[n][nd]
	if dd != nil {
		for _, pa := range dd.policies {
			rep.Policies = append(rep.Policies, pa.result())
		}
	}
	a.mu.Unlock()
	if len(rep.Policies) == 0 {
		return nil, fmt.Errorf("%w for %s on %s", ErrNoResults, nd, start.Format(time.DateOnly))
	}
	slices.SortFunc(rep.Policies, func(x, y PolicyResult) int {
		return cmp.Or(
			cmp.Compare(x.Policy.Type, y.Policy.Type),
			slices.Compare(x.Policy.MXHost, y.Policy.MXHost),
			slices.Compare(x.Policy.String, y.Policy.String))
	})
	return rep, nil
}

// result copies the aggregate into its report form, the largest counts
// first.
func (pa *policyAgg) result() PolicyResult {
	pr := PolicyResult{
		Policy: PolicyDetails{
			Type: pa.details.Type, Domain: pa.details.Domain,
			String: slices.Clone(pa.details.String), MXHost: slices.Clone(pa.details.MXHost),
		},
		Summary:        pa.summary,
		FailureDetails: make([]FailureDetails, 0, len(pa.failures)+len(pa.overflow)),
	}
	for fd, n := range pa.failures {
		fd.FailedSessionCount = n
		pr.FailureDetails = append(pr.FailureDetails, fd)
	}
	for t, n := range pa.overflow {
		pr.FailureDetails = append(pr.FailureDetails, FailureDetails{ResultType: t, FailedSessionCount: n,
			FailureReasonCode: "further failures of this type, not itemised"})
	}
	slices.SortFunc(pr.FailureDetails, func(x, y FailureDetails) int {
		return cmp.Or(
			cmp.Compare(y.FailedSessionCount, x.FailedSessionCount),
			cmp.Compare(x.ResultType, y.ResultType),
			cmp.Compare(x.ReceivingMXHostname, y.ReceivingMXHostname),
			x.ReceivingIP.Compare(y.ReceivingIP),
			x.SendingMTAIP.Compare(y.SendingMTAIP),
			cmp.Compare(x.ReceivingMXHelo, y.ReceivingMXHelo),
			cmp.Compare(x.FailureReasonCode, y.FailureReasonCode),
			cmp.Compare(x.AdditionalInformation, y.AdditionalInformation))
	})
	return pr
}

func newReportID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

func (o Organization) validate() error {
	if strings.TrimSpace(o.Name) == "" {
		return &mailsec.ConfigError{Field: "Organization.Name", Reason: "empty: name the organization that sends the reports"}
	}
	if reason, ok := syntax.HeaderText(o.Name); !ok {
		return &mailsec.ConfigError{Field: "Organization.Name", Value: o.Name, Reason: reason}
	}
	if _, reason := splitAddrSpec(o.ContactInfo); reason != "" {
		return &mailsec.ConfigError{Field: "Organization.ContactInfo", Value: o.ContactInfo, Reason: reason + ": give an address that receives replies about the reports"}
	}
	return nil
}

// splitAddrSpec checks s as an ASCII addr-spec with a dot-atom local part
// and returns its domain in lower case.
func splitAddrSpec(s string) (domain, reason string) {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return "", "missing '@'"
	}
	local, dom := s[:at], s[at+1:]
	if len(local) > syntax.MaxLocalPart {
		return "", "local part longer than 64 octets"
	}
	if reason, ok := syntax.DotAtom(local, false); !ok {
		return "", "local part: " + reason
	}
	if reason, ok := syntax.Hostname(dom); !ok {
		return "", "domain: " + reason
	}
	return strings.ToLower(dom), ""
}
