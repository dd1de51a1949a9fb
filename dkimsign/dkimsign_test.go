package dkimsign_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dkimsign"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

// keys are made once: RSA generation is slow under the race detector.
var keys = sync.OnceValues(func() (crypto.Signer, crypto.Signer) {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	_, e, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return r, e
})

// signers returns an RSA and an Ed25519 Signer for domain.
func signers(t testing.TB, domain string) []*dkimsign.Signer {
	t.Helper()
	rk, ek := keys()
	rs, err := dkimsign.NewSigner(domain, "rsa1", rk)
	if err != nil {
		t.Fatal(err)
	}
	es, err := dkimsign.NewSigner(domain, "ed1", ek)
	if err != nil {
		t.Fatal(err)
	}
	return []*dkimsign.Signer{rs, es}
}

// lookup serves the signers' records to go-msgauth's verifier.
func lookup(ss ...*dkimsign.Signer) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		for _, s := range ss {
			if name == s.RecordName() {
				return []string{s.Record()}, nil
			}
		}
		return nil, errors.New("no such record: " + name)
	}
}

// verify returns go-msgauth's verifications of data.
func verify(t testing.TB, data []byte, ss ...*dkimsign.Signer) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(data), &dkim.VerifyOptions{LookupTXT: lookup(ss...)})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return vs
}

func newSender(t testing.TB, next mailsec.Transport, o *dkimsign.Options) *mailsec.Sender {
	t.Helper()
	tr, err := dkimsign.NewTransport(next, o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := mailsec.NewSender(tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSignedVerifiesWithGoMsgauth(t *testing.T) {
	ss := signers(t, "example.com")
	rec := &mailsectest.RecordingTransport{}
	s := newSender(t, rec, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.com": ss}})
	_, err := s.Send(context.Background(), &mailsec.Message{
		From:    "App <noreply@example.com>",
		To:      []string{"ann@example.org"},
		Cc:      []string{"bob@example.org"},
		Bcc:     []string{"carl@example.net", "dora@example.net"},
		Subject: "Your receipt",
		Text:    "Thank you.\nLines with trailing spaces   \nand bare LF.\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	ds := rec.Deliveries()
	if len(ds) != 3 {
		t.Fatalf("%d deliveries, want 3 (one for To and Cc, one per Bcc)", len(ds))
	}
	for _, d := range ds {
		vs := verify(t, d.Data, ss...)
		if len(vs) != 2 {
			t.Fatalf("%v: %d signatures, want 2", d.To, len(vs))
		}
		for _, v := range vs {
			if v.Err != nil || v.Domain != "example.com" {
				t.Errorf("%v: verification %+v", d.To, v)
			}
		}
		hdr := string(d.Data[:bytes.Index(d.Data, []byte("\r\n\r\n"))])
		for _, want := range []string{"a=rsa-sha256", "a=ed25519-sha256", "c=relaxed/relaxed"} {
			if !strings.Contains(hdr, want) {
				t.Errorf("header lacks %q:\n%s", want, hdr)
			}
		}
	}
}

func TestOverSigningAndTamperFail(t *testing.T) {
	ss := signers(t, "example.com")
	rec := &mailsectest.RecordingTransport{}
	s := newSender(t, rec, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.com": ss}})
	if _, err := s.Send(context.Background(), &mailsec.Message{
		From: "noreply@example.com", To: []string{"ann@example.org"}, Subject: "Hello", Text: "Body text here.",
	}); err != nil {
		t.Fatal(err)
	}
	data := rec.Deliveries()[0].Data
	for _, v := range verify(t, data, ss...) {
		if v.Err != nil {
			t.Fatalf("untouched message: %v", v.Err)
		}
		for _, k := range dkimsign.OverSigned {
			n := 0
			for _, h := range v.HeaderKeys {
				if strings.EqualFold(h, k) {
					n++
				}
			}
			if n < 2 && k != "Reply-To" && k != "Cc" {
				t.Errorf("h= names %s %d times, want it over-signed: %v", k, n, v.HeaderKeys)
			}
			if n < 1 {
				t.Errorf("h= lacks %s: %v", k, v.HeaderKeys)
			}
		}
	}
	tamper := map[string]func([]byte) []byte{
		"one body byte": func(b []byte) []byte { return bytes.Replace(b, []byte("Body text"), []byte("Body texT"), 1) },
		"one Subject byte": func(b []byte) []byte {
			return bytes.Replace(b, []byte("Subject: Hello"), []byte("Subject: Hellp"), 1)
		},
		"an added Subject": func(b []byte) []byte {
			i := bytes.Index(b, []byte("\r\n\r\n"))
			return append(append(append([]byte{}, b[:i]...), "\r\nSubject: Urgent: pay now"...), b[i:]...)
		},
		"an added Reply-To": func(b []byte) []byte {
			i := bytes.Index(b, []byte("\r\n\r\n"))
			return append(append(append([]byte{}, b[:i]...), "\r\nReply-To: thief@evil.example"...), b[i:]...)
		},
	}
	for name, f := range tamper {
		changed := f(data)
		if bytes.Equal(changed, data) {
			t.Fatalf("%s: nothing changed", name)
		}
		for _, v := range verify(t, changed, ss...) {
			if v.Err == nil {
				t.Errorf("%s: the signature for %s still verifies", name, v.Domain)
			}
		}
	}
}

func TestWeakKeyRefused(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, err = dkimsign.NewSigner("example.com", "s1", k)
	var ke *dkimsign.KeyError
	if !errors.Is(err, dkimsign.ErrWeakKey) || !errors.As(err, &ke) || ke.Bits != 1024 || !errors.Is(err, mailsec.ErrConfig) {
		t.Fatalf("NewSigner with RSA-1024: %v, want a weak-key *KeyError", err)
	}
	if mailsec.IsTemporary(err) {
		t.Error("a weak key is reported temporary")
	}
	pemKey, err := dkimsign.MarshalPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dkimsign.ParsePrivateKey(pemKey); !errors.Is(err, dkimsign.ErrWeakKey) {
		t.Fatalf("ParsePrivateKey of RSA-1024: %v, want ErrWeakKey", err)
	}
}

func TestNoSignerRefusedNothingSent(t *testing.T) {
	ss := signers(t, "example.com")
	rec := &mailsectest.RecordingTransport{}
	s := newSender(t, rec, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.com": ss}})
	_, err := s.Send(context.Background(), &mailsec.Message{
		From: "noreply@other.example", To: []string{"ann@example.org"}, Subject: "x", Text: "y",
	})
	var de *dkimsign.DomainError
	if !errors.Is(err, dkimsign.ErrNoSigner) || !errors.As(err, &de) || de.Domain != "other.example" {
		t.Fatalf("Send from an unsigned domain: %v, want a *DomainError for other.example", err)
	}
	if mailsec.IsTemporary(err) {
		t.Error("the refusal is reported temporary")
	}
	if n := len(rec.Deliveries()); n != 0 {
		t.Fatalf("%d deliveries reached the transport", n)
	}

	// When the application allows it, the message goes out unsigned.
	s = newSender(t, rec, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.com": ss}, SendUnsigned: true})
	if _, err := s.Send(context.Background(), &mailsec.Message{
		From: "noreply@other.example", To: []string{"ann@example.org"}, Subject: "x", Text: "y",
	}); err != nil {
		t.Fatal(err)
	}
	ds := rec.Deliveries()
	if len(ds) != 1 || bytes.Contains(ds[0].Data, []byte("DKIM-Signature")) {
		t.Fatalf("want one unsigned delivery, got %d", len(ds))
	}
}

func TestAlignment(t *testing.T) {
	ss := signers(t, "example.com")
	rec := &mailsectest.RecordingTransport{}
	// A parent domain aligns (relaxed).
	s := newSender(t, rec, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"mail.example.com": ss}})
	if _, err := s.Send(context.Background(), &mailsec.Message{
		From: "noreply@mail.example.com", To: []string{"ann@example.org"}, Subject: "x", Text: "y",
	}); err != nil {
		t.Fatal(err)
	}
	for _, v := range verify(t, rec.Deliveries()[0].Data, ss...) {
		if v.Err != nil || v.Domain != "example.com" {
			t.Errorf("verification %+v", v)
		}
	}
	// Another domain, or a child, does not.
	for _, from := range []string{"example.org", "badexample.com", "com"} {
		_, err := dkimsign.NewTransport(rec, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{from: ss}})
		var ae *dkimsign.AlignmentError
		if from == "com" {
			if !errors.Is(err, mailsec.ErrConfig) {
				t.Errorf("From domain %q: %v, want a configuration error", from, err)
			}
			continue
		}
		if !errors.Is(err, dkimsign.ErrUnaligned) || !errors.As(err, &ae) || ae.FromDomain != from {
			t.Errorf("From domain %q signed by example.com: %v, want an *AlignmentError", from, err)
		}
	}
	child := signers(t, "sub.example.com")
	if _, err := dkimsign.NewTransport(rec, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.com": child}}); !errors.Is(err, dkimsign.ErrUnaligned) {
		t.Errorf("a child domain signing for its parent: %v, want ErrUnaligned", err)
	}
	// Unless the application says so.
	rec.Reset()
	s = newSender(t, rec, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.org": ss}, AllowUnaligned: true})
	if _, err := s.Send(context.Background(), &mailsec.Message{
		From: "noreply@example.org", To: []string{"ann@example.org"}, Subject: "x", Text: "y",
	}); err != nil {
		t.Fatal(err)
	}
	if vs := verify(t, rec.Deliveries()[0].Data, ss...); len(vs) != 2 || vs[0].Err != nil {
		t.Fatalf("unaligned signature: %+v", vs)
	}
}

// Each Bcc recipient of an encrypted message gets its own ciphertext, and
// so its own signature over it.
func TestEachProtectedDeliverySignedOnItsOwn(t *testing.T) {
	ss := signers(t, "example.com")
	var ring []*openpgp.Entity
	rcpts := []string{"ann@example.org", "hidden.one@example.net", "hidden.two@example.net"}
	for _, r := range rcpts {
		e, err := mailsectest.NewPGPKey("R", r, mailsectest.PGPKeyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ring = append(ring, e)
	}
	p, err := pgp.New(pgp.NewKeyRing(ring...), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &mailsectest.RecordingTransport{}
	tr, err := dkimsign.NewTransport(rec, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.com": ss}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := mailsec.NewSender(tr, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(context.Background(), &mailsec.Message{
		From: "lab@example.com", To: rcpts[:1], Bcc: rcpts[1:], Subject: "Results", Text: "secret results",
	}); err != nil {
		t.Fatal(err)
	}
	ds := rec.Deliveries()
	if len(ds) != 3 {
		t.Fatalf("%d deliveries, want 3", len(ds))
	}
	bodyHashes := map[string]bool{}
	for _, d := range ds {
		if bytes.Contains(d.Data, []byte("secret results")) {
			t.Fatalf("delivery to %v is not encrypted", d.To)
		}
		for _, v := range verify(t, d.Data, ss...) {
			if v.Err != nil {
				t.Fatalf("delivery to %v: %v", d.To, v.Err)
			}
		}
		i := bytes.Index(d.Data, []byte("bh="))
		bh := string(d.Data[i : i+47])
		if bodyHashes[bh] {
			t.Fatalf("delivery to %v has the body hash of another delivery", d.To)
		}
		bodyHashes[bh] = true
	}
}
