package outbox_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// A queued message is delivered, its Receipt kept, its content deleted.
func TestDeliverSQLite(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	got := make(chan *outbox.Attempt, 10)
	ob, path := openFile(t, newSender(t, srv.Transport(), nil), fast(&outbox.Options{
		OnReceipt: func(_ context.Context, a *outbox.Attempt) { got <- a },
	}), true)
	m := message()
	m.Attachments = []mailsec.Attachment{{Filename: "statement.pdf", Content: bytes.NewReader(bytes.Repeat([]byte("%PDF"), 50_000))}}
	id, err := ob.Enqueue(context.Background(), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, "", 20*time.Second)
	if st.State != outbox.Delivered {
		t.Fatalf("state %s: %+v", st.State, st)
	}
	if len(srv.Messages()) != 1 || !strings.Contains(string(srv.Messages()[0].Data), "statement.pdf") {
		t.Fatalf("server got %d messages", len(srv.Messages()))
	}
	if len(st.Attempts) != 1 || st.Attempts[0].Receipt == nil || !st.Attempts[0].Receipt.Recipients[0].Accepted {
		t.Fatalf("attempts: %+v", st.Attempts)
	}
	if st.MessageID == "" || st.Attempts[0].Receipt.MessageID != st.MessageID || len(st.Recipients) != 1 || st.Recipients[0].State != outbox.Accepted {
		t.Fatalf("status: %+v", st)
	}
	// OnReceipt is called once the attempt is recorded, so it may come
	// just after Status shows it.
	select {
	case a := <-got:
		if a.State != outbox.Delivered || a.ID != id {
			t.Fatalf("OnReceipt got %+v", a)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("OnReceipt was not called")
	}
	select {
	case a := <-got:
		t.Fatalf("OnReceipt called again: %+v", a)
	case <-time.After(100 * time.Millisecond):
	}
	db := rawDB(t, path)
	var envelopes, chunks int
	if err := db.QueryRow(`SELECT COUNT(envelope) FROM mailsec_outbox_message`).Scan(&envelopes); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT COUNT(*) FROM mailsec_outbox_chunk`).Scan(&chunks); err != nil {
		t.Fatal(err)
	}
	if envelopes != 0 || chunks != 0 {
		t.Fatalf("content kept after delivery: %d envelopes, %d chunks", envelopes, chunks)
	}
}
