package outbox_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/internal/postfixtest"
	"github.com/mailsec/mailsec/outbox"
	"github.com/mailsec/mailsec/transport"
)

// A real Postfix that offers no DSN (so the message goes without an
// ENVID, and its bounce comes back without one) bounces a message for an
// unknown user to the delivery's signed VERP return path, which its
// recipient_delimiter routes to the bounces mailbox. The bounce is
// matched by that address alone; the same bounce at another delivery's
// address is refused.
func TestPostfixBounceVERP(t *testing.T) {
	t.Parallel()
	pf := postfixtest.Start(t, postfixtest.Config{
		Domain: "example.test", Mailboxes: []string{"bounces", "ann"},
		Users: map[string]string{"app": "app-password"},
		MainCF: []string{
			"smtpd_reject_unlisted_recipient = no",
			"smtpd_recipient_restrictions = permit_sasl_authenticated, reject",
			"smtpd_discard_ehlo_keywords = dsn",
			"recipient_delimiter = +",
		},
	})
	tr := &transport.Submission{Addr: pf.SubmissionAddr, Mode: transport.StartTLS, ServerName: pf.Hostname,
		TLSConfig: &tls.Config{RootCAs: pf.RootCAs()}, LocalName: "client.test",
		Auth: &transport.Auth{Username: "app", Password: "app-password"}}
	t.Cleanup(func() { tr.Close() })
	v := &bounce.VERP{Local: "bounces", Domain: "example.test", Secret: bytes.Repeat([]byte{5}, 32)}
	ob, _ := openFile(t, newSender(t, tr, &mailsec.Options{ReturnPath: v.ReturnPath}), fast(&outbox.Options{VERP: v}), true)
	ctx := context.Background()

	m := message()
	m.To = []string{"nosuchuser@example.test"}
	m.Bcc = []string{"ann@example.test"}
	id, err := ob.Enqueue(ctx, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, outbox.Delivered, 30*time.Second)
	var nosuch, ann string
	for _, rr := range st.Attempts[0].Receipt.Recipients {
		rp, err := v.ReturnPath(rr.EnvelopeID)
		if err != nil {
			t.Fatal(err)
		}
		if rr.Address == "nosuchuser@example.test" {
			nosuch = rp
		} else {
			ann = rp
		}
	}

	msg := pf.Wait(t, "bounces", 1)[0]
	rep, err := bounce.Parse(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	if rep.EnvelopeID != "" || len(rep.Recipients) != 1 || !rep.Recipients[0].Failed() {
		t.Fatalf("Postfix's bounce: %+v\n%s", rep, msg)
	}
	hdr, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	deliveredTo := hdr.Header.Get("Delivered-To")
	if !strings.EqualFold(deliveredTo, nosuch) {
		t.Fatalf("bounce delivered to %q, the delivery's return path is %q", deliveredTo, nosuch)
	}
	if _, err := ob.Ingest(ctx, bytes.NewReader(msg)); err == nil {
		t.Fatal("a bounce without ENVID matched without its return path")
	}
	if _, err := ob.IngestReturnPath(ctx, bytes.NewReader(msg), ann); err == nil {
		t.Fatal("the bounce matched at the other delivery's return path")
	}
	res, err := ob.IngestReturnPath(ctx, bytes.NewReader(msg), deliveredTo)
	if err != nil || len(res.Bounced) != 1 || res.Bounced[0] != "nosuchuser@example.test" {
		t.Fatalf("%+v, %v", res, err)
	}
	if st := status(t, ob, id); st.State != outbox.PartlyDelivered || st.Recipients[0].State != outbox.Bounced {
		t.Fatalf("%+v", st)
	}
}
