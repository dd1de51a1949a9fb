package bench_test

import (
	"context"
	"io"
	"testing"

	"github.com/mailsec/mailsec"
)

// discardTransport accepts every delivery and writes its content to
// io.Discard: what is left is the cost of building and protecting.
type discardTransport struct{}

func (discardTransport) Deliver(_ context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	if _, err := d.Content.WriteTo(io.Discard); err != nil {
		return nil, err
	}
	res := &mailsec.DeliveryResult{}
	for _, r := range d.To {
		res.Recipients = append(res.Recipients, mailsec.RecipientResult{Address: r, Accepted: true})
	}
	return res, nil
}

// benchSend sends text to ann@example.org through a Sender with p, which
// every recipient's plan requires, or, with p nil, without protection: the
// cost of building the MIME message alone.
func benchSend(b *testing.B, p mailsec.Protector, text string) {
	o := &mailsec.Options{Policy: mailsec.DefaultPolicy()}
	if p != nil {
		o = &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}}
	}
	s, err := mailsec.NewSender(discardTransport{}, o)
	if err != nil {
		b.Fatal(err)
	}
	m := &mailsec.Message{From: "lab@example.com", To: []string{"ann@example.org"}, Subject: "Results", Text: text}
	ctx := context.Background()
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Send(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}
