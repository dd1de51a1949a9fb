package smime_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
	"github.com/mailsec/mailsec/smime/revocation"
)

// A Protector that checks recipients' certificates for revocation
// before it encrypts to them. A revoked certificate is refused. One whose
// status cannot be established is refused too: with a temporary error
// when its responder cannot be reached, with a permanent one when it
// names no responder and no CRL, as this test certificate. With
// RevocationSoftFail such a certificate is used, and the Receipt's notes
// say that it was not checked.
func ExampleNew_revocation() {
	ca, _ := mailsectest.NewCA()
	ann, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org"})
	certs, _ := smime.ReadCertificates(bytes.NewReader(mailsectest.LeafPEM(ann)))

	rc, err := revocation.New(nil) // one Checker, shared: it caches answers
	if err != nil {
		log.Fatal(err)
	}
	send := func(soft bool) (*mailsec.Receipt, error) {
		p, err := smime.New(certs, &smime.Options{Roots: ca.Pool(), Revocation: rc, RevocationSoftFail: soft, ExpiryWarning: -1})
		if err != nil {
			log.Fatal(err)
		}
		s, _ := mailsec.NewSender(&mailsectest.RecordingTransport{}, &mailsec.Options{
			Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
			Protectors: []mailsec.Protector{p},
		})
		return s.Send(context.Background(), &mailsec.Message{
			From: "app@example.com", To: []string{"ann@example.org"}, Subject: "Lab result", Text: "Hello"})
	}

	_, err = send(false)
	switch {
	case errors.Is(err, revocation.ErrRevoked):
		fmt.Println("the certificate was revoked: ask the recipient for a new one")
	case errors.Is(err, revocation.ErrUnavailable):
		fmt.Println("revocation status unknown; worth retrying:", mailsec.IsTemporary(err))
	case err != nil:
		log.Fatal(err)
	}

	rec, err := send(true)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rec.Recipients[0].Protection.Notes[0])
	// Output:
	// revocation status unknown; worth retrying: false
	// revocation of certificate not checked: it names no OCSP responder and no CRL distribution point; sent because RevocationSoftFail
}
