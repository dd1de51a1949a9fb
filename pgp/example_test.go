package pgp_test

import (
	"context"
	"fmt"
	"log"
	"mime"
	"strings"

	"github.com/emersion/go-message/textproto"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

// Encrypt every message to the recipients' keys; a recipient without a
// usable key receives nothing.
func ExampleNew() {
	// In an application the keys come from a file (pgp.LoadKeyRing) or
	// from WKD; here a test key is made on the spot.
	ann, err := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		log.Fatal(err)
	}
	armored, _ := mailsectest.ArmorPublic(ann)
	keys, err := pgp.ReadKeyRing(strings.NewReader(armored))
	if err != nil {
		log.Fatal(err)
	}
	p, err := pgp.New(keys, nil)
	if err != nil {
		log.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s, err := mailsec.NewSender(rt, &mailsec.Options{
		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{p},
	})
	if err != nil {
		log.Fatal(err)
	}
	rec, err := s.Send(context.Background(), &mailsec.Message{
		From: "lab@example.com", To: []string{"ann@example.org", "bob@example.org"},
		Subject: "Your results", Text: "They are fine.",
	})
	for _, r := range rec.Recipients {
		if r.Protection != nil {
			fmt.Println(r.Address, r.Protection.Method, r.Protection.Fingerprint == pgp.Fingerprint(ann))
		} else {
			fmt.Println(r.Address, "not sent")
		}
	}
	fmt.Println(err != nil, strings.Contains(string(rt.Deliveries()[0].Data), "They are fine"))
	// Output:
	// ann@example.org pgp true
	// bob@example.org not sent
	// true false
}

// Sign with the sender's key (exported with gpg --armor
// --export-secret-keys), then encrypt, also to the sender's own key.
func ExampleReadSigningKey() {
	lab, err := mailsectest.NewPGPKey("Lab", "lab@example.com", mailsectest.PGPKeyOptions{})
	if err != nil {
		log.Fatal(err)
	}
	secret, _ := mailsectest.ArmorPrivate(lab, []byte("correct horse"))

	signer, err := pgp.ReadSigningKey(strings.NewReader(secret), []byte("correct horse"))
	if err != nil {
		log.Fatal(err)
	}
	_, err = pgp.New(pgp.NewKeyRing(), &pgp.Options{Signer: signer, EncryptToSelf: true, Autocrypt: true})
	fmt.Println(err)
	_, err = pgp.ReadSigningKey(strings.NewReader(secret), []byte("wrong"))
	fmt.Println(err != nil)
	// Output:
	// <nil>
	// true
}

// Keys from a file with one or more armored blocks, or binary packets.
func ExampleLoadKeyRing() {
	keys, err := pgp.LoadKeyRing("recipients.asc")
	if err != nil {
		fmt.Println("no key file")
		return
	}
	_ = keys
	// Output: no key file
}

func ExampleReadKeyRing() {
	_, err := pgp.ReadKeyRing(strings.NewReader("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbroken\n-----END PGP PUBLIC KEY BLOCK-----\n"))
	fmt.Println(err != nil)
	// Output: true
}

// Look keys up in the recipient domain's Web Key Directory.
func ExampleWKD() {
	wkd := &pgp.WKD{} // system roots, 10 s, 256 KiB, cached for an hour
	p, err := pgp.New(wkd, nil)
	fmt.Println(p != nil, err)
	// Output: true <nil>
}

func ExampleWKDHash() {
	fmt.Println(pgp.WKDHash("rcpt"))
	// Output: 9fbnk5ct9jhruf8nx9ezzkd5jot6ugu6
}

func ExampleWKDURLs() {
	u, _ := pgp.WKDURLs("rcpt@example.org")
	fmt.Println(u[1])
	// Output: https://example.org/.well-known/openpgpkey/hu/9fbnk5ct9jhruf8nx9ezzkd5jot6ugu6?l=rcpt
}

func ExampleFingerprint() {
	e, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	fmt.Println(len(pgp.Fingerprint(e)))
	// Output: 40
}

func ExampleParseWKDResponse() {
	_, err := pgp.ParseWKDResponse([]byte("<html>"), "ann@example.org")
	fmt.Println(err != nil)
	// Output: true
}

func ExampleNewKeyRing() {
	ann, _ := mailsectest.NewPGPKey("Ann", "Ann@Example.org", mailsectest.PGPKeyOptions{})
	keys := pgp.NewKeyRing(ann)
	es, err := keys.Lookup(context.Background(), "ann@example.org")
	fmt.Println(len(es), err)
	// Output: 1 <nil>
}

// Protect is what the Sender calls; it can be called directly to see the
// protected entity.
func ExampleProtector_Protect() {
	ann, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	p, _ := pgp.New(pgp.NewKeyRing(ann), nil)
	var h textproto.Header
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Subject", "Your results")
	h.Set("To", "ann@example.org")
	h.Set("From", "lab@example.com")
	out, err := p.Protect(context.Background(), &mailsec.Entity{Header: h, Body: strBody("They are fine.\r\n")},
		[]string{"ann@example.org"})
	if err != nil {
		log.Fatal(err)
	}
	ct, params, _ := mime.ParseMediaType(out.Entity.Header.Get("Content-Type"))
	fmt.Println(ct, params["protocol"])
	fmt.Println(out.Entity.Header.Get("Subject"), p.Method())
	// Output:
	// multipart/encrypted application/pgp-encrypted
	// ... pgp
}
