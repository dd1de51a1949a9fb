package transport_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// Submission over STARTTLS on port 587 to a server whose certificate is
// issued by a private CA, with SMTP AUTH (done only after TLS).
func ExampleSubmission() {
	roots := x509.NewCertPool()
	if pem, err := os.ReadFile("/etc/mailsec/relay-ca.pem"); err == nil {
		roots.AppendCertsFromPEM(pem)
	}
	t := &transport.Submission{
		Addr:      "relay.internal.example:587",
		TLSConfig: &tls.Config{RootCAs: roots},
		Auth:      &transport.Auth{Username: "app", Password: os.Getenv("SMTP_PASSWORD")},
		MaxConns:  4,
	}
	defer t.Close()
	sender, err := mailsec.NewSender(t, nil)
	if err != nil {
		log.Fatal(err)
	}
	_ = sender
}

// XOAUTH2 with a token source, as Gmail and Microsoft 365 expect.
func ExampleAuth_xoauth2() {
	t := &transport.Submission{
		Addr: "smtp.gmail.com:465",
		Auth: &transport.Auth{
			Username: "app@example.com",
			Token: func(ctx context.Context) (string, error) {
				return "ya29.access-token-from-your-oauth2-library", nil
			},
		},
	}
	_ = t
}

// A server that does not offer STARTTLS gets nothing: the error says it
// was a downgrade, distinct from a certificate problem.
func ExampleSubmission_Deliver_downgrade() {
	srv, err := mailsectest.Start(mailsectest.Config{WithholdStartTLS: true})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	t := srv.Transport()
	defer t.Close()
	_, err = t.Deliver(context.Background(), &mailsec.Delivery{
		From:    "app@example.com",
		To:      []string{"ann@example.org"},
		Content: strings.NewReader("Subject: hi\r\n\r\nnever sent\r\n"),
	})
	fmt.Println(errors.Is(err, mailsec.ErrDowngrade), errors.Is(err, mailsec.ErrCertificate), srv.Transactions())
	// Output: true false 0
}

// Direct delivers to each recipient domain's MX hosts. A domain with a
// null MX (RFC 7505) accepts no mail: the delivery fails permanently
// before any connection.
func ExampleDirect() {
	res := mailsectest.NewResolver() // in production: &mailsec.DNSResolver{Servers: []string{"127.0.0.1:53"}}
	res.MX("nomail.example", mailsec.MX{Host: "", Pref: 0})
	t := &transport.Direct{Resolver: res, LocalName: "mail.example.com"}
	_, err := t.Deliver(context.Background(), &mailsec.Delivery{
		From:    "app@example.com",
		To:      []string{"ann@nomail.example"},
		Content: strings.NewReader("Subject: hi\r\n\r\nnever sent\r\n"),
	})
	fmt.Println(errors.Is(err, transport.ErrNullMX), mailsec.IsTemporary(err))
	// Output: true false
}

// Check reports how well mail to a domain is protected, without sending
// any.
func ExampleDirect_Check() {
	res := mailsectest.NewResolver()
	res.MX("nomail.example", mailsec.MX{Host: "", Pref: 0})
	t := &transport.Direct{Resolver: res, LocalName: "mail.example.com"}
	report, err := t.Check(context.Background(), "nomail.example")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(report.NullMX, report.Verdict)
	// Output: true the domain publishes a null MX: it accepts no mail
}
