package mailsec

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
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
	Type   string // "MX", "A", "AAAA", "TXT", "TLSA"; "A/AAAA" when neither address type exists
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

// DNSResolver is the default [Resolver]: a stub resolver that asks the
// recursive, DNSSEC-validating resolvers in Servers and believes their AD
// bit only when the path to them cannot be tampered with.
//
// DANE is only as strong as the AD bit: an on-path attacker between this
// host and a recursive resolver can set it on a forged answer (RFC 6698
// §4.1, RFC 7672 §1.3, RFC 4035 §4.9.3). Run a validating resolver
// (unbound, for example) on the same host, or reach one over a path you
// trust and set TrustAD.
//
// Queries set RD, AD and EDNS0 with the DO bit, so the resolver reports
// validation; answers truncated over UDP are asked again over TCP. A
// DNSResolver must not be copied after first use.
type DNSResolver struct {
	// Servers are "host:port" addresses of validating resolvers, tried in
	// order (an IP address without a port means port 53). Empty means the
	// nameservers of /etc/resolv.conf, read once, on first use; when that
	// file is missing or lists none, 127.0.0.1:53 and [::1]:53.
	Servers []string
	// TrustAD trusts the AD bit from every server in Servers. By default
	// the AD bit is trusted only from loopback addresses (a validating
	// resolver on the same host), because an on-path attacker can set it
	// on an unprotected path (RFC 6698 §4.1, RFC 7672 §1.3, RFC 4035
	// §4.9.3). Answers from an untrusted server are never Authentic.
	TrustAD bool
	// Timeout bounds each query (zero: 5s); the context bounds the whole
	// lookup.
	Timeout time.Duration

	once sync.Once
	conf []string // nameservers from resolv.conf, set by once
}

const (
	// dnsDefaultTimeout bounds one query when DNSResolver.Timeout is zero.
	dnsDefaultTimeout = 5 * time.Second
	// dnsUDPSize is the EDNS0 UDP payload size advertised (the DNS flag
	// day 2020 value, which avoids IP fragmentation).
	dnsUDPSize = 1232
	// dnsMaxCNAME bounds the CNAME chain followed inside one answer.
	dnsMaxCNAME = 8
	// dnsTypeIP is DNSError.Type for a lookup of both address types.
	dnsTypeIP = "A/AAAA"
)

// LookupMX returns the MX records of name. The null MX (RFC 7505 §3),
// "0 .", is returned as MX{Host: "", Pref: 0}.
func (r *DNSResolver) LookupMX(ctx context.Context, name string) (Answer[MX], error) {
	return dnsLookup(ctx, r, name, dns.TypeMX, dnsMX)
}

// LookupIP returns the A records of name, then its AAAA records, asked
// concurrently. The answer is Authentic only if both are. If either
// lookup fails temporarily, LookupIP returns that error rather than half
// an address set; if neither type exists, the *DNSError has Type "A/AAAA".
func (r *DNSResolver) LookupIP(ctx context.Context, name string) (Answer[netip.Addr], error) {
	if _, err := dnsCheckName(name); err != nil {
		return Answer[netip.Addr]{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		ans Answer[netip.Addr]
		err error
	}
	v4 := make(chan result, 1)
	go func() {
		a, err := dnsLookup(ctx, r, name, dns.TypeA, dnsAddr)
		if dnsTemporary(err) {
			cancel() // the AAAA answer alone is of no use
		}
		v4 <- result{a, err}
	}()
	a6, err6 := dnsLookup(ctx, r, name, dns.TypeAAAA, dnsAddr)
	if dnsTemporary(err6) {
		cancel()
	}
	res4 := <-v4
	return dnsMergeIP(dnsName(name), res4.ans, res4.err, a6, err6)
}

// dnsMergeIP combines the A and AAAA answers of LookupIP.
func dnsMergeIP(name string, a4 Answer[netip.Addr], err4 error, a6 Answer[netip.Addr], err6 error) (Answer[netip.Addr], error) {
	// A temporary failure of either makes the set unknown; prefer an
	// error that is not merely the cancellation caused by the other.
	switch {
	case dnsTemporary(err4) && dnsTemporary(err6):
		if errors.Is(err4, context.Canceled) && !errors.Is(err6, context.Canceled) {
			return Answer[netip.Addr]{}, err6
		}
		return Answer[netip.Addr]{}, err4
	case dnsTemporary(err4):
		return Answer[netip.Addr]{}, err4
	case dnsTemporary(err6):
		return Answer[netip.Addr]{}, err6
	}
	var d4, d6 *DNSError
	if err4 != nil && !errors.As(err4, &d4) || err6 != nil && !errors.As(err6, &d6) {
		return Answer[netip.Addr]{}, cmp.Or(err4, err6)
	}
	switch {
	case d4 != nil && d6 != nil:
		kind := DNSNoRecords
		if d4.Kind == DNSNXDomain && d6.Kind == DNSNXDomain {
			kind = DNSNXDomain
		}
		return Answer[netip.Addr]{}, &DNSError{Name: name, Type: dnsTypeIP, Server: d4.Server, Kind: kind, Authentic: d4.Authentic && d6.Authentic}
	case d4 != nil:
		a6.Authentic = a6.Authentic && d4.Authentic
		return a6, nil
	case d6 != nil:
		a4.Authentic = a4.Authentic && d6.Authentic
		return a4, nil
	}
	a4.Records = append(a4.Records, a6.Records...)
	a4.Authentic = a4.Authentic && a6.Authentic
	return a4, nil
}

// LookupTXT returns the TXT records of name, each one's character-strings
// joined without separators (RFC 7208 §3.3).
func (r *DNSResolver) LookupTXT(ctx context.Context, name string) (Answer[string], error) {
	return dnsLookup(ctx, r, name, dns.TypeTXT, dnsTXT)
}

// LookupTLSA returns the TLSA records of name, for example
// "_25._tcp.mx.example.org" (RFC 7672 §2.2).
func (r *DNSResolver) LookupTLSA(ctx context.Context, name string) (Answer[TLSA], error) {
	return dnsLookup(ctx, r, name, dns.TypeTLSA, dnsTLSA)
}

var errDNSRecordType = errors.New("record of unexpected type")

// The conversions from a record of the answer to what a lookup returns.

func dnsMX(rr dns.RR) (MX, error) {
	mx, ok := rr.(*dns.MX)
	if !ok {
		return MX{}, errDNSRecordType
	}
	return MX{Host: dnsPresentName(mx.Mx), Pref: mx.Preference}, nil
}

func dnsTXT(rr dns.RR) (string, error) {
	txt, ok := rr.(*dns.TXT)
	if !ok {
		return "", errDNSRecordType
	}
	var b []byte
	for _, s := range txt.Txt {
		var err error
		if b, err = dnsUnescape(b, s); err != nil {
			return "", err
		}
	}
	return string(b), nil
}

func dnsTLSA(rr dns.RR) (TLSA, error) {
	t, ok := rr.(*dns.TLSA)
	if !ok {
		return TLSA{}, errDNSRecordType
	}
	data, err := hex.DecodeString(t.Certificate)
	if err != nil {
		return TLSA{}, err
	}
	return TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: data}, nil
}

func dnsAddr(rr dns.RR) (netip.Addr, error) {
	var ip net.IP
	switch rr := rr.(type) {
	case *dns.A:
		ip = rr.A.To4()
	case *dns.AAAA:
		ip = rr.AAAA.To16()
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, errDNSRecordType
	}
	return addr, nil
}

// servers returns the addresses to ask, in order.
func (r *DNSResolver) servers() []string {
	if len(r.Servers) > 0 {
		return r.Servers
	}
	r.once.Do(func() { r.conf = dnsResolvConf("/etc/resolv.conf") })
	return r.conf
}

// dnsResolvConf returns the nameservers listed in the resolv.conf file at
// path as "host:port" addresses, or the loopback resolvers when there are
// none, as the C library does.
func dnsResolvConf(path string) []string {
	var servers []string
	if conf, err := dns.ClientConfigFromFile(path); err == nil {
		for _, s := range conf.Servers {
			servers = append(servers, net.JoinHostPort(s, conf.Port))
		}
	}
	if len(servers) == 0 {
		servers = []string{"127.0.0.1:53", "[::1]:53"}
	}
	return servers
}

// trustsAD reports whether r believes the AD bit of the server at addr.
func (r *DNSResolver) trustsAD(addr string) bool { return r.TrustAD || trusted(addr) }

// trusted reports whether the AD bit from the resolver at addr
// ("host:port") can be believed without TrustAD: only a loopback address,
// where no network lies between the validating resolver and us (RFC 4035
// §4.9.3). A host name is not trusted, since resolving it is itself a
// lookup.
func trusted(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// dnsServerAddr adds port 53 to an IP address without a port.
func dnsServerAddr(s string) string {
	if _, err := netip.ParseAddr(s); err == nil {
		return net.JoinHostPort(s, "53")
	}
	return s
}

// dnsName is name as reported in answers and errors: lower case, without
// the final dot.
func dnsName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// dnsPresentName converts a domain name from a record to the form of
// Answer.Name and MX.Host; the root becomes "".
func dnsPresentName(name string) string {
	if name == "." {
		return ""
	}
	return dnsName(name)
}

// dnsCheckName refuses names that are not domain names in A-label form
// (letters, digits, hyphens and the underscores of service labels such as
// "_25._tcp"; labels of 1 to 63 octets; at most 253 octets without the
// final dot, RFC 1035 §2.3.4) and returns the name fully qualified, lower
// case. Refusing here keeps escapes and other presentation-format tricks
// out of the queries.
func dnsCheckName(name string) (string, error) {
	n := strings.TrimSuffix(name, ".")
	switch {
	case n == "":
		return "", invalid("DNS name", name, "empty")
	case len(n) > 253:
		return "", invalid("DNS name", name, "longer than 253 octets")
	}
	label := 0
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c == '.':
			if label == 0 {
				return "", invalid("DNS name", name, "empty label")
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return "", invalid("DNS name", name, "not a domain name in A-label form (letters, digits, '-', '_' and dots)")
		}
		if label++; label > 63 {
			return "", invalid("DNS name", name, "label longer than 63 octets")
		}
	}
	if label == 0 {
		return "", invalid("DNS name", name, "empty label")
	}
	return strings.ToLower(n) + ".", nil
}

// dnsUnescape appends to b the octets of a character-string in the
// presentation format miekg/dns produces ("\\", "\"" and "\DDD" escapes).
func dnsUnescape(b []byte, s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b = append(b, c)
			continue
		}
		i++
		switch {
		case i >= len(s):
			return b, errors.New("TXT string ends in a backslash")
		case i+2 < len(s) && dnsIsDigit(s[i]) && dnsIsDigit(s[i+1]) && dnsIsDigit(s[i+2]):
			v := int(s[i]-'0')*100 + int(s[i+1]-'0')*10 + int(s[i+2]-'0')
			if v > 255 {
				return b, errors.New("TXT string escape out of range")
			}
			b = append(b, byte(v))
			i += 2
		default:
			b = append(b, s[i])
		}
	}
	return b, nil
}

func dnsIsDigit(c byte) bool { return '0' <= c && c <= '9' }

func dnsTemporary(err error) bool {
	var de *DNSError
	if errors.As(err, &de) {
		return de.Temporary()
	}
	return err != nil
}

// dnsLookup asks each server in turn for the records of type qtype at
// name, moving to the next one only after a temporary failure.
func dnsLookup[T any](ctx context.Context, r *DNSResolver, name string, qtype uint16, conv func(dns.RR) (T, error)) (Answer[T], error) {
	fqdn, err := dnsCheckName(name)
	if err != nil {
		return Answer[T]{}, err
	}
	timeout := cmp.Or(r.Timeout, dnsDefaultTimeout)
	q := new(dns.Msg)
	q.SetQuestion(fqdn, qtype) // sets RD
	// RFC 6840 §5.7: AD in a query asks the resolver to report
	// validation; DO (RFC 3225) asks for the DNSSEC records with it.
	q.AuthenticatedData = true
	q.SetEdns0(dnsUDPSize, true)

	var last error = &DNSError{Name: dnsName(name), Type: dns.TypeToString[qtype], Kind: DNSNetwork, Err: errors.New("no resolver configured")}
	for _, server := range r.servers() {
		server = dnsServerAddr(server)
		resp, err := dnsExchange(ctx, server, q, timeout)
		var ans Answer[T]
		if err == nil {
			ans, err = dnsAnswer(resp, fqdn, qtype, r.trustsAD(server), conv)
		}
		if err == nil {
			return ans, nil
		}
		var de *DNSError
		if errors.As(err, &de) {
			de.Server = server
		}
		last = err
		if !dnsTemporary(err) || ctx.Err() != nil {
			break
		}
	}
	return Answer[T]{}, last
}

// dnsAnswer turns a response into an Answer. It checks that resp answers
// q (type qtype at fqdn), follows the CNAME chain inside the answer
// section, and converts each record of the final owner with conv. The
// answer, or a denial, is Authentic only if AD is set and trustAD.
func dnsAnswer[T any](resp *dns.Msg, fqdn string, qtype uint16, trustAD bool, conv func(dns.RR) (T, error)) (Answer[T], error) {
	derr := func(kind DNSErrorKind, err error) error {
		return &DNSError{Name: dnsName(fqdn), Type: dns.TypeToString[qtype], Kind: kind, Err: err}
	}
	if !resp.Response || resp.Opcode != dns.OpcodeQuery || len(resp.Question) != 1 {
		return Answer[T]{}, derr(DNSMalformed, errors.New("not a response to a query"))
	}
	if q := resp.Question[0]; !strings.EqualFold(q.Name, fqdn) || q.Qtype != qtype || q.Qclass != dns.ClassINET {
		return Answer[T]{}, derr(DNSMalformed, fmt.Errorf("response to another question (%s %s)", q.Name, dns.TypeToString[q.Qtype]))
	}
	ad := resp.AuthenticatedData && trustAD
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		// RFC 6604 §2: after CNAMEs, the RCODE speaks of the last target.
		e := derr(DNSNXDomain, nil).(*DNSError)
		e.Authentic = ad
		return Answer[T]{}, e
	case dns.RcodeServerFailure:
		return Answer[T]{}, derr(DNSServerFailure, nil)
	default:
		return Answer[T]{}, derr(DNSRefused, fmt.Errorf("RCODE %s", dnsRcodeName(resp.Rcode)))
	}

	// Follow CNAMEs from the name asked (RFC 1034 §3.6.2, §4.3.2).
	owner := fqdn
	var recs []T
	for hop := 0; ; hop++ {
		var cname string
		for _, rr := range resp.Answer {
			h := rr.Header()
			if h.Class != dns.ClassINET || !strings.EqualFold(h.Name, owner) {
				continue
			}
			switch h.Rrtype {
			case qtype:
				v, err := conv(rr)
				if err != nil {
					return Answer[T]{}, derr(DNSMalformed, err)
				}
				recs = append(recs, v)
			case dns.TypeCNAME:
				c, ok := rr.(*dns.CNAME)
				if !ok || cname != "" && !strings.EqualFold(cname, c.Target) {
					return Answer[T]{}, derr(DNSMalformed, fmt.Errorf("several CNAME records at %s", owner))
				}
				cname = c.Target
			}
		}
		if len(recs) > 0 || cname == "" {
			break
		}
		if hop == dnsMaxCNAME {
			return Answer[T]{}, derr(DNSMalformed, fmt.Errorf("CNAME chain longer than %d", dnsMaxCNAME))
		}
		owner = cname
	}
	if len(recs) == 0 {
		// NODATA: NOERROR without records of the type (RFC 2308 §2.2).
		e := derr(DNSNoRecords, nil).(*DNSError)
		e.Authentic = ad
		return Answer[T]{}, e
	}
	return Answer[T]{Records: recs, Authentic: ad, Name: dnsPresentName(owner)}, nil
}

func dnsRcodeName(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return strconv.Itoa(rcode)
}

// dnsExchange sends q to server over UDP and, if the answer is truncated,
// again over TCP (RFC 7766 §5). Errors are *DNSError.
func dnsExchange(ctx context.Context, server string, q *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	resp, truncated, err := dnsExchangeOnce(ctx, "udp", server, q, timeout)
	if err != nil || !truncated {
		return resp, err
	}
	resp, truncated, err = dnsExchangeOnce(ctx, "tcp", server, q, timeout)
	if err == nil && truncated {
		return nil, dnsQueryError(q, DNSMalformed, errors.New("answer truncated over TCP"))
	}
	return resp, err
}

// deadlinePassed reports whether ctx has a deadline that is now past.
func deadlinePassed(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

func dnsQueryError(q *dns.Msg, kind DNSErrorKind, err error) *DNSError {
	return &DNSError{Name: dnsName(q.Question[0].Name), Type: dns.TypeToString[q.Question[0].Qtype], Kind: kind, Err: err}
}

// dnsExchangeOnce performs one query over network ("udp" or "tcp"),
// bounded by timeout and by ctx, cancellation included. It reports
// whether the answer had the TC bit, in which case resp may be nil.
func dnsExchangeOnce(ctx context.Context, network, server string, q *dns.Msg, timeout time.Duration) (resp *dns.Msg, truncated bool, err error) {
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(err error) (*dns.Msg, bool, error) {
		kind := DNSNetwork
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout()
		switch {
		case ctx.Err() != nil:
			kind, err = DNSTimeout, ctx.Err()
		case timeout && deadlinePassed(ctx):
			// The connection's deadline is the context's, and its timer
			// can fire a moment before the context records the end.
			kind, err = DNSTimeout, context.DeadlineExceeded
		case qctx.Err() != nil || timeout:
			kind = DNSTimeout
		}
		return nil, false, dnsQueryError(q, kind, err)
	}
	wire, err := q.Pack()
	if err != nil {
		return nil, false, dnsQueryError(q, DNSMalformed, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(qctx, network, server)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	deadline, _ := qctx.Deadline()
	conn.SetDeadline(deadline)
	// Unblock reads and writes as soon as ctx is cancelled.
	stop := context.AfterFunc(qctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var buf []byte
	if network == "udp" {
		if _, err := conn.Write(wire); err != nil {
			return fail(err)
		}
		buf = make([]byte, dns.MaxMsgSize)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return fail(err)
			}
			// Skip datagrams that do not carry our ID: late answers to
			// earlier queries, or blind spoofing attempts.
			if n >= 12 && binary.BigEndian.Uint16(buf) == q.Id {
				buf = buf[:n]
				break
			}
		}
	} else {
		msg := make([]byte, 2+len(wire))
		binary.BigEndian.PutUint16(msg, uint16(len(wire)))
		copy(msg[2:], wire)
		if _, err := conn.Write(msg); err != nil {
			return fail(err)
		}
		var l [2]byte
		if _, err := io.ReadFull(conn, l[:]); err != nil {
			return fail(err)
		}
		buf = make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(conn, buf); err != nil {
			return fail(err)
		}
		if len(buf) < 12 || binary.BigEndian.Uint16(buf) != q.Id {
			return nil, false, dnsQueryError(q, DNSMalformed, errors.New("answer with another ID"))
		}
	}
	// The TC bit is in the third octet of the header (RFC 1035 §4.1.1);
	// a truncated answer may not even parse.
	if buf[2]&0x02 != 0 {
		return nil, true, nil
	}
	resp = new(dns.Msg)
	if err := resp.Unpack(buf); err != nil {
		return nil, false, dnsQueryError(q, DNSMalformed, err)
	}
	return resp, false, nil
}
