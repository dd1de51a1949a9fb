package mailsec

import (
	"bytes"
	"mime/quotedprintable"
	"strings"
	"testing"
)

// naiveSevenBitClean is sevenBitClean written the obvious way.
func naiveSevenBitClean(s string) bool {
	lines := strings.Split(s, "\r\n")
	for i, l := range lines {
		if i == len(lines)-1 && l == "" && i > 0 {
			break
		}
		if len(l) > 76 || strings.HasPrefix(l, "From ") || strings.HasSuffix(l, " ") {
			return false
		}
		for j := 0; j < len(l); j++ {
			if l[j] < ' ' || l[j] > '~' {
				return false
			}
		}
	}
	return true
}

func TestSevenBitClean(t *testing.T) {
	long := strings.Repeat("a", 76)
	cases := []string{
		"", "hello\r\n", "hello", long, long + "a", long + "\r\n" + long, "a \r\nb", "a\r\nb ", "From me\r\n",
		"x\r\nFrom me", " From me", "tab\there", "caf\xc3\xa9", "del\x7f", "nul\x00", "~}|{", "bare\rcr", "end\r",
		"0123456789abcdef\x1f", "0123456789abcde\x80f", "0123456789abcdefg\x7f", strings.Repeat("ok ok ok\r\n", 100),
	}
	// Every byte value at every position of a 16-byte line.
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 16; pos++ {
			b := []byte("abcdefghijklmnop")
			b[pos] = byte(c)
			cases = append(cases, string(b))
		}
	}
	for _, s := range cases {
		if got, want := sevenBitClean(s), naiveSevenBitClean(s); got != want {
			t.Errorf("sevenBitClean(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzSevenBitClean(f *testing.F) {
	f.Add("hello\r\nworld")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := sevenBitClean(s), naiveSevenBitClean(s); got != want {
			t.Fatalf("sevenBitClean(%q) = %v, want %v", s, got, want)
		}
	})
}

func TestCanonicalText(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "a": "a", "a\r\nb": "a\r\nb", "a\nb": "a\r\nb", "a\rb": "a\r\nb", "a\r\n\nb\r": "a\r\n\r\nb\r\n",
		"\n\r\n\r": "\r\n\r\n\r\n", "x\r\n": "x\r\n", "x\r\n\r": "x\r\n\r\n",
	} {
		if got := string(canonicalText(in)); got != want {
			t.Errorf("canonicalText(%q) = %q, want %q", in, got, want)
		}
	}
}

// checkTextPart compares textPart's encoding and output for s with what
// canonicalising s up front gives.
func checkTextPart(t *testing.T, s string) {
	t.Helper()
	canon := canonicalText(s)
	wantCTE := "quoted-printable"
	want := new(bytes.Buffer)
	if sevenBitClean(string(canon)) {
		wantCTE = "7bit"
		want.Write(canon)
	} else {
		qp := quotedprintable.NewWriter(want)
		qp.Write(canon)
		qp.Close()
	}
	p := textPart("text/plain", s)
	if got := p.header.Get("Content-Transfer-Encoding"); got != wantCTE {
		t.Fatalf("textPart(%.40q...): %s, want %s", s, got, wantCTE)
	}
	for range 2 { // a retried delivery writes the part again
		var got bytes.Buffer
		if _, err := p.WriteTo(&got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("textPart(%.40q...) wrote %d octets %.60q..., want %d octets %.60q...", s, got.Len(), got.Bytes(), want.Len(), want.Bytes())
		}
	}
}

func TestTextPart(t *testing.T) {
	line := "The quick brown fox jumps over the lazy dog 0123456789."
	cases := []string{
		"", "a", "a\n", "a\r\n", "a\r", "\n", "\r\n", "\r", "a\nb\r\nc", "a\r\rb", "a\r\r\n", "From x\n", "x \n",
		"tab\there\n", "caf\xc3\xa9\n", "caf\xc3\xa9\r\nb\n", "caf\xc3\xa9\rb", strings.Repeat("a", 77) + "\n",
		strings.Repeat(line+"\n", 200), strings.Repeat(line+"\r\n", 200),
		// Beyond one conversion buffer, with a line longer than the buffer.
		strings.Repeat(line+"\n", 600), strings.Repeat("b", textBufSize+5) + "\nc\n",
		strings.Repeat("x", textBufSize-1) + "\n\n", strings.Repeat("x", textBufSize-2) + "\n\n",
		strings.Repeat("é\n", textBufSize), strings.Repeat("y", 3*textBufSize),
	}
	for _, s := range cases {
		checkTextPart(t, s)
	}
}

func FuzzTextPart(f *testing.F) {
	f.Add("hello\nworld", 0)
	f.Add("a\r\nb\rc\n", 3)
	f.Fuzz(func(t *testing.T, s string, pad int) {
		if len(s) > 1<<12 {
			return
		}
		// pad puts the breaks at every position around a buffer boundary.
		if pad = pad % 64; pad > 0 {
			s = strings.Repeat("z", textBufSize-pad) + s
		}
		checkTextPart(t, s)
	})
}

// unprintable finds the first octet outside ' '..'~', at every position
// and for every octet value, after any number of printable ones.
func TestUnprintable(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 24; pos++ {
			b := []byte("abcdefghijklmnopqrstuvwx")
			b[pos] = byte(c)
			want := len(b)
			if c < ' ' || c > '~' {
				want = pos
			}
			if got := unprintable(string(b)); got != want {
				t.Fatalf("unprintable(%q) = %d, want %d", b, got, want)
			}
			// A second unprintable octet later changes nothing.
			b[len(b)-1] = 0
			if got := unprintable(string(b)); got != min(want, len(b)-1) {
				t.Fatalf("unprintable(%q) = %d, want %d", b, got, min(want, len(b)-1))
			}
		}
	}
}
