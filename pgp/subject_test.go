package pgp_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

// OuterSubject is header text like any other: controls and encoded-word
// syntax are refused when the Protector is made, and non-ASCII text is
// encoded, so that the outside stays 7-bit.
func TestOuterSubjectChecked(t *testing.T) {
	ring := publicRing(t, testKeys(t)["ann@example.org"])
	for _, bad := range []string{"a\r\nBcc: x@example.org", "a\x00b", "\x1b[2J pwned", "=?utf-8?q?a=0D=0Ab?=", "bad utf-8 \xff"} {
		_, err := pgp.New(ring, &pgp.Options{OuterSubject: bad})
		var ce *mailsec.ConfigError
		if !errors.As(err, &ce) || ce.Field != "pgp.Options.OuterSubject" {
			t.Errorf("OuterSubject %q: %v, want a *mailsec.ConfigError", bad, err)
		}
	}
	p, err := pgp.New(ring, &pgp.Options{OuterSubject: "Verschlüsselte Nachricht"})
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	if _, err := newSender(t, rt, p).Send(context.Background(), &mailsec.Message{From: "app@example.com",
		To: []string{"ann@example.org"}, Subject: "Lab results 2231", Text: canary}); err != nil {
		t.Fatal(err)
	}
	raw := rt.Deliveries()[0].Data
	checkWire(t, raw, "Lab results 2231")
	if !bytes.Contains(raw, []byte("\r\nSubject: =?utf-8?q?Verschl=C3=BCsselte_Nachricht?=\r\n")) {
		t.Fatalf("outer Subject not encoded:\n%s", raw)
	}
}
