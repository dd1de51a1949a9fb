package outbox_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// A message is sent with the outbox's own ENVID (whatever the message
// asked for), and a "failed" notification carrying it back turns an
// accepted recipient into a bounced one; a "delayed" one is only
// recorded; one with a forged or unknown ENVID changes nothing.
func TestIngestNotification(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), true)
	ctx := context.Background()
	m := message()
	m.Cc = []string{"bob@example.org"}
	m.DSN = &mailsec.DSN{EnvelopeID: "app-chosen", Notify: []mailsec.DSNNotify{mailsec.NotifyFailure, mailsec.NotifyDelay}}
	id, err := ob.Enqueue(ctx, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	base := st.EnvelopeID
	if !strings.HasPrefix(base, id+".") || len(base) < len(id)+20 {
		t.Fatalf("Status.EnvelopeID %q for message %s", base, id)
	}
	// The delivery's ENVID: the message's, a dot and a random part.
	sent := srv.Messages()[0]
	envid := sent.EnvelopeID
	if !strings.HasPrefix(envid, base+".") || st.Attempts[0].Receipt.EnvelopeID != base ||
		st.Attempts[0].Receipt.Recipients[0].EnvelopeID != envid {
		t.Fatalf("ENVID sent %q, Receipt %+v, Status %q", envid, st.Attempts[0].Receipt, base)
	}
	if strings.Join(sent.Notify["bob@example.org"], ",") != "FAILURE,DELAY" {
		t.Fatalf("the message's NOTIFY was lost: %v", sent.Notify)
	}

	// Not the outbox's, or forged: the ID alone is not enough.
	for _, bad := range []*outbox.Notification{
		nil,
		{},
		{EnvelopeID: "app-chosen"},
		{EnvelopeID: id},
		{EnvelopeID: id + ".aaaaaaaaaaaaaaaaaaaa"},
		{EnvelopeID: base},
		{EnvelopeID: base + ".aaaaaaaaaaaaaaaa"},
		{EnvelopeID: envid + "x"},
		{EnvelopeID: "nosuchid.aaaaaaaaaaaaaaaaaaaa"},
		{EnvelopeID: envid, Recipients: []outbox.NotificationRecipient{{FinalRecipient: "rfc822;eve@example.org", Action: "failed"}}},
	} {
		rcpts := []outbox.NotificationRecipient{{FinalRecipient: "rfc822;ann@example.org", Action: "failed", Status: "5.1.1"}}
		if bad != nil && bad.Recipients == nil {
			bad.Recipients = rcpts
		}
		res, err := ob.IngestNotification(ctx, bad)
		var ie *outbox.IngestError
		if !errors.Is(err, outbox.ErrUnmatched) || !errors.As(err, &ie) || ie.Temporary() || mailsec.IsTemporary(err) || res != nil {
			t.Fatalf("%+v: %+v, %v", bad, res, err)
		}
	}
	if st := status(t, ob, id); st.State != outbox.Delivered || len(st.Bounces) != 0 || st.Recipients[0].State != outbox.Accepted {
		t.Fatalf("an unmatched notification changed the message: %+v", st)
	}

	// Delayed: recorded, nothing else.
	res, err := ob.IngestNotification(ctx, &outbox.Notification{EnvelopeID: envid, Recipients: []outbox.NotificationRecipient{
		{OriginalRecipient: "rfc822;bob@example.org", FinalRecipient: "rfc822;robert@example.net", Action: "delayed", Status: "4.4.1",
			Diagnostic: "connect to mx.example.net: Connection refused\r\nX-Injected: 1"},
	}})
	if err != nil || len(res.Bounced) != 0 || len(res.Recorded) != 1 || res.Recorded[0] != "bob@example.org" || res.ID != id {
		t.Fatalf("delayed: %+v, %v", res, err)
	}
	st = status(t, ob, id)
	if st.State != outbox.Delivered || st.Recipients[1].State != outbox.Accepted || len(st.Bounces) != 1 ||
		st.Bounces[0].Action != "delayed" || strings.ContainsAny(st.Bounces[0].Diagnostic, "\r\n") {
		t.Fatalf("after a delayed notification: %+v", st)
	}

	// Failed, for Ann (named by her Final-Recipient, in another case).
	res, err = ob.IngestNotification(ctx, &outbox.Notification{EnvelopeID: envid, Recipients: []outbox.NotificationRecipient{
		{FinalRecipient: "rfc822; ANN@example.org", Action: "Failed", Status: "5.1.1", RemoteMTA: "dns; mx.example.org",
			Diagnostic: "smtp; 550 5.1.1 <ann@example.org>: User unknown"},
	}})
	if err != nil || len(res.Bounced) != 1 || res.Bounced[0] != "ann@example.org" {
		t.Fatalf("failed: %+v, %v", res, err)
	}
	st = status(t, ob, id)
	ann := st.Recipients[0]
	if st.State != outbox.PartlyDelivered || ann.State != outbox.Bounced || !strings.Contains(ann.Bounce, "5.1.1") ||
		!strings.Contains(ann.Bounce, "User unknown") || st.Recipients[1].State != outbox.Accepted || len(st.Bounces) != 2 {
		t.Fatalf("after a failed notification: %+v", st)
	}
	// Bob fails too: no one is left.
	if _, err := ob.IngestNotification(ctx, &outbox.Notification{EnvelopeID: envid, Recipients: []outbox.NotificationRecipient{
		{OriginalRecipient: "bob@example.org", Action: "failed", Status: "5.2.2"},
	}}); err != nil {
		t.Fatal(err)
	}
	if st := status(t, ob, id); st.State != outbox.Failed || st.Recipients[1].State != outbox.Bounced {
		t.Fatalf("after both bounced: %+v", st)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d messages sent", n)
	}
}

// A message whose attempt is under way is left alone, and the error says
// to try again later.
func TestIngestBusy(t *testing.T) {
	block := make(chan struct{})
	tr := &blockingTransport{block: block, started: make(chan struct{}, 1)}
	ob, _ := openFile(t, newSender(t, tr, nil), fast(nil), true)
	ctx := context.Background()
	id, err := ob.Enqueue(ctx, message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	<-tr.started
	st := status(t, ob, id)
	_, err = ob.IngestNotification(ctx, &outbox.Notification{EnvelopeID: st.EnvelopeID + ".aaaaaaaaaaaaaaaa", Recipients: []outbox.NotificationRecipient{
		{FinalRecipient: "ann@example.org", Action: "failed"}}})
	if !errors.Is(err, outbox.ErrBusy) || !mailsec.IsTemporary(err) {
		t.Fatalf("error %v", err)
	}
	close(block)
	if st := waitFor(t, ob, id, outbox.Delivered, 20*time.Second); st.Recipients[0].State != outbox.Accepted {
		t.Fatalf("%+v", st)
	}
}

type blockingTransport struct {
	block   chan struct{}
	started chan struct{}
}

func (b *blockingTransport) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	select {
	case b.started <- struct{}{}:
	default:
	}
	select {
	case <-b.block:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &mailsec.DeliveryResult{Recipients: []mailsec.RecipientResult{{Address: d.To[0], Accepted: true}}}, nil
}

func status(t *testing.T, ob *outbox.Outbox, id string) *outbox.Status {
	t.Helper()
	st, err := ob.Status(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Ingest reads a bounce message as Postfix writes it; a message that is
// not a notification is unmatched, not an error to retry.
func TestIngestMessage(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), true)
	ctx := context.Background()
	m := message()
	m.To = []string{"nobody@example.org"}
	id, err := ob.Enqueue(ctx, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	envid := waitFor(t, ob, id, outbox.Delivered, 20*time.Second).Attempts[0].Receipt.Recipients[0].EnvelopeID
	raw, err := os.ReadFile("../bounce/testdata/postfix-failed.eml")
	if err != nil {
		t.Fatal(err)
	}
	forged := string(raw)
	if _, err := ob.Ingest(ctx, strings.NewReader(forged)); !errors.Is(err, outbox.ErrUnmatched) || mailsec.IsTemporary(err) {
		t.Fatalf("a bounce with another ENVID: %v", err)
	}
	if _, err := ob.Ingest(ctx, strings.NewReader("Subject: out of office\r\n\r\nBack on Monday.\r\n")); !errors.Is(err, outbox.ErrUnmatched) || mailsec.IsTemporary(err) {
		t.Fatalf("an auto-reply: %v", err)
	}
	res, err := ob.Ingest(ctx, strings.NewReader(strings.Replace(forged, "Original-Envelope-Id: ms-7f3a9c2e41", "Original-Envelope-Id: "+envid, 1)))
	if err != nil || len(res.Bounced) != 1 || res.Bounced[0] != "nobody@example.org" {
		t.Fatalf("%+v, %v", res, err)
	}
	st := status(t, ob, id)
	if st.State != outbox.Failed || st.Recipients[0].State != outbox.Bounced || st.Bounces[0].Status != "5.1.1" {
		t.Fatalf("%+v", st)
	}
}

// Each delivery of a message has its own ENVID, and a notification
// speaks only for the recipients of the delivery whose ENVID it carries:
// a recipient whose own server learns its delivery's ENVID cannot use it
// to bounce another recipient of the message.
func TestIngestForgedByAnotherDelivery(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), true)
	ctx := context.Background()
	m := message()
	m.Bcc = []string{"mallory@example.net"} // a delivery of its own
	id, err := ob.Enqueue(ctx, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	sent := srv.Messages()
	if len(sent) != 2 || sent[0].EnvelopeID == sent[1].EnvelopeID {
		t.Fatalf("deliveries: %+v", sent)
	}
	var mallorys string
	for _, g := range sent {
		if len(g.To) == 1 && g.To[0] == "mallory@example.net" {
			mallorys = g.EnvelopeID
		}
	}
	if mallorys == "" {
		t.Fatalf("no delivery to mallory: %+v", sent)
	}

	// Mallory's server reports that Ann's delivery failed.
	ann := outbox.NotificationRecipient{OriginalRecipient: "rfc822;ann@example.org", FinalRecipient: "rfc822;ann@example.org",
		Action: "failed", Status: "5.1.1"}
	res, err := ob.IngestNotification(ctx, &outbox.Notification{EnvelopeID: mallorys, Recipients: []outbox.NotificationRecipient{ann}})
	if !errors.Is(err, outbox.ErrUnmatched) || mailsec.IsTemporary(err) || res != nil {
		t.Fatalf("forged for Ann with Mallory's ENVID: %+v, %v", res, err)
	}
	// Beside a report on Mallory herself, the one on Ann is ignored.
	self := outbox.NotificationRecipient{FinalRecipient: "rfc822;mallory@example.net", Action: "failed", Status: "5.2.2"}
	res, err = ob.IngestNotification(ctx, &outbox.Notification{EnvelopeID: mallorys, Recipients: []outbox.NotificationRecipient{ann, self}})
	if err != nil || len(res.Recorded) != 1 || res.Recorded[0] != "mallory@example.net" {
		t.Fatalf("Mallory's own report beside a forged one: %+v, %v", res, err)
	}
	st := status(t, ob, id)
	if st.Recipients[0].Address != "ann@example.org" || st.Recipients[0].State != outbox.Accepted || len(st.Bounces) != 1 ||
		st.Bounces[0].Recipient != "mallory@example.net" {
		t.Fatalf("after the forged reports: %+v", st)
	}
	// Ann's own delivery's ENVID bounces her.
	annEnvid := st.Attempts[0].Receipt.Recipients[0].EnvelopeID
	if annEnvid == mallorys || !strings.HasPrefix(annEnvid, st.EnvelopeID+".") {
		t.Fatalf("Ann's ENVID %q, Mallory's %q", annEnvid, mallorys)
	}
	if res, err := ob.IngestNotification(ctx, &outbox.Notification{EnvelopeID: annEnvid, Recipients: []outbox.NotificationRecipient{ann}}); err != nil || len(res.Bounced) != 1 {
		t.Fatalf("Ann's own bounce: %+v, %v", res, err)
	}
}
