package mailsectest_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"log"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
	"github.com/mailsec/mailsec/smime"
)

// A test asserts that the patient can read their result: the message the
// server received is decrypted with the patient's key, and its signature
// checked with the lab's.
func ExampleOpenPGP() {
	patient, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	lab, _ := mailsectest.NewPGPKey("Lab", "lab@example.com", mailsectest.PGPKeyOptions{})
	p, _ := pgp.New(pgp.NewKeyRing(patient), &pgp.Options{Signer: lab})

	srv, _ := mailsectest.Start(mailsectest.Config{})
	defer srv.Close()
	t := srv.Transport()
	defer t.Close()
	sender, _ := mailsec.NewSender(t, &mailsec.Options{
		Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	if _, err := sender.Send(context.Background(), &mailsec.Message{
		From: "lab@example.com", To: []string{"ann@example.org"}, Subject: "Your result", Text: "All clear.",
	}); err != nil {
		log.Fatal(err)
	}

	o, err := mailsectest.OpenPGP(srv.Messages()[0].Data, patient, lab)
	if err != nil {
		log.Fatal(err)
	}
	outer, _ := o.Outer.Subject()
	subject, _ := o.Header.Subject()
	text, _ := o.Text()
	fmt.Printf("%s / %s / %q / signed by the lab: %v\n", outer, subject, text, o.Signed && o.SignerKey.PrimaryKey.KeyId == lab.PrimaryKey.KeyId)
	// Output: ... / Your result / "All clear." / signed by the lab: true
}

// The same for S/MIME: the patient's certificate and key decrypt, the
// test CA's root checks the lab's signature.
func ExampleOpenSMIME() {
	ca, _ := mailsectest.NewCA()
	patient, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org"})
	lab, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "lab@example.com"})
	signer, _ := smime.NewSigner([]*x509.Certificate{lab.Leaf}, lab.PrivateKey.(crypto.Signer))
	p, _ := smime.New(smime.NewCertStore(patient.Leaf), &smime.Options{Roots: ca.Pool(), Signer: signer})

	rt := &mailsectest.RecordingTransport{}
	sender, _ := mailsec.NewSender(rt, &mailsec.Options{
		Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	if _, err := sender.Send(context.Background(), &mailsec.Message{
		From: "lab@example.com", To: []string{"ann@example.org"}, Subject: "Your result", Text: "All clear.",
	}); err != nil {
		log.Fatal(err)
	}

	o, err := mailsectest.OpenSMIME(rt.Deliveries()[0].Data, patient, ca.Pool())
	if err != nil {
		log.Fatal(err)
	}
	subject, _ := o.Header.Subject()
	text, _ := o.Text()
	fmt.Printf("%s / %q / signed by %v\n", subject, text, o.SignerCertificate.EmailAddresses)
	// Output: Your result / "All clear." / signed by [lab@example.com]
}
