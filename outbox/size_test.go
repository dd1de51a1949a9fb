package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// MaxMessageSize bounds what Enqueue stores: an attachment's file name,
// media type (whose parameters are unbounded in number) and Content-ID
// are stored in the envelope like the Subject, and count too. A message
// of empty attachments whose metadata is many times the limit is refused.
func TestMaxMessageSizeCountsAttachmentMetadata(t *testing.T) {
	s := newSender(t, &mailsectest.RecordingTransport{}, nil)
	ob, _ := openFile(t, s, fast(&outbox.Options{MaxMessageSize: 4096}), false)
	var params strings.Builder
	for i := range 100 {
		fmt.Fprintf(&params, "; p%d=%s", i, strings.Repeat("v", 150))
	}
	for _, tc := range []struct {
		name string
		atts []mailsec.Attachment
	}{
		// 20 records count 1,280 octets: the names alone cross the limit.
		{"many file names", func() (as []mailsec.Attachment) {
			for i := range 20 {
				as = append(as, mailsec.Attachment{Filename: fmt.Sprintf("%03d-%s.txt", i, strings.Repeat("n", 240)), Content: strings.NewReader("")})
			}
			return as
		}()},
		{"many empty attachments", func() (as []mailsec.Attachment) {
			for range 2000 {
				as = append(as, mailsec.Attachment{Content: strings.NewReader("")})
			}
			return as
		}()},
		{"one long media type", []mailsec.Attachment{{Filename: "a.txt", ContentType: "text/plain" + params.String(), Content: strings.NewReader("")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"}, Text: "hi", Attachments: tc.atts}
			_, err := ob.Enqueue(context.Background(), m, nil)
			var se *outbox.SizeError
			if !errors.As(err, &se) {
				t.Fatalf("Enqueue of a message storing 5 KB or more of attachment metadata (or 2000 attachment records) under a 4 KB MaxMessageSize: err %v, want a *SizeError", err)
			}
		})
	}
}
