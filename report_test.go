package mailsec_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
)

// A message with ReportType is a multipart/report (RFC 6522): the
// report-type parameter, the Text first, the attachments after it in
// order, and nothing else.
func TestReportType(t *testing.T) {
	s, rt := newRecordingSender(t, nil)
	m := base()
	m.Text = "This is an aggregate TLS report."
	m.ReportType = "tlsrpt"
	m.Attachments = []mailsec.Attachment{{Filename: "r.json.gz", ContentType: "application/tlsrpt+gzip", Content: strings.NewReader("\x1f\x8bgz")}}
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(rt.Deliveries()[0].Data))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("Content-Type %q", msg.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var types []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		types = append(types, ct)
	}
	if strings.Join(types, " ") != "text/plain application/tlsrpt+gzip" {
		t.Fatalf("parts %v", types)
	}
}

// A report without its parts, with parts it must not have, or with a
// report-type that is not a token is refused, and nothing is sent.
func TestReportTypeRefused(t *testing.T) {
	att := []mailsec.Attachment{{Filename: "r.json", Content: strings.NewReader("{}")}}
	for name, mod := range map[string]func(*mailsec.Message){
		"no text":       func(m *mailsec.Message) { m.Text = ""; m.HTML = "<p>x</p>"; m.Attachments = att },
		"no attachment": func(m *mailsec.Message) {},
		"html":          func(m *mailsec.Message) { m.HTML = "<p>x</p>"; m.Attachments = att },
		"inline": func(m *mailsec.Message) {
			m.Inline = []mailsec.Attachment{{ContentID: "a", Content: strings.NewReader("x")}}
			m.Attachments = att
		},
		"parameter inject": func(m *mailsec.Message) { m.ReportType = `tlsrpt"; boundary="x`; m.Attachments = att },
		"space":            func(m *mailsec.Message) { m.ReportType = "tls rpt"; m.Attachments = att },
	} {
		s, rt := newRecordingSender(t, nil)
		m := base()
		m.ReportType = "tlsrpt"
		mod(m)
		_, err := s.Send(context.Background(), m)
		var ve *mailsec.ValidationError
		if !errors.As(err, &ve) || ve.Field != "ReportType" {
			t.Errorf("%s: %v", name, err)
		}
		if len(rt.Deliveries()) != 0 {
			t.Errorf("%s: sent", name)
		}
	}
}
