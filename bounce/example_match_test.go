package bounce_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/mailsectest"
)

// relayDSN writes the delivery status notification a relay would send about
// rcpt; envid is its Original-Envelope-Id, none when empty.
func relayDSN(envid, rcpt string) string {
	var envidField string
	if envid != "" {
		envidField = "Original-Envelope-Id: " + envid + "\r\n"
	}
	return "From: MAILER-DAEMON@relay.example.net\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n" +
		"--b\r\nContent-Type: message/delivery-status\r\n\r\n" +
		"Reporting-MTA: dns; relay.example.net\r\n" + envidField + "\r\n" +
		"Final-Recipient: rfc822; " + rcpt + "\r\nAction: failed\r\nStatus: 5.1.1\r\n" +
		"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n--b--\r\n"
}

// A report counts only for the recipients of the delivery whose ENVID it
// carries: a server that received one delivery cannot report on the
// recipients of another.
func ExampleReport_For() {
	// A transport that delivers to each domain's MX hosts, as
	// transport.Direct does: each domain gets a delivery, and an ENVID,
	// of its own. (Through a smarthost, one transaction, ann and bob
	// would share one.)
	rt := &mailsectest.RecordingTransport{PerDomain: true}
	s, err := mailsec.NewSender(rt, nil)
	if err != nil {
		log.Fatal(err)
	}
	rec, err := s.Send(context.Background(), &mailsec.Message{From: "app@example.com",
		To: []string{"ann@example.org", "bob@example.net"}, Subject: "Receipt", Text: "Thank you."})
	if err != nil {
		log.Fatal(err)
	}
	annENVID := rec.Recipients[0].EnvelopeID // the ENVID of ann's delivery

	for _, about := range []string{"ann@example.org", "bob@example.net"} {
		rep, err := bounce.Parse(strings.NewReader(relayDSN(annENVID, about)))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("a report on %s under ann's ENVID: %d match(es)\n", about, len(rep.For(rec)))
	}
	// Output:
	// a report on ann@example.org under ann's ENVID: 1 match(es)
	// a report on bob@example.net under ann's ENVID: 0 match(es)
}

// A bounce without an ENVID is matched by the signed VERP return path it
// was delivered to; it speaks for the one recipient of that delivery.
func ExampleReport_ForReturnPath() {
	srv, err := mailsectest.Start(mailsectest.Config{DSN: true})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	v := &bounce.VERP{Local: "bounces", Domain: "example.com", Secret: bytes.Repeat([]byte{7}, 32)}
	s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{ReturnPath: v.ReturnPath})
	if err != nil {
		log.Fatal(err)
	}
	rec, err := s.Send(context.Background(), &mailsec.Message{From: "app@example.com",
		To: []string{"ann@example.org"}, Cc: []string{"bob@example.org"}, Subject: "Receipt", Text: "Thank you."})
	if err != nil {
		log.Fatal(err)
	}
	paths := map[string]string{} // recipient: the return path of her delivery
	for _, m := range srv.Messages() {
		paths[m.To[0]] = m.From
	}

	rep, err := bounce.Parse(strings.NewReader(relayDSN("", "bob@example.org")))
	if err != nil {
		log.Fatal(err)
	}
	own, err := rep.ForReturnPath(v, paths["bob@example.org"], rec)
	fmt.Println("to bob's return path:", len(own), err)
	// Ann reads her copy's Return-Path and mails a report about bob to it.
	other, err := rep.ForReturnPath(v, paths["ann@example.org"], rec)
	fmt.Println("to ann's return path:", len(other), err)
	// Output:
	// to bob's return path: 1 <nil>
	// to ann's return path: 0 <nil>
}
