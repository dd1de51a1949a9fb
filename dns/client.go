package dns

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

	mdns "github.com/miekg/dns"

	"github.com/mailsec/mailsec/internal/syntax"
)

// Client is the default [Resolver]: a stub resolver that asks the
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
// Client must not be copied after first use.
type Client struct {
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
	// defaultTimeout bounds one query when Client.Timeout is zero.
	defaultTimeout = 5 * time.Second
	// udpSize is the EDNS0 UDP payload size advertised (the DNS flag
	// day 2020 value, which avoids IP fragmentation).
	udpSize = 1232
	// maxCNAME bounds the CNAME chain followed inside one answer.
	maxCNAME = 8
	// typeIP is Error.Type for a lookup of both address types.
	typeIP = "A/AAAA"
)

// LookupMX returns the MX records of name. The null MX (RFC 7505 §3),
// "0 .", is returned as MX{Host: "", Pref: 0}.
func (r *Client) LookupMX(ctx context.Context, name string) (Answer[MX], error) {
	return lookup(ctx, r, name, mdns.TypeMX, toMX)
}

// LookupIP returns the A records of name, then its AAAA records, asked
// concurrently. The answer is Authentic only if both are. If either
// lookup fails temporarily, LookupIP returns that error rather than half
// an address set; if neither type exists, the *Error has Type "A/AAAA".
func (r *Client) LookupIP(ctx context.Context, name string) (Answer[netip.Addr], error) {
	if _, err := checkName(name, typeIP); err != nil {
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
		a, err := lookup(ctx, r, name, mdns.TypeA, toAddr)
		if temporary(err) {
			cancel() // the AAAA answer alone is of no use
		}
		v4 <- result{a, err}
	}()
	a6, err6 := lookup(ctx, r, name, mdns.TypeAAAA, toAddr)
	if temporary(err6) {
		cancel()
	}
	res4 := <-v4
	return mergeIP(normName(name), res4.ans, res4.err, a6, err6)
}

// mergeIP combines the A and AAAA answers of LookupIP.
func mergeIP(name string, a4 Answer[netip.Addr], err4 error, a6 Answer[netip.Addr], err6 error) (Answer[netip.Addr], error) {
	// A temporary failure of either makes the set unknown; prefer an
	// error that is not merely the cancellation caused by the other.
	switch {
	case temporary(err4) && temporary(err6):
		if errors.Is(err4, context.Canceled) && !errors.Is(err6, context.Canceled) {
			return Answer[netip.Addr]{}, err6
		}
		return Answer[netip.Addr]{}, err4
	case temporary(err4):
		return Answer[netip.Addr]{}, err4
	case temporary(err6):
		return Answer[netip.Addr]{}, err6
	}
	var d4, d6 *Error
	if err4 != nil && !errors.As(err4, &d4) || err6 != nil && !errors.As(err6, &d6) {
		return Answer[netip.Addr]{}, cmp.Or(err4, err6)
	}
	switch {
	case d4 != nil && d6 != nil:
		kind := NoRecords
		if d4.Kind == NXDomain && d6.Kind == NXDomain {
			kind = NXDomain
		}
		return Answer[netip.Addr]{}, &Error{Name: name, Type: typeIP, Server: d4.Server, Kind: kind, Authentic: d4.Authentic && d6.Authentic}
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
func (r *Client) LookupTXT(ctx context.Context, name string) (Answer[string], error) {
	return lookup(ctx, r, name, mdns.TypeTXT, toTXT)
}

// LookupTLSA returns the TLSA records of name, for example
// "_25._tcp.mx.example.org" (RFC 7672 §2.2).
func (r *Client) LookupTLSA(ctx context.Context, name string) (Answer[TLSA], error) {
	return lookup(ctx, r, name, mdns.TypeTLSA, toTLSA)
}

var errRecordType = errors.New("record of unexpected type")

// The conversions from a record of the answer to what a lookup returns.

func toMX(rr mdns.RR) (MX, error) {
	mx, ok := rr.(*mdns.MX)
	if !ok {
		return MX{}, errRecordType
	}
	return MX{Host: presentName(mx.Mx), Pref: mx.Preference}, nil
}

func toTXT(rr mdns.RR) (string, error) {
	txt, ok := rr.(*mdns.TXT)
	if !ok {
		return "", errRecordType
	}
	var b []byte
	for _, s := range txt.Txt {
		var err error
		if b, err = unescape(b, s); err != nil {
			return "", err
		}
	}
	return string(b), nil
}

func toTLSA(rr mdns.RR) (TLSA, error) {
	t, ok := rr.(*mdns.TLSA)
	if !ok {
		return TLSA{}, errRecordType
	}
	data, err := hex.DecodeString(t.Certificate)
	if err != nil {
		return TLSA{}, err
	}
	return TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: data}, nil
}

func toAddr(rr mdns.RR) (netip.Addr, error) {
	var ip net.IP
	switch rr := rr.(type) {
	case *mdns.A:
		ip = rr.A.To4()
	case *mdns.AAAA:
		ip = rr.AAAA.To16()
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, errRecordType
	}
	return addr, nil
}

// servers returns the addresses to ask, in order.
func (r *Client) servers() []string {
	if len(r.Servers) > 0 {
		return r.Servers
	}
	r.once.Do(func() { r.conf = resolvConf("/etc/resolv.conf") })
	return r.conf
}

// resolvConf returns the nameservers listed in the resolv.conf file at
// path as "host:port" addresses, or the loopback resolvers when there are
// none, as the C library does.
func resolvConf(path string) []string {
	var servers []string
	if conf, err := mdns.ClientConfigFromFile(path); err == nil {
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
func (r *Client) trustsAD(addr string) bool { return r.TrustAD || trusted(addr) }

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

// serverAddr adds port 53 to an IP address without a port.
func serverAddr(s string) string {
	if _, err := netip.ParseAddr(s); err == nil {
		return net.JoinHostPort(s, "53")
	}
	return s
}

// normName is name as reported in answers and errors: lower case, without
// the final dot.
func normName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// presentName converts a domain name from a record to the form of
// Answer.Name and MX.Host; the root becomes "".
func presentName(name string) string {
	if name == "." {
		return ""
	}
	return normName(name)
}

// checkName refuses names that are not domain names in A-label form
// (syntax.LookupName) with an *Error of kind InvalidName for a lookup of
// type typ, and returns the name fully qualified, lower case.
func checkName(name, typ string) (string, error) {
	if reason, ok := syntax.LookupName(name); !ok {
		return "", &Error{Name: name, Type: typ, Kind: InvalidName, Err: errors.New(reason)}
	}
	return strings.ToLower(strings.TrimSuffix(name, ".")) + ".", nil
}

// unescape appends to b the octets of a character-string in the
// presentation format miekg/dns produces ("\\", "\"" and "\DDD" escapes).
func unescape(b []byte, s string) ([]byte, error) {
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
		case i+2 < len(s) && isDigit(s[i]) && isDigit(s[i+1]) && isDigit(s[i+2]):
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

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func temporary(err error) bool {
	var de *Error
	if errors.As(err, &de) {
		return de.Temporary()
	}
	return err != nil
}

// lookup asks each server in turn for the records of type qtype at
// name, moving to the next one only after a temporary failure.
func lookup[T any](ctx context.Context, r *Client, name string, qtype uint16, conv func(mdns.RR) (T, error)) (Answer[T], error) {
	fqdn, err := checkName(name, mdns.TypeToString[qtype])
	if err != nil {
		return Answer[T]{}, err
	}
	timeout := cmp.Or(r.Timeout, defaultTimeout)
	q := new(mdns.Msg)
	q.SetQuestion(fqdn, qtype) // sets RD
	// RFC 6840 §5.7: AD in a query asks the resolver to report
	// validation; DO (RFC 3225) asks for the DNSSEC records with it.
	q.AuthenticatedData = true
	q.SetEdns0(udpSize, true)

	var last error = &Error{Name: normName(name), Type: mdns.TypeToString[qtype], Kind: Unreachable, Err: errors.New("no resolver configured")}
	for _, server := range r.servers() {
		server = serverAddr(server)
		resp, err := exchange(ctx, server, q, timeout)
		var ans Answer[T]
		if err == nil {
			ans, err = answer(resp, fqdn, qtype, r.trustsAD(server), conv)
		}
		if err == nil {
			return ans, nil
		}
		var de *Error
		if errors.As(err, &de) {
			de.Server = server
		}
		last = err
		if !temporary(err) || ctx.Err() != nil {
			break
		}
	}
	return Answer[T]{}, last
}

// answer turns a response into an Answer. It checks that resp answers
// q (type qtype at fqdn), follows the CNAME chain inside the answer
// section, and converts each record of the final owner with conv. The
// answer, or a denial, is Authentic only if AD is set and trustAD.
func answer[T any](resp *mdns.Msg, fqdn string, qtype uint16, trustAD bool, conv func(mdns.RR) (T, error)) (Answer[T], error) {
	derr := func(kind Kind, err error) error {
		return &Error{Name: normName(fqdn), Type: mdns.TypeToString[qtype], Kind: kind, Err: err}
	}
	if !resp.Response || resp.Opcode != mdns.OpcodeQuery || len(resp.Question) != 1 {
		return Answer[T]{}, derr(Malformed, errors.New("not a response to a query"))
	}
	if q := resp.Question[0]; !strings.EqualFold(q.Name, fqdn) || q.Qtype != qtype || q.Qclass != mdns.ClassINET {
		return Answer[T]{}, derr(Malformed, fmt.Errorf("response to another question (%s %s)", q.Name, mdns.TypeToString[q.Qtype]))
	}
	ad := resp.AuthenticatedData && trustAD
	switch resp.Rcode {
	case mdns.RcodeSuccess:
	case mdns.RcodeNameError:
		// RFC 6604 §2: after CNAMEs, the RCODE speaks of the last target.
		e := derr(NXDomain, nil).(*Error)
		e.Authentic = ad
		return Answer[T]{}, e
	case mdns.RcodeServerFailure:
		return Answer[T]{}, derr(ServerFailure, nil)
	default:
		return Answer[T]{}, derr(Refused, fmt.Errorf("RCODE %s", rcodeName(resp.Rcode)))
	}

	// Follow CNAMEs from the name asked (RFC 1034 §3.6.2, §4.3.2).
	owner := fqdn
	var recs []T
	for hop := 0; ; hop++ {
		var cname string
		for _, rr := range resp.Answer {
			h := rr.Header()
			if h.Class != mdns.ClassINET || !strings.EqualFold(h.Name, owner) {
				continue
			}
			switch h.Rrtype {
			case qtype:
				v, err := conv(rr)
				if err != nil {
					return Answer[T]{}, derr(Malformed, err)
				}
				recs = append(recs, v)
			case mdns.TypeCNAME:
				c, ok := rr.(*mdns.CNAME)
				if !ok || cname != "" && !strings.EqualFold(cname, c.Target) {
					return Answer[T]{}, derr(Malformed, fmt.Errorf("several CNAME records at %s", owner))
				}
				cname = c.Target
			}
		}
		if len(recs) > 0 || cname == "" {
			break
		}
		if hop == maxCNAME {
			return Answer[T]{}, derr(Malformed, fmt.Errorf("CNAME chain longer than %d", maxCNAME))
		}
		owner = cname
	}
	if len(recs) == 0 {
		// NODATA: NOERROR without records of the type (RFC 2308 §2.2).
		e := derr(NoRecords, nil).(*Error)
		e.Authentic = ad
		return Answer[T]{}, e
	}
	return Answer[T]{Records: recs, Authentic: ad, Name: presentName(owner)}, nil
}

func rcodeName(rcode int) string {
	if s, ok := mdns.RcodeToString[rcode]; ok {
		return s
	}
	return strconv.Itoa(rcode)
}

// exchange sends q to server over UDP and, if the answer is truncated,
// again over TCP (RFC 7766 §5). Errors are *Error.
func exchange(ctx context.Context, server string, q *mdns.Msg, timeout time.Duration) (*mdns.Msg, error) {
	resp, truncated, err := exchangeOnce(ctx, "udp", server, q, timeout)
	if err != nil || !truncated {
		return resp, err
	}
	resp, truncated, err = exchangeOnce(ctx, "tcp", server, q, timeout)
	if err == nil && truncated {
		return nil, queryError(q, Malformed, errors.New("answer truncated over TCP"))
	}
	return resp, err
}

// deadlinePassed reports whether ctx has a deadline that is now past.
func deadlinePassed(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

func queryError(q *mdns.Msg, kind Kind, err error) *Error {
	return &Error{Name: normName(q.Question[0].Name), Type: mdns.TypeToString[q.Question[0].Qtype], Kind: kind, Err: err}
}

// exchangeOnce performs one query over network ("udp" or "tcp"),
// bounded by timeout and by ctx, cancellation included. It reports
// whether the answer had the TC bit, in which case resp may be nil.
func exchangeOnce(ctx context.Context, network, server string, q *mdns.Msg, timeout time.Duration) (resp *mdns.Msg, truncated bool, err error) {
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(err error) (*mdns.Msg, bool, error) {
		kind := Unreachable
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout()
		switch {
		case ctx.Err() != nil:
			kind, err = Timeout, ctx.Err()
		case timeout && deadlinePassed(ctx):
			// The connection's deadline is the context's, and its timer
			// can fire a moment before the context records the end.
			kind, err = Timeout, context.DeadlineExceeded
		case qctx.Err() != nil || timeout:
			kind = Timeout
		}
		return nil, false, queryError(q, kind, err)
	}
	wire, err := q.Pack()
	if err != nil {
		return nil, false, queryError(q, Malformed, err)
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
		buf = make([]byte, mdns.MaxMsgSize)
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
			return nil, false, queryError(q, Malformed, errors.New("answer with another ID"))
		}
	}
	// The TC bit is in the third octet of the header (RFC 1035 §4.1.1);
	// a truncated answer may not even parse.
	if buf[2]&0x02 != 0 {
		return nil, true, nil
	}
	resp = new(mdns.Msg)
	if err := resp.Unpack(buf); err != nil {
		return nil, false, queryError(q, Malformed, err)
	}
	return resp, false, nil
}
