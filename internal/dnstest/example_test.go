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

// A test starts a signed and an unsigned zone and asks the validating
// resolver; Start returns once the resolver validates, and everything is
// stopped when the test ends.
func ExampleStart() {
	var t *testing.T // the test's own *testing.T
	srv := dnstest.Start(t,
		dnstest.Zone{Name: "secure.test.", Signed: true, Records: []string{
			"secure.test. 300 IN MX 10 mx.secure.test.",
			"mx.secure.test. 300 IN A 127.0.0.2",
		}, Bogus: []string{"mx.secure.test. A"}},
		dnstest.Zone{Name: "insecure.test.", Records: []string{
			"insecure.test. 300 IN MX 10 mx.insecure.test.",
		}},
	)
	m := new(dns.Msg)
	m.SetQuestion("secure.test.", dns.TypeMX)
	m.SetEdns0(dns.DefaultMsgSize, true)
	r, err := dns.Exchange(m, srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(dns.RcodeToString[r.Rcode], r.AuthenticatedData) // NOERROR true
}

// Need goes first in a test that needs the servers, so that a machine
// without them skips the test (or fails it in CI) before any set-up.
func ExampleNeed() {
	var t *testing.T // the test's own *testing.T
	dnstest.Need(t)
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
