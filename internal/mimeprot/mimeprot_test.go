package mimeprot

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

type str string

func (s str) WriteTo(w io.Writer) (int64, error) {
	n, err := io.WriteString(w, string(s))
	return int64(n), err
}

func header() textproto.Header {
	var h textproto.Header
	for _, f := range [][2]string{
		{"Content-Transfer-Encoding", "7bit"}, {"Content-Type", "text/plain; charset=utf-8"}, {"MIME-Version", "1.0"},
		{"X-Campaign", "7"}, {"Message-Id", "<id@example.com>"}, {"Subject", "Lab results for Ann"},
		{"Cc", "c@example.org"}, {"To", "ann@example.org"}, {"From", "lab@example.com"}, {"Date", "Mon, 23 Nov 2026 10:00:00 +0000"},
	} {
		h.Add(f[0], f[1])
	}
	return h
}

func TestInnerAndOuter(t *testing.T) {
	h := header()
	ih, body := Inner(h, str("Your results are ready.\r\n"))
	var buf bytes.Buffer
	if err := textproto.WriteHeader(&buf, ih); err != nil {
		t.Fatal(err)
	}
	if _, err := body.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	e, err := message.Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	ct, params, _ := e.Header.ContentType()
	if ct != "multipart/mixed" || params["protected-headers"] != "v1" || e.Header.Get("Subject") != "Lab results for Ann" ||
		e.Header.Get("X-Campaign") != "7" || e.Header.Get("To") != "ann@example.org" {
		t.Fatalf("inner header: %v %v", ct, params)
	}
	mr := e.MultipartReader()
	p, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(p.Body)
	if ct, _, _ := p.Header.ContentType(); ct != "text/plain" || string(b) != "Your results are ready.\r\n" {
		t.Fatalf("part %s %q", ct, b)
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatal("more than one part")
	}

	out := Outer(h, DefaultSubject)
	var ob bytes.Buffer
	_ = textproto.WriteHeader(&ob, out)
	if strings.Contains(ob.String(), "Lab results") || strings.Contains(strings.ToLower(ob.String()), "content-") ||
		out.Get("Subject") != "..." || out.Get("To") != "ann@example.org" || out.Get("X-Campaign") != "" ||
		out.Get("Message-Id") != "<id@example.com>" || out.Get("Mime-Version") != "1.0" {
		t.Fatalf("outer header:\n%s", ob.String())
	}
}

func BenchmarkInnerOuter(b *testing.B) {
	h := header()
	b.ReportAllocs()
	for b.Loop() {
		ih, _ := Inner(h, str(""))
		_ = Outer(h, DefaultSubject)
		_ = ih
	}
}
