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

// A field the message header holds as written (the Sender adds its fields
// with AddRaw) is copied into the inner header as written: textproto would
// fold it again, and here inside the quoted-string.
func TestInnerKeepsFolding(t *testing.T) {
	h := header()
	const to = "To: \"Doe, Ann (Lab), x@evil.example\" <ann@example.org>,\r\n \"Roe, Bob Quincy Junior\" <bob@example.org>\r\n"
	h.Del("To")
	h.AddRaw([]byte(to))
	ih, _ := Inner(h, str(""))
	var buf bytes.Buffer
	if err := textproto.WriteHeader(&buf, ih); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "\r\n"+to) {
		t.Fatalf("To not copied as written:\n%s", buf.String())
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

// Rendered writes what Inner gives, in one Write up to the content's
// body; fields added with AddRaw keep their own form.
func TestRendered(t *testing.T) {
	const boundary = "=_p0123456789abcdef0123456789abcdef"
	body := str("Your results are ready.\r\n")
	h := header()
	ih, ib := inner(h, body, boundary)
	var want bytes.Buffer
	if err := textproto.WriteHeader(&want, ih); err != nil {
		t.Fatal(err)
	}
	if _, err := ib.WriteTo(&want); err != nil {
		t.Fatal(err)
	}
	r, err := rendered(h, body, boundary)
	if err != nil {
		t.Fatal(err)
	}
	var got writes
	n, err := r.WriteTo(&got)
	if err != nil || n != int64(got.Len()) {
		t.Fatal(n, err)
	}
	if got.String() != want.String() {
		t.Fatalf("Rendered wrote\n%q\nInner\n%q", got.String(), want.String())
	}
	if head := got.calls[0]; !strings.HasSuffix(head, "Content-Transfer-Encoding: 7bit\r\n\r\n") || !strings.Contains(head, "--"+boundary+"\r\n") {
		t.Fatalf("first write %q does not end with the content header", head)
	}

	// Raw fields: the same bytes where Inner would refold.
	var rh textproto.Header
	long := "To: " + strings.Repeat("someone@example.org, ", 5) + "\r\n last@example.org\r\n"
	rh.AddRaw([]byte("Content-Type: text/plain; charset=utf-8\r\n"))
	rh.AddRaw([]byte(long))
	rh.AddRaw([]byte("MIME-Version: 1.0\r\n"))
	rh.AddRaw([]byte("Message-ID: <x@y>\r\n"))
	r, err = rendered(rh, body, boundary)
	if err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	if _, err := r.WriteTo(&raw); err != nil {
		t.Fatal(err)
	}
	wantRaw := innerFixed1 + boundary + innerFixed2 + "Message-ID: <x@y>\r\n" + long + "\r\n--" + boundary + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n\r\nYour results are ready.\r\n\r\n--" + boundary + "--\r\n"
	if raw.String() != wantRaw {
		t.Fatalf("raw fields:\n%q\nwant\n%q", raw.String(), wantRaw)
	}

	var bad textproto.Header
	bad.Add("X-Bad", "a\r\nb")
	if _, err := Rendered(bad, body); err == nil {
		t.Fatal("a value with CRLF was rendered")
	}
}

// writes records each Write.
type writes struct {
	bytes.Buffer
	calls []string
}

func (w *writes) Write(p []byte) (int, error) {
	w.calls = append(w.calls, string(p))
	return w.Buffer.Write(p)
}

func TestAuthors(t *testing.T) {
	var h textproto.Header
	h.Set("From", `"Doe, Jane" <jane@example.org>`)
	got, err := Authors(h)
	if err != nil || len(got) != 1 || got[0] != "jane@example.org" {
		t.Fatalf("From only: %q, %v", got, err)
	}
	h.Set("Sender", "=?utf-8?q?B=C3=BCro?= <office@example.org>")
	got, err = Authors(h)
	if err != nil || len(got) != 2 || got[1] != "office@example.org" {
		t.Fatalf("From and Sender: %q, %v", got, err)
	}
	h.Set("From", "not an address")
	if _, err := Authors(h); err == nil {
		t.Fatal("an unparsable From accepted")
	}
}
