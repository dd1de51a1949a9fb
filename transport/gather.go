package transport

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/syntax"
	"github.com/mailsec/mailsec/transport/dane"
	"github.com/mailsec/mailsec/transport/mtasts"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

// Gathering: what the DNS and the domain's MTA-STS policy say about a
// recipient domain and its MX hosts, learnt before any connection is
// made. Direct delivery gathers the route (gatherRoute) and the domain's
// policy (gatherPolicy), then, host by host, the addresses and TLSA
// records (gatherHost); what a session must then meet is decided in
// tlspolicy.go. Check reads the same facts. Every name goes through
// Direct.Resolver.

// route is a domain's MX hosts in the order to try them.
type route struct {
	hosts     []string
	authentic bool // the MX answer (or its denial) was DNSSEC-authenticated
	implicit  bool // no MX records: the domain itself (RFC 5321 §5.1)
	beyond    int  // MX hosts left out by MaxMXHosts
}

// gatherRoute selects a domain's MX hosts (RFC 5321 §5.1, RFC 7505): by
// preference, ties in random order; the domain itself when it has no MX
// records; no fallback when the lookup fails; a null MX ends the delivery.
func (t *Direct) gatherRoute(ctx context.Context, domain string) (route, error) {
	ans, err := t.Resolver.LookupMX(ctx, domain)
	var de *dns.Error
	switch {
	case err == nil && len(ans.Records) > 0:
	case errors.Is(err, dns.ErrNoRecords) || err == nil:
		auth := ans.Authentic
		if errors.As(err, &de) {
			auth = de.Authentic
		}
		return route{hosts: []string{domain}, authentic: auth, implicit: true}, nil
	default:
		return route{}, err
	}
	recs := slices.Clone(ans.Records)
	for _, mx := range recs {
		if mx.Host == "" || mx.Host == "." {
			// RFC 7505 §3: a domain with a null MX accepts no mail; a
			// null MX beside other records is a misconfiguration, read the
			// same way so that no connection is ever made.
			return route{}, ErrNullMX
		}
	}
	slices.SortStableFunc(recs, func(a, b dns.MX) int { return int(a.Pref) - int(b.Pref) })
	for i := 0; i < len(recs); {
		j := i + 1
		for j < len(recs) && recs[j].Pref == recs[i].Pref {
			j++
		}
		tie := recs[i:j]
		rand.Shuffle(len(tie), func(a, b int) { tie[a], tie[b] = tie[b], tie[a] })
		i = j
	}
	r := route{authentic: ans.Authentic}
	for _, mx := range recs {
		h := strings.ToLower(strings.TrimSuffix(mx.Host, "."))
		if _, ok := syntax.Hostname(h); !ok || slices.Contains(r.hosts, h) {
			continue
		}
		r.hosts = append(r.hosts, h)
	}
	if len(r.hosts) == 0 {
		return route{}, &dns.Error{Name: domain, Type: "MX", Kind: dns.Malformed,
			Err: errors.New("no MX record names a usable host")}
	}
	if len(r.hosts) > t.maxHosts {
		r.beyond = len(r.hosts) - t.maxHosts
		r.hosts = r.hosts[:t.maxHosts]
	}
	return r, nil
}

// gatherPolicy looks up the domain's MTA-STS policy (RFC 8461) into ds:
// the result, whether it is in enforce or testing mode, a note for the
// Receipt when discovery or the fetch failed, and, when no policy applies
// because of such a failure, the result each session is reported with.
// An error is a lookup that did not finish (the context ended).
func (t *Direct) gatherPolicy(ctx context.Context, ds *domainState) error {
	r, err := t.sts.Lookup(ctx, ds.domain)
	if err != nil {
		return stsLookupError(ds.domain, err)
	}
	ds.sts = r
	if r.Policy != nil {
		ds.enforce = r.Policy.Mode == mtasts.Enforce
		ds.testing = r.Policy.Mode == mtasts.Testing
	}
	if r.Err != nil {
		ds.note("MTA-STS: " + r.Err.Error())
		if r.Policy == nil {
			// No policy applies: each session is reported with this
			// failure instead of its own success.
			ds.stsFailure = &tlsrpt.Result{Failure: stsResultType(r.Err), FailureReasonCode: reasonCode(r.Err)}
		}
	}
	return nil
}

// stsLookupError is the error of an MTA-STS lookup that did not finish
// (the context ended): a typed error that names the policy host.
func stsLookupError(domain string, err error) error {
	var ne *mailsec.NetworkError
	var ve *mailsec.ValidationError
	var ce *mailsec.ConfigError
	if errors.As(err, &ne) || errors.As(err, &ve) || errors.As(err, &ce) {
		return err
	}
	return &mailsec.NetworkError{Host: "mta-sts." + domain, Op: "MTA-STS policy lookup", Err: err}
}

// mxHost is what the DNS says about one MX host.
type mxHost struct {
	name          string
	addrs         []netip.Addr
	addrAuthentic bool // the address answer was DNSSEC-authenticated
	// secure: the MX answer and the address answer were both
	// authenticated, so the host's TLSA records count (RFC 7672 §2.2).
	secure bool
	// tlsa is what authenticated DNS says about the host's DANE records,
	// when they were looked up; tlsaErr a TLSA lookup that failed.
	tlsa    tlsaSet
	tlsaErr error
}

// gatherHost looks up an MX host's addresses and, when wantTLSA and the
// host is secure, its TLSA records. An error is a failed address lookup:
// the host cannot be reached. A failed TLSA lookup is kept in the result;
// what it means for a delivery is decided with the requirement.
func (t *Direct) gatherHost(ctx context.Context, ds *domainState, host string, wantTLSA bool) (*mxHost, error) {
	ips, err := t.Resolver.LookupIP(ctx, host)
	if err != nil {
		return nil, err
	}
	mx := &mxHost{name: host, addrs: ips.Records, addrAuthentic: ips.Authentic,
		secure: ds.route.authentic && ips.Authentic, tlsa: tlsaSet{base: host}}
	if wantTLSA && mx.secure {
		if set, err := t.lookupTLSA(ctx, host, ips.Name); err != nil {
			mx.tlsaErr = err
		} else {
			mx.tlsa = set
		}
	}
	return mx, nil
}

// tlsaSet is what DNSSEC-authenticated DNS says about a host's DANE
// records.
type tlsaSet struct {
	records []dns.TLSA // every record found
	usable  []dns.TLSA // those usable for SMTP
	base    string     // the TLSA base domain they were found at
}

// names are the reference identifiers for DANE-TA: the TLSA base domain,
// then the MX host name when they differ (RFC 7672 §3.2.2).
func (s tlsaSet) names(host string) []string {
	if s.base == host {
		return []string{host}
	}
	return []string{s.base, host}
}

// lookupTLSA finds the TLSA records of an MX host whose MX and address
// answers were authenticated. A host name that is a CNAME with a secure
// expansion (canonical, the address answer's Name) has its records at the
// expanded name first, then at the original name; the name where they are
// found is the TLSA base domain, sent as SNI and matched first (RFC 7672
// §2.2.2, §3.2.2, §8.1). No records, or none DNSSEC vouches for, is an
// empty set; an error is a lookup that failed, which must stop the
// connection (it may be an attack).
func (t *Direct) lookupTLSA(ctx context.Context, host, canonical string) (tlsaSet, error) {
	bases := []string{host}
	if canonical != "" && canonical != host {
		bases = []string{canonical, host}
	}
	for _, base := range bases {
		ans, err := t.Resolver.LookupTLSA(ctx, "_25._tcp."+base)
		switch {
		case dns.IsNotFound(err), err == nil && (!ans.Authentic || len(ans.Records) == 0):
			continue
		case err != nil:
			return tlsaSet{}, err
		}
		return tlsaSet{records: ans.Records, usable: dane.Usable(ans.Records), base: base}, nil
	}
	return tlsaSet{base: host}, nil
}
