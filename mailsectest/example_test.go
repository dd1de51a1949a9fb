package mailsectest_test

import (
	"context"
	"fmt"
	"log"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// A test server that requires AUTH over STARTTLS; Transport returns a
// transport that trusts its CA.
func ExampleStart() {
	srv, err := mailsectest.Start(mailsectest.Config{Users: map[string]string{"app": "secret"}})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	t := srv.Transport()
	t.Auth = &transport.Auth{Username: "app", Password: "secret"}
	defer t.Close()
	sender, _ := mailsec.NewSender(t, nil)
	if _, err := sender.Send(context.Background(), &mailsec.Message{
		From: "app@example.com", To: []string{"ann@example.org"}, Subject: "Hi", Text: "Hello",
	}); err != nil {
		log.Fatal(err)
	}
	m := srv.Messages()[0]
	fmt.Println(m.From, m.To, m.User, m.Header("Subject"))
	// Output: app@example.com [ann@example.org] app Hi
}

// A recording transport lets an application's tests assert what would
// have been sent, without a server.
func ExampleRecordingTransport() {
	rt := &mailsectest.RecordingTransport{}
	sender, _ := mailsec.NewSender(rt, nil)
	_, _ = sender.Send(context.Background(), &mailsec.Message{
		From: "app@example.com", To: []string{"ann@example.org"}, Subject: "Welcome", Text: "Hello",
	})
	d := rt.Deliveries()[0]
	e, _ := d.Entity()
	fmt.Println(d.To, d.Security.Level, e.Header.Get("Subject"))
	// Output: [ann@example.org] verified Welcome
}

// A CA issues the certificates adversarial tests need.
func ExampleCA_Issue() {
	ca, _ := mailsectest.NewCA()
	cert, _ := ca.Issue(mailsectest.CertOptions{DNSNames: []string{"mail.attacker.example"}})
	fmt.Println(cert.Leaf.DNSNames)
	// Output: [mail.attacker.example]
}

// A test of a policy asserts, per recipient, what form the message took:
// ciphertext only, or plain (a notice or an unprotected message).
func ExampleKindOf() {
	rt := &mailsectest.RecordingTransport{}
	sender, _ := mailsec.NewSender(rt, nil)
	_, _ = sender.Send(context.Background(), &mailsec.Message{
		From: "app@example.com", To: []string{"ann@example.org"}, Subject: "Hi", Text: "Hello.",
	})
	fmt.Println(mailsectest.KindOf(rt.Deliveries()[0].Data))
	// Output: plain
}
