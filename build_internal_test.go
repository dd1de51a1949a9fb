package mailsec

import (
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
		if got, want := sevenBitClean([]byte(s)), naiveSevenBitClean(s); got != want {
			t.Errorf("sevenBitClean(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzSevenBitClean(f *testing.F) {
	f.Add("hello\r\nworld")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := sevenBitClean([]byte(s)), naiveSevenBitClean(s); got != want {
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
