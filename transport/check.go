package transport

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/netguard"
	"github.com/mailsec/mailsec/internal/syntax"
	"github.com/mailsec/mailsec/transport/dane"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

// DomainCheck is how well mail to a domain is protected in transit: what
// its DNS publishes and what each MX host does, as Direct.Check found it.
// Its JSON form is what `mailsec check -json` prints.
type DomainCheck struct {
	Domain string `json:"domain"`
	// MX lists the MX hosts in the order Direct would try them.
	MX []string `json:"mx,omitempty"`
	// MXAuthentic: the MX answer was DNSSEC-authenticated.
	MXAuthentic bool `json:"mx_dnssec"`
	ImplicitMX  bool `json:"implicit_mx,omitempty"`
	// MoreMX counts the MX hosts beyond Direct.MaxMXHosts, which Direct
	// never considers and Check does not probe.
	MoreMX  int    `json:"more_mx,omitempty"`
	NullMX  bool   `json:"null_mx,omitempty"`
	MXError string `json:"mx_error,omitempty"`

	MTASTS *MTASTSCheck `json:"mta_sts,omitempty"`
	// TLSRPT lists the domain's TLS report addresses (RFC 8460 rua).
	TLSRPT      []string `json:"tls_rpt,omitempty"`
	TLSRPTError string   `json:"tls_rpt_error,omitempty"`

	Hosts []HostCheck `json:"hosts,omitempty"`
	// Verdict sums the domain up in plain words.
	Verdict string `json:"verdict"`
}

// MTASTSCheck is the domain's MTA-STS state.
type MTASTSCheck struct {
	ID     string   `json:"id,omitempty"`
	Mode   string   `json:"mode,omitempty"`
	MX     []string `json:"mx,omitempty"`
	MaxAge int64    `json:"max_age,omitempty"`
	Error  string   `json:"error,omitempty"`
}

// HostCheck is one MX host, probed on port 25.
type HostCheck struct {
	Host          string   `json:"host"`
	Addrs         []string `json:"addrs,omitempty"`
	AddrAuthentic bool     `json:"addr_dnssec"`
	// TLSA lists the host's DNSSEC-authenticated TLSA records; DANEUsable
	// says whether any is usable for SMTP.
	TLSA       []string `json:"tlsa,omitempty"`
	DANEUsable bool     `json:"dane_usable"`
	TLSAError  string   `json:"tlsa_error,omitempty"`
	// InPolicy: the host matches the domain's MTA-STS policy.
	InPolicy bool `json:"in_mta_sts_policy"`

	Connected   bool   `json:"connected"`
	StartTLS    bool   `json:"starttls"`
	TLSVersion  string `json:"tls_version,omitempty"`
	CipherSuite string `json:"cipher_suite,omitempty"`
	// CertValid: the certificate verifies to a trusted root for the host
	// name; CertError says why not.
	CertValid   bool      `json:"certificate_valid"`
	CertError   string    `json:"certificate_error,omitempty"`
	CertExpires time.Time `json:"certificate_expires,omitzero"`
	// DANEMatch is the TLSA record the certificate matched; DANEError why
	// none did.
	DANEMatch string `json:"dane_match,omitempty"`
	DANEError string `json:"dane_error,omitempty"`
	Error     string `json:"error,omitempty"`
	// Status is what Direct's default level makes of the host: "protected"
	// (DANE or MTA-STS), "verified" (a valid certificate, nothing more),
	// "refused" (an address that is not global unicast among the
	// reasons), "unreachable", or "not tried" (beyond Direct.MaxAddresses,
	// as delivery would not reach it either). Verdict says the same in
	// plain words, with the reason.
	Status  string `json:"status"`
	Verdict string `json:"verdict"`
}

// Check reports how well mail to domain is protected: MX records and
// whether DNSSEC authenticates them, the MTA-STS record and policy, the
// TLS-RPT addresses, and for each MX host its TLSA records, whether it
// offers STARTTLS, the TLS version, whether its certificate is valid for
// its name and whether it matches its TLSA records. It sends no mail: each
// host gets EHLO, STARTTLS and QUIT. An error is returned only for
// invalid input or a canceled context; what went wrong on the way is in
// the report.
func (t *Direct) Check(ctx context.Context, domain string) (*DomainCheck, error) {
	if err := t.init(); err != nil {
		return nil, err
	}
	if strings.Contains(domain, "@") {
		// "ann@example.org" is an address; checking example.org in its
		// place would answer a question nobody asked.
		return nil, invalid("domain", domain, "an email address, not a domain name: give the part after the @")
	}
	dom, err := domainOf("postmaster@" + domain)
	if err != nil {
		return nil, invalid("domain", domain, "not a domain name")
	}
	dc := &DomainCheck{Domain: dom}
	ds := &domainState{domain: dom}
	ended := func() error {
		return &mailsec.NetworkError{Host: dom, Op: "check", Err: ctx.Err()}
	}

	if err := t.gatherPolicy(ctx, ds); err != nil {
		return nil, err
	}
	if r := ds.sts; r.Policy != nil || r.Err != nil {
		c := &MTASTSCheck{ID: r.ID}
		if r.Policy != nil {
			c.Mode, c.MX, c.MaxAge = string(r.Policy.Mode), r.Policy.MX, r.Policy.MaxAge
		}
		if r.Err != nil {
			c.Error = syntax.PeerText(r.Err.Error())
		}
		dc.MTASTS = c
	}
	if p, err := tlsrpt.LookupPolicy(ctx, t.Resolver, dom); err == nil {
		for _, u := range p.RUA {
			dc.TLSRPT = append(dc.TLSRPT, syntax.PeerText(u.String()))
		}
	} else if !dns.IsNotFound(err) {
		dc.TLSRPTError = syntax.PeerText(err.Error())
	}

	rt, err := t.gatherRoute(ctx, dom)
	switch {
	case errors.Is(err, ErrNullMX):
		dc.NullMX = true
		dc.Verdict = "the domain publishes a null MX: it accepts no mail"
		return dc, nil
	case err != nil:
		dc.MXError = syntax.PeerText(err.Error())
		dc.Verdict = "no route: the MX lookup failed"
		if ctx.Err() != nil {
			return dc, ended()
		}
		return dc, nil
	}
	dc.MX, dc.MXAuthentic, dc.ImplicitMX, dc.MoreMX = rt.hosts, rt.authentic, rt.implicit, rt.beyond
	ds.route = rt
	for _, h := range rt.hosts {
		dc.Hosts = append(dc.Hosts, t.checkHost(ctx, ds, h))
		if ctx.Err() != nil {
			return dc, ended()
		}
	}
	dc.Verdict = domainVerdict(dc)
	return dc, nil
}

func (t *Direct) checkHost(ctx context.Context, ds *domainState, host string) HostCheck {
	hc := HostCheck{Host: host}
	if ds.sts != nil && ds.sts.Policy != nil {
		hc.InPolicy = ds.sts.Policy.Matches(host)
	}
	mx, err := t.gatherHost(ctx, ds, host, true)
	if err != nil {
		hc.Error = syntax.PeerText(err.Error())
		hc.Status, hc.Verdict = "unreachable", "its address lookup failed"
		return hc
	}
	for _, a := range mx.addrs {
		hc.Addrs = append(hc.Addrs, a.String())
	}
	// The addresses Direct would dial: global unicast ones unless
	// AllowPrivate.
	var dialable []netip.Addr
	var refused *mailsec.AddressError
	for _, a := range mx.addrs {
		if r := netguard.Reason(a); r != "" && !t.AllowPrivate {
			if refused == nil {
				refused = &mailsec.AddressError{Host: host, Addr: a.WithZone(""), Reason: r}
			}
			continue
		}
		dialable = append(dialable, a)
	}
	if len(dialable) == 0 && refused != nil {
		hc.Error = refused.Error()
		hc.Status, hc.Verdict = "refused", "its address "+refused.Addr.String()+" is "+refused.Reason+", not a global unicast address: mailsec does not connect to it (Direct.AllowPrivate, -allow-private)"
		return hc
	}
	hc.AddrAuthentic = mx.addrAuthentic
	set := mx.tlsa
	tlsaFailed := mx.tlsaErr != nil
	if tlsaFailed {
		hc.TLSAError = syntax.PeerText(mx.tlsaErr.Error())
	}
	for _, r := range set.records {
		hc.TLSA = append(hc.TLSA, r.String())
	}
	hc.DANEUsable = len(set.usable) > 0

	pol := &tlsPolicy{mode: tlsUnverified, optional: true}
	sni := host
	if len(set.usable) > 0 {
		sni = set.base // as delivery sends it (RFC 7672 §8.1)
	}
	var s *session
	tried := false
	for _, ip := range dialable {
		if ds.dialled >= t.maxAddrs {
			break
		}
		ds.dialled++
		tried = true
		d := &dialConfig{addr: net.JoinHostPort(ip.Unmap().String(), t.port), serverName: sni,
			localName: t.localName, tlsConfig: t.TLSConfig, dialer: t.dialer, timeout: t.timeout}
		s, err = d.dial(ctx, pol, "", nil)
		if err == nil {
			break
		}
		if ge, ok := netguard.As(err); ok {
			err = &mailsec.AddressError{Host: host, Addr: ge.Addr, Reason: ge.Reason}
			refused = err.(*mailsec.AddressError)
		}
		hc.Error = syntax.PeerText(err.Error())
	}
	if !tried {
		hc.Status, hc.Verdict = "not tried", fmt.Sprintf("not probed: Direct tries at most %d addresses per delivery, and the hosts before this one used them up", t.maxAddrs)
		return hc
	}
	if s == nil && refused != nil && errors.Is(err, mailsec.ErrNonGlobalAddress) {
		hc.Status, hc.Verdict = "refused", "the connection led to "+refused.Addr.String()+" ("+refused.Reason+"), not a global unicast address, and was closed"
		return hc
	}
	var se *mailsec.SecurityError
	if s == nil && errors.As(err, &se) {
		// The host answered; TLS is what failed.
		hc.Connected = true
		hc.StartTLS = !errors.Is(se, errNoStartTLS) && !errors.Is(se, errStartTLSRefused) && !errors.Is(se, errInjected)
	}
	if s != nil {
		hc.Error = ""
		hc.Connected = true
		hc.StartTLS = s.peer != nil
		hc.TLSVersion, hc.CipherSuite = s.state.TLSVersion, s.state.CipherSuite
		if len(s.peer) > 0 {
			leaf := s.peer[0]
			hc.CertExpires = leaf.NotAfter
			inter := x509.NewCertPool()
			for _, c := range s.peer[1:] {
				inter.AddCert(c)
			}
			opts := x509.VerifyOptions{DNSName: host, Intermediates: inter, CurrentTime: t.now()}
			if t.TLSConfig != nil {
				opts.Roots = t.TLSConfig.RootCAs
			}
			if _, err := leaf.Verify(opts); err != nil {
				hc.CertError = syntax.PeerText(certReason(err))
			} else {
				hc.CertValid = true
			}
			if len(set.usable) > 0 {
				if m, err := dane.Verify(s.peer, set.usable, set.names(host), t.now()); err != nil {
					hc.DANEError = syntax.PeerText(err.Error())
				} else {
					hc.DANEMatch = m.Record.String()
				}
			}
		}
		s.close(true)
	}
	hc.Status, hc.Verdict = hostVerdict(ds, &hc, tlsaFailed)
	return hc
}

// hostVerdict says what Direct's default level does with a host, and why.
func hostVerdict(ds *domainState, hc *HostCheck, tlsaFailed bool) (status, verdict string) {
	switch {
	case tlsaFailed:
		return "refused", "the zone is DNSSEC-signed but the TLSA lookup failed, which an attack would look like; no connection until it answers"
	case hc.DANEUsable && hc.DANEMatch != "":
		return "protected", "DANE: DNSSEC-authenticated TLSA records match the certificate, so downgrade and MX spoofing are defeated"
	case hc.DANEUsable && hc.Connected && !hc.StartTLS:
		return "refused", "DANE requires TLS and the host does not offer STARTTLS"
	case hc.DANEUsable && hc.Connected:
		return "refused", "the certificate matches none of the host's TLSA records (" + hc.DANEError + ")"
	case ds.enforce && !hc.InPolicy:
		return "refused", "the domain's MTA-STS policy (enforce) does not list this host"
	case !hc.Connected:
		return "unreachable", hc.Error
	case hc.Error != "":
		return "refused", "TLS could not be established: " + hc.Error
	case !hc.StartTLS:
		return "refused", "no STARTTLS: mail would cross the network in the clear"
	case !hc.CertValid:
		return "refused", "the certificate is not valid for " + hc.Host + " (" + hc.CertError + ")"
	case ds.enforce:
		return "protected", "MTA-STS (enforce): TLS with a certificate valid for a host the policy lists"
	}
	return "verified", "TLS with a certificate valid for " + hc.Host + ", but neither DANE nor an MTA-STS policy in enforce mode: mailsec delivers; senders that do not verify can be downgraded, and a spoofed MX record is not detected"
}

func domainVerdict(dc *DomainCheck) string {
	count := map[string]int{}
	for _, h := range dc.Hosts {
		count[h.Status]++
	}
	switch {
	case len(dc.Hosts) > 0 && count["protected"] == len(dc.Hosts):
		return "protected: every MX host is authenticated by DANE or MTA-STS"
	case count["protected"]+count["verified"] == 0:
		return "mailsec's default level delivers to no MX host of this domain"
	case count["protected"] > 0:
		return "partly protected: some MX hosts are authenticated by DANE or MTA-STS"
	}
	return "verified TLS only: senders that do not verify can be downgraded, and DNS is not authenticated"
}
