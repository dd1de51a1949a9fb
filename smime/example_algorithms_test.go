package smime_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"log"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

// Every recipient reads mail with an OpenSSL 3 based client: AES-256-GCM
// and RSA-OAEP for all. The Receipt records the content cipher.
func ExampleAlgorithms() {
	ca, _ := mailsectest.NewCA()
	ann, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org"})
	certs, _ := smime.ReadCertificates(bytes.NewReader(mailsectest.LeafPEM(ann)))
	p, err := smime.New(certs, &smime.Options{
		Roots:      ca.Pool(),
		Algorithms: smime.Algorithms{GCM: true, OAEP: true},
	})
	if err != nil {
		log.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s, _ := mailsec.NewSender(rt, &mailsec.Options{
		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{p},
	})
	rec, err := s.Send(context.Background(), &mailsec.Message{
		From: "app@example.com", To: []string{"ann@example.org"}, Subject: "Lab result", Text: "Hello"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rec.Recipients[0].Protection.Cipher)
	fmt.Println(bytes.Contains(rt.Deliveries()[0].Data, []byte("smime-type=authEnveloped-data")))
	// Output:
	// aes256-gcm
	// true
}

// Only some recipients' readers are known to decrypt AES-GCM and RSA-OAEP
// (here a set of addresses the application keeps; it could as well ask
// its database). A message to them alone is AES-256-GCM; one that also
// goes to another recipient is AES-256-CBC for all, with RSA-OAEP still
// for the recipients that take it.
func ExampleReaderAlgorithms() {
	ca, _ := mailsectest.NewCA()
	var pem []byte
	for _, a := range []string{"ann@example.org", "bob@example.org"} {
		c, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: a})
		pem = append(pem, mailsectest.LeafPEM(c)...)
	}
	certs, _ := smime.ReadCertificates(bytes.NewReader(pem))
	modern := map[string]bool{"ann@example.org": true}
	p, err := smime.New(certs, &smime.Options{
		Roots: ca.Pool(),
		Readers: func(_ context.Context, addr string, _ *x509.Certificate) smime.Algorithms {
			return smime.Algorithms{GCM: modern[addr], OAEP: modern[addr]}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	s, _ := mailsec.NewSender(&mailsectest.RecordingTransport{}, &mailsec.Options{
		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{p},
	})
	for _, to := range [][]string{{"ann@example.org"}, {"ann@example.org", "bob@example.org"}} {
		rec, err := s.Send(context.Background(), &mailsec.Message{
			From: "app@example.com", To: to, Subject: "Lab result", Text: "Hello"})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(len(to), rec.Recipients[0].Protection.Cipher)
	}
	// Output:
	// 1 aes256-gcm
	// 2 aes256-cbc
}
