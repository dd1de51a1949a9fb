package outbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// A bounce from a server that dropped the ENVID is matched by the signed
// VERP return path it was delivered to: the Sender sends each delivery
// with its own, and the outbox reads it back.
func ExampleOutbox_IngestReturnPath() {
	ctx := context.Background()
	srv, err := mailsectest.Start(mailsectest.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	// In production: 32 random bytes from a secret store, the same in
	// every process that sends or reads bounces.
	verp := &bounce.VERP{Local: "bounces", Domain: "example.com", Secret: bytes.Repeat([]byte{7}, 32)}
	sender, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{ReturnPath: verp.ReturnPath})
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ob, err := outbox.Open(ctx, sender, filepath.Join(dir, "mail.db"), &outbox.Options{
		Keys: []outbox.Key{outbox.NewKey()},
		VERP: verp,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer ob.Close(ctx)
	id, err := ob.Enqueue(ctx, &mailsec.Message{
		From: "results@example.com", To: []string{"nobody@example.org"},
		Subject: "Your results are ready", Text: "Log in to see them.",
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := ob.Start(ctx); err != nil {
		log.Fatal(err)
	}
	waitFinished(ctx, ob, id)
	returnPath := srv.Messages()[0].From // bounces+<id>.<mac>@example.com

	// Where bounces arrive (Postfix pipe(8): ${recipient} is returnPath).
	dsn := strings.ReplaceAll(`From: MAILER-DAEMON@relay.example.net
To: `+returnPath+`
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

Your message could not be delivered.
--b
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.net

Final-Recipient: rfc822; nobody@example.org
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 User unknown
--b--
`, "\n", "\r\n")
	res, err := ob.IngestReturnPath(ctx, strings.NewReader(dsn), returnPath)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("matched:", res.ID == id, "bounced:", res.Bounced)

	// The same bounce sent to an address nobody signed changes nothing.
	_, err = ob.IngestReturnPath(ctx, strings.NewReader(dsn), "bounces+"+id+".aaaaaaaaaaaaaaaa@example.com")
	fmt.Println("forged:", errors.Is(err, outbox.ErrUnmatched))
	// Output:
	// matched: true bounced: [nobody@example.org]
	// forged: true
}
