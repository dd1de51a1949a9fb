package smime_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

// A nil certificate source (a CertStore whose loading failed, its error
// ignored) is refused by New with a configuration error that says what to
// give it, instead of a panic.
func TestNewRefusesNilCerts(t *testing.T) {
	roots := getFixture(t).ca.Pool()
	for name, certs := range map[string]smime.CertSource{
		"nil":            nil,
		"nil *CertStore": (*smime.CertStore)(nil),
	} {
		var p *smime.Protector
		var err error
		func() {
			defer func() {
				if v := recover(); v != nil {
					t.Fatalf("%s: New panicked: %v", name, v)
				}
			}()
			p, err = smime.New(certs, &smime.Options{Roots: roots})
		}()
		var ce *mailsec.ConfigError
		if p != nil || !errors.As(err, &ce) || errors.Is(err, mailsec.ErrInvalid) || !strings.Contains(err.Error(), "NewCertStore()") {
			t.Errorf("%s: Protector %v, error %v; want a *mailsec.ConfigError", name, p, err)
		}
	}
}

// An empty store ("no recipient has a certificate yet") is normal:
// recipients whose plan requires protection fail with ErrNoKey, those
// whose plan prefers it get the message over TLS, and nothing panics.
func TestEmptyCertStore(t *testing.T) {
	for name, store := range map[string]*smime.CertStore{"NewCertStore()": smime.NewCertStore(), "zero CertStore": {}} {
		p := newProtector(t, store, smime.Options{})
		if n := len(store.Certificates()); n != 0 || store.Intermediates() != nil {
			t.Fatalf("%s: %d certificates", name, n)
		}
		m := &mailsec.Message{From: "lab@example.com", To: []string{"ann@example.org"}, Subject: "Results", Text: "fine"}

		rt := &mailsectest.RecordingTransport{}
		_, err := newSender(t, rt, p).Send(context.Background(), m)
		if !errors.Is(err, mailsec.ErrNoKey) || len(rt.Deliveries()) != 0 {
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

// NewCertStore indexes certificates by their addresses, as
// ReadCertificates does, and leaves nil ones out.
func TestNewCertStore(t *testing.T) {
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	store := smime.NewCertStore(nil, ann.Leaf)
	got, err := store.Lookup(context.Background(), "ANN@example.org")
	if err != nil || len(got) != 1 || !got[0].Equal(ann.Leaf) || len(store.Certificates()) != 1 {
		t.Fatalf("Lookup = %v, %v; %d certificates", got, err, len(store.Certificates()))
	}
	if none, err := store.Lookup(context.Background(), "bob@example.org"); err != nil || len(none) != 0 {
		t.Fatalf("bob: %v, %v", none, err)
	}
}
