package outbox_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/internal/postfixtest"
	"github.com/mailsec/mailsec/outbox"
	"github.com/mailsec/mailsec/transport"
)

// Real bounces from a real Postfix: it accepts a message for a mailbox it
// does not have (its virtual(8) agent bounces it: unknown user) and one
// for a domain it relays to a host that does not answer (a delay warning
// after delay_warning_time, then a bounce after maximal_queue_lifetime).
// Postfix mails its notifications to the envelope sender's Maildir; each
// is parsed and ingested, and matched to the outbox message by the ENVID.
func TestPostfixBounces(t *testing.T) {
	t.Parallel()
	pf := postfixtest.Start(t, postfixtest.Config{
		Domain: "example.test", Mailboxes: []string{"bounces", "ann"},
		Users: map[string]string{"app": "app-password"},
		MainCF: []string{
			// Accept unknown mailboxes of the domain at RCPT: virtual(8)
			// bounces them.
			"smtpd_reject_unlisted_recipient = no",
			"smtpd_recipient_restrictions = permit_sasl_authenticated, reject",
			// Relay everything else to a port nobody listens on.
			"default_transport = smtp",
			"relay_transport = smtp",
			"relayhost = [127.0.0.1]:9",
			"delay_warning_time = 1s",
			"maximal_queue_lifetime = 6s",
			"bounce_queue_lifetime = 6s",
			"queue_run_delay = 1s",
			"minimal_backoff_time = 1s",
			"maximal_backoff_time = 2s",
		},
	})
	tr := &transport.Submission{Addr: pf.SubmissionAddr, Mode: transport.StartTLS, ServerName: pf.Hostname,
		TLSConfig: &tls.Config{RootCAs: pf.RootCAs()}, LocalName: "client.test",
		Auth: &transport.Auth{Username: "app", Password: "app-password"}}
	t.Cleanup(func() { tr.Close() })
	ob, _ := openFile(t, newSender(t, tr, nil), fast(nil), true)
	ctx := context.Background()

	enqueue := func(to string) string {
		m := message()
		m.To = []string{to}
		m.EnvelopeFrom = "bounces@example.test"
		m.DSN = &mailsec.DSN{Notify: []mailsec.DSNNotify{mailsec.NotifyFailure, mailsec.NotifyDelay}, Return: mailsec.DSNReturnHeaders}
		id, err := ob.Enqueue(ctx, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	unknown := enqueue("nosuchuser@example.test")
	far := enqueue("far@unreachable.test")
	for _, id := range []string{unknown, far} {
		waitFor(t, ob, id, outbox.Delivered, 30*time.Second)
	}

	// unknown user: failed; unreachable: delayed, then failed.
	raw := pf.Wait(t, "bounces", 3)
	got := map[string][]bounce.Action{}
	for _, msg := range raw {
		rep, err := bounce.Parse(bytes.NewReader(msg))
		if err != nil {
			t.Fatalf("%v\n%s", err, msg)
		}
		res, err := ob.Ingest(ctx, bytes.NewReader(msg))
		if err != nil {
			t.Fatalf("Ingest: %v\n%s", err, msg)
		}
		got[res.ID] = append(got[res.ID], rep.Recipients[0].Action)
		if rep.Recipients[0].Action == bounce.ActionFailed && len(res.Bounced) != 1 {
			t.Errorf("failed report, nobody bounced: %+v", res)
		}
	}
	if a := got[unknown]; len(a) != 1 || a[0] != bounce.ActionFailed {
		t.Errorf("unknown user: %v", a)
	}
	if a := got[far]; len(a) != 2 || a[0] != bounce.ActionDelayed || a[1] != bounce.ActionFailed {
		t.Errorf("unreachable relay: %v", a)
	}

	st := status(t, ob, unknown)
	if st.State != outbox.Failed || st.Recipients[0].State != outbox.Bounced || st.Bounces[0].Status != "5.1.1" ||
		!strings.Contains(st.Recipients[0].Bounce, "5.1.1") {
		t.Errorf("unknown user: %+v", st)
	}
	st = status(t, ob, far)
	if st.State != outbox.Failed || st.Recipients[0].State != outbox.Bounced || len(st.Bounces) != 2 ||
		st.Bounces[0].Action != "delayed" || !strings.HasPrefix(st.Bounces[1].Status, "4.4.") {
		t.Errorf("unreachable relay: %+v", st)
	}
	t.Logf("unknown user: %s", status(t, ob, unknown).Recipients[0].Bounce)
	t.Logf("unreachable relay: %s", st.Recipients[0].Bounce)
}
