package mailsec_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
	"github.com/mailsec/mailsec/transport"
)

// A Sender is built once, with a Transport to a smarthost, and used from
// every handler. Here an in-process server stands in for the smarthost;
// in production Addr is "smtp.example.com:465" (implicit TLS; port 587
// would mean STARTTLS), ServerName is left empty (the host of Addr) and
// TLSConfig nil (the system's roots).
func ExampleNewSender() {
	smarthost, err := mailsectest.Start(mailsectest.Config{ImplicitTLS: true, Users: map[string]string{"app": "from-a-secret-store"}})
	if err != nil {
		log.Fatal(err)
	}
	defer smarthost.Close()

	t := &transport.Submission{
		Addr:       smarthost.Addr,
		Mode:       transport.ImplicitTLS, // the test server's port is not 465
		ServerName: "localhost",           // the name its certificate is for
		TLSConfig:  smarthost.CA.TLSConfig(),
		Auth:       &transport.Auth{Username: "app", Password: "from-a-secret-store"},
	}
	defer t.Close()
	sender, err := mailsec.NewSender(t, nil) // verified TLS, no protection
	if err != nil {
		log.Fatal(err)
	}

	receipt, err := sender.Send(context.Background(), &mailsec.Message{
		From: "noreply@example.com", To: []string{"ann@example.org"}, Subject: "Welcome", Text: "Hello.",
	})
	if err != nil {
		log.Fatal(err)
	}
	c := receipt.Recipients[0].Connection
	fmt.Println(c.Host, c.Verification, c.SASLMechanism, smarthost.Messages()[0].User)
	// Output: localhost webpki SCRAM-SHA-256 app
}

func ExampleSender_Send() {
	// An in-process TLS server stands in for the smarthost.
	srv, err := mailsectest.Start(mailsectest.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	sender, err := mailsec.NewSender(srv.Transport(), nil)
	if err != nil {
		log.Fatal(err)
	}
	receipt, err := sender.Send(context.Background(), &mailsec.Message{
		From:    "Example App <noreply@example.com>",
		To:      []string{"ann@example.org"},
		Subject: "Reset your password",
		Text:    "Follow https://app.example.com/reset/abc to choose a new password.",
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range receipt.Recipients {
		fmt.Println(r.Address, r.Accepted, r.Connection.TLSVersion, r.Connection.Verification)
	}
	// Output: ann@example.org true TLS 1.3 webpki
}

// What Send's error says, as an application handles it: a message refused
// as invalid has no Receipt, so nothing of it is read before the error is.
func ExampleSender_Send_errors() {
	srv, err := mailsectest.Start(mailsectest.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	sender, err := mailsec.NewSender(srv.Transport(), nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, to := range []string{"ann@example.org\r\nBcc: everyone@example.org", "ann@example.org"} {
		receipt, err := sender.Send(context.Background(), &mailsec.Message{
			From: "noreply@example.com", To: []string{to}, Subject: "Reset your password", Text: "...",
		})
		switch {
		case errors.Is(err, mailsec.ErrInvalid):
			fmt.Println("refused before any I/O:", receipt == nil)
		case mailsec.IsTemporary(err):
			fmt.Println("try again later")
		case err != nil:
			fmt.Println("not delivered:", err)
		default:
			fmt.Println("sent to", receipt.Recipients[0].Address)
		}
	}
	// Output:
	// refused before any I/O: true
	// sent to ann@example.org
}

// Attachments are streamed from readers. A message with Bcc recipients is
// sent once per Bcc, so its readers must be able to seek back.
func ExampleMessage_attachments() {
	rt := &mailsectest.RecordingTransport{}
	sender, _ := mailsec.NewSender(rt, nil)
	_, err := sender.Send(context.Background(), &mailsec.Message{
		From:    "billing@example.com",
		To:      []string{"ann@example.org"},
		Bcc:     []string{"archive@example.com"},
		Subject: "Your invoice",
		Text:    "Attached.",
		HTML:    `<p>Attached. <img src="cid:logo"></p>`,
		Inline:  []mailsec.Attachment{{Filename: "logo.png", ContentID: "logo", Content: strings.NewReader("\x89PNG...")}},
		Attachments: []mailsec.Attachment{
			{Filename: "invoice-42.pdf", Content: strings.NewReader("%PDF-1.7 ...")},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range rt.Deliveries() {
		fmt.Println(d.To)
	}
	// Output:
	// [ann@example.org]
	// [archive@example.com]
}

// Invalid input is refused before any I/O, with the field named.
func ExampleValidationError() {
	sender, _ := mailsec.NewSender(&mailsectest.RecordingTransport{}, nil)
	_, err := sender.Send(context.Background(), &mailsec.Message{
		From:    "app@example.com",
		To:      []string{"ann@example.org"},
		Subject: "Hello\r\nBcc: everyone@example.org",
	})
	var ve *mailsec.ValidationError
	if errors.As(err, &ve) {
		fmt.Println(ve.Field, "-", ve.Reason)
	}
	// Output: Subject - control character '\r'
}

// Policies compose as wrappers: this one requires end-to-end protection
// for every recipient at one domain and keeps the default for the rest.
func ExamplePolicyFunc() {
	strict := func(next mailsec.Policy) mailsec.Policy {
		return mailsec.PolicyFunc(func(ctx context.Context, m *mailsec.Message, r mailsec.Recipient) (mailsec.Plan, error) {
			p, err := next.Plan(ctx, m, r)
			if r.Domain == "clinic.example" {
				p.Protection = mailsec.ProtectionRequired
			}
			return p, err
		})
	}
	policy := strict(mailsec.DefaultPolicy())
	p, _ := policy.Plan(context.Background(), nil, mailsec.Recipient{Address: "dr@clinic.example", Domain: "clinic.example"})
	fmt.Println(p.Security.Level, p.Protection)
	// Output: verified required
}

// RequireProtection makes every recipient's content leave the process
// only in the form a Protector produced; a recipient without a usable key
// (here, none has one yet) gets nothing.
func ExampleRequireProtection() {
	protector, err := pgp.New(pgp.NewKeyRing(), nil)
	if err != nil {
		log.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	sender, err := mailsec.NewSender(rt, &mailsec.Options{
		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{protector},
	})
	if err != nil {
		log.Fatal(err)
	}
	_, err = sender.Send(context.Background(), &mailsec.Message{
		From: "lab@example.com", To: []string{"patient@example.org"}, Subject: "Results", Text: "...",
	})
	fmt.Println(errors.Is(err, mailsec.ErrNoKey), len(rt.Deliveries()))
	// Output: true 0
}

// Pinning a smarthost's key: only a server presenting that public key
// gets the message.
func ExampleWithSecurity() {
	pin, err := mailsec.ParsePin("sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
	if err != nil {
		log.Fatal(err)
	}
	policy := mailsec.WithSecurity(mailsec.DefaultPolicy(), mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{pin}})
	p, _ := policy.Plan(context.Background(), nil, mailsec.Recipient{})
	fmt.Println(p.Security.Level, p.Security.Pins[0])
	// Output: pinned 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=
}

func ExampleIsTemporary() {
	err := &mailsec.SMTPError{Host: "smtp.example.com", Command: "RCPT", Code: 452, Message: "mailbox full"}
	fmt.Println(mailsec.IsTemporary(err))
	// A smarthost that does not offer STARTTLS needs fixing first.
	stripped := &mailsec.SecurityError{Host: "smtp.example.com", Category: mailsec.ErrDowngrade, Detail: "STARTTLS not offered"}
	fmt.Println(mailsec.IsTemporary(stripped))
	// Direct delivery defers the same failure at a recipient's MX host.
	fmt.Println(mailsec.IsTemporary(&transport.DomainError{Domain: "example.org",
		Errs: []error{&mailsec.SecurityError{Host: "mx.example.org", Category: mailsec.ErrDowngrade, Detail: "STARTTLS not offered"}}}))
	// Output:
	// true
	// false
	// true
}

// A message to be sent later is prepared when it is queued: bad input
// fails at once, and the Message-ID and Date are fixed for every attempt.
func ExampleSender_Prepare() {
	sender, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, &mailsec.Options{
		AllowedSenders: []string{"example.com"},
	})
	if err != nil {
		log.Fatal(err)
	}
	_, err = sender.Prepare(&mailsec.Message{From: "ceo@example.net", To: []string{"ann@example.org"}})
	fmt.Println(errors.Is(err, mailsec.ErrSenderNotAllowed))

	m, err := sender.Prepare(&mailsec.Message{
		From: "noreply@example.com", To: []string{"ann@example.org"}, Subject: "Welcome", Text: "Hello.",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(strings.HasSuffix(m.MessageID, "@example.com"), !m.Date.IsZero())
	// Output:
	// true
	// true true
}

// SendTo sends a message again to the recipients an earlier attempt did
// not reach; those it reached get nothing twice.
func ExampleSender_SendTo() {
	rt := &mailsectest.RecordingTransport{}
	sender, err := mailsec.NewSender(rt, nil)
	if err != nil {
		log.Fatal(err)
	}
	m, err := sender.Prepare(&mailsec.Message{
		From: "noreply@example.com", To: []string{"ann@example.org", "bob@example.org"},
		Subject: "Statement", Text: "Your statement is ready.",
	})
	if err != nil {
		log.Fatal(err)
	}
	// Say bob@example.org was deferred (a 4xx reply) the first time.
	receipt, err := sender.SendTo(context.Background(), m, []string{"bob@example.org"})
	if err != nil {
		log.Fatal(err)
	}
	d := rt.Deliveries()[0]
	fmt.Println(d.To, len(receipt.Recipients), strings.Contains(string(d.Data), "To: ann@example.org, bob@example.org"))
	// Output: [bob@example.org] 1 true
}
