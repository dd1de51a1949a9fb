package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

func messageTo(rcpts ...string) *mailsec.Message {
	m := message()
	m.To = rcpts
	return m
}

// List: newest first, filtered by state, bounded, with each message's
// recipient count, and nothing of its content or addresses.
func TestList(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), false)
	ctx := context.Background()
	var ids []string
	for _, rcpts := range [][]string{
		{"ann@example.org"},
		{"bob@example.org", "carl@example.org", "dan@example.org"},
		{"eve@example.org", "fay@example.org"},
	} {
		m := messageTo(rcpts...)
		m.Subject = "canary-subject-list"
		id, err := ob.Enqueue(ctx, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		time.Sleep(2 * time.Millisecond) // distinct enqueue times
	}
	if err := ob.Cancel(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}

	all, err := ob.List(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range all {
		got = append(got, s.ID)
	}
	if want := []string{ids[2], ids[1], ids[0]}; !slices.Equal(got, want) {
		t.Fatalf("List IDs = %v, want newest first %v", got, want)
	}
	for i, want := range []struct {
		state outbox.State
		rcpts int
	}{{outbox.Queued, 2}, {outbox.Cancelled, 3}, {outbox.Queued, 1}} {
		s := all[i]
		if s.State != want.state || s.Recipients != want.rcpts || s.Problem != "" {
			t.Errorf("List[%d] = %+v, want state %s, %d recipients", i, s, want.state, want.rcpts)
		}
		if s.Enqueued.IsZero() || (s.State == outbox.Queued) == s.Next.IsZero() || (s.State == outbox.Cancelled) == s.Finished.IsZero() {
			t.Errorf("List[%d] times: %+v", i, s)
		}
	}
	b, _ := json.Marshal(all)
	for _, secret := range []string{"canary-subject-list", "example.org", "statement"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("List shows %q: %s", secret, b)
		}
	}

	queued, err := ob.List(ctx, &outbox.ListOptions{States: []outbox.State{outbox.Queued}})
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) != 2 || queued[0].ID != ids[2] || queued[1].ID != ids[0] {
		t.Errorf("List(queued) = %+v", queued)
	}
	cancelled, err := ob.List(ctx, &outbox.ListOptions{States: []outbox.State{outbox.Cancelled, outbox.Delivered}})
	if err != nil {
		t.Fatal(err)
	}
	if len(cancelled) != 1 || cancelled[0].ID != ids[1] {
		t.Errorf("List(cancelled, delivered) = %+v", cancelled)
	}
	two, err := ob.List(ctx, &outbox.ListOptions{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(two) != 2 || two[0].ID != ids[2] || two[1].ID != ids[1] {
		t.Errorf("List(limit 2) = %+v", two)
	}

	_, err = ob.List(ctx, &outbox.ListOptions{States: []outbox.State{"lost"}})
	if !errors.Is(err, mailsec.ErrInvalid) {
		t.Errorf("List(state lost) = %v, want a validation error", err)
	}
	_, err = ob.List(ctx, &outbox.ListOptions{Limit: -1})
	if !errors.Is(err, mailsec.ErrInvalid) {
		t.Errorf("List(limit -1) = %v, want a validation error", err)
	}
}

// An outbox given another key lists its messages with the problem, and
// without failing.
func TestListWrongKey(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s := newSender(t, srv.Transport(), nil)
	ob, path := openFile(t, s, fast(nil), false)
	id, err := ob.Enqueue(context.Background(), message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	other := openAt(t, s, path, fast(&outbox.Options{Keys: []outbox.Key{outbox.NewKey()}}), false)
	list, err := other.List(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != id || list[0].Recipients != 0 || !strings.Contains(list[0].Problem, "key") {
		t.Fatalf("List with another key = %+v", list)
	}
}

func TestParseState(t *testing.T) {
	for in, want := range map[string]outbox.State{"queued": outbox.Queued, "partly-delivered": outbox.PartlyDelivered, "partly delivered": outbox.PartlyDelivered, "cancelled": outbox.Cancelled} {
		if got, err := outbox.ParseState(in); err != nil || got != want {
			t.Errorf("ParseState(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := outbox.ParseState("done"); !errors.Is(err, mailsec.ErrInvalid) {
		t.Errorf("ParseState(done) = %v, want a validation error", err)
	}
}

// Retry ends the wait after a temporary failure: with an hour's backoff,
// the message goes out at once once the smarthost is back.
func TestRetry(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	down := srv.Transport()
	down.Addr = deadAddr(t)
	sw := &switchTransport{t: down}
	at := newAttempts()
	ob, _ := openFile(t, newSender(t, sw, nil), fast(&outbox.Options{OnReceipt: at.on, MinBackoff: time.Hour, MaxBackoff: 2 * time.Hour}), true)
	ctx := context.Background()
	id, err := ob.Enqueue(ctx, message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a := at.next(t); a.State != outbox.Queued || time.Until(a.Next) < 20*time.Minute {
		t.Fatalf("first attempt: %+v", a)
	}
	sw.set(srv.Transport())
	if st, err := ob.Stats(ctx); err != nil || st.Due != 0 || st.Depth != 1 {
		t.Fatalf("Stats before Retry = %+v, %v", st, err)
	}
	if err := ob.Retry(ctx, id); err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, outbox.Delivered, 15*time.Second)
	if len(st.Attempts) != 2 || len(srv.Messages()) != 1 {
		t.Fatalf("after Retry: %d attempts, %d messages", len(st.Attempts), len(srv.Messages()))
	}

	if err := ob.Retry(ctx, id); !errors.Is(err, outbox.ErrFinished) {
		t.Errorf("Retry(delivered) = %v, want ErrFinished", err)
	}
	if err := ob.Retry(ctx, "nosuchmessage"); !errors.Is(err, outbox.ErrNotFound) {
		t.Errorf("Retry(unknown) = %v, want ErrNotFound", err)
	}
}

// Retry of a message waiting for its first attempt, and of a cancelled
// one, without a worker.
func TestRetryStates(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), false)
	ctx := context.Background()
	id, err := ob.Enqueue(ctx, message(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Retry(ctx, id); err != nil {
		t.Errorf("Retry(queued) = %v", err)
	}
	if err := ob.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := ob.Retry(ctx, id); !errors.Is(err, outbox.ErrFinished) {
		t.Errorf("Retry(cancelled) = %v, want ErrFinished", err)
	}
	if st, err := ob.Status(ctx, id); err != nil || st.State != outbox.Cancelled {
		t.Errorf("after Retry of a cancelled message: %+v, %v", st, err)
	}
}

// RunDue delivers what is due, and returns with what waits for later
// still queued.
func TestRunDue(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{RcptReply: map[string]*mailsec.Reply{
		"later@example.org": {Code: 451, EnhancedCode: mailsec.EnhancedCode{4, 3, 0}, Text: "try again later"},
	}})
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(&outbox.Options{MinBackoff: time.Hour, MaxBackoff: 2 * time.Hour}), false)
	ctx := context.Background()
	var ids []string
	for _, rcpts := range [][]string{{"ann@example.org"}, {"bob@example.org", "carl@example.org"}, {"later@example.org"}} {
		id, err := ob.Enqueue(ctx, messageTo(rcpts...), nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := ob.RunDue(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Depth != 1 || st.Due != 0 || st.Sending != 0 {
		t.Errorf("RunDue's Stats = %+v, want one message left for later", st)
	}
	for i, want := range []outbox.State{outbox.Delivered, outbox.Delivered, outbox.Queued} {
		s, err := ob.Status(ctx, ids[i])
		if err != nil || s.State != want {
			t.Errorf("message %d after RunDue: %v, %v; want %s", i, s.State, err, want)
		}
	}
	list, err := ob.List(ctx, &outbox.ListOptions{States: []outbox.State{outbox.Delivered}})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Recipients != 2 || list[1].Recipients != 1 {
		t.Errorf("List(delivered) after RunDue = %+v", list)
	}

	// Nothing due: RunDue returns at once.
	start := time.Now()
	if st, err := ob.RunDue(rctx); err != nil || st.Depth != 1 {
		t.Errorf("second RunDue = %+v, %v", st, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second RunDue took %v with nothing due", d)
	}
}

// RunDue gives up when its context ends, with the error saying so.
func TestRunDueContext(t *testing.T) {
	// An attempt that never ends keeps the message being sent.
	blocking := &slowTransport{Transport: &mailsectest.RecordingTransport{}, block: true}
	ob, _ := openFile(t, newSender(t, blocking, nil), fast(nil), false)
	if _, err := ob.Enqueue(context.Background(), message(), nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := ob.RunDue(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("RunDue with a message being sent = %v, want the context's error", err)
	}
}
