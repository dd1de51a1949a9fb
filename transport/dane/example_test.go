package dane_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log"
	"math/big"
	"net"
	"time"

	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/transport/dane"
)

// exampleServerCert makes a self-signed certificate, as many MX hosts
// that publish DANE-EE(3) records use.
func exampleServerCert() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mx.example.org"},
		DNSNames:     []string{"mx.example.org"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		log.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// The record "3 1 1 <SHA-256 of the key>", as a zone would publish it.
func exampleRecord(c *x509.Certificate) dns.TLSA {
	h := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return dns.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: h[:]}
}

func ExampleUsable() {
	sha256Hash := make([]byte, 32)
	sha512Hash := make([]byte, 64)
	rrset := []dns.TLSA{
		{Usage: 1, Selector: 1, MatchingType: 1, Data: sha256Hash}, // PKIX-EE: not for SMTP
		{Usage: 3, Selector: 1, MatchingType: 1, Data: sha512Hash}, // wrong length
		{Usage: 2, Selector: 0, MatchingType: 1, Data: sha256Hash},
		{Usage: 3, Selector: 1, MatchingType: 1, Data: sha256Hash}, // retired by the 3 1 2 record
		{Usage: 3, Selector: 1, MatchingType: 2, Data: sha512Hash},
	}
	for _, r := range dane.Usable(rrset) {
		fmt.Println(r.Usage, r.Selector, r.MatchingType)
	}
	if len(dane.Usable(rrset[:2])) == 0 {
		fmt.Println("first two alone: TLS required, not authenticated")
	}
	// Output:
	// 2 0 1
	// 3 1 2
	// first two alone: TLS required, not authenticated
}

func ExampleVerify() {
	server := exampleServerCert()
	chain := []*x509.Certificate{server.Leaf} // tls.ConnectionState.PeerCertificates
	names := []string{"mx.example.org"}

	m, err := dane.Verify(chain, []dns.TLSA{exampleRecord(server.Leaf)}, names, time.Now())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("authenticated by a record of usage %d (DANE-EE), depth %d\n", m.Record.Usage, m.Depth)

	other := exampleServerCert()
	_, err = dane.Verify(chain, []dns.TLSA{exampleRecord(other.Leaf)}, names, time.Now())
	var de *dane.Error
	if errors.As(err, &de) {
		fmt.Println(de.ResultType(), errors.Is(err, dane.ErrNoMatch))
	}
	// Output:
	// authenticated by a record of usage 3 (DANE-EE), depth 0
	// validation-failure true
}

func ExampleVerifyConnection() {
	server := exampleServerCert()
	recs := dane.Usable([]dns.TLSA{exampleRecord(server.Leaf)})

	// An SMTP server after STARTTLS, here on the other end of a pipe.
	clientConn, serverConn := net.Pipe()
	go func() {
		s := tls.Server(serverConn, &tls.Config{Certificates: []tls.Certificate{server}, SessionTicketsDisabled: true})
		s.Handshake()
		serverConn.Close()
	}()

	var match dane.Match
	cfg := &tls.Config{
		ServerName:         "mx.example.org", // the TLSA base domain
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // DANE replaces the WebPKI
		VerifyConnection: dane.VerifyConnection(recs, []string{"mx.example.org"}, time.Now,
			func(m dane.Match) { match = m }),
	}
	c := tls.Client(clientConn, cfg)
	if err := c.Handshake(); err != nil {
		log.Fatal(err)
	}
	clientConn.Close()
	fmt.Printf("authenticated by TLSA %d %d %d\n", match.Record.Usage, match.Record.Selector, match.Record.MatchingType)
	// Output:
	// authenticated by TLSA 3 1 1
}
