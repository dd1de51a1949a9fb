package outbox_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// panicReader panics when read, as a buggy reader of the application's
// may.
type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("reader bug") }

// lyingReader claims to have read more than it was given room for.
type lyingReader struct{}

func (lyingReader) Read(p []byte) (int, error) { return len(p) + 10, nil }

// An attachment reader that panics, or returns an impossible count, is an
// error of Enqueue, as it is of Send: Enqueue neither panics nor leaves
// its transaction open (on SQLite's one connection, that would stop
// every later Enqueue and every delivery), and nothing is queued.
func TestEnqueueBadReader(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), true)
	for name, r := range map[string]interface{ Read([]byte) (int, error) }{"panics": panicReader{}, "lies": lyingReader{}} {
		t.Run(name, func(t *testing.T) {
			m := message()
			m.Attachments = []mailsec.Attachment{{Filename: "a.pdf", Content: r}}
			var id string
			var err error
			func() {
				defer func() {
					if v := recover(); v != nil {
						err = errors.New("Enqueue panicked")
					}
				}()
				id, err = ob.Enqueue(context.Background(), m, nil)
			}()
			if err == nil || id != "" || strings.Contains(err.Error(), "panicked") && !strings.Contains(err.Error(), "Attachments[0]") {
				t.Fatalf("Enqueue: %q, %v", id, err)
			}
			// The outbox still works.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			good := message()
			good.Attachments = []mailsec.Attachment{{Filename: "b.pdf", Content: bytes.NewReader([]byte("fine"))}}
			gid, err := ob.Enqueue(ctx, good, nil)
			if err != nil {
				t.Fatalf("Enqueue after a bad reader: %v", err)
			}
			waitFor(t, ob, gid, outbox.Delivered, 20*time.Second)
			st, err := ob.Stats(ctx)
			if err != nil || st.Depth != 0 {
				t.Fatalf("stats %+v, %v", st, err)
			}
		})
	}
}
