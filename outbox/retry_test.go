package outbox_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
	"github.com/mailsec/mailsec/transport"
)

// attempts collects the attempts OnReceipt is given.
type attempts struct {
	mu   sync.Mutex
	list []*outbox.Attempt
	ch   chan *outbox.Attempt
}

func newAttempts() *attempts { return &attempts{ch: make(chan *outbox.Attempt, 100)} }

func (a *attempts) on(_ context.Context, at *outbox.Attempt) {
	a.mu.Lock()
	a.list = append(a.list, at)
	a.mu.Unlock()
	a.ch <- at
}

func (a *attempts) next(t *testing.T) *outbox.Attempt {
	t.Helper()
	select {
	case at := <-a.ch:
		return at
	case <-time.After(20 * time.Second):
		t.Fatal("no attempt within 20s")
		return nil
	}
}

// deadAddr returns an address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// A smarthost that is down for a while: the message waits, with each
// attempt's Receipt saying a retry can help, and goes out once it is back.
func TestSmarthostDownThenBack(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	down := srv.Transport()
	down.Addr = deadAddr(t)
	sw := &switchTransport{t: down}
	at := newAttempts()
	ob, _ := openFile(t, newSender(t, sw, nil), fast(&outbox.Options{OnReceipt: at.on}), true)
	id, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		a := at.next(t)
		if a.State != outbox.Queued || a.Receipt == nil || !a.Receipt.Recipients[0].Failure.Temporary || a.Next.IsZero() {
			t.Fatalf("attempt while down: %+v", a)
		}
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("%d messages while down", n)
	}
	sw.set(srv.Transport())
	st := waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	if len(st.Attempts) < 3 || len(srv.Messages()) != 1 {
		t.Fatalf("%d attempts, %d messages", len(st.Attempts), len(srv.Messages()))
	}
	for i := 1; i < len(st.Attempts); i++ {
		if st.Attempts[i].Started.Before(st.Attempts[i-1].Finished) {
			t.Fatalf("attempt %d started before %d finished", i+1, i)
		}
	}
}

// 2 of 3 recipients accepted: only the third is tried again, with the
// same header (To and Cc as written, the same Message-ID and Date), and
// the accepted two never get it twice.
func TestOnlyDeferredRecipientRetried(t *testing.T) {
	first := mailsectest.NewServer(t, mailsectest.Config{RcptReply: map[string]*mailsec.Reply{
		"carl@example.org": {Code: 450, EnhancedCode: mailsec.EnhancedCode{4, 2, 1}, Text: "try later"},
	}})
	second := mailsectest.NewServer(t, mailsectest.Config{})
	sw := &switchTransport{t: first.Transport()}
	at := newAttempts()
	ob, _ := openFile(t, newSender(t, sw, nil), fast(&outbox.Options{OnReceipt: at.on}), true)
	m := message()
	m.To = []string{"Ann <ann@example.org>", "bob@example.org"}
	m.Cc = []string{"Carl <carl@example.org>"}
	m.Bcc = []string{"dora@example.net"}
	id, err := ob.Enqueue(context.Background(), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := at.next(t)
	if a.State != outbox.Queued || len(a.Receipt.Recipients) != 4 || len(a.Receipt.Failed()) != 1 {
		t.Fatalf("first attempt: %+v", a)
	}
	sw.set(second.Transport())
	st := waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	if len(st.Attempts) != 2 {
		t.Fatalf("%d attempts", len(st.Attempts))
	}
	if r := st.Attempts[1].Receipt.Recipients; len(r) != 1 || r[0].Address != "carl@example.org" || !r[0].Accepted {
		t.Fatalf("second attempt's receipt: %+v", r)
	}
	got := second.Messages()
	if len(got) != 1 || strings.Join(got[0].To, ",") != "carl@example.org" {
		t.Fatalf("second server got %d messages: %+v", len(got), got)
	}
	var firstCopy *mailsectest.Message
	for _, fm := range first.Messages() {
		if slicesHas(fm.To, "carl@example.org") {
			t.Fatalf("carl accepted by the first server: %v", fm.To)
		}
		if slicesHas(fm.To, "ann@example.org") {
			firstCopy = &fm
		}
	}
	if firstCopy == nil {
		t.Fatal("ann's copy not found")
	}
	for _, h := range []string{"To", "Cc", "Message-Id", "Date", "Subject", "From"} {
		if got[0].Header(h) != firstCopy.Header(h) || got[0].Header(h) == "" && h != "Cc" {
			t.Errorf("%s: %q on retry, %q first", h, got[0].Header(h), firstCopy.Header(h))
		}
	}
	if bytes.Contains(got[0].Data, []byte("dora")) {
		t.Fatal("the Bcc recipient is visible in the retried copy")
	}
	for _, r := range st.Recipients {
		if r.State != outbox.Accepted || r.PossibleDuplicate {
			t.Errorf("recipient %+v", r)
		}
	}
	for _, r := range st.Recipients {
		want := 1
		if r.Address == "carl@example.org" {
			want = 2
		}
		if r.Attempts != want {
			t.Errorf("%s tried %d times, want %d", r.Address, r.Attempts, want)
		}
	}
}

func slicesHas(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// A permanent failure is never retried; the others are delivered.
func TestPermanentNotRetried(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{RcptReply: map[string]*mailsec.Reply{
		"bob@example.org": {Code: 550, EnhancedCode: mailsec.EnhancedCode{5, 1, 1}, Text: "no such user"},
	}})
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), true)
	m := message()
	m.To = append(m.To, "bob@example.org")
	id, err := ob.Enqueue(context.Background(), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, "", 20*time.Second)
	if st.State != outbox.PartlyDelivered || len(st.Attempts) != 1 || !st.Next.IsZero() {
		t.Fatalf("state %s, %d attempts, next %v", st.State, len(st.Attempts), st.Next)
	}
	only := message()
	only.To = []string{"bob@example.org"}
	id, err = ob.Enqueue(context.Background(), only, nil)
	if err != nil {
		t.Fatal(err)
	}
	st = waitFor(t, ob, id, "", 20*time.Second)
	if st.State != outbox.Failed || len(st.Attempts) != 1 || st.Recipients[0].State != outbox.Refused || !strings.Contains(st.Recipients[0].Error, "550") {
		t.Fatalf("state %s, %d attempts, %+v", st.State, len(st.Attempts), st.Recipients)
	}
	time.Sleep(300 * time.Millisecond) // several backoffs
	if st, _ := ob.Status(context.Background(), id); len(st.Attempts) != 1 {
		t.Fatalf("retried: %d attempts", len(st.Attempts))
	}
}

// A recipient still deferred at MaxAge expires; one accepted before that
// stays accepted.
func TestExpiry(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{RcptReply: map[string]*mailsec.Reply{
		"bob@example.org": {Code: 451, EnhancedCode: mailsec.EnhancedCode{4, 3, 0}, Text: "later"},
	}})
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(&outbox.Options{MaxAge: 4 * time.Second}), true)
	only := message()
	only.To = []string{"bob@example.org"}
	both := message()
	both.To = append(both.To, "bob@example.org")
	ids := map[string]outbox.State{}
	for m, want := range map[*mailsec.Message]outbox.State{only: outbox.Expired, both: outbox.PartlyDelivered} {
		id, err := ob.Enqueue(context.Background(), m, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = want
	}
	for id, want := range ids {
		st := waitFor(t, ob, id, "", 20*time.Second)
		if st.State != want || len(st.Attempts) < 2 {
			t.Fatalf("state %s after %d attempts, want %s after several", st.State, len(st.Attempts), want)
		}
		last := st.Attempts[len(st.Attempts)-1]
		if last.Finished.Before(st.Expires) || !last.Next.IsZero() {
			t.Fatalf("expired before its MaxAge: last attempt %v, expires %v", last.Finished, st.Expires)
		}
		for _, r := range st.Recipients {
			if r.Address == "bob@example.org" && r.State != outbox.ExpiredRecipient || r.Address == "ann@example.org" && r.State != outbox.Accepted {
				t.Fatalf("recipient %+v", r)
			}
		}
	}
}

// keyProtector "encrypts" for the recipients it has a key for; a test
// revokes keys while messages wait.
type keyProtector struct {
	mu   sync.Mutex
	keys map[string]bool
}

func (p *keyProtector) Method() string { return "fake" }

func (p *keyProtector) Protect(_ context.Context, e *mailsec.Entity, rcpts []string) (*mailsec.Protected, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, r := range rcpts {
		if !p.keys[r] {
			errs = append(errs, &mailsec.ProtectionError{Recipient: r, Method: "fake", Reason: "revoked"})
		}
	}
	if errs != nil {
		return nil, errors.Join(errs...)
	}
	var h textproto.Header
	h.Set("Content-Type", "application/x-fake-encrypted")
	fps := map[string]string{}
	for _, r := range rcpts {
		fps[r] = "fp-" + r
	}
	return &mailsec.Protected{Entity: &mailsec.Entity{Header: h, Body: strings.NewReader("ENCRYPTED")}, Fingerprints: fps}, nil
}

// Protection runs at delivery time: a key revoked while the message
// waited is honoured, and nothing goes out in clear.
func TestProtectionAtDelivery(t *testing.T) {
	rt := &mailsectest.RecordingTransport{}
	p := &keyProtector{keys: map[string]bool{"ann@example.org": true}}
	s := newSender(t, rt, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	ob, _ := openFile(t, s, fast(nil), false)
	id, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.keys["ann@example.org"] = false
	p.mu.Unlock()
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, "", 20*time.Second)
	if st.State != outbox.Failed || !strings.Contains(st.Recipients[0].Error, "revoked") {
		t.Fatalf("state %s, %+v", st.State, st.Recipients)
	}
	if n := len(rt.Deliveries()); n != 0 {
		t.Fatalf("%d deliveries after the key was revoked", n)
	}
}

// transport's ErrUnsolicitedReply at the end of DATA leaves the outcome
// unknown: the next attempt sends again and flags the recipient as a
// possible duplicate.
func TestUnknownOutcomeFlagged(t *testing.T) {
	rt := &mailsectest.RecordingTransport{}
	var once sync.Once
	rt.Fail = func(d *mailsec.Delivery) error {
		var err error
		once.Do(func() {
			err = &mailsec.NetworkError{Host: "smarthost", Op: "DATA", Err: transport.ErrUnsolicitedReply}
		})
		return err
	}
	ob, _ := openFile(t, newSender(t, rt, nil), fast(nil), true)
	id, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	if len(st.Attempts) != 2 || len(rt.Deliveries()) != 2 {
		t.Fatalf("%d attempts, %d deliveries", len(st.Attempts), len(rt.Deliveries()))
	}
	if len(st.Attempts[0].PossibleDuplicates) != 0 || strings.Join(st.Attempts[1].PossibleDuplicates, ",") != "ann@example.org" {
		t.Fatalf("possible duplicates: %v, then %v", st.Attempts[0].PossibleDuplicates, st.Attempts[1].PossibleDuplicates)
	}
	if !st.Recipients[0].PossibleDuplicate {
		t.Fatalf("recipient %+v", st.Recipients[0])
	}
}
