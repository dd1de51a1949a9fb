package smtpdata

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func write(t testing.TB, chunks ...string) (string, error) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, c := range chunks {
		if _, err := w.Write([]byte(c)); err != nil {
			return buf.String(), err
		}
	}
	err := w.Close()
	return buf.String(), err
}

func TestLineEndings(t *testing.T) {
	for in, want := range map[string]string{
		"a\nb":           "a\r\nb",
		"a\rb":           "a\r\nb",
		"a\r\nb":         "a\r\nb",
		"a\r\r\nb":       "a\r\n\r\nb",
		"a\n\rb":         "a\r\n\r\nb",
		"\n.\n":          "\r\n.\r\n",
		"\r.\r\n":        "\r\n.\r\n",
		"end\r":          "end\r\n",
		"":               "",
		"x\n\n\n":        "x\r\n\r\n\r\n",
		"\x00\xff\r\x85": "\x00\xff\r\n\x85",
	} {
		got, err := write(t, in)
		if err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", in, got, err, want)
		}
	}
}

// A CR at the end of one Write and LF at the start of the next are one
// line ending, not two.
func TestSplitCRLF(t *testing.T) {
	got, err := write(t, "a\r", "\nb\r", "c")
	if err != nil || got != "a\r\nb\r\nc" {
		t.Fatalf("%q %v", got, err)
	}
}

func TestLineLimit(t *testing.T) {
	ok := strings.Repeat("x", 998)
	if _, err := write(t, ok+"\n"+ok); err != nil {
		t.Fatal(err)
	}
	_, err := write(t, ok[:500], ok[:499])
	if !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("999 octets across writes: %v", err)
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	_, _ = w.Write([]byte(ok + "y"))
	if _, err := w.Write([]byte("more")); !errors.Is(err, ErrLineTooLong) {
		t.Fatal("writer accepted data after an error")
	}
	if err := w.Close(); !errors.Is(err, ErrLineTooLong) {
		t.Fatal("Close hid the error")
	}
}

func FuzzWriter(f *testing.F) {
	f.Add([]byte("a\r\nb\nc\rd"), 3)
	f.Add([]byte("\r\r\n\n.\r\n"), 1)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		orig := bytes.Clone(in)
		var buf bytes.Buffer
		w := NewWriter(&buf)
		if split <= 0 {
			split = 1
		}
		var err error
		for len(in) > 0 && err == nil {
			n := min(split, len(in))
			_, err = w.Write(in[:n])
			in = in[n:]
		}
		if err == nil {
			err = w.Close()
		}
		out := buf.Bytes()
		for i, c := range out {
			if c == '\r' && (i+1 >= len(out) || out[i+1] != '\n') {
				t.Fatalf("bare CR at %d in %q", i, out)
			}
			if c == '\n' && (i == 0 || out[i-1] != '\r') {
				t.Fatalf("bare LF at %d in %q", i, out)
			}
		}
		for _, l := range bytes.Split(out, []byte("\r\n")) {
			if len(l) > 998 {
				t.Fatalf("line of %d octets", len(l))
			}
		}
		if err != nil && !errors.Is(err, ErrLineTooLong) {
			t.Fatal(err)
		}
		if err == nil && !bytes.Equal(out, reference(orig)) {
			t.Fatalf("output %q differs from the reference %q", out, reference(orig))
		}
	})
}

// reference is the obvious byte-at-a-time normalisation.
func reference(in []byte) []byte {
	var out []byte
	for i := 0; i < len(in); i++ {
		switch in[i] {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(in) && in[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, in[i])
		}
	}
	return out
}
