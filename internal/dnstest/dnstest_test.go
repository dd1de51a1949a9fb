package dnstest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailsec/mailsec/internal/dnstest"
)

// query asks addr for name and type with the DO and AD bits set (RFC 6840
// §5.7), over UDP with a TCP retry on truncation. cd sets Checking
// Disabled, which makes a validating resolver return bogus data.
func query(t *testing.T, addr, name string, qtype uint16, cd bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(dns.DefaultMsgSize, true)
	m.AuthenticatedData = true
	m.CheckingDisabled = cd
	c := &dns.Client{Net: "udp", Timeout: 10 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.Exchange(m, addr)
	}
	if err != nil {
		t.Fatalf("%s %s at %s: %v", name, dns.TypeToString[qtype], addr, err)
	}
	return r
}

// expect checks the rcode, the AD bit and the number of answer records of
// the given type.
func expect(t *testing.T, r *dns.Msg, rcode int, ad bool, answers int) {
	t.Helper()
	q := r.Question[0]
	var n int
	for _, rr := range r.Answer {
		if rr.Header().Rrtype == q.Qtype {
			n++
		}
	}
	if r.Rcode != rcode || r.AuthenticatedData != ad || n != answers {
		t.Errorf("%s %s: got %s, AD=%v, %d answers; want %s, AD=%v, %d answers\n%v",
			q.Name, dns.TypeToString[q.Qtype], dns.RcodeToString[r.Rcode], r.AuthenticatedData, n,
			dns.RcodeToString[rcode], ad, answers, r)
	}
}

// newCert makes a self-signed certificate for host.
func newCert(t *testing.T, host string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestValidation(t *testing.T) {
	dnstest.Need(t)
	cert := newCert(t, "mx.secure.test")
	tlsa, err := dnstest.TLSA("_25._tcp.mx.secure.test.", 3, 1, 1, cert)
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	srv := dnstest.Start(t,
		dnstest.Zone{Name: "secure.test.", Signed: true, Records: []string{
			"secure.test. 300 IN MX 10 mx.secure.test.",
			"mx.secure.test. 300 IN A 127.0.0.2",
			tlsa,
			"mx2.secure.test. 300 IN A 127.0.0.3",
			"_25._tcp.mx2.secure.test. 300 IN TLSA 3 1 1 " + strings.Repeat("ab", 32),
			"bad.secure.test. 300 IN A 127.0.0.4",
		}, Bogus: []string{
			"_25._tcp.mx2.secure.test. TLSA",
			"bad.secure.test. A",
		}},
		dnstest.Zone{Name: "insecure.test.", Records: []string{
			"insecure.test. 300 IN MX 10 mx.insecure.test.",
			"mx.insecure.test. 300 IN A 127.0.0.5",
		}},
	)
	t.Logf("Start took %v", time.Since(begin))
	if srv.Addr == srv.AuthAddr {
		t.Fatalf("resolver and authoritative server share %s", srv.Addr)
	}

	t.Run("signed A", func(t *testing.T) {
		r := query(t, srv.Addr, "mx.secure.test.", dns.TypeA, false)
		expect(t, r, dns.RcodeSuccess, true, 1)
		if a, ok := r.Answer[0].(*dns.A); !ok || !a.A.Equal(net.IPv4(127, 0, 0, 2)) {
			t.Errorf("answer %v, want 127.0.0.2", r.Answer[0])
		}
	})
	t.Run("signed MX", func(t *testing.T) {
		expect(t, query(t, srv.Addr, "secure.test.", dns.TypeMX, false), dns.RcodeSuccess, true, 1)
	})
	t.Run("insecure A", func(t *testing.T) {
		r := query(t, srv.Addr, "mx.insecure.test.", dns.TypeA, false)
		expect(t, r, dns.RcodeSuccess, false, 1)
	})
	t.Run("insecure NXDOMAIN", func(t *testing.T) {
		expect(t, query(t, srv.Addr, "nothing.insecure.test.", dns.TypeA, false), dns.RcodeNameError, false, 0)
	})
	t.Run("signed NXDOMAIN", func(t *testing.T) {
		// Authenticated denial of existence (RFC 4035 §5.4).
		r := query(t, srv.Addr, "nothing.secure.test.", dns.TypeA, false)
		expect(t, r, dns.RcodeNameError, true, 0)
	})
	t.Run("signed NODATA", func(t *testing.T) {
		r := query(t, srv.Addr, "mx.secure.test.", dns.TypeAAAA, false)
		expect(t, r, dns.RcodeSuccess, true, 0)
	})
	t.Run("TLSA", func(t *testing.T) {
		r := query(t, srv.Addr, "_25._tcp.mx.secure.test.", dns.TypeTLSA, false)
		expect(t, r, dns.RcodeSuccess, true, 1)
		rec, ok := r.Answer[0].(*dns.TLSA)
		if !ok {
			t.Fatalf("answer %v is not TLSA", r.Answer[0])
		}
		if rec.Usage != 3 || rec.Selector != 1 || rec.MatchingType != 1 {
			t.Errorf("TLSA %v, want 3 1 1", rec)
		}
		if err := rec.Verify(cert); err != nil {
			t.Errorf("served TLSA does not match the certificate: %v", err)
		}
	})
	t.Run("bogus", func(t *testing.T) {
		for _, q := range []struct {
			name  string
			qtype uint16
		}{
			{"_25._tcp.mx2.secure.test.", dns.TypeTLSA},
			{"bad.secure.test.", dns.TypeA},
		} {
			expect(t, query(t, srv.Addr, q.name, q.qtype, false), dns.RcodeServerFailure, false, 0)
			// The data is there and signed: with Checking Disabled
			// (RFC 4035 §3.2.2) the resolver hands it over, without
			// AD; so SERVFAIL came from validation.
			r := query(t, srv.Addr, q.name, q.qtype, true)
			expect(t, r, dns.RcodeSuccess, false, 1)
			if !hasRRSIG(r, q.qtype) {
				t.Errorf("%s: no RRSIG with checking disabled\n%v", q.name, r)
			}
		}
		// The rest of the zone, even the same name, still validates.
		expect(t, query(t, srv.Addr, "mx2.secure.test.", dns.TypeA, false), dns.RcodeSuccess, true, 1)
		expect(t, query(t, srv.Addr, "mx.secure.test.", dns.TypeA, false), dns.RcodeSuccess, true, 1)
		expect(t, query(t, srv.Addr, "secure.test.", dns.TypeMX, false), dns.RcodeSuccess, true, 1)
	})
	t.Run("authoritative", func(t *testing.T) {
		r := query(t, srv.AuthAddr, "mx.secure.test.", dns.TypeA, false)
		if !r.Authoritative || r.AuthenticatedData {
			t.Errorf("AA=%v AD=%v from the authoritative server, want AA only", r.Authoritative, r.AuthenticatedData)
		}
		expect(t, r, dns.RcodeSuccess, false, 1)
		if !hasRRSIG(r, dns.TypeA) {
			t.Errorf("no RRSIG from the authoritative server\n%v", r)
		}
		// The secure delegation: the parent publishes the DS record.
		expect(t, query(t, srv.Addr, "secure.test.", dns.TypeDS, false), dns.RcodeSuccess, true, 1)
		// The insecure delegation: its absence is proven.
		expect(t, query(t, srv.Addr, "insecure.test.", dns.TypeDS, false), dns.RcodeSuccess, true, 0)
	})
}

func hasRRSIG(r *dns.Msg, covered uint16) bool {
	for _, rr := range r.Answer {
		if sig, ok := rr.(*dns.RRSIG); ok && sig.TypeCovered == covered {
			return true
		}
	}
	return false
}

// TestIndependent starts two servers in one test, with different data
// for the same name: each answers with its own.
func TestIndependent(t *testing.T) {
	dnstest.Need(t)
	zone := func(addr string) dnstest.Zone {
		return dnstest.Zone{Name: "secure.test.", Signed: true, Records: []string{"mx.secure.test. 300 IN A " + addr}}
	}
	a := dnstest.Start(t, zone("127.0.0.10"))
	b := dnstest.Start(t, zone("127.0.0.20"))
	ports := map[string]bool{a.Addr: true, a.AuthAddr: true, b.Addr: true, b.AuthAddr: true}
	if len(ports) != 4 {
		t.Fatalf("servers share ports: %+v %+v", a, b)
	}
	for srv, want := range map[*dnstest.Server]string{a: "127.0.0.10", b: "127.0.0.20"} {
		r := query(t, srv.Addr, "mx.secure.test.", dns.TypeA, false)
		expect(t, r, dns.RcodeSuccess, true, 1)
		if got := r.Answer[0].(*dns.A).A.String(); got != want {
			t.Errorf("%s answered %s, want %s", srv.Addr, got, want)
		}
	}
}

// TestStopped checks that the servers are gone when the test that
// started them ends.
func TestStopped(t *testing.T) {
	dnstest.Need(t)
	var srv *dnstest.Server
	t.Run("start", func(t *testing.T) {
		srv = dnstest.Start(t)
		expect(t, query(t, srv.Addr, "test.", dns.TypeSOA, false), dns.RcodeSuccess, true, 1)
	})
	for _, addr := range []string{srv.Addr, srv.AuthAddr} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("%s is still in use after the test ended: %v", addr, err)
			continue
		}
		l.Close()
	}
}

func TestTLSA(t *testing.T) {
	cert := newCert(t, "mx.secure.test")
	for _, c := range [][3]uint8{{3, 1, 1}, {3, 0, 1}, {2, 0, 2}, {3, 1, 0}, {1, 0, 0}} {
		line, err := dnstest.TLSA("_25._tcp.MX.secure.test", c[0], c[1], c[2], cert)
		if err != nil {
			t.Fatal(err)
		}
		rr, err := dns.NewRR(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		rec := rr.(*dns.TLSA)
		if rec.Hdr.Name != "_25._tcp.mx.secure.test." || rec.Usage != c[0] || rec.Selector != c[1] || rec.MatchingType != c[2] {
			t.Errorf("%v: got %q", c, line)
		}
		if err := rec.Verify(cert); err != nil {
			t.Errorf("%q does not match the certificate: %v", line, err)
		}
		if err := rec.Verify(newCert(t, "mx.secure.test")); err == nil {
			t.Errorf("%q matches another certificate", line)
		}
	}
	for _, c := range [][3]uint8{{4, 1, 1}, {3, 2, 1}, {3, 1, 3}} {
		if line, err := dnstest.TLSA("_25._tcp.mx.secure.test.", c[0], c[1], c[2], cert); err == nil {
			t.Errorf("%v accepted: %q", c, line)
		}
	}
	if _, err := dnstest.TLSA("_25._tcp.mx.secure.test.", 3, 1, 1, nil); err == nil {
		t.Error("nil certificate accepted")
	}
	if _, err := dnstest.TLSA("bad name;", 3, 1, 1, cert); err == nil {
		t.Error("bad owner accepted")
	}
}
