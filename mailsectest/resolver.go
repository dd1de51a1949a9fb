package mailsectest

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/syntax"
)

// Resolver is a dns.Resolver that answers from records set by the
// test, with no network: a stand-in for dns.Client when testing
// direct delivery, DANE and MTA-STS. It is safe for concurrent use, and
// its zero value is not usable: call [NewResolver].
//
// Names compare case-insensitively, with or without the final dot. A name
// exists when it, or a name below it, has records of any type or a CNAME
// (a name with records only below it is an empty non-terminal, RFC 8020);
// a lookup of another type at an existing name reports NODATA
// (dns.ErrNoRecords), of a name that does not exist NXDOMAIN
// (dns.ErrNXDomain). Answers and denials are Authentic only for names
// in zones marked with [Resolver.Secure], every CNAME on the way included.
// Every error is a *dns.Error with Name and Type set ("A/AAAA"
// for LookupIP); a name that is not a domain name in A-label form is
// refused as dns.Client refuses it, with kind dns.InvalidName.
type Resolver struct {
	mu      sync.Mutex
	secure  []string
	records map[rkey]any // []dns.MX, []netip.Addr, []string or []dns.TLSA
	cnames  map[string]string
	fails   map[rkey]error
	queries map[rkey]int
	lookups int // every lookup, refused ones included
}

// rkey names the records of one query type ("MX", "IP", "TXT", "TLSA")
// at one name (lower case, without the final dot).
type rkey struct{ qtype, name string }

// NewResolver returns a Resolver without records: every name is NXDOMAIN.
func NewResolver() *Resolver {
	return &Resolver{
		records: make(map[rkey]any),
		cnames:  make(map[string]string),
		fails:   make(map[rkey]error),
		queries: make(map[rkey]int),
	}
}

// Secure marks every name at or below zone as signed: its answers and
// denials are Authentic. Secure(".") marks every name.
func (r *Resolver) Secure(zone string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if z := canonical(zone); !slices.Contains(r.secure, z) {
		r.secure = append(r.secure, z)
	}
}

// MX sets the MX records of name, replacing any earlier ones; with none,
// it removes them. The null MX (RFC 7505) is dns.MX{Host: "", Pref: 0};
// hosts are stored lower case, without the final dot.
func (r *Resolver) MX(name string, mx ...dns.MX) {
	recs := make([]dns.MX, len(mx))
	for i, m := range mx {
		recs[i] = dns.MX{Host: canonical(m.Host), Pref: m.Pref}
	}
	r.set("MX", name, recs)
}

// IP sets the A and AAAA records of name, replacing any earlier ones;
// with none, it removes them.
func (r *Resolver) IP(name string, addrs ...netip.Addr) { r.set("IP", name, slices.Clone(addrs)) }

// TXT sets the TXT records of name, replacing any earlier ones; with
// none, it removes them. Each string is one record, its character-strings
// already joined.
func (r *Resolver) TXT(name string, txt ...string) { r.set("TXT", name, slices.Clone(txt)) }

// TLSA sets the TLSA records of name (for example
// "_25._tcp.mx.example.org"), replacing any earlier ones; with none, it
// removes them.
func (r *Resolver) TLSA(name string, recs ...dns.TLSA) { r.set("TLSA", name, cloneTLSA(recs)) }

// CNAME makes name an alias of target, followed by every lookup of name
// whatever records name has. An empty target removes the alias.
func (r *Resolver) CNAME(name, target string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if target == "" {
		delete(r.cnames, canonical(name))
		return
	}
	r.cnames[canonical(name)] = canonical(target)
}

// Fail makes lookups of qtype ("MX", "IP", "TXT", "TLSA") for name return
// err (for example &dns.Error{Kind: dns.ServerFailure}),
// also when name is reached through a CNAME; a nil err removes the
// failure. A *dns.Error is returned as a copy with Name and Type
// filled in when empty; any other error is wrapped in a *dns.Error
// of kind dns.ServerFailure. Fail panics if qtype is not one of the four.
func (r *Resolver) Fail(qtype, name string, err error) {
	k := rkey{checkType(qtype, false), canonical(name)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.fails, k)
		return
	}
	r.fails[k] = err
}

// Delete removes the records and the failure of qtype ("MX", "IP", "TXT",
// "TLSA", or "CNAME" for the alias) at name. It panics if qtype is not one
// of those.
func (r *Resolver) Delete(qtype, name string) {
	t, n := checkType(qtype, true), canonical(name)
	r.mu.Lock()
	defer r.mu.Unlock()
	if t == "CNAME" {
		delete(r.cnames, n)
		return
	}
	delete(r.records, rkey{t, n})
	delete(r.fails, rkey{t, n})
}

// Queries returns the number of lookups of qtype ("MX", "IP", "TXT",
// "TLSA") made so far for name, as asked (lookups that reached name
// through a CNAME are not counted). It panics if qtype is not one of the
// four.
func (r *Resolver) Queries(qtype, name string) int {
	k := rkey{checkType(qtype, false), canonical(name)}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queries[k]
}

// Lookups returns the number of lookups made so far, of every type and
// name, those refused as not a domain name included: zero says the code
// under test asked the DNS nothing.
func (r *Resolver) Lookups() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lookups
}

// LookupMX implements dns.Resolver.
func (r *Resolver) LookupMX(ctx context.Context, name string) (dns.Answer[dns.MX], error) {
	return lookup(ctx, r, "MX", "MX", name, slices.Clone[[]dns.MX])
}

// LookupIP implements dns.Resolver.
func (r *Resolver) LookupIP(ctx context.Context, name string) (dns.Answer[netip.Addr], error) {
	return lookup(ctx, r, "IP", "A/AAAA", name, slices.Clone[[]netip.Addr])
}

// LookupTXT implements dns.Resolver.
func (r *Resolver) LookupTXT(ctx context.Context, name string) (dns.Answer[string], error) {
	return lookup(ctx, r, "TXT", "TXT", name, slices.Clone[[]string])
}

// LookupTLSA implements dns.Resolver.
func (r *Resolver) LookupTLSA(ctx context.Context, name string) (dns.Answer[dns.TLSA], error) {
	return lookup(ctx, r, "TLSA", "TLSA", name, cloneTLSA)
}

// maxCNAME bounds the CNAME chain followed, as a recursive resolver does;
// a longer chain (a loop) fails as SERVFAIL.
const maxCNAME = 8

func lookup[T any](ctx context.Context, r *Resolver, qtype, typ, name string, clone func([]T) []T) (dns.Answer[T], error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups++
	if err := checkName(name, typ); err != nil {
		return dns.Answer[T]{}, err
	}
	asked := canonical(name)
	r.queries[rkey{qtype, asked}]++
	dnsErr := func(kind dns.Kind, authentic bool, err error) error {
		return &dns.Error{Name: asked, Type: typ, Kind: kind, Authentic: authentic, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return dns.Answer[T]{}, dnsErr(dns.Timeout, false, err)
	}
	n, authentic := asked, true
	for hop := 0; ; hop++ {
		authentic = authentic && r.isSecure(n)
		if err, ok := r.fails[rkey{qtype, n}]; ok {
			var de *dns.Error
			if !errors.As(err, &de) {
				return dns.Answer[T]{}, dnsErr(dns.ServerFailure, false, err)
			}
			c := *de
			if c.Name == "" {
				c.Name = asked
			}
			if c.Type == "" {
				c.Type = typ
			}
			return dns.Answer[T]{}, &c
		}
		target, ok := r.cnames[n]
		if !ok {
			break
		}
		if hop == maxCNAME {
			return dns.Answer[T]{}, dnsErr(dns.ServerFailure, false, errors.New("CNAME chain too long"))
		}
		n = target
	}
	if recs, ok := r.records[rkey{qtype, n}].([]T); ok && len(recs) > 0 {
		return dns.Answer[T]{Records: clone(recs), Authentic: authentic, Name: n}, nil
	}
	if r.exists(n) {
		return dns.Answer[T]{}, dnsErr(dns.NoRecords, authentic, nil)
	}
	return dns.Answer[T]{}, dnsErr(dns.NXDomain, authentic, nil)
}

func (r *Resolver) set(qtype, name string, recs any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records[rkey{qtype, canonical(name)}] = recs
}

// exists reports whether n, or a name below it, has records or a CNAME.
func (r *Resolver) exists(n string) bool {
	below := func(name string) bool { return name == n || strings.HasSuffix(name, "."+n) }
	for k, v := range r.records {
		if below(k.name) && hasRecords(v) {
			return true
		}
	}
	for name := range r.cnames {
		if below(name) {
			return true
		}
	}
	return false
}

func hasRecords(v any) bool {
	switch v := v.(type) {
	case []dns.MX:
		return len(v) > 0
	case []netip.Addr:
		return len(v) > 0
	case []string:
		return len(v) > 0
	case []dns.TLSA:
		return len(v) > 0
	}
	return false
}

func (r *Resolver) isSecure(n string) bool {
	for _, z := range r.secure {
		if z == "" || n == z || strings.HasSuffix(n, "."+z) {
			return true
		}
	}
	return false
}

func cloneTLSA(recs []dns.TLSA) []dns.TLSA {
	c := make([]dns.TLSA, len(recs))
	for i, t := range recs {
		t.Data = slices.Clone(t.Data)
		c[i] = t
	}
	return c
}

// canonical is the form names are stored in: lower case, without the
// final dot; the root is "".
func canonical(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

func checkType(qtype string, cname bool) string {
	t := strings.ToUpper(qtype)
	switch t {
	case "MX", "IP", "TXT", "TLSA":
		return t
	case "CNAME":
		if cname {
			return t
		}
	}
	panic("mailsectest: Resolver: unknown query type " + qtype + ` (want "MX", "IP", "TXT" or "TLSA")`)
}

// checkName refuses what dns.Client refuses: names that are not domain
// names in A-label form (service labels with '_' allowed).
func checkName(name, typ string) error {
	if reason, ok := syntax.LookupName(name); !ok {
		return &dns.Error{Name: name, Type: typ, Kind: dns.InvalidName, Err: errors.New(reason)}
	}
	return nil
}
