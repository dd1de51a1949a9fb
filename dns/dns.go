// Package dns looks up what mail delivery needs from the DNS (MX,
// address, TXT and TLSA records) and says of every answer whether DNSSEC
// authenticated it.
//
// Start with [Client], pointed at a validating resolver on this host, and
// hand it to what needs a [Resolver]:
//
//	r := &dns.Client{Servers: []string{"127.0.0.1:53"}}
//	t := &transport.Direct{Resolver: r}
//
// Direct delivery (transport.Direct), DANE (transport/dane), MTA-STS
// (transport/mtasts), TLS reporting (transport/tlsrpt) and Web Key
// Directory key lookups (pgp.WKD) all resolve names through a Resolver, so
// every name one delivery needs is looked up the same way. For tests,
// mailsectest.Resolver answers from records the test sets, with no
// network.
//
// # Threat model
//
// A recipient domain's DNS says where its mail goes. An attacker who can
// forge DNS answers can point a sender at its own MX host, remove the
// TLSA records that would have required DANE, or hide an MTA-STS policy.
// DNSSEC defeats that, but only as far as the sender can trust the
// validation: a stub resolver such as Client does not validate signatures
// itself, it believes the AD bit of the recursive resolver it asks. An
// on-path attacker between the two can set that bit on a forged answer
// (RFC 6698 §4.1, RFC 7672 §1.3, RFC 4035 §4.9.3), so Client believes it
// only from a resolver on a loopback address unless [Client.TrustAD] says
// the path is protected. [Answer.Authentic] is that belief: DANE and
// REQUIRETLS to an MX host rest on it.
//
// # Errors
//
// A failed lookup returns an [*Error] naming the name, the record type and
// the [Kind] of failure. A name that does not exist matches [ErrNXDomain]
// with errors.Is, a name without records of the type [ErrNoRecords];
// [IsNotFound] tests for either. Every other kind (a server failure, which
// is also how a validating resolver reports a tampered answer, a timeout,
// an unreachable resolver) has a Temporary method that reports true, which
// mailsec.IsTemporary reads. A name that is not a domain name in A-label
// form is refused before any query, with an Error of kind [InvalidName].
package dns

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
)

// Resolver looks up the DNS records that mail delivery needs, and says of
// every answer whether DNSSEC authenticated it. DANE (RFC 7672) and
// REQUIRETLS to an MX host rest on that bit, so an implementation must
// set Authentic only for answers a validating resolver it trusts vouched
// for.
//
// Names are domain names in A-label form, with or without the final dot.
// A lookup for a name that does not exist returns an *Error matching
// ErrNXDomain; for a name that exists without records of the type, one
// matching ErrNoRecords. A server failure (which is also how a validating
// resolver reports a bogus, tampered answer), a timeout or a network error
// returns an *Error whose Temporary method reports true. Implementations
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

// Kind classifies a failed lookup.
type Kind int

// Kinds of failure.
const (
	// NXDomain: the name does not exist (RCODE 3).
	NXDomain Kind = iota + 1
	// NoRecords: the name exists but has no records of the type
	// (NODATA).
	NoRecords
	// ServerFailure: SERVFAIL, the answer of a validating resolver to a
	// bogus (tampered or misconfigured) DNSSEC answer, among other things.
	// Temporary.
	ServerFailure
	// Timeout: no answer in time. Temporary.
	Timeout
	// Unreachable: the resolver could not be reached, or the connection
	// to it failed. Temporary.
	Unreachable
	// Refused: the resolver refused the query (REFUSED, NOTIMP and other
	// error codes). Temporary: a configuration problem on a resolver, not
	// an answer about the name.
	Refused
	// Malformed: the answer could not be understood. Temporary.
	Malformed
	// InvalidName: the name is not a domain name in A-label form, and no
	// query was sent. Not temporary: the same name is refused again.
	InvalidName
)

func (k Kind) String() string {
	switch k {
	case NXDomain:
		return "no such domain (NXDOMAIN)"
	case NoRecords:
		return "no records of this type (NODATA)"
	case ServerFailure:
		return "server failure (SERVFAIL; DNSSEC-bogus answers look like this)"
	case Timeout:
		return "timed out"
	case Unreachable:
		return "resolver unreachable"
	case Refused:
		return "query refused"
	case Malformed:
		return "malformed answer"
	case InvalidName:
		return "not a domain name in A-label form"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Errors an *Error matches with errors.Is, by kind.
var (
	// ErrNXDomain: the name does not exist.
	ErrNXDomain = errors.New("dns: no such domain")
	// ErrNoRecords: the name exists but has no records of the type asked.
	ErrNoRecords = errors.New("dns: no records of this type")
)

// Error reports a failed lookup.
type Error struct {
	Name   string // the name looked up
	Type   string // "MX", "A", "AAAA", "TXT", "TLSA"; "A/AAAA" when neither address type exists
	Server string // the resolver asked, if known
	Kind   Kind
	// Authentic is set when DNSSEC validated the denial (NXDOMAIN or
	// NODATA with a valid proof of non-existence).
	Authentic bool
	Err       error // underlying error, if any
}

func (e *Error) Error() string {
	name := e.Name
	if e.Kind == InvalidName {
		name = strconv.Quote(name) // as given, which may hold anything
	}
	s := "dns: " + e.Type + " " + name + ": " + e.Kind.String()
	if e.Server != "" {
		s += " (resolver " + e.Server + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is matches ErrNXDomain and ErrNoRecords by kind.
func (e *Error) Is(target error) bool {
	return target == ErrNXDomain && e.Kind == NXDomain || target == ErrNoRecords && e.Kind == NoRecords
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether asking again later may give another answer:
// true for every kind but NXDomain, NoRecords and InvalidName.
func (e *Error) Temporary() bool {
	return e.Kind != NXDomain && e.Kind != NoRecords && e.Kind != InvalidName
}

// IsNotFound reports whether err says the name, or records of its type,
// do not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNXDomain) || errors.Is(err, ErrNoRecords) }
