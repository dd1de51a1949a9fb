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
	var got []*outbox.Attempt
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	ob, path := openFile(t, newSender(t, srv.Transport(), nil), fast(&outbox.Options{
		OnReceipt: func(_ context.Context, a *outbox.Attempt) { <-mu; got = append(got, a); mu <- struct{}{} },
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
	<-mu
	if len(got) != 1 || got[0].State != outbox.Delivered {
		t.Fatalf("OnReceipt got %+v", got)
	}
	mu <- struct{}{}
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
