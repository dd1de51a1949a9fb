package smime_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

// OuterSubject is header text like any other: controls and encoded-word
// syntax are refused when the Protector is made, and non-ASCII text is
// encoded, so that the outside stays 7-bit.
func TestOuterSubjectChecked(t *testing.T) {
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	store := storeOf(t, ann)
	for _, bad := range []string{"a\r\nBcc: x@example.org", "a\x00b", "\x1b[2J pwned", "=?utf-8?q?a=0D=0Ab?=", "bad utf-8 \xff"} {
		_, err := smime.New(store, &smime.Options{Roots: f.ca.Pool(), OuterSubject: bad})
		var ce *mailsec.ConfigError
		if !errors.As(err, &ce) || ce.Field != "smime.Options.OuterSubject" {
			t.Errorf("OuterSubject %q: %v, want a *mailsec.ConfigError", bad, err)
		}
	}
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, newProtector(t, store, smime.Options{OuterSubject: "Verschlüsselte Nachricht"}))
	if _, err := s.Send(context.Background(), message("ann@example.org")); err != nil {
		t.Fatal(err)
	}
	raw := rt.Deliveries()[0].Data
	for _, c := range raw {
		if c >= 0x80 {
			t.Fatalf("8-bit octet in\n%s", raw)
		}
	}
	if !bytes.Contains(raw, []byte("\r\nSubject: =?utf-8?q?Verschl=C3=BCsselte_Nachricht?=\r\n")) {
		t.Fatalf("outer Subject not encoded:\n%s", raw)
	}
}
