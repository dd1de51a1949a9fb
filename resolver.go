package mailsec

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
)

// Resolver looks up the DNS records that direct delivery to MX hosts
// needs, and says of every answer whether DNSSEC authenticated it. DANE
// (RFC 7672) and REQUIRETLS to an MX host rest on that bit, so an
// implementation must set Authentic only for answers a validating resolver
// it trusts vouched for.
//
// Names are domain names in A-label form, with or without the final dot.
// A lookup for a name that does not exist returns a *DNSError matching
// ErrNXDomain; for a name that exists without records of the type, one
// matching ErrNoRecords. A server failure (which is also how a validating
// resolver reports a bogus, tampered answer), a timeout or a network error
// returns a *DNSError whose Temporary method reports true. Implementations
// must be safe for concurrent use.
type Resolver interface {
	LookupMX(ctx context.Context, name string) (Answer[MX], error)
	// LookupIP returns the A and AAAA records of name.
	LookupIP(ctx context.Context, name string) (Answer[netip.Addr], error)
	// LookupTXT returns each TXT record as one string, its
	// character-strings joined without separators (RFC 7208 §3.3).
	LookupTXT(ctx context.Context, name string) (Answer[string], error)
	LookupTLSA(ctx context.Context, name string) (Answer[TLSA], error)
}

// Answer is the result of one DNS lookup.
type Answer[T any] struct {
	Records []T
	// Authentic is set when DNSSEC validated the answer and every CNAME
	// followed to reach it (the AD bit from a trusted validating
	// resolver).
	Authentic bool
	// Name is the name the records belong to after following CNAMEs:
	// lower case, without the final dot.
	Name string
}

// MX is one mail exchanger record.
type MX struct {
	// Host is the exchanger's name, lower case, without the final dot.
	// The null MX (RFC 7505), "0 .", has Host "".
	Host string
	Pref uint16
}

// TLSA is one DANE TLSA record (RFC 6698 §2.1).
type TLSA struct {
	Usage        uint8 // 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE
	Selector     uint8 // 0 full certificate, 1 SubjectPublicKeyInfo
	MatchingType uint8 // 0 exact, 1 SHA-256, 2 SHA-512
	Data         []byte
}

// String formats the record as in a zone file: "3 1 1 <hex>".
func (t TLSA) String() string {
	const hexdigits = "0123456789abcdef"
	b := make([]byte, 0, 8+2*len(t.Data))
	b = strconv.AppendUint(b, uint64(t.Usage), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(t.Selector), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(t.MatchingType), 10)
	b = append(b, ' ')
	for _, c := range t.Data {
		b = append(b, hexdigits[c>>4], hexdigits[c&15])
	}
	return string(b)
}

// DNSErrorKind classifies a failed lookup.
type DNSErrorKind int

// Kinds of DNS failure.
const (
	// DNSNXDomain: the name does not exist (RCODE 3).
	DNSNXDomain DNSErrorKind = iota + 1
	// DNSNoRecords: the name exists but has no records of the type
	// (NODATA).
	DNSNoRecords
	// DNSServerFailure: SERVFAIL, the answer of a validating resolver to a
	// bogus (tampered or misconfigured) DNSSEC answer, among other things.
	// Temporary.
	DNSServerFailure
	// DNSTimeout: no answer in time. Temporary.
	DNSTimeout
	// DNSNetwork: the resolver could not be reached. Temporary.
	DNSNetwork
	// DNSRefused: the resolver refused the query (REFUSED, NOTIMP and
	// other error codes). Temporary: a configuration problem on a
	// resolver, not an answer about the name.
	DNSRefused
	// DNSMalformed: the answer could not be understood. Temporary.
	DNSMalformed
)

func (k DNSErrorKind) String() string {
	switch k {
	case DNSNXDomain:
		return "no such domain (NXDOMAIN)"
	case DNSNoRecords:
		return "no records of this type (NODATA)"
	case DNSServerFailure:
		return "server failure (SERVFAIL; DNSSEC-bogus answers look like this)"
	case DNSTimeout:
		return "timed out"
	case DNSNetwork:
		return "resolver unreachable"
	case DNSRefused:
		return "query refused"
	case DNSMalformed:
		return "malformed answer"
	}
	return "DNSErrorKind(" + strconv.Itoa(int(k)) + ")"
}

// Errors a *DNSError matches with errors.Is, by kind.
var (
	// ErrNXDomain: the name does not exist.
	ErrNXDomain = errors.New("mailsec: no such domain")
	// ErrNoRecords: the name exists but has no records of the type asked.
	ErrNoRecords = errors.New("mailsec: no DNS records of this type")
)

// DNSError reports a failed lookup.
type DNSError struct {
	Name   string // the name looked up
	Type   string // "MX", "A", "AAAA", "TXT", "TLSA"
	Server string // the resolver asked, if known
	Kind   DNSErrorKind
	// Authentic is set when DNSSEC validated the denial (NXDOMAIN or
	// NODATA with a valid proof of non-existence).
	Authentic bool
	Err       error // underlying error, if any
}

func (e *DNSError) Error() string {
	s := "mailsec: DNS " + e.Type + " " + e.Name + ": " + e.Kind.String()
	if e.Server != "" {
		s += " (resolver " + e.Server + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is matches ErrNXDomain and ErrNoRecords by kind.
func (e *DNSError) Is(target error) bool {
	return target == ErrNXDomain && e.Kind == DNSNXDomain || target == ErrNoRecords && e.Kind == DNSNoRecords
}

func (e *DNSError) Unwrap() error { return e.Err }

// Temporary reports whether asking again later may give another answer:
// true for every kind but NXDOMAIN and NODATA.
func (e *DNSError) Temporary() bool { return e.Kind != DNSNXDomain && e.Kind != DNSNoRecords }

// IsNotFound reports whether err says the name, or records of its type,
// do not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNXDomain) || errors.Is(err, ErrNoRecords) }
