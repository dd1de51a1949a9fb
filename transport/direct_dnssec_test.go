package transport_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/dnstest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
	"github.com/mailsec/mailsec/transport/tlsrpt"
)

// TestDirectAgainstValidatingResolver runs direct delivery with its
// lookups going to Unbound, validating locally signed zones: the AD bits,
// authenticated denials and SERVFAILs below are real DNSSEC.
func TestDirectAgainstValidatingResolver(t *testing.T) {
	dnstest.Need(t)
	untrusted, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := untrusted.Issue(mailsectest.CertOptions{DNSNames: []string{"mx.dane.test"}})
	if err != nil {
		t.Fatal(err)
	}
	tlsa := func(owner string) string {
		rr, err := dnstest.TLSA(owner, 3, 1, 1, leaf.Leaf)
		if err != nil {
			t.Fatal(err)
		}
		return rr
	}
	wrong := strings.Replace(tlsa("_25._tcp.mx.mismatch.test."), " 3 1 1 ", " 3 1 1 00", 1)
	wrong = wrong[:len(wrong)-2]
	mx := func(domain, ip string) []string {
		return []string{domain + " 300 IN MX 10 mx." + domain, "mx." + domain + " 300 IN A " + ip}
	}
	sts := func(domain, id string) []string {
		d := strings.TrimSuffix(domain, ".")
		return []string{"_mta-sts." + d + ". 300 IN TXT \"v=STSv1; id=" + id + ";\"",
			// The policy host, resolved through the same resolver.
			"mta-sts." + d + ". 300 IN A 127.0.0.1"}
	}
	zone := func(name string, signed bool, recs ...[]string) dnstest.Zone {
		z := dnstest.Zone{Name: name, Signed: signed}
		for _, r := range recs {
			z.Records = append(z.Records, r...)
		}
		return z
	}
	bogus := zone("bogus.test.", true, mx("bogus.test.", "127.0.0.4"), []string{tlsa("_25._tcp.mx.bogus.test.")})
	bogus.Bogus = []string{"_25._tcp.mx.bogus.test. TLSA"}
	srv := dnstest.Start(t,
		zone("dane.test.", true, mx("dane.test.", "127.0.0.2"), []string{tlsa("_25._tcp.mx.dane.test.")}),
		zone("mismatch.test.", true, mx("mismatch.test.", "127.0.0.3"), []string{wrong}),
		bogus,
		zone("insecure.test.", false, mx("insecure.test.", "127.0.0.5"), []string{tlsa("_25._tcp.mx.insecure.test.")}),
		zone("nullmx.test.", true, []string{"nullmx.test. 300 IN MX 0 .", "nullmx.test. 300 IN A 127.0.0.6"}),
		zone("enforce.test.", false, mx("enforce.test.", "127.0.0.7"), sts("enforce.test", "1")),
		zone("stripped.test.", false, mx("stripped.test.", "127.0.0.8"), sts("stripped.test", "1")),
		zone("testing.test.", false, mx("testing.test.", "127.0.0.9"), sts("testing.test", "1")),
		zone("redirect.test.", false, mx("redirect.test.", "127.0.0.10"), sts("redirect.test", "1")),
		zone("signed.test.", true, mx("signed.test.", "127.0.0.11")),
	)
	res := &dns.Client{Servers: []string{srv.Addr}}
	e := newMXEnvWith(t, res, "enforce.test", "stripped.test", "testing.test", "redirect.test")
	e.serve("mx.dane.test", "127.0.0.2", mailsectest.Config{Certificate: &leaf})
	mismatchLeaf, _ := untrusted.Issue(mailsectest.CertOptions{DNSNames: []string{"mx.mismatch.test"}})
	e.serve("mx.mismatch.test", "127.0.0.3", mailsectest.Config{Certificate: &mismatchLeaf})
	e.serve("mx.bogus.test", "127.0.0.4", mailsectest.Config{Certificate: &leaf})
	e.serve("mx.insecure.test", "127.0.0.5", mailsectest.Config{})
	e.serve("nullmx.test", "127.0.0.6", mailsectest.Config{})
	e.serve("mx.enforce.test", "127.0.0.7", mailsectest.Config{})
	e.stsPolicy("enforce.test", "enforce", "mx.elsewhere.test")
	e.serve("mx.stripped.test", "127.0.0.8", mailsectest.Config{WithholdStartTLS: true})
	e.stsPolicy("stripped.test", "enforce", "mx.stripped.test")
	e.serve("mx.testing.test", "127.0.0.9", mailsectest.Config{RequireTLS: true})
	e.stsPolicy("testing.test", "testing", "mx.elsewhere.test")
	e.serve("mx.redirect.test", "127.0.0.10", mailsectest.Config{})
	e.stsPolicy("redirect.test", "enforce", "mx.elsewhere.test")
	e.redirects.Store("redirect.test", true)
	e.serve("mx.signed.test", "127.0.0.11", mailsectest.Config{RequireTLS: true})

	dials := func(ip string) int {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.dials[ip]
	}
	transactions := func(ip string) int {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.servers[ip].Transactions()
	}

	t.Run("DANE-EE match over authenticated DNS", func(t *testing.T) {
		r, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@dane.test"))
		if err != nil {
			t.Fatal(err)
		}
		if r.Connection.Verification != mailsec.VerifiedDANEEE || r.Connection.Policy != "dane" {
			t.Fatalf("connection = %+v", r.Connection)
		}
	})
	t.Run("TLSA mismatch refused", func(t *testing.T) {
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@mismatch.test"))
		if !errors.Is(err, mailsec.ErrCertificate) {
			t.Fatalf("err = %v", err)
		}
		if transactions("127.0.0.3") != 0 {
			t.Fatal("MAIL sent to a host whose certificate matches no TLSA record")
		}
	})
	t.Run("bogus TLSA: temporary, no connection", func(t *testing.T) {
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@bogus.test"))
		if !errors.Is(err, mailsec.ErrDomainPolicy) || !mailsec.IsTemporary(err) {
			t.Fatalf("err = %v", err)
		}
		if dials("127.0.0.4") != 0 {
			t.Fatal("connected although the TLSA answer was bogus")
		}
	})
	t.Run("insecure zone: no DANE", func(t *testing.T) {
		r, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@insecure.test"))
		if err != nil {
			t.Fatal(err)
		}
		if r.Connection.Verification != mailsec.VerifiedWebPKI || r.Connection.TLSA != "" {
			t.Fatalf("connection = %+v", r.Connection)
		}
	})
	t.Run("null MX: permanent, no connection", func(t *testing.T) {
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@nullmx.test"))
		if !errors.Is(err, transport.ErrNullMX) || mailsec.IsTemporary(err) {
			t.Fatalf("err = %v", err)
		}
		if dials("127.0.0.6") != 0 {
			t.Fatal("connected to a null-MX domain")
		}
	})
	t.Run("enforce policy, unlisted MX: refused, no MAIL", func(t *testing.T) {
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@enforce.test"))
		if !errors.Is(err, mailsec.ErrDomainPolicy) {
			t.Fatalf("err = %v", err)
		}
		if transactions("127.0.0.7") != 0 || dials("127.0.0.7") != 0 {
			t.Fatal("reached an MX host the enforce policy does not list")
		}
	})
	t.Run("enforce policy, STARTTLS stripped: refused", func(t *testing.T) {
		_, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@stripped.test"))
		if !errors.Is(err, mailsec.ErrDowngrade) {
			t.Fatalf("err = %v", err)
		}
		if transactions("127.0.0.8") != 0 {
			t.Fatal("MAIL sent without STARTTLS")
		}
	})
	t.Run("testing policy: delivered and reported", func(t *testing.T) {
		before := e.reports.failures(tlsrpt.ValidationFailure)
		r, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@testing.test"))
		if err != nil {
			t.Fatal(err)
		}
		if r.Connection.Policy != "mta-sts-testing" || e.reports.failures(tlsrpt.ValidationFailure) != before+1 {
			t.Fatalf("connection = %+v, reports %+v", r.Connection, e.reports.results())
		}
	})
	t.Run("redirected policy fetch: no policy, reported", func(t *testing.T) {
		before := e.reports.failures(tlsrpt.STSPolicyFetchError)
		r, err := deliverDirect(t, e.direct(), delivery(mailsec.Security{}, "ann@redirect.test"))
		if err != nil {
			t.Fatal(err)
		}
		if r.Connection.Verification != mailsec.VerifiedWebPKI || e.reports.failures(tlsrpt.STSPolicyFetchError) != before+1 {
			t.Fatalf("connection = %+v", r.Connection)
		}
	})
	t.Run("REQUIRETLS with only a testing policy: refused", func(t *testing.T) {
		d := delivery(mailsec.Security{}, "ann@testing.test")
		d.RequireTLS = true
		before := transactions("127.0.0.9")
		_, err := deliverDirect(t, e.direct(), d)
		if !errors.Is(err, mailsec.ErrRequireTLS) || mailsec.IsTemporary(err) {
			t.Fatalf("err = %v", err)
		}
		if transactions("127.0.0.9") != before {
			t.Fatal("MAIL sent")
		}
	})
	t.Run("REQUIRETLS to a DNSSEC-authenticated MX: delivered", func(t *testing.T) {
		d := delivery(mailsec.Security{}, "ann@signed.test")
		d.RequireTLS = true
		if _, err := deliverDirect(t, e.direct(), d); err != nil {
			t.Fatal(err)
		}
		e.mu.Lock()
		msgs := e.servers["127.0.0.11"].Messages()
		e.mu.Unlock()
		if len(msgs) != 1 || !msgs[0].RequireTLS {
			t.Fatalf("messages = %+v", msgs)
		}
	})
	t.Run("check", func(t *testing.T) {
		dc, err := e.direct().Check(t.Context(), "dane.test")
		if err != nil {
			t.Fatal(err)
		}
		if !dc.MXAuthentic || len(dc.Hosts) != 1 || dc.Hosts[0].Status != "protected" || dc.Hosts[0].DANEMatch == "" {
			t.Fatalf("check = %+v", dc)
		}
	})
}
