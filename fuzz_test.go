package mailsec_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-message/mail"

	"github.com/mailsec/mailsec"
)

// FuzzMessage feeds arbitrary strings to every field an application
// fills from user input. Either the message is refused as invalid, or it is
// one well-formed message whose header has exactly the fields the builder
// wrote and whose subject and text decode to what was given.
func FuzzMessage(f *testing.F) {
	f.Add("Hello", "Ann", "ann@example.org", "body", "value")
	f.Add("Hi\r\nBcc: x@y.z", "A\nB", "a@b.c>", "x\n.\nMAIL FROM:<e@v.il>", "v\r\nX-Injected: 1")
	f.Add("=?utf-8?q?a=0Ab?=", "=?utf-8?b?QQ0KQg==?=", "a@b.c\x00", "\r.\r", "=?x?q?=0D?=")
	f.Add(strings.Repeat("é", 600), "Zoë", "jöhn@bücher.example", strings.Repeat("a", 1500), strings.Repeat("w ", 500))
	f.Add("\t lead", "\"q\\\"uote\"", "\"x y\"@b.c", ".", "")
	f.Fuzz(func(t *testing.T, subject, name, addr, text, hval string) {
		rt := &recorder{}
		s, err := mailsec.NewSender(rt, nil)
		if err != nil {
			t.Fatal(err)
		}
		from := name + " <app@example.com>"
		if name == "" {
			from = "app@example.com"
		}
		m := &mailsec.Message{From: from, To: []string{addr}, Subject: subject, Text: text,
			Headers: []mailsec.Header{{Name: "X-Fuzz", Value: hval}}}
		_, err = s.Send(context.Background(), m)
		if err != nil {
			if !errors.Is(err, mailsec.ErrInvalid) {
				t.Fatalf("error %v is not a validation error", err)
			}
			if rt.data != nil {
				t.Fatal("something was delivered for an invalid message")
			}
			return
		}
		data := rt.data
		head, _, ok := bytes.Cut(data, []byte("\r\n\r\n"))
		if !ok {
			t.Fatal("no end of header")
		}
		for _, line := range bytes.SplitAfter(data, []byte("\r\n")) {
			l := bytes.TrimSuffix(line, []byte("\r\n"))
			if bytes.ContainsAny(l, "\r\n") || len(l) > 998 {
				t.Fatalf("bad line %q", line)
			}
		}
		// Count field names: only continuation lines may start with space.
		names := map[string]int{}
		for _, line := range bytes.Split(head, []byte("\r\n")) {
			if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
				continue
			}
			k, _, found := bytes.Cut(line, []byte(":"))
			if !found {
				t.Fatalf("header line without colon: %q", line)
			}
			names[strings.ToLower(string(k))]++
		}
		for _, k := range []string{"from", "to", "subject", "date", "message-id", "mime-version", "x-fuzz", "content-type"} {
			if names[k] != 1 {
				t.Fatalf("%d %q fields in\n%s", names[k], k, head)
			}
		}
		if len(names) != 9 { // the above plus content-transfer-encoding
			t.Fatalf("unexpected fields %v", names)
		}
		r, err := mail.CreateReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(subject, "=?") {
			got, err := r.Header.Subject()
			if err != nil || strings.TrimSpace(got) != strings.TrimSpace(subject) {
				t.Fatalf("subject %q decodes to %q (%v)", subject, got, err)
			}
		}
		p, err := r.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(p.Body)
		want := strings.NewReplacer("\r\n", "\r\n", "\r", "\r\n", "\n", "\r\n").Replace(text)
		if string(body) != want {
			t.Fatalf("text %q decodes to %q", want, body)
		}
	})
}

// recorder keeps the one delivery a fuzz iteration makes.
type recorder struct{ data []byte }

func (r *recorder) Deliver(_ context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := d.Content.WriteTo(&buf); err != nil {
		return nil, err
	}
	r.data = buf.Bytes()
	res := &mailsec.DeliveryResult{Reply: &mailsec.Reply{Code: 250}}
	for _, to := range d.To {
		res.Recipients = append(res.Recipients, mailsec.RecipientResult{Address: to, Accepted: true})
	}
	return res, nil
}
