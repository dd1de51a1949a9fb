package dkimsign_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"log"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dkimsign"
	"github.com/mailsec/mailsec/mailsectest"
)

// An RSA and an Ed25519 key sign every message from example.com; a
// receiver (here go-msgauth's verifier, the keys handed to it as DNS would)
// verifies both signatures.
func ExampleNewTransport() {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	r, err := dkimsign.NewSigner("example.com", "r2025", rsaKey)
	if err != nil {
		log.Fatal(err)
	}
	e, err := dkimsign.NewSigner("example.com", "e2025", edKey)
	if err != nil {
		log.Fatal(err)
	}

	// In production, wrap a *transport.Submission or *transport.Direct.
	rec := &mailsectest.RecordingTransport{}
	t, err := dkimsign.NewTransport(rec, &dkimsign.Options{
		Domains: map[string][]*dkimsign.Signer{"example.com": {r, e}},
	})
	if err != nil {
		log.Fatal(err)
	}
	sender, err := mailsec.NewSender(t, nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := sender.Send(context.Background(), &mailsec.Message{
		From: "noreply@example.com", To: []string{"ann@example.org"},
		Subject: "Your receipt", Text: "Thank you for your order.",
	}); err != nil {
		log.Fatal(err)
	}

	records := map[string]string{r.RecordName(): r.Record(), e.RecordName(): e.Record()}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(rec.Deliveries()[0].Data), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return []string{records[name]}, nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, v := range vs {
		fmt.Println(v.Domain, v.Err == nil)
	}
	// Output:
	// example.com true
	// example.com true
}

// The DNS record to publish for a key, as one zone-file line.
func ExampleSigner_ZoneLine() {
	_, key, err := ed25519.GenerateKey(bytes.NewReader(make([]byte, 32)))
	if err != nil {
		log.Fatal(err)
	}
	s, err := dkimsign.NewSigner("example.com", "e2025", key)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.ZoneLine())
	// Output:
	// e2025._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="
}
