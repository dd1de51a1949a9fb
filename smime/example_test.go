package smime_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

// A Sender that encrypts every message with S/MIME.
func ExampleNew() {
	ca, _ := mailsectest.NewCA()
	ann, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org"})
	certs, err := smime.ReadCertificates(bytes.NewReader(mailsectest.LeafPEM(ann)))
	if err != nil {
		log.Fatal(err)
	}
	p, err := smime.New(certs, &smime.Options{Roots: ca.Pool()})
	if err != nil {
		log.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s, _ := mailsec.NewSender(rt, &mailsec.Options{
		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{p},
	})
	rec, err := s.Send(context.Background(), &mailsec.Message{
		From: "app@example.com", To: []string{"ann@example.org"}, Subject: "Invoice", Text: "Hello"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rec.Recipients[0].Protection.Method, bytes.Contains(rt.Deliveries()[0].Data, []byte("Hello")))
	// Output: smime false
}

// A recipient whose certificate has expired gets nothing.
func ExampleProtector_Protect() {
	ca, _ := mailsectest.NewCA()
	ann, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org", CommonName: "Ann",
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	certs, _ := smime.ReadCertificates(bytes.NewReader(mailsectest.LeafPEM(ann)))
	p, _ := smime.New(certs, &smime.Options{Roots: ca.Pool()})
	_, err := p.Protect(context.Background(), testEntity(), []string{"ann@example.org"})
	var pe *mailsec.ProtectionError
	if errors.As(err, &pe) {
		fmt.Println(errors.Is(err, mailsec.ErrNoKey), pe.KeyID, pe.Reason)
	}
	// Output: true CN=Ann,O=mailsectest expired
}

// Certificates come from a PEM file; a corrupt one is an error.
func ExampleReadCertificates() {
	_, err := smime.ReadCertificates(bytes.NewReader([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")))
	fmt.Println(err != nil)
	// Output: true
}

// Signing needs the sender's certificate chain and RSA key, checked by New.
func ExampleNewSigner() {
	ca, _ := mailsectest.NewCA()
	app, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "app@example.com"})
	signer, err := smime.NewSigner([]*x509.Certificate{app.Leaf, ca.Certificate}, app.PrivateKey.(crypto.Signer))
	if err != nil {
		log.Fatal(err)
	}
	certs, _ := smime.ReadCertificates(bytes.NewReader(mailsectest.LeafPEM(app)))
	_, err = smime.New(certs, &smime.Options{Roots: ca.Pool(), Signer: signer})
	fmt.Println(err)
	// Output: <nil>
}

// Files as the command line reads them.
func ExampleLoadSigner() {
	if _, err := smime.LoadSigner("/nonexistent/cert.pem", "/nonexistent/key.pem"); err != nil {
		fmt.Println("error")
	}
	if _, err := smime.LoadCertificates("/nonexistent/recipients.pem"); err != nil {
		fmt.Println("error")
	}
	if _, err := smime.LoadRoots("/nonexistent/roots.pem"); err != nil {
		fmt.Println("error")
	}
	// Output:
	// error
	// error
	// error
}
