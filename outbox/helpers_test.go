package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/outbox"
)

// switchTransport delivers through whichever Transport the test last set:
// a smarthost that is down, then one that is back, say.
type switchTransport struct {
	mu sync.Mutex
	t  mailsec.Transport
}

func (s *switchTransport) set(t mailsec.Transport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.t = t
}

func (s *switchTransport) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	s.mu.Lock()
	t := s.t
	s.mu.Unlock()
	return t.Deliver(ctx, d)
}

func newSender(t testing.TB, tr mailsec.Transport, o *mailsec.Options) *mailsec.Sender {
	t.Helper()
	s, err := mailsec.NewSender(tr, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testKey is one key for tests; others are made with outbox.NewKey.
var testKey = outbox.NewKey()

// fast are options that retry within a test's time.
func fast(o *outbox.Options) *outbox.Options {
	if o == nil {
		o = &outbox.Options{}
	}
	if o.Keys == nil && !o.Plaintext {
		o.Keys = []outbox.Key{testKey}
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = 50 * time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 200 * time.Millisecond
	}
	if o.DeliveryTimeout == 0 {
		o.DeliveryTimeout = 10 * time.Second
	}
	return o
}

// openFile opens an outbox in a fresh SQLite file and closes it when the
// test ends; start starts its delivery too.
func openFile(t testing.TB, s *mailsec.Sender, o *outbox.Options, start bool) (*outbox.Outbox, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mail.db")
	ob := openAt(t, s, path, o, start)
	return ob, path
}

func openAt(t testing.TB, s *mailsec.Sender, db string, o *outbox.Options, start bool) *outbox.Outbox {
	t.Helper()
	ob, err := outbox.Open(context.Background(), s, db, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = ob.Close(ctx)
	})
	if start {
		if err := ob.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return ob
}

// waitFor polls the message's status until it is finished (or in the
// state want, when given), and returns it.
func waitFor(t testing.TB, ob *outbox.Outbox, id string, want outbox.State, timeout time.Duration) *outbox.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var st *outbox.Status
	var err error
	for time.Now().Before(deadline) {
		st, err = ob.Status(context.Background(), id)
		// A status that does not open still has its state.
		if st != nil && (err == nil || errors.Is(err, outbox.ErrTampered)) && (st.State == want || want == "" && st.State != outbox.Queued && st.State != outbox.Sending) {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st != nil {
		t.Fatalf("message %s is %s after %v (want %q): %v; attempts %d", id, st.State, timeout, want, err, len(st.Attempts))
	}
	t.Fatalf("message %s: %v", id, err)
	return nil
}

func message() *mailsec.Message {
	return &mailsec.Message{
		From:    "App <app@example.com>",
		To:      []string{"Ann <ann@example.org>"},
		Subject: "Your statement",
		Text:    "Your statement is ready.",
	}
}

// rawDB opens a SQLite file directly, as someone with the disk would.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// syncBuffer is a buffer a logger may write to while a test reads it.
type syncBuffer = outbox.LogBuffer
