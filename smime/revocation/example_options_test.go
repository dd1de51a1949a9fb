package revocation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log"
	"math/big"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime/revocation"
)

// By default a Checker fetches only from global unicast addresses: a
// certificate that names a responder on the local network gets no
// answer, and its status is unknown, never good. Options.AllowPrivate
// lifts the guard (tests, in-house CAs); Options.NoCRL asks OCSP alone.
func ExampleOptions() {
	ca, err := mailsectest.NewCA()
	if err != nil {
		log.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber:   big.NewInt(2),
		Subject:        pkix.Name{CommonName: "Ann"},
		EmailAddresses: []string{"ann@example.org"},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(24 * time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		OCSPServer:     []string{"http://127.0.0.1:9/"},
	}, ca.Certificate, &key.PublicKey, ca.Key)
	if err != nil {
		log.Fatal(err)
	}
	ann, err := x509.ParseCertificate(der)
	if err != nil {
		log.Fatal(err)
	}

	c, err := revocation.New(&revocation.Options{
		Timeout: 5 * time.Second,
		Nonce:   revocation.NonceRequire, // refuse pre-signed answers without our nonce
		NoCRL:   true,
	})
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.Check(context.Background(), ann, ca.Certificate)
	fmt.Println("unknown:", errors.Is(err, revocation.ErrUnavailable))
	fmt.Println("address refused:", errors.Is(err, mailsec.ErrNonGlobalAddress))
	fmt.Println("retry can help:", mailsec.IsTemporary(err))
	// Output:
	// unknown: true
	// address refused: true
	// retry can help: false
}
