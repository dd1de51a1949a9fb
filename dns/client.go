package dns

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"

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
// Client must not be copied after first use. It is safe for concurrent
// use. A nil *Client has no resolver to ask: its lookups fail, without a
// query, with an *Error of kind Unreachable.
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

// errNilClient is the error of a lookup through a nil *Client.
var errNilClient = errors.New("nil *dns.Client: no resolver to ask")

// LookupMX returns the MX records of name. The null MX (RFC 7505 §3),
// "0 .", is returned as MX{Host: "", Pref: 0}.
func (r *Client) LookupMX(ctx context.Context, name string) (Answer[MX], error) {
	return lookup(ctx, r, name, dnsmessage.TypeMX, toMX)
}

// LookupIP returns the A records of name, then its AAAA records, asked
// concurrently. The answer is Authentic only if both are. If either
// lookup fails temporarily, LookupIP returns that error rather than half
// an address set; if neither type exists, the *Error has Type "A/AAAA".
func (r *Client) LookupIP(ctx context.Context, name string) (Answer[netip.Addr], error) {
	if _, err := checkName(name, typeIP); err != nil {
		return Answer[netip.Addr]{}, err
	}
	if r == nil {
		return Answer[netip.Addr]{}, &Error{Name: normName(name), Type: typeIP, Kind: Unreachable, Err: errNilClient}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		ans Answer[netip.Addr]
		err error
	}
	v4 := make(chan result, 1)
	go func() {
		a, err := lookup(ctx, r, name, dnsmessage.TypeA, toAddr)
		if temporary(err) {
			cancel() // the AAAA answer alone is of no use
		}
		v4 <- result{a, err}
	}()
	a6, err6 := lookup(ctx, r, name, dnsmessage.TypeAAAA, toAddr)
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
	return lookup(ctx, r, name, dnsmessage.TypeTXT, toTXT)
}

// LookupTLSA returns the TLSA records of name, for example
// "_25._tcp.mx.example.org" (RFC 7672 §2.2).
func (r *Client) LookupTLSA(ctx context.Context, name string) (Answer[TLSA], error) {
	return lookup(ctx, r, name, typeTLSA, toTLSA)
}

// typeTLSA is the TLSA record type (RFC 6698 §7.1), which package
// dnsmessage parses as an UnknownResource.
const typeTLSA dnsmessage.Type = 52

// typeName is the mnemonic of a record type, as Error.Type reports it.
func typeName(t dnsmessage.Type) string {
	switch t {
	case dnsmessage.TypeA:
		return "A"
	case dnsmessage.TypeAAAA:
		return "AAAA"
	case dnsmessage.TypeMX:
		return "MX"
	case dnsmessage.TypeTXT:
		return "TXT"
	case dnsmessage.TypeCNAME:
		return "CNAME"
	case typeTLSA:
		return "TLSA"
	}
	return "TYPE" + strconv.Itoa(int(t))
}

var errRecordType = errors.New("record of unexpected type")

// The conversions from a record of the answer to what a lookup returns.

func toMX(rr dnsmessage.Resource) (MX, error) {
	mx, ok := rr.Body.(*dnsmessage.MXResource)
	if !ok {
		return MX{}, errRecordType
	}
	return MX{Host: presentName(mx.MX.String()), Pref: mx.Pref}, nil
}

func toTXT(rr dnsmessage.Resource) (string, error) {
	txt, ok := rr.Body.(*dnsmessage.TXTResource)
	if !ok {
		return "", errRecordType
	}
	return strings.Join(txt.TXT, ""), nil
}

func toTLSA(rr dnsmessage.Resource) (TLSA, error) {
	u, ok := rr.Body.(*dnsmessage.UnknownResource)
	if !ok || u.Type != typeTLSA {
		return TLSA{}, errRecordType
	}
	// Usage, selector and matching type, one octet each, then the
	// certificate association data (RFC 6698 §2.1).
	if len(u.Data) < 3 {
		return TLSA{}, errors.New("TLSA record shorter than 3 octets")
	}
	return TLSA{Usage: u.Data[0], Selector: u.Data[1], MatchingType: u.Data[2], Data: bytes.Clone(u.Data[3:])}, nil
}

func toAddr(rr dnsmessage.Resource) (netip.Addr, error) {
	switch b := rr.Body.(type) {
	case *dnsmessage.AResource:
		return netip.AddrFrom4(b.A), nil
	case *dnsmessage.AAAAResource:
		return netip.AddrFrom16(b.AAAA), nil
	}
	return netip.Addr{}, errRecordType
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
// none, as the C library does. Lines other than "nameserver ADDRESS", and
// addresses that are not IP addresses, are ignored.
func resolvConf(path string) []string {
	var servers []string
	if b, err := os.ReadFile(path); err == nil {
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "nameserver" {
				continue
			}
			if _, err := netip.ParseAddr(f[1]); err == nil {
				servers = append(servers, net.JoinHostPort(f[1], "53"))
			}
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
// Answer.Name and MX.Host: lower case, without the final dot, the root
// as "". Octets other than printable ASCII become \DDD escapes and the
// characters special in zone files are escaped with a backslash, as in a
// zone file (RFC 1035 §5.1), so that no name from the network carries
// controls or spaces, and none is taken for a name it is not.
func presentName(s string) string {
	if s == "." {
		return ""
	}
	s = strings.TrimSuffix(s, ".")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'A' <= c && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		case c <= ' ' || c >= 0x7f:
			b.WriteByte('\\')
			b.WriteByte('0' + c/100)
			b.WriteByte('0' + c/10%10)
			b.WriteByte('0' + c%10)
		case strings.IndexByte(`\"();@$`, c) >= 0:
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// sameName reports whether the name from a record is name (fully
// qualified), comparing ASCII letters without regard to case and every
// other octet exactly: Unicode case folding would make the Kelvin sign
// "K" a "k".
func sameName(n dnsmessage.Name, name string) bool {
	s := n.String()
	if len(s) != len(name) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], name[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
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

func temporary(err error) bool {
	var de *Error
	if errors.As(err, &de) {
		return de.Temporary()
	}
	return err != nil
}

// query is one question, packed.
type query struct {
	id   uint16
	wire []byte
	name string // as errors report it: lower case, without the final dot
	typ  string // as errors report it
}

func (q *query) error(kind Kind, err error) *Error {
	return &Error{Name: q.name, Type: q.typ, Kind: kind, Err: err}
}

// newQuery packs a query for the records of type qtype at fqdn: RD set,
// and, since RFC 6840 §5.7, AD, which asks the resolver to report
// validation; EDNS0 with DO (RFC 3225) asks for the DNSSEC records with
// it. The ID is random, so that an off-path attacker must guess it.
func newQuery(fqdn string, qtype dnsmessage.Type) (*query, error) {
	name, err := dnsmessage.NewName(fqdn)
	if err != nil {
		return nil, err
	}
	var id [2]byte
	rand.Read(id[:])
	q := &query{id: binary.BigEndian.Uint16(id[:]), name: normName(fqdn), typ: typeName(qtype)}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: q.id, RecursionDesired: true, AuthenticData: true})
	var opt dnsmessage.ResourceHeader
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(dnsmessage.Question{Name: name, Type: qtype, Class: dnsmessage.ClassINET}); err != nil {
		return nil, err
	}
	if err := b.StartAdditionals(); err != nil {
		return nil, err
	}
	if err := opt.SetEDNS0(udpSize, dnsmessage.RCodeSuccess, true); err != nil {
		return nil, err
	}
	if err := b.OPTResource(opt, dnsmessage.OPTResource{}); err != nil {
		return nil, err
	}
	if q.wire, err = b.Finish(); err != nil {
		return nil, err
	}
	return q, nil
}

// lookup asks each server in turn for the records of type qtype at
// name, moving to the next one only after a temporary failure.
func lookup[T any](ctx context.Context, r *Client, name string, qtype dnsmessage.Type, conv func(dnsmessage.Resource) (T, error)) (Answer[T], error) {
	fqdn, err := checkName(name, typeName(qtype))
	if err != nil {
		return Answer[T]{}, err
	}
	q, err := newQuery(fqdn, qtype)
	if err != nil {
		return Answer[T]{}, &Error{Name: normName(name), Type: typeName(qtype), Kind: InvalidName, Err: err}
	}
	if r == nil {
		return Answer[T]{}, q.error(Unreachable, errNilClient)
	}
	timeout := cmp.Or(r.Timeout, defaultTimeout)

	var last error = q.error(Unreachable, errors.New("no resolver configured"))
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

// answer turns a response (the message as received) into an Answer. It
// checks that resp answers the question (type qtype at fqdn), follows the
// CNAME chain inside the answer section, and converts each record of the
// final owner with conv. The answer, or a denial, is Authentic only if AD
// is set and trustAD.
func answer[T any](resp []byte, fqdn string, qtype dnsmessage.Type, trustAD bool, conv func(dnsmessage.Resource) (T, error)) (Answer[T], error) {
	derr := func(kind Kind, err error) *Error {
		return &Error{Name: normName(fqdn), Type: typeName(qtype), Kind: kind, Err: err}
	}
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		return Answer[T]{}, derr(Malformed, err)
	}
	questions, err := p.AllQuestions()
	if err != nil {
		return Answer[T]{}, derr(Malformed, err)
	}
	if !h.Response || h.OpCode != 0 || len(questions) != 1 {
		return Answer[T]{}, derr(Malformed, errors.New("not a response to a query"))
	}
	if q := questions[0]; !sameName(q.Name, fqdn) || q.Type != qtype || q.Class != dnsmessage.ClassINET {
		return Answer[T]{}, derr(Malformed, fmt.Errorf("response to another question (%s %s)", presentName(q.Name.String()), typeName(q.Type)))
	}
	records, err := p.AllAnswers()
	if err != nil {
		return Answer[T]{}, derr(Malformed, err)
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return Answer[T]{}, derr(Malformed, err)
	}
	extra, err := p.AllAdditionals()
	if err != nil {
		return Answer[T]{}, derr(Malformed, err)
	}
	// The RCODE's upper bits travel in the OPT record (RFC 6891 §6.1.3).
	rcode := h.RCode
	for _, rr := range extra {
		if rr.Header.Type == dnsmessage.TypeOPT {
			rcode = rr.Header.ExtendedRCode(h.RCode)
		}
	}

	ad := h.AuthenticData && trustAD
	switch rcode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		// RFC 6604 §2: after CNAMEs, the RCODE speaks of the last target.
		e := derr(NXDomain, nil)
		e.Authentic = ad
		return Answer[T]{}, e
	case dnsmessage.RCodeServerFailure:
		return Answer[T]{}, derr(ServerFailure, nil)
	default:
		return Answer[T]{}, derr(Refused, fmt.Errorf("RCODE %s", rcodeName(rcode)))
	}

	// Follow CNAMEs from the name asked (RFC 1034 §3.6.2, §4.3.2).
	owner := fqdn
	var recs []T
	for hop := 0; ; hop++ {
		var cname *dnsmessage.Name
		for _, rr := range records {
			if rr.Header.Class != dnsmessage.ClassINET || !sameName(rr.Header.Name, owner) {
				continue
			}
			switch rr.Header.Type {
			case qtype:
				v, err := conv(rr)
				if err != nil {
					return Answer[T]{}, derr(Malformed, err)
				}
				recs = append(recs, v)
			case dnsmessage.TypeCNAME:
				c, ok := rr.Body.(*dnsmessage.CNAMEResource)
				if !ok || cname != nil && !sameName(c.CNAME, cname.String()) {
					return Answer[T]{}, derr(Malformed, fmt.Errorf("several CNAME records at %s", presentName(rr.Header.Name.String())))
				}
				cname = &c.CNAME
			}
		}
		if len(recs) > 0 || cname == nil {
			break
		}
		if hop == maxCNAME {
			return Answer[T]{}, derr(Malformed, fmt.Errorf("CNAME chain longer than %d", maxCNAME))
		}
		owner = cname.String()
	}
	if len(recs) == 0 {
		// NODATA: NOERROR without records of the type (RFC 2308 §2.2).
		e := derr(NoRecords, nil)
		e.Authentic = ad
		return Answer[T]{}, e
	}
	return Answer[T]{Records: recs, Authentic: ad, Name: presentName(owner)}, nil
}

// rcodeName is the mnemonic of a response code (RFC 6895 §2.3).
func rcodeName(rcode dnsmessage.RCode) string {
	switch rcode {
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	case 6:
		return "YXDOMAIN"
	case 7:
		return "YXRRSET"
	case 8:
		return "NXRRSET"
	case 9:
		return "NOTAUTH"
	case 10:
		return "NOTZONE"
	case 16:
		return "BADVERS"
	}
	return strconv.Itoa(int(rcode))
}

// exchange sends q to server over UDP and, if the answer is truncated,
// again over TCP (RFC 7766 §5). Errors are *Error.
func exchange(ctx context.Context, server string, q *query, timeout time.Duration) ([]byte, error) {
	resp, truncated, err := exchangeOnce(ctx, "udp", server, q, timeout)
	if err != nil || !truncated {
		return resp, err
	}
	resp, truncated, err = exchangeOnce(ctx, "tcp", server, q, timeout)
	if err == nil && truncated {
		return nil, q.error(Malformed, errors.New("answer truncated over TCP"))
	}
	return resp, err
}

// deadlinePassed reports whether ctx has a deadline that is now past.
func deadlinePassed(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// maxMsgSize is the largest DNS message, over TCP (RFC 1035 §4.2.2).
const maxMsgSize = 65535

// exchangeOnce performs one query over network ("udp" or "tcp"),
// bounded by timeout and by ctx, cancellation included. It returns the
// response as received, or reports that it had the TC bit, in which case
// resp is nil.
func exchangeOnce(ctx context.Context, network, server string, q *query, timeout time.Duration) (resp []byte, truncated bool, err error) {
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(err error) ([]byte, bool, error) {
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
		return nil, false, q.error(kind, err)
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
		if _, err := conn.Write(q.wire); err != nil {
			return fail(err)
		}
		buf = make([]byte, maxMsgSize)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return fail(err)
			}
			// Skip datagrams that do not carry our ID: late answers to
			// earlier queries, or blind spoofing attempts.
			if n >= 12 && binary.BigEndian.Uint16(buf) == q.id {
				buf = buf[:n]
				break
			}
		}
	} else {
		msg := make([]byte, 2+len(q.wire))
		binary.BigEndian.PutUint16(msg, uint16(len(q.wire)))
		copy(msg[2:], q.wire)
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
		if len(buf) < 12 || binary.BigEndian.Uint16(buf) != q.id {
			return nil, false, q.error(Malformed, errors.New("answer with another ID"))
		}
	}
	// The TC bit is in the third octet of the header (RFC 1035 §4.1.1);
	// a truncated answer may not even parse.
	if buf[2]&0x02 != 0 {
		return nil, true, nil
	}
	return buf, false, nil
}
