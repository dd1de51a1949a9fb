package transport

import (
	"crypto/x509"
	"errors"
	"net/netip"
	"slices"
	"strconv"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/syntax"
	"github.com/mailsec/mailsec/transport/dane"
	"github.com/mailsec/mailsec/transport/mtasts"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

// TLS reporting (RFC 8460): Direct records in Reports one result per
// attempt to reach an MX host, a session or a refusal before one, with
// the domain's policy (its MTA-STS policy, or the host's TLSA records),
// and once for a domain whose policy could not be had when no session
// carried that failure.

// report sends one result to Reports with the domain's policy filled in.
func (t *Direct) report(ds *domainState, r tlsrpt.Result) {
	if t.Reports == nil {
		return
	}
	r.PolicyDomain = ds.domain
	if r.PolicyType == "" {
		r.PolicyType = tlsrpt.PolicyNone
		if ds.sts != nil && ds.sts.Policy != nil && ds.sts.Policy.Mode != mtasts.None {
			r.PolicyType = tlsrpt.PolicySTS
			r.PolicyString = stsLines(ds.sts.Policy)
			r.MXHost = slices.Clone(ds.sts.Policy.MX)
		}
	}
	if r.Time.IsZero() {
		r.Time = t.now()
	}
	t.Reports.Record(r)
}

// reportAttempt records the one result of one attempt to reach an MX
// host (RFC 8460 §4.4 counts sessions). When the domain's MTA-STS policy
// could not be had, a session that went well under no policy is reported
// with that failure instead of a success, so that it counts once.
func (t *Direct) reportAttempt(ds *domainState, r tlsrpt.Result) {
	if t.Reports == nil {
		return
	}
	if f := ds.stsFailure; f != nil && r.Success && r.PolicyType == "" {
		r.Success, r.Failure, r.FailureReasonCode = false, f.Failure, f.FailureReasonCode
	}
	ds.reported = true
	t.report(ds, r)
}

// reportRefusal records an MX host refused before any connection, for the
// refusals TLS reporting has a result type for (RFC 8460 §4.3): a
// DNSSEC-signed host whose TLSA lookup failed with SERVFAIL (which is how
// a validating resolver reports a bogus answer), a host an MTA-STS policy
// in enforce mode does not list, a host without usable TLSA records at
// the DANE-only level.
func (t *Direct) reportRefusal(ds *domainState, host string, err error) {
	if t.Reports == nil {
		return
	}
	r := tlsrpt.Result{ReceivingMXHostname: host}
	switch {
	case errors.Is(err, errTLSALookup):
		var de *dns.Error
		if !errors.As(err, &de) || de.Kind != dns.ServerFailure {
			return
		}
		r.PolicyType, r.Failure, r.FailureReasonCode = tlsrpt.PolicyTLSA, tlsrpt.DNSSECInvalid, reasonCode(err)
	case errors.Is(err, errMXNotInPolicy):
		r.Failure, r.FailureReasonCode = tlsrpt.ValidationFailure, "MX host "+host+" is not listed in the MTA-STS policy"
	case errors.Is(err, errDANERequired):
		r.Failure = tlsrpt.DANERequired
	default:
		return
	}
	t.reportAttempt(ds, r)
}

// reportSession records a session's TLS outcome. Failures before TLS was
// tried (the connection was refused, the server closed) are not TLS
// results and are not reported.
func (t *Direct) reportSession(ds *domainState, hp *hostPlan, host string, ip netip.Addr, s *mailsec.ConnectionState, err error) {
	if t.Reports == nil {
		return
	}
	r := tlsrpt.Result{ReceivingMXHostname: host, ReceivingIP: ip}
	if hp.policy == "dane" {
		r.PolicyType = tlsrpt.PolicyTLSA
		r.PolicyString = hp.tlsa
		r.MXHost = []string{host}
	}
	var se *mailsec.SecurityError
	switch {
	case s != nil && errors.Is(err, mailsec.ErrRequireTLS):
		r.Success = true // the TLS session itself was sound
	case s != nil:
		r.Success = true
		r.ReceivingMXHelo = ""
	case errors.As(err, &se):
		r.Failure = resultType(se)
		r.FailureReasonCode = reasonCode(se)
	default:
		return
	}
	if r.Success && hp.violation != nil {
		r.Success, r.Failure, r.FailureReasonCode = false, hp.violation.Failure, hp.violation.FailureReasonCode
	}
	if s != nil && s.Verification == mailsec.NoTLS && hp.pol.mode != tlsNone {
		r.Success = false
		r.Failure = tlsrpt.StartTLSNotSupported
	}
	t.reportAttempt(ds, r)
}

// reasonCode is err as a report's failure-reason-code, which goes to the
// recipient domain: the failure in words, without anything about this
// host's own network. A DNS failure is its name, type and kind (not the
// resolver asked nor the transport error, which name our resolver's and
// our own addresses), and any IP address left in the text is redacted.
func reasonCode(err error) string {
	var de *dns.Error
	var me *mtasts.Error
	text := err.Error()
	if errors.As(err, &de) {
		text = "DNS " + de.Type + " " + de.Name + ": " + de.Kind.String()
		if errors.As(err, &me) {
			text = "MTA-STS policy of " + me.Domain + ": " + text
		}
	}
	return syntax.RedactAddresses(syntax.PeerText(text))
}

// resultType maps a session's security failure to its RFC 8460 §4.3
// result type.
func resultType(se *mailsec.SecurityError) tlsrpt.ResultType {
	var de *dane.Error
	if errors.As(se, &de) {
		rt := tlsrpt.ResultType(de.ResultType())
		if rt == tlsrpt.ValidationFailure {
			// No record matched the certificate: "a validation error in
			// the TLSA record ... None of the records in the RRset were
			// found to be valid" (RFC 8460 §4.3.2.1).
			rt = tlsrpt.TLSAInvalid
		}
		return rt
	}
	switch {
	case errors.Is(se, mailsec.ErrDowngrade):
		return tlsrpt.StartTLSNotSupported
	case errors.Is(se, errDANEMismatch):
		return tlsrpt.TLSAInvalid
	case errors.Is(se, errCertificate):
		var ci x509.CertificateInvalidError
		var he x509.HostnameError
		var dom *domainError
		switch {
		case errors.As(se, &ci) && ci.Reason == x509.Expired:
			return tlsrpt.CertificateExpired
		case errors.As(se, &he), errors.As(se, &dom):
			return tlsrpt.CertificateHostMismatch
		}
		return tlsrpt.CertificateNotTrusted
	}
	return tlsrpt.ValidationFailure
}

func stsResultType(err error) tlsrpt.ResultType {
	var rt interface{ ResultType() string }
	if errors.As(err, &rt) {
		return tlsrpt.ResultType(rt.ResultType())
	}
	return tlsrpt.STSPolicyFetchError
}

// stsLines is a policy as the lines of its file, for a report's
// policy-string (RFC 8460 §4.4).
func stsLines(p *mtasts.Policy) []string {
	lines := []string{"version: STSv1", "mode: " + string(p.Mode)}
	for _, mx := range p.MX {
		lines = append(lines, "mx: "+mx)
	}
	return append(lines, "max_age: "+strconv.FormatInt(p.MaxAge, 10))
}
