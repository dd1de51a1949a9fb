package pgp_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

// A nil key source (a KeyRing whose loading failed, its error ignored) is
// refused by New with a configuration error that says what to give it,
// instead of a Protector whose every Send fails inside the OpenPGP library.
func TestNewRefusesNilKeys(t *testing.T) {
	for name, keys := range map[string]pgp.KeySource{
		"nil":          nil,
		"nil *KeyRing": (*pgp.KeyRing)(nil),
		"nil *WKD":     (*pgp.WKD)(nil),
	} {
		p, err := pgp.New(keys, nil)
		var ce *mailsec.ConfigError
		if p != nil || !errors.As(err, &ce) || errors.Is(err, mailsec.ErrInvalid) || !strings.Contains(err.Error(), "NewKeyRing()") {
			t.Errorf("%s: Protector %v, error %v; want a *mailsec.ConfigError", name, p, err)
		}
	}
}

// An empty key ring ("no recipient has a key yet") is normal: recipients
// whose plan requires protection fail with ErrNoKey, those whose plan
// prefers it get the message over TLS, and nothing panics.
func TestEmptyKeyRing(t *testing.T) {
	for name, ring := range map[string]*pgp.KeyRing{"NewKeyRing()": pgp.NewKeyRing(), "zero KeyRing": {}} {
		p, err := pgp.New(ring, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n := len(ring.Entities()); n != 0 {
			t.Fatalf("%s: %d keys", name, n)
		}
		m := &mailsec.Message{From: "lab@example.com", To: []string{"ann@example.org"}, Subject: "Results", Text: "fine"}

		rt := &mailsectest.RecordingTransport{}
		_, err = newSender(t, rt, p).Send(context.Background(), m)
		if !errors.Is(err, mailsec.ErrNoKey) || !errors.Is(err, pgp.ErrKeyNotFound) || strings.Contains(err.Error(), "internal error") || len(rt.Deliveries()) != 0 {
			t.Fatalf("%s, required: error %v, %d deliveries; want ErrNoKey and nothing sent", name, err, len(rt.Deliveries()))
		}

		rt = &mailsectest.RecordingTransport{}
		s, err := mailsec.NewSender(rt, &mailsec.Options{Policy: mailsec.PreferProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
		if err != nil {
			t.Fatal(err)
		}
		rec, err := s.Send(context.Background(), m)
		if err != nil || len(rt.Deliveries()) != 1 || rec.Recipients[0].Protection.Method != mailsec.MethodNone {
			t.Fatalf("%s, preferred: error %v, %d deliveries", name, err, len(rt.Deliveries()))
		}
	}
}
