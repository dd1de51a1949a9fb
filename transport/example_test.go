package transport_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// Submission over STARTTLS to a server whose certificate is issued by a
// private CA, with SMTP AUTH (done only after TLS). A mailsectest server
// stands in for the relay; the comments show what production code says
// instead.
func ExampleSubmission() {
	relay, err := mailsectest.Start(mailsectest.Config{Users: map[string]string{"app": "relay-password"}})
	if err != nil {
		log.Fatal(err)
	}
	defer relay.Close()
	roots := relay.CA.Pool() // x509.NewCertPool() and AppendCertsFromPEM(os.ReadFile("/etc/mailsec/relay-ca.pem"))

	t := &transport.Submission{
		Addr:       relay.Addr,  // "relay.internal.example:587"
		ServerName: "localhost", // the name the certificate is for; by default the host in Addr
		TLSConfig:  &tls.Config{RootCAs: roots},
		Auth:       &transport.Auth{Username: "app", Password: "relay-password"}, // os.Getenv("SMTP_PASSWORD")
		MaxConns:   4,
	}
	defer t.Close()
	sender, err := mailsec.NewSender(t, nil)
	if err != nil {
		log.Fatal(err)
	}
	receipt, err := sender.Send(context.Background(), &mailsec.Message{
		From:    "noreply@example.com",
		To:      []string{"ann@example.org"},
		Subject: "Reset your password",
		Text:    "Choose a new password: https://app.example.com/reset/3f9c",
	})
	if err != nil {
		log.Fatal(err)
	}
	r := receipt.Recipients[0]
	fmt.Println(r.Accepted, r.Connection.Verification, r.Connection.SASLMechanism)
	// Output: true webpki SCRAM-SHA-256
}

// XOAUTH2 with a token source, as Gmail and Microsoft 365 expect on port
// 465 (implicit TLS). A mailsectest server stands in for smtp.gmail.com.
func ExampleAuth_xoauth2() {
	gmail, err := mailsectest.Start(mailsectest.Config{ImplicitTLS: true,
		Tokens: map[string]string{"app@example.com": "ya29.access-token"}})
	if err != nil {
		log.Fatal(err)
	}
	defer gmail.Close()
	t := &transport.Submission{
		Addr:       gmail.Addr,            // "smtp.gmail.com:465"
		Mode:       transport.ImplicitTLS, // implied by port 465
		ServerName: "localhost",
		TLSConfig:  &tls.Config{RootCAs: gmail.CA.Pool()}, // nil: the system's roots
		Auth: &transport.Auth{
			Username: "app@example.com",
			Token: func(ctx context.Context) (string, error) {
				return "ya29.access-token", nil // from your OAuth 2.0 library's token source
			},
		},
	}
	defer t.Close()
	res, err := t.Deliver(context.Background(), &mailsec.Delivery{
		From:    "app@example.com",
		To:      []string{"ann@example.org"},
		Content: strings.NewReader("Subject: hi\r\n\r\nhello\r\n"),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Recipients[0].Accepted, res.Connection.SASLMechanism, res.Connection.Verification)
	// Output: true XOAUTH2 webpki
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
	res := mailsectest.NewResolver() // in production: &dns.Client{Servers: []string{"127.0.0.1:53"}}
	res.MX("nomail.example", dns.MX{Host: "", Pref: 0})
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
	res.MX("nomail.example", dns.MX{Host: "", Pref: 0})
	t := &transport.Direct{Resolver: res, LocalName: "mail.example.com"}
	report, err := t.Check(context.Background(), "nomail.example")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(report.NullMX, report.Verdict)
	// Output: true the domain publishes a null MX: it accepts no mail
}

// A delivery whose connection broke after the end of the message was sent
// has no verdict: the server may have taken the message, and sending it
// again may deliver it twice. OutcomeUnknown tells such a failure from
// one that sent nothing.
func ExampleOutcomeUnknown() {
	// What Deliver, or a Receipt's recipient, reports when the connection
	// breaks while the reply to the end of the message is awaited.
	lost := &mailsec.NetworkError{Host: "mx.example.org", Op: "DATA", Err: fmt.Errorf("%w: %w", transport.ErrNoVerdict, io.EOF)}
	// What it reports when the server refuses a recipient for now.
	busy := &mailsec.SMTPError{Host: "mx.example.org", Command: "RCPT", Code: 450, Message: "mailbox busy"}
	for _, err := range []error{lost, busy} {
		if transport.OutcomeUnknown(err) {
			fmt.Println("may have been delivered; a retry may deliver it twice")
		} else {
			fmt.Println("not delivered; temporary:", mailsec.IsTemporary(err))
		}
	}
	// Output:
	// may have been delivered; a retry may deliver it twice
	// not delivered; temporary: true
}
