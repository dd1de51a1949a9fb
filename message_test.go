package mailsec_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
)

func newRecordingSender(t testing.TB, o *mailsec.Options) (*mailsec.Sender, *mailsectest.RecordingTransport) {
	t.Helper()
	rt := &mailsectest.RecordingTransport{}
	s, err := mailsec.NewSender(rt, o)
	if err != nil {
		t.Fatal(err)
	}
	return s, rt
}

func base() *mailsec.Message {
	return &mailsec.Message{From: "App <app@example.com>", To: []string{"ann@example.org"}, Subject: "Hello", Text: "Hi"}
}

// Every way of smuggling a line break, a recipient or a header through
// the message is refused before any I/O, with the field named.
func TestInjectionRefused(t *testing.T) {
	cases := []struct {
		field string
		edit  func(m *mailsec.Message)
	}{
		{"Subject", func(m *mailsec.Message) { m.Subject = "Hi\r\nBcc: victim@example.org" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "Hi\nBcc: victim@example.org" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "Hi\rBcc: victim@example.org" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "Hi\x00there" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "=?utf-8?q?Hi=0D=0ABcc:_victim@example.org?=" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "=?utf-8?b?SGkNCkJjYzogdmljdGltQGV4YW1wbGUub3Jn?=" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "=?x-unknown?q?a=0Ab?=" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "=?utf-16?q?=00=0A?=" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "=?utf-7?q?Hi+AA0ACg-Bcc:_evil@x.example?=" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "=?cp037?q?=C8=89=25=C2?=" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "=?utf-8?b?SGkNCkJjYzogZXZpbEB4LmV4YW1wbGU?=" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "=?utf-8?q?Hi=0D=0ABcc:_x@y=ZZ?=" }},
		{"From", func(m *mailsec.Message) {
			// A display name that decodes to an encoded-word of a line break.
			m.From = "=?utf-8?b?U3VwcG9ydCA9P3V0Zi04P3E/PTBEPTBBQmNjPTNBX2V2aWw9NDBhdHRhY2tlcj0yRWV4YW1wbGU/PQ==?= <noreply@example.com>"
		}},
		{"From", func(m *mailsec.Message) { m.From = "=?utf-8?q?=0D=0A?=@example.com" }},
		{"From", func(m *mailsec.Message) { m.From = strings.Repeat("Name", 100) + " <app@example.com>" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "line\u2028separator" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "nel\u0085" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = "bad utf-8 \xff" }},
		{"Subject", func(m *mailsec.Message) { m.Subject = strings.Repeat("x", 9000) }},
		{"From", func(m *mailsec.Message) { m.From = "app@example.com\r\nBcc: victim@example.org" }},
		{"From", func(m *mailsec.Message) { m.From = "=?utf-8?q?App=0D=0ABcc:_v@example.org?= <app@example.com>" }},
		{"From", func(m *mailsec.Message) { m.From = "app@example.com, other@example.com" }},
		{"From", func(m *mailsec.Message) { m.From = "" }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{"ann@example.org>"} }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{"<ann@example.org"} }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{"Ann <ann@example.org> <evil@example.net>"} }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{"ann@example.org\r\n.\r\nMAIL FROM:<x@y>"} }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{"\"ann doe\"@example.org"} }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{"\"Bank <support@bank.example>\" <evil@example.net>"} }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{"ann@[192.0.2.1]"} }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{"ann@-example.org"} }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{"ann@exa_mple.org"} }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{"ann@example..org"} }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{"ann.@example.org"} }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{strings.Repeat("a", 65) + "@example.org"} }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{"ann@" + strings.Repeat("a.", 130) + "org"} }},
		{"To[0]", func(m *mailsec.Message) { m.To = []string{""} }},
		{"Cc[1]", func(m *mailsec.Message) { m.Cc = []string{"ok@example.org", "a b@example.org"} }},
		{"Bcc[0]", func(m *mailsec.Message) { m.Bcc = []string{"x@example.org\x00"} }},
		{"ReplyTo[0]", func(m *mailsec.Message) { m.ReplyTo = []string{"r@example.org\nX: y"} }},
		{"Sender", func(m *mailsec.Message) { m.Sender = "s@example.org\r\n" }},
		{"EnvelopeFrom", func(m *mailsec.Message) { m.EnvelopeFrom = "bounce@example.com> SIZE=1" }},
		{"To", func(m *mailsec.Message) { m.To = nil }},
		{"Headers[0].Name", func(m *mailsec.Message) { m.Headers = []mailsec.Header{{"X-A: b\r\nBcc", "v"}} }},
		{"Headers[0].Name", func(m *mailsec.Message) { m.Headers = []mailsec.Header{{"X A", "v"}} }},
		{"Headers[0].Name", func(m *mailsec.Message) { m.Headers = []mailsec.Header{{"", "v"}} }},
		{"Headers[0].Name", func(m *mailsec.Message) { m.Headers = []mailsec.Header{{"Bcc", "victim@example.org"}} }},
		{"Headers[0].Name", func(m *mailsec.Message) { m.Headers = []mailsec.Header{{"content-type", "text/html"}} }},
		{"Headers[0].Name", func(m *mailsec.Message) { m.Headers = []mailsec.Header{{"Message-ID", "<x@y>"}} }},
		{"Headers[0].Name", func(m *mailsec.Message) { m.Headers = []mailsec.Header{{"Resent-Bcc", "victim@example.org"}} }},
		{"Headers[0].Name", func(m *mailsec.Message) { m.Headers = []mailsec.Header{{"RESENT-TO", "victim@example.org"}} }},
		{"Headers[0].Name", func(m *mailsec.Message) { m.Headers = []mailsec.Header{{"Resent-From", "ceo@example.com"}} }},
		{"Headers[0].Name", func(m *mailsec.Message) { m.Headers = []mailsec.Header{{"Resent-Message-ID", "<x@y>"}} }},
		{"Headers[0].Name", func(m *mailsec.Message) {
			m.Headers = []mailsec.Header{{"Authentication-Results", "mx.example.org; dkim=pass; spf=pass"}}
		}},
		{"Headers[0].Name", func(m *mailsec.Message) { m.Headers = []mailsec.Header{{"ARC-Seal", "i=1; cv=none"}} }},
		{"Headers[0].Name", func(m *mailsec.Message) { m.Headers = []mailsec.Header{{"Received-SPF", "pass"}} }},
		{"Headers[0].Name", func(m *mailsec.Message) { m.Headers = []mailsec.Header{{"DKIM-Signature", "v=1; d=bank.example"}} }},
		{"Headers[1].Value", func(m *mailsec.Message) {
			m.Headers = []mailsec.Header{{"X-Ok", "fine"}, {"X-Bad", "v\r\nBcc: victim@example.org"}}
		}},
		{"MessageID", func(m *mailsec.Message) { m.MessageID = "<abc@example.com>" }},
		{"MessageID", func(m *mailsec.Message) { m.MessageID = "abc@example.com\r\nBcc: x@y" }},
		{"DSN.EnvelopeID", func(m *mailsec.Message) { m.DSN = &mailsec.DSN{EnvelopeID: "a b"} }},
		{"DSN.Notify", func(m *mailsec.Message) { m.DSN = &mailsec.DSN{Notify: []mailsec.DSNNotify{"ALWAYS"}} }},
		{"Attachments[0].Filename", func(m *mailsec.Message) {
			m.Attachments = []mailsec.Attachment{{Filename: "a\r\nContent-Type: text/html", Content: strings.NewReader("x")}}
		}},
		{"Attachments[0].Filename", func(m *mailsec.Message) {
			m.Attachments = []mailsec.Attachment{{Filename: "../../etc/passwd", Content: strings.NewReader("x")}}
		}},
		{"Attachments[0].ContentType", func(m *mailsec.Message) {
			m.Attachments = []mailsec.Attachment{{Filename: "a", ContentType: "text/plain; charset=\"a\r\nb\"", Content: strings.NewReader("x")}}
		}},
		{"Attachments[0].ContentType", func(m *mailsec.Message) {
			m.Attachments = []mailsec.Attachment{{Filename: "a", ContentType: "multipart/mixed; boundary=x", Content: strings.NewReader("x")}}
		}},
		{"Attachments[0].ContentType", func(m *mailsec.Message) {
			m.Attachments = []mailsec.Attachment{{Filename: "a", ContentType: "text/plain; x=" + strings.Repeat("v", 1200), Content: strings.NewReader("x")}}
		}},
		// An encoded-word in a parameter decodes, for a receiver, into
		// "invoice.pdf\r\n.exe"; it is refused as it is in a Filename.
		{"Attachments[0].Filename", func(m *mailsec.Message) {
			m.Attachments = []mailsec.Attachment{{Filename: "=?utf-8?b?aW52b2ljZS5wZGYNCi5leGU=?=", Content: strings.NewReader("x")}}
		}},
		{"Attachments[0].ContentType", func(m *mailsec.Message) {
			m.Attachments = []mailsec.Attachment{{ContentType: `application/pdf; name="=?utf-8?b?aW52b2ljZS5wZGYNCi5leGU=?="`, Content: strings.NewReader("x")}}
		}},
		{"Attachments[0].ContentType", func(m *mailsec.Message) {
			m.Attachments = []mailsec.Attachment{{Filename: "a.pdf", ContentType: `application/pdf; name="=?utf-8?q?a=0D=0Ab?="`, Content: strings.NewReader("x")}}
		}},
		{"Attachments[0].ContentType", func(m *mailsec.Message) {
			// The same, RFC 2231 percent-encoded.
			m.Attachments = []mailsec.Attachment{{ContentType: `application/pdf; name*=utf-8''%3D%3Futf-8%3Fb%3FaW52b2ljZS5wZGYNCi5leGU%3D%3F%3D`, Content: strings.NewReader("x")}}
		}},
		{"Attachments[0].ContentType", func(m *mailsec.Message) {
			m.Attachments = []mailsec.Attachment{{ContentType: `text/plain; charset="=?utf-8?q?x?="`, Content: strings.NewReader("x")}}
		}},
		{"Inline[0].ContentType", func(m *mailsec.Message) {
			m.Inline = []mailsec.Attachment{{ContentID: "logo", ContentType: `image/png; name*=utf-8''a%0D%0Ab.png`, Content: strings.NewReader("x")}}
		}},
		{"Inline[0].ContentID", func(m *mailsec.Message) {
			m.Inline = []mailsec.Attachment{{Filename: "a.png", ContentID: "=?utf-8?q?logo?=", Content: strings.NewReader("x")}}
		}},
		{"MessageID", func(m *mailsec.Message) { m.MessageID = "=?utf-8?q?a=0D=0A?=@example.com" }},
		{"Attachments[0].Content", func(m *mailsec.Message) { m.Attachments = []mailsec.Attachment{{Filename: "a"}} }},
		{"Inline[0].ContentID", func(m *mailsec.Message) {
			m.Inline = []mailsec.Attachment{{Filename: "a.png", Content: strings.NewReader("x")}}
		}},
		{"Inline[0].ContentID", func(m *mailsec.Message) {
			m.Inline = []mailsec.Attachment{{Filename: "a.png", ContentID: "logo>\r\nX: y", Content: strings.NewReader("x")}}
		}},
	}
	s, rt := newRecordingSender(t, nil)
	for _, c := range cases {
		m := base()
		c.edit(m)
		rec, err := s.Send(context.Background(), m)
		var ve *mailsec.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%s: error %v is not a *ValidationError", c.field, err)
			continue
		}
		if ve.Field != c.field {
			t.Errorf("error names field %q, want %q: %v", ve.Field, c.field, err)
		}
		if !errors.Is(err, mailsec.ErrInvalid) || mailsec.IsTemporary(err) || rec != nil {
			t.Errorf("%s: %v: wrong classification or a receipt", c.field, err)
		}
	}
	if n := len(rt.Deliveries()); n != 0 {
		t.Fatalf("%d deliveries made for invalid messages", n)
	}
}

func TestAddressesAndHeaders(t *testing.T) {
	s, rt := newRecordingSender(t, &mailsec.Options{Now: func() time.Time { return time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC) }})
	m := &mailsec.Message{
		From:    "Zoë Müller <zoe@bücher.example>",
		To:      []string{"\"Doe, Ann\" <ann@example.org>", "bob@EXAMPLE.org"},
		Cc:      []string{"Café <cafe@example.org>"},
		ReplyTo: []string{"support@example.com"},
		Subject: "Résumé of your order – № 42",
		Text:    "x",
		Headers: []mailsec.Header{{"List-Unsubscribe", "<https://app.example/u/1>"}, {"X-Entity-Ref-ID", "ref-1"}},
	}
	rec, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	d := rt.Deliveries()[0]
	if d.From != "zoe@xn--bcher-kva.example" || strings.Join(d.To, ",") != "ann@example.org,bob@example.org,cafe@example.org" || d.SMTPUTF8 {
		t.Fatalf("envelope %q %q utf8=%v", d.From, d.To, d.SMTPUTF8)
	}
	r, err := mail.CreateReader(bytes.NewReader(d.Data))
	if err != nil {
		t.Fatal(err)
	}
	h := r.Header
	subj, _ := h.Subject()
	from, _ := h.AddressList("From")
	to, _ := h.AddressList("To")
	cc, _ := h.AddressList("Cc")
	if subj != m.Subject || from[0].Name != "Zoë Müller" || from[0].Address != "zoe@xn--bcher-kva.example" ||
		to[0].Name != "Doe, Ann" || cc[0].Name != "Café" || h.Get("List-Unsubscribe") != "<https://app.example/u/1>" {
		t.Fatalf("header decoded wrong: subject %q from %v to %v cc %v", subj, from, to, cc)
	}
	if got := h.Get("Date"); got != "Mon, 23 Nov 2026 10:00:00 +0000" {
		t.Errorf("Date %q", got)
	}
	if id, _ := h.MessageID(); id != rec.MessageID || !strings.HasSuffix(id, "@xn--bcher-kva.example") {
		t.Errorf("Message-ID %q, receipt %q", id, rec.MessageID)
	}
	// 7-bit clean: no raw UTF-8 in a message that does not need SMTPUTF8.
	for i, b := range d.Data {
		if b >= 0x80 {
			t.Fatalf("8-bit byte at %d: %q", i, d.Data[max(0, i-20):i+20])
		}
	}
}

func TestSMTPUTF8LocalPart(t *testing.T) {
	s, rt := newRecordingSender(t, nil)
	m := base()
	m.To = []string{"Jöhn <jöhn@bücher.example>"}
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	d := rt.Deliveries()[0]
	if !d.SMTPUTF8 || d.To[0] != "jöhn@xn--bcher-kva.example" {
		t.Fatalf("delivery %+v", d)
	}
	if !bytes.Contains(d.Data, []byte("To: =?utf-8?b?SsO2aG4=?= <jöhn@bücher.example>")) {
		t.Fatalf("header:\n%s", d.Data)
	}

	// A server without SMTPUTF8 gets nothing and the error says why.
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s2, err := mailsec.NewSender(srv.Transport(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s2.Send(context.Background(), m)
	if !errors.Is(err, mailsec.ErrUnsupported) || !strings.Contains(err.Error(), "SMTPUTF8") {
		t.Fatalf("error %v", err)
	}
	if srv.Transactions() != 0 {
		t.Fatal("MAIL sent")
	}
	utf8srv := mailsectest.NewServer(t, mailsectest.Config{SMTPUTF8: true})
	s3, _ := mailsec.NewSender(utf8srv.Transport(), nil)
	if _, err := s3.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if got := utf8srv.Messages()[0]; !got.SMTPUTF8 || got.To[0] != "jöhn@xn--bcher-kva.example" {
		t.Fatalf("%#v", got)
	}
}

func TestMIMEStructure(t *testing.T) {
	s, rt := newRecordingSender(t, nil)
	pdf := bytes.Repeat([]byte("%PDF-1.7 \x00\xff binary "), 5000)
	m := base()
	m.Text = "Plain text\nwith lines"
	m.HTML = `<p>HTML <img src="cid:logo"></p>`
	m.Inline = []mailsec.Attachment{{Filename: "logo.png", ContentID: "logo", Content: bytes.NewReader([]byte("\x89PNG"))}}
	m.Attachments = []mailsec.Attachment{
		{Filename: "Rechnung März.pdf", Content: bytes.NewReader(pdf)},
		{Filename: "notes.txt", ContentType: "text/plain; charset=utf-8", Content: strings.NewReader("notes")},
	}
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	data := rt.Deliveries()[0].Data
	e, err := message.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var tree []string
	var parts = map[string][]byte{}
	err = e.Walk(func(path []int, p *message.Entity, err error) error {
		if err != nil {
			return err
		}
		ct, params, _ := p.Header.ContentType()
		_, dparams, _ := p.Header.ContentDisposition()
		tree = append(tree, strings.Repeat(" ", len(path))+ct)
		if !strings.HasPrefix(ct, "multipart/") {
			b, err := io.ReadAll(p.Body)
			if err != nil {
				return err
			}
			name := dparams["filename"]
			if name == "" {
				name = ct
			}
			parts[name] = b
			_ = params
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "multipart/mixed| multipart/related|  multipart/alternative|   text/plain|   text/html|  image/png| application/pdf| text/plain"
	if got := strings.Join(tree, "|"); got != want {
		t.Fatalf("tree:\n%s\nwant\n%s", got, want)
	}
	if !bytes.Equal(parts["Rechnung März.pdf"], pdf) || string(parts["notes.txt"]) != "notes" ||
		string(parts["text/plain"]) != "Plain text\r\nwith lines" || string(parts["logo.png"]) != "\x89PNG" {
		t.Fatal("part contents differ")
	}
	if !bytes.Contains(data, []byte("Content-Id: <logo>")) && !bytes.Contains(data, []byte("Content-ID: <logo>")) {
		t.Fatal("no Content-ID")
	}
}

func TestBodyOnly(t *testing.T) {
	s, rt := newRecordingSender(t, nil)
	for _, m := range []*mailsec.Message{
		{From: "a@example.com", To: []string{"b@example.org"}, Subject: "empty"},
		{From: "a@example.com", To: []string{"b@example.org"}, HTML: "<b>only html</b>"},
		{From: "a@example.com", Bcc: []string{"b@example.org"}, Attachments: []mailsec.Attachment{{Filename: "a.bin", Content: strings.NewReader("x")}}},
	} {
		if _, err := s.Send(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	ds := rt.Deliveries()
	for i, want := range []string{"text/plain", "text/html", "application/octet-stream"} {
		e, err := message.Read(bytes.NewReader(ds[i].Data))
		if err != nil {
			t.Fatal(err)
		}
		if ct, _, _ := e.Header.ContentType(); ct != want {
			t.Errorf("message %d: %s, want %s", i, ct, want)
		}
	}
	if !bytes.Contains(ds[2].Data, []byte("To: undisclosed-recipients:;")) {
		t.Error("a Bcc-only message has no To")
	}
}

// DATA hygiene from Message to server: bodies with bare LF, bare CR, a
// lone dot, "\n.\n" and 1500-octet lines arrive as one well-formed
// message whose text decodes to the input with CRLF line endings.
func TestDataHygieneEndToEnd(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s, err := mailsec.NewSender(srv.Transport(), nil)
	if err != nil {
		t.Fatal(err)
	}
	bodies := map[string]string{
		"bare LF":      "one\ntwo\nthree",
		"bare CR":      "one\rtwo\rthree",
		"smuggle":      "hello\n.\nMAIL FROM:<evil@example.net>\r\n.\r\nRCPT TO:<victim@example.org>\r.\r\n",
		"long lines":   strings.Repeat("a", 1500) + "\n" + strings.Repeat("ü", 800) + "\n" + strings.Repeat("b ", 750),
		"lone dot":     ".",
		"dots":         ".\r\n..\r\n.x\r\n",
		"trailing ws":  "trailing space \nand tab\t\nFrom the start\n",
		"control":      "nul\x00byte and \x1b escape",
		"no final eol": "end",
	}
	i := 0
	for name, body := range bodies {
		m := base()
		m.Subject = name
		m.Text = body
		m.HTML = "<pre>" + body + "</pre>"
		if _, err := s.Send(context.Background(), m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		msgs := srv.Messages()
		if len(msgs) != i+1 {
			t.Fatalf("%s: %d messages on the server, want %d (a second message was smuggled?)", name, len(msgs), i+1)
		}
		got := msgs[i]
		i++
		data := string(got.Data)
		for n, line := range strings.SplitAfter(data, "\r\n") {
			l := strings.TrimSuffix(line, "\r\n")
			if strings.ContainsAny(l, "\r\n") {
				t.Fatalf("%s: bare CR or LF in line %d: %q", name, n, line)
			}
			if len(l) > 998 {
				t.Fatalf("%s: line %d has %d octets", name, n, len(l))
			}
		}
		r, err := mail.CreateReader(strings.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		p, err := r.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		text, _ := io.ReadAll(p.Body)
		want := strings.NewReplacer("\r\n", "\r\n", "\r", "\r\n", "\n", "\r\n").Replace(body)
		if string(text) != want {
			t.Fatalf("%s: text part decodes to\n%q\nwant\n%q", name, text, want)
		}
	}
	if srv.Transactions() != len(bodies) {
		t.Fatalf("%d transactions for %d messages", srv.Transactions(), len(bodies))
	}
}

// Attachments are streamed: the builder writes base64 of the first chunk
// before it reads the second, so a large file never sits in memory whole.
func TestAttachmentIsStreamed(t *testing.T) {
	out := &watchWriter{}
	src := &chunkReader{chunks: 8, size: 16 << 10, out: out}
	m := base()
	m.Attachments = []mailsec.Attachment{{Filename: "big.bin", Content: src}}
	tr := writerTransport{w: out}
	s, err := mailsec.NewSender(tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if src.err != nil {
		t.Fatal(src.err)
	}
	if src.read != 8 {
		t.Fatalf("read %d chunks", src.read)
	}
}

type watchWriter struct{ n int }

func (w *watchWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// chunkReader returns chunks of size bytes (small enough for one Read
// of io.Copy's buffer) and checks, before producing each chunk after the
// first, that the previous one has reached the output.
type chunkReader struct {
	chunks, size, read int
	out                *watchWriter
	lastOut            int
	err                error
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.read == c.chunks {
		return 0, io.EOF
	}
	if c.read > 0 && c.out.n-c.lastOut < c.size {
		c.err = errors.New("the previous chunk had not been written when the next was read: content is buffered")
	}
	c.lastOut = c.out.n
	n := min(len(p), c.size)
	for i := range p[:n] {
		p[i] = byte(i)
	}
	c.read++
	return n, nil
}

// writerTransport writes deliveries to w.
type writerTransport struct{ w io.Writer }

func (t writerTransport) Deliver(_ context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	if _, err := d.Content.WriteTo(t.w); err != nil {
		return nil, err
	}
	res := &mailsec.DeliveryResult{Reply: &mailsec.Reply{Code: 250}}
	for _, to := range d.To {
		res.Recipients = append(res.Recipients, mailsec.RecipientResult{Address: to, Accepted: true})
	}
	return res, nil
}

func TestDecodeRoundTripOfEncodedSubject(t *testing.T) {
	s, rt := newRecordingSender(t, nil)
	long := strings.Repeat("Grüße aus Köln ", 40) + strings.Repeat("x", 950)
	m := base()
	m.Subject = long
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	data := rt.Deliveries()[0].Data
	for _, l := range strings.Split(string(data), "\r\n") {
		if len(l) > 998 {
			t.Fatalf("header line of %d octets", len(l))
		}
	}
	e, _ := message.Read(bytes.NewReader(data))
	got, err := new(mime.WordDecoder).DecodeHeader(strings.ReplaceAll(e.Header.Get("Subject"), "\r\n", ""))
	if err != nil || strings.ReplaceAll(got, " ", "") != strings.ReplaceAll(long, " ", "") {
		t.Fatalf("subject round trip:\n%q\n%q (%v)", got, long, err)
	}
}

// Folding never leaves a header line made only of blanks, and unfolding
// gives back the value.
func TestHeaderFolding(t *testing.T) {
	s, rt := newRecordingSender(t, nil)
	for _, subject := range []string{
		"Hello" + strings.Repeat(" ", 160) + "X",
		"Trailing blanks" + strings.Repeat(" ", 120),
		strings.Repeat("word\t", 60),
		strings.Repeat("a ", 200),
		strings.Repeat("y", 880) + " " + strings.Repeat("z", 880),
	} {
		m := base()
		m.Subject = subject
		rt.Reset()
		if _, err := s.Send(context.Background(), m); err != nil {
			t.Fatalf("%q: %v", subject[:20], err)
		}
		head, _, _ := bytes.Cut(rt.Deliveries()[0].Data, []byte("\r\n\r\n"))
		for _, line := range strings.Split(string(head), "\r\n") {
			if strings.TrimLeft(line, " \t") == "" || len(line) > 998 {
				t.Fatalf("bad header line %q", line)
			}
		}
		// Unfold as RFC 5322 section 2.2.3 says: remove each CRLF.
		_, field, _ := strings.Cut(string(head), "\r\nSubject: ")
		field, _, _ = strings.Cut(field, "\r\nMessage-ID:")
		if got := strings.ReplaceAll(field, "\r\n", ""); got != subject && !strings.Contains(got, "=?") {
			t.Fatalf("subject %q unfolds to %q", subject, got)
		}
	}
}
