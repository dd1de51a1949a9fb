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
// before it encrypts to them. A revoked certificate is refused; one whose
// responder cannot be reached is refused with a temporary error (set
// RevocationSoftFail to send anyway, noted in the Receipt). The
// Receipt's notes say what was established; this test certificate names
// no responder.
func ExampleNew_revocation() {
	ca, _ := mailsectest.NewCA()
	ann, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org"})
	certs, _ := smime.ReadCertificates(bytes.NewReader(mailsectest.LeafPEM(ann)))

	rc, err := revocation.New(nil) // one Checker, shared: it caches answers
	if err != nil {
		log.Fatal(err)
	}
	p, err := smime.New(certs, &smime.Options{Roots: ca.Pool(), Revocation: rc, ExpiryWarning: -1})
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
	switch {
	case errors.Is(err, revocation.ErrRevoked):
		log.Fatal("the certificate was revoked: ask the recipient for a new one")
	case errors.Is(err, revocation.ErrUnavailable):
		log.Fatal("revocation status unknown: retry later")
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println(rec.Recipients[0].Protection.Notes[0])
	// Output: revocation not checked: the certificate names no OCSP responder and no HTTP CRL distribution point
}
