package dnstest_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailsec/mailsec/internal/dnstest"
)

// Start and Need have no Example functions: an example gets no
// testing.TB, which both need and which only the testing package can make,
// and an example cannot skip, so one that needs Unbound, NSD and ldns
// would fail on every machine without them, where the tests skip. The
// test below runs what the package documentation shows for them, with
// the checks an Output comment would make.

// TestStartAsDocumented starts a signed and an unsigned zone and asks the
// validating resolver, as the package documentation shows: the signed
// zone's answer is authenticated, its bogus RRset fails, the unsigned
// zone's answer is not authenticated.
func TestStartAsDocumented(t *testing.T) {
	dnstest.Need(t)
	srv := dnstest.Start(t,
		dnstest.Zone{Name: "secure.test.", Signed: true, Records: []string{
			"secure.test. 300 IN MX 10 mx.secure.test.",
			"mx.secure.test. 300 IN A 127.0.0.2",
		}, Bogus: []string{"mx.secure.test. A"}},
		dnstest.Zone{Name: "insecure.test.", Records: []string{
			"insecure.test. 300 IN MX 10 mx.insecure.test.",
		}},
	)
	ask := func(name string, qtype uint16) string {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.SetEdns0(dns.DefaultMsgSize, true)
		r, err := dns.Exchange(m, srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(dns.RcodeToString[r.Rcode], " ", r.AuthenticatedData, " ", len(r.Answer) > 0)
	}
	for _, c := range []struct {
		name  string
		qtype uint16
		want  string
	}{
		{"secure.test.", dns.TypeMX, "NOERROR true true"},
		{"mx.secure.test.", dns.TypeA, "SERVFAIL false false"},
		{"insecure.test.", dns.TypeMX, "NOERROR false true"},
	} {
		if got := ask(c.name, c.qtype); got != c.want {
			t.Errorf("%s %s: %s, want %s", c.name, dns.TypeToString[c.qtype], got, c.want)
		}
	}
}

// TLSA gives the record that pins a test server's certificate, here the
// DANE-EE SPKI SHA-256 form for an SMTP server at mx.secure.test.
func ExampleTLSA() {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		DNSNames:     []string{"mx.secure.test"},
		NotBefore:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	rec, err := dnstest.TLSA("_25._tcp.mx.secure.test.", 3, 1, 1, cert)
	if err != nil {
		panic(err)
	}
	fmt.Println(rec)
	// Output:
	// _25._tcp.mx.secure.test. 300 IN TLSA 3 1 1 339e2ff917630507b6a423b5ce084e285d1fa65d93b3e27a6195d3bbebc9ae23
}
