package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"net/netip"
	"time"
)

// ResultType names the outcome of a failed session or policy lookup. The
// values are those RFC 8460 §4.3 defines (and the IANA "STARTTLS
// Validation Result Types" registry lists).
type ResultType string

// Result types (RFC 8460 §4.3).
const (
	// Negotiation failures (§4.3.1).

	// StartTLSNotSupported: the receiving MTA did not offer STARTTLS, or
	// the negotiation was interfered with.
	StartTLSNotSupported ResultType = "starttls-not-supported"
	// CertificateHostMismatch: the certificate does not name the MX host.
	CertificateHostMismatch ResultType = "certificate-host-mismatch"
	// CertificateExpired: the certificate has expired.
	CertificateExpired ResultType = "certificate-expired"
	// CertificateNotTrusted: the chain does not lead to a trusted root.
	CertificateNotTrusted ResultType = "certificate-not-trusted"
	// ValidationFailure: any other failure to negotiate or validate.
	ValidationFailure ResultType = "validation-failure"

	// DANE policy failures (§4.3.2.1).

	// TLSAInvalid: the TLSA records are malformed or none matched the
	// certificate ("None of the records in the RRset were found to be
	// valid").
	TLSAInvalid ResultType = "tlsa-invalid"
	// DNSSECInvalid: the DNSSEC chain for the TLSA records did not
	// validate.
	DNSSECInvalid ResultType = "dnssec-invalid"
	// DANERequired: DANE was required and no usable TLSA records were
	// found.
	DANERequired ResultType = "dane-required"

	// MTA-STS policy failures (§4.3.2.2).

	// STSPolicyFetchError: the policy could not be fetched over HTTPS.
	STSPolicyFetchError ResultType = "sts-policy-fetch-error"
	// STSPolicyInvalid: the fetched policy did not parse.
	STSPolicyInvalid ResultType = "sts-policy-invalid"
	// STSWebPKIInvalid: the policy host's certificate did not verify.
	STSWebPKIInvalid ResultType = "sts-webpki-invalid"
)

// Valid reports whether t is one of the result types RFC 8460 §4.3
// defines.
func (t ResultType) Valid() bool {
	switch t {
	case StartTLSNotSupported, CertificateHostMismatch, CertificateExpired, CertificateNotTrusted,
		ValidationFailure, TLSAInvalid, DNSSECInvalid, DANERequired,
		STSPolicyFetchError, STSPolicyInvalid, STSWebPKIInvalid:
		return true
	}
	return false
}

// PolicyType names the kind of policy a session was held to (RFC 8460
// §4.4, "policy-type").
type PolicyType string

// Policy types.
const (
	// PolicyTLSA: DANE TLSA records (RFC 7672).
	PolicyTLSA PolicyType = "tlsa"
	// PolicySTS: an MTA-STS policy (RFC 8461).
	PolicySTS PolicyType = "sts"
	// PolicyNone: the domain publishes neither.
	PolicyNone PolicyType = "no-policy-found"
)

// Valid reports whether t is one of the three policy types.
func (t PolicyType) Valid() bool {
	return t == PolicyTLSA || t == PolicySTS || t == PolicyNone
}

// Report is an aggregate TLS report, whose JSON form is exactly the
// schema of RFC 8460 §4.4: encoding/json marshals it to, and unmarshals it
// from, the report a receiver expects.
type Report struct {
	// OrganizationName is the organization responsible for the report.
	OrganizationName string `json:"organization-name"`
	// DateRange is the period the report covers.
	DateRange DateRange `json:"date-range"`
	// ContactInfo is an email address (RFC 5322 addr-spec) of the party
	// responsible for the report. Its domain is the submitter that names
	// the report's file and message (§5.1, §5.3).
	ContactInfo string `json:"contact-info"`
	// ReportID identifies the report uniquely.
	ReportID string `json:"report-id"`
	// Policies holds one entry per policy applied to the domain.
	Policies []PolicyResult `json:"policies"`
}

// DateRange is a report's period: start and end as RFC 3339 date-times
// (§4.4). A report made by an Aggregator covers one UTC day, from
// 00:00:00Z to 23:59:59Z.
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// PolicyResult is one element of a report's "policies" array: a policy
// and the sessions held to it.
type PolicyResult struct {
	Policy  PolicyDetails `json:"policy"`
	Summary Summary       `json:"summary"`
	// FailureDetails itemises the failures (possibly empty, never
	// omitted from the JSON).
	FailureDetails []FailureDetails `json:"failure-details"`
}

// PolicyDetails describes the policy applied (§4.4 "policy").
type PolicyDetails struct {
	Type PolicyType `json:"policy-type"`
	// String is the policy: for "sts" the lines of the policy file, for
	// "tlsa" each TLSA record in presentation form ("3 1 1 ab12...").
	// Omitted for "no-policy-found".
	String []string `json:"policy-string,omitempty"`
	// Domain is the policy domain, in A-label form.
	Domain string `json:"policy-domain"`
	// MXHost is, for "sts", the policy's mx patterns; for "tlsa", the MX
	// host the TLSA records belong to. It is a JSON array; a single
	// string, as the RFC's example had before erratum 6241, is accepted
	// when unmarshalling.
	MXHost []string `json:"mx-host,omitempty"`
}

// UnmarshalJSON reads "mx-host" as an array of strings or as one string.
func (p *PolicyDetails) UnmarshalJSON(b []byte) error {
	type plain PolicyDetails
	var v struct {
		plain
		MXHost json.RawMessage `json:"mx-host"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = PolicyDetails(v.plain)
	p.MXHost = nil
	if len(v.MXHost) == 0 || string(v.MXHost) == "null" {
		return nil
	}
	if v.MXHost[0] == '"' {
		var s string
		if err := json.Unmarshal(v.MXHost, &s); err != nil {
			return err
		}
		p.MXHost = []string{s}
		return nil
	}
	if err := json.Unmarshal(v.MXHost, &p.MXHost); err != nil {
		return errors.New("tlsrpt: mx-host is neither a string nor an array of strings")
	}
	return nil
}

// Summary counts the sessions held to a policy (§4.4 "summary").
type Summary struct {
	TotalSuccessfulSessionCount int64 `json:"total-successful-session-count"`
	TotalFailureSessionCount    int64 `json:"total-failure-session-count"`
}

// FailureDetails counts the failed sessions that share one set of
// details (§4.4 "failure-details"). Empty optional fields are omitted
// from the JSON.
type FailureDetails struct {
	ResultType ResultType `json:"result-type"`
	// SendingMTAIP is the address the sending side connected from.
	SendingMTAIP netip.Addr `json:"sending-mta-ip,omitzero"`
	// ReceivingMXHostname is the MX host the session was with.
	ReceivingMXHostname string `json:"receiving-mx-hostname,omitempty"`
	// ReceivingMXHelo is the name the receiving MTA gave in its greeting.
	ReceivingMXHelo string `json:"receiving-mx-helo,omitempty"`
	// ReceivingIP is the address connected to.
	ReceivingIP        netip.Addr `json:"receiving-ip,omitzero"`
	FailedSessionCount int64      `json:"failed-session-count"`
	// AdditionalInformation is a URI with more about the failure.
	AdditionalInformation string `json:"additional-information,omitempty"`
	// FailureReasonCode is a TLS error code or message.
	FailureReasonCode string `json:"failure-reason-code,omitempty"`
}

// gzipJSON returns the report's JSON, gzip-compressed (RFC 8460 §5.2).
func (r *Report) gzipJSON() ([]byte, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(js); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
