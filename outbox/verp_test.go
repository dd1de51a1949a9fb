package outbox_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

func verpForTest(secret byte) *bounce.VERP {
	return &bounce.VERP{Local: "bounces", Domain: "example.com", Secret: bytes.Repeat([]byte{secret}, 32)}
}

// deliverWithVERP queues m in an outbox whose Sender signs a VERP return
// path per delivery, waits until it is delivered to an in-process server
// offering DSN, and returns the outbox, the message's ID and
// the MAIL FROM each recipient's transaction had; a transaction for more
// than one recipient fails the test (a return path speaks for one).
func deliverWithVERP(t *testing.T, m *mailsec.Message) (*outbox.Outbox, string, map[string]string) {
	t.Helper()
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	v := verpForTest(3)
	ob, _ := openFile(t, newSender(t, srv.Transport(), &mailsec.Options{ReturnPath: v.ReturnPath}), fast(&outbox.Options{VERP: v}), true)
	id, err := ob.Enqueue(context.Background(), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	from := map[string]string{}
	for _, g := range srv.Messages() {
		if len(g.To) != 1 {
			t.Fatalf("a transaction for %v, want one per recipient", g.To)
		}
		from[g.To[0]] = g.From
	}
	return ob, id, from
}

// With a signed VERP return path per delivery, a bounce that carries no
// ENVID (its server ignored DSN) is matched by the address it was
// delivered to; a made-up or altered path, or another delivery's, is
// refused and changes nothing.
func TestIngestReturnPath(t *testing.T) {
	m := message()
	m.To = []string{"nobody@example.org"}
	m.Bcc = []string{"mallory@example.net"}
	ob, id, from := deliverWithVERP(t, m)
	ctx := context.Background()
	nobody, mallory := from["nobody@example.org"], from["mallory@example.net"]
	if !strings.HasPrefix(nobody, "bounces+"+id+".") || !strings.HasPrefix(mallory, "bounces+"+id+".") || nobody == mallory {
		t.Fatalf("MAIL FROM %v", from)
	}

	raw, err := os.ReadFile("../bounce/testdata/postfix-failed.eml")
	if err != nil {
		t.Fatal(err)
	}
	noEnvid := strings.Replace(string(raw), "Original-Envelope-Id: ms-7f3a9c2e41\n", "", 1)
	if noEnvid == string(raw) {
		t.Fatal("the test bounce has no Original-Envelope-Id line to remove")
	}
	other, _ := verpForTest(4).ReturnPath(status(t, ob, id).Attempts[0].Receipt.Recipients[0].EnvelopeID)
	at := strings.IndexByte(nobody, '@')
	last := "a"
	if nobody[at-1] == 'a' {
		last = "b"
	}
	altered := nobody[:at-1] + last + nobody[at:]
	for name, path := range map[string]string{
		"another delivery's": mallory, "another secret's": other, "altered": altered,
		"untagged": "bounces@example.com", "another message's": strings.Replace(nobody, id, "aaaaaaaaaaaaaaaaaaaaaaaaaa", 1),
	} {
		res, err := ob.IngestReturnPath(ctx, strings.NewReader(noEnvid), path)
		if !errors.Is(err, outbox.ErrUnmatched) || mailsec.IsTemporary(err) || res != nil {
			t.Fatalf("%s return path %q: %+v, %v", name, path, res, err)
		}
	}
	if s := status(t, ob, id); s.State != outbox.Delivered || len(s.Bounces) != 0 {
		t.Fatalf("a refused bounce changed the message: %+v", s)
	}

	res, err := ob.IngestReturnPath(ctx, strings.NewReader(noEnvid), strings.ToUpper(nobody))
	if err != nil || len(res.Bounced) != 1 || res.Bounced[0] != "nobody@example.org" {
		t.Fatalf("the real bounce: %+v, %v", res, err)
	}
	// With an ENVID too, it must be the same delivery's.
	if _, err := ob.IngestReturnPath(ctx, strings.NewReader(strings.Replace(string(raw), "ms-7f3a9c2e41",
		status(t, ob, id).Attempts[0].Receipt.Recipients[1].EnvelopeID, 1)), nobody); !errors.Is(err, outbox.ErrUnmatched) {
		t.Fatalf("the return path of one delivery with the ENVID of another: %v", err)
	}
}

// Options.VERP is checked at Open; a return path without it is a
// configuration error.
func TestVERPOptions(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	sender := newSender(t, srv.Transport(), nil)
	bad := verpForTest(3)
	bad.Secret = bad.Secret[:16]
	_, err := outbox.Open(context.Background(), sender, filepath.Join(t.TempDir(), "mail.db"), fast(&outbox.Options{VERP: bad}))
	var ce *mailsec.ConfigError
	if !errors.As(err, &ce) || ce.Field != "bounce.VERP.Secret" {
		t.Fatalf("a short secret: %v", err)
	}
	ob, _ := openFile(t, sender, fast(nil), false)
	if _, err := ob.IngestNotification(context.Background(), &outbox.Notification{ReturnPath: "bounces+x.y@example.com"}); !errors.As(err, &ce) {
		t.Fatalf("a return path without Options.VERP: %v", err)
	}
}

// A recipient reads the return path of her copy (its Return-Path field)
// and mails a bounce without an ENVID about a co-recipient (To and Cc of
// one domain, through one smarthost) to it: each recipient has a
// delivery and a return path of its own, so the report about the other
// one matches nothing and changes nothing; bounced to the other's own
// return path, it is that recipient's.
func TestIngestReturnPathCoRecipient(t *testing.T) {
	m := message()
	m.To = []string{"mallory@example.org"}
	m.Cc = []string{"nobody@example.org"}
	ob, id, from := deliverWithVERP(t, m)
	ctx := context.Background()
	if len(from) != 2 || from["mallory@example.org"] == from["nobody@example.org"] {
		t.Fatalf("MAIL FROM %v", from)
	}
	raw, err := os.ReadFile("../bounce/testdata/postfix-failed.eml")
	if err != nil {
		t.Fatal(err)
	}
	noEnvid := strings.Replace(string(raw), "Original-Envelope-Id: ms-7f3a9c2e41\n", "", 1)
	if noEnvid == string(raw) {
		t.Fatal("the test bounce has no Original-Envelope-Id line to remove")
	}
	res, err := ob.IngestReturnPath(ctx, strings.NewReader(noEnvid), from["mallory@example.org"])
	if !errors.Is(err, outbox.ErrUnmatched) || mailsec.IsTemporary(err) || res != nil {
		t.Fatalf("a report about nobody to mallory's return path: %+v, %v", res, err)
	}
	if s := status(t, ob, id); s.State != outbox.Delivered || len(s.Bounces) != 0 {
		t.Fatalf("a refused bounce changed the message: %+v", s)
	}
	res, err = ob.IngestReturnPath(ctx, strings.NewReader(noEnvid), from["nobody@example.org"])
	if err != nil || len(res.Bounced) != 1 || res.Bounced[0] != "nobody@example.org" {
		t.Fatalf("nobody's own bounce: %+v, %v", res, err)
	}
}

// A return path whose delivery carried several recipients (here the
// signed path of a shared delivery's ENVID, from a Sender without
// Options.ReturnPath) speaks for none of them: any of them could have
// written the report.
func TestIngestReturnPathSharedDelivery(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	v := verpForTest(3)
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(&outbox.Options{VERP: v}), true)
	ctx := context.Background()
	m := message()
	m.To = []string{"mallory@example.org"}
	m.Cc = []string{"nobody@example.org"}
	id, err := ob.Enqueue(ctx, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	rcpts := status(t, ob, id).Attempts[0].Receipt.Recipients
	if len(srv.Messages()) != 1 || rcpts[0].EnvelopeID != rcpts[1].EnvelopeID {
		t.Fatalf("%d transactions, ENVIDs %q and %q: want one shared delivery", len(srv.Messages()), rcpts[0].EnvelopeID, rcpts[1].EnvelopeID)
	}
	path, err := v.ReturnPath(rcpts[0].EnvelopeID)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../bounce/testdata/postfix-failed.eml")
	if err != nil {
		t.Fatal(err)
	}
	noEnvid := strings.Replace(string(raw), "Original-Envelope-Id: ms-7f3a9c2e41\n", "", 1)
	if noEnvid == string(raw) {
		t.Fatal("the test bounce has no Original-Envelope-Id line to remove")
	}
	res, err := ob.IngestReturnPath(ctx, strings.NewReader(noEnvid), path)
	if !errors.Is(err, outbox.ErrUnmatched) || mailsec.IsTemporary(err) || res != nil {
		t.Fatalf("a report by a shared delivery's return path: %+v, %v", res, err)
	}
	if s := status(t, ob, id); s.State != outbox.Delivered || len(s.Bounces) != 0 || s.Recipients[1].State != outbox.Accepted {
		t.Fatalf("a refused bounce changed the message: %+v", s)
	}
}
