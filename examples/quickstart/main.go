// Quickstart sends a message through mailsec to an in-process TLS SMTP
// server, encrypted end to end (PGP/MIME) to the recipient's key, and
// prints the Receipt with the key's fingerprint; then it shows the same
// message refused by a server that strips STARTTLS.
//
//	go run ./examples/quickstart
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
	"github.com/mailsec/mailsec/transport"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	// A smarthost stand-in: STARTTLS on a loopback port, a certificate
	// from its own test CA, AUTH required.
	srv, err := mailsectest.Start(mailsectest.Config{Users: map[string]string{"app": "demo-password"}})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	t := srv.Transport() // trusts the test CA, verifies "localhost"
	t.Auth = &transport.Auth{Username: "app", Password: "demo-password"}
	defer t.Close()

	// The recipients' OpenPGP keys. An application would load them with
	// pgp.LoadKeyRing("recipients.asc") or look them up in the recipient
	// domain's Web Key Directory (pgp.WKD); the demo makes one.
	annKey, err := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		log.Fatal(err)
	}
	auditKey, err := mailsectest.NewPGPKey("Audit", "audit@example.com", mailsectest.PGPKeyOptions{})
	if err != nil {
		log.Fatal(err)
	}
	protector, err := pgp.New(pgp.NewKeyRing(annKey, auditKey), nil)
	if err != nil {
		log.Fatal(err)
	}
	sender, err := mailsec.NewSender(t, &mailsec.Options{
		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()), // every recipient: encrypted, or nothing
		Protectors: []mailsec.Protector{protector},
		Logger:     logger,
	})
	if err != nil {
		log.Fatal(err)
	}

	msg := &mailsec.Message{
		From:    "Example App <noreply@example.com>",
		To:      []string{"Ann <ann@example.org>"},
		Bcc:     []string{"audit@example.com"},
		Subject: "Your sign-in link",
		Text:    "Sign in: https://app.example.com/login/3f9c\n\nThe link expires in 15 minutes.",
	}
	receipt, err := sender.Send(ctx, msg)
	if err != nil {
		log.Fatal(err)
	}
	out, _ := json.MarshalIndent(receipt, "", "  ")
	fmt.Printf("Receipt:\n%s\n\n", out)
	fmt.Printf("Ann's key:   %s\n", pgp.Fingerprint(annKey))
	fmt.Printf("Audit's key: %s\n\n", pgp.Fingerprint(auditKey))
	for _, m := range srv.Messages() {
		fmt.Printf("The server received %d bytes from <%s> for %v over %s; Subject %q, body in clear: %v.\n",
			len(m.Data), m.From, m.To, tlsName(m), m.Header("Subject"), bytes.Contains(m.Data, []byte("3f9c")))
	}

	// The same message to a server that does not offer STARTTLS, as if an
	// attacker had stripped it: nothing is sent.
	stripped, err := mailsectest.Start(mailsectest.Config{WithholdStartTLS: true})
	if err != nil {
		log.Fatal(err)
	}
	defer stripped.Close()
	t2 := stripped.Transport()
	defer t2.Close()
	sender2, _ := mailsec.NewSender(t2, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{protector}})
	_, err = sender2.Send(ctx, msg)
	fmt.Printf("\nTo a server without STARTTLS: %v\n", err)
	fmt.Printf("Transactions that server saw: %d\n", stripped.Transactions())
}

func tlsName(m mailsectest.Message) string {
	if m.TLS == nil {
		return "plaintext"
	}
	return tls.VersionName(m.TLS.Version)
}
