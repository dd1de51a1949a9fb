package revocation_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime/revocation"
)

// Check one certificate against its issuer and act on the answer.
func ExampleChecker_Check() {
	ca, _ := mailsectest.NewCA()
	ann, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org", EC: true})

	c, err := revocation.New(&revocation.Options{Timeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	st, err := c.Check(context.Background(), ann.Leaf, ca.Certificate)
	var revoked *revocation.RevokedError
	switch {
	case errors.As(err, &revoked):
		fmt.Println("revoked at", revoked.RevokedAt, "reason", revoked.Reason)
	case err != nil:
		// No responder gave a usable answer; mailsec.IsTemporary says
		// whether asking again later can help.
		fmt.Println("unknown:", err, "retry:", mailsec.IsTemporary(err))
	default:
		fmt.Println(st)
	}
	// Output: revocation not checked: the certificate names no OCSP responder and no CRL distribution point
}
