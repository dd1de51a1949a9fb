package pgp

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-message"
)

// An entity with 8-bit text, trailing white space and a "From " line is
// re-encoded into a canonical one that decodes to the same content; a
// canonical entity passes through untouched.
func TestCanonical(t *testing.T) {
	in := "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
		"Grüße  \r\nFrom the lab\r\n--b\r\nContent-Type: text/plain\r\n\r\nclean\r\n--b--\r\n"
	out, err := canonical([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if !isCanonical(out) {
		t.Fatalf("not canonical:\n%s", out)
	}
	e, err := message.Read(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	mr := e.MultipartReader()
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p.Body)
		texts = append(texts, string(b))
	}
	if strings.Join(texts, "|") != "Grüße  \r\nFrom the lab|clean" {
		t.Fatalf("content changed: %q", texts)
	}
	clean := []byte("Content-Type: text/plain\r\n\r\nhello\r\n")
	if got, err := canonical(clean); err != nil || !bytes.Equal(got, clean) {
		t.Fatalf("canonical input changed: %q %v", got, err)
	}
	for _, bad := range []string{"a \r\n", "a\n", "From x\r\n", "\xff\r\n", "a\rb\r\n", strings.Repeat("x", 999) + "\r\n"} {
		if isCanonical([]byte(bad)) {
			t.Errorf("%q passes as canonical", bad)
		}
	}
}
