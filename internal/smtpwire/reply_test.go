package smtpwire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		in    string
		code  int
		text  string
		lines int
	}{
		{"250 OK\r\n", 250, "OK", 1},
		{"250\r\n", 250, "", 1},
		{"250 \r\n", 250, "", 1},
		{"220 mx.example ESMTP\n", 220, "mx.example ESMTP", 1},
		{"250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n", 250, "mx.example\nPIPELINING\n8BITMIME", 3},
		{"250-first\r\n250-\r\n250 last\r\n", 250, "first\n\nlast", 3},
		{"550 5.7.1 bare\rCR inside\r\n", 550, "5.7.1 bare\rCR inside", 1},
		{"421-a\n421 b\r\n", 421, "a\nb", 2},
		{"354 go ahead\r\n", 354, "go ahead", 1},
	} {
		r := NewReader(strings.NewReader(tc.in), 0)
		rep, err := r.ReadReply()
		if err != nil || rep.Code != tc.code || rep.Text != tc.text || rep.Lines != tc.lines {
			t.Errorf("%q: %+v %v", tc.in, rep, err)
		}
		if r.Buffered() != 0 {
			t.Errorf("%q: %d bytes left", tc.in, r.Buffered())
		}
		if _, err := r.ReadReply(); err != io.EOF {
			t.Errorf("%q: after the reply: %v, want EOF", tc.in, err)
		}
	}
}

func TestReadReplyRefuses(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"\r\n", &SyntaxError{}},
		{"25\r\n", &SyntaxError{}},
		{"abc def\r\n", &SyntaxError{}},
		{"150 preliminary\r\n", &SyntaxError{}},
		{"650 no such class\r\n", &SyntaxError{}},
		{"260 second digit\r\n", &SyntaxError{}},
		{"250x\r\n", &SyntaxError{}},
		{"2500 four digits\r\n", &SyntaxError{}},
		{"250-a\r\n550 b\r\n", &SyntaxError{}},
		{"250-a\r\n250 b", io.ErrUnexpectedEOF},
		{"250 no line end", io.ErrUnexpectedEOF},
		{"250-" + strings.Repeat("x", 100) + "\r\n250 y\r\n", ErrTooLong},
		{strings.Repeat("250-x\r\n", 30) + "250 y\r\n", ErrTooLong},
		{"250 " + strings.Repeat("x", 200), ErrTooLong},
	} {
		for _, oneByte := range []bool{false, true} {
			var src io.Reader = strings.NewReader(tc.in)
			if oneByte {
				src = iotest.OneByteReader(src)
			}
			_, err := NewReader(src, 64).ReadReply()
			var se *SyntaxError
			if _, want := tc.want.(*SyntaxError); want {
				if !errors.As(err, &se) {
					t.Errorf("%q: error %v, want a SyntaxError", tc.in, err)
				}
				continue
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("%q: error %v, want %v", tc.in, err, tc.want)
			}
		}
	}
}

// A syntax error names the line and the rule, never the text (which may
// echo a credential).
func TestErrorsQuoteNothing(t *testing.T) {
	_, err := NewReader(strings.NewReader("250-ok\r\nAUTH PLAIN c2VjcmV0\r\n"), 0).ReadReply()
	if err == nil || strings.Contains(err.Error(), "c2VjcmV0") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("error %v", err)
	}
}

// One reply per call: what follows stays buffered and visible.
func TestReplyBoundaries(t *testing.T) {
	r := NewReader(strings.NewReader("250 first\r\n550 5.7.1 second\r\n"), 0)
	rep, err := r.ReadReply()
	if err != nil || rep.Code != 250 {
		t.Fatal(rep, err)
	}
	if r.Buffered() != len("550 5.7.1 second\r\n") {
		t.Fatalf("%d bytes buffered", r.Buffered())
	}
	rep, err = r.ReadReply()
	if err != nil || rep.Code != 550 || rep.Text != "5.7.1 second" || r.Buffered() != 0 {
		t.Fatal(rep, err, r.Buffered())
	}
}

// Fill reads once and makes what arrived visible without parsing it.
func TestFill(t *testing.T) {
	r := NewReader(strings.NewReader("250 x\r\n"), 0)
	if n, err := r.Fill(); n != 7 || err != nil || r.Buffered() != 7 {
		t.Fatal(n, err, r.Buffered())
	}
	if rep, err := r.ReadReply(); err != nil || rep.Code != 250 {
		t.Fatal(rep, err)
	}
}

func TestDotWriter(t *testing.T) {
	for in, want := range map[string]string{
		"":                             ".\r\n",
		"a\r\n":                        "a\r\n.\r\n",
		"a":                            "a\r\n.\r\n",
		".\r\n":                        "..\r\n.\r\n",
		"a\r\n.b\r\n..c\r\nd.\r\n.":    "a\r\n..b\r\n...c\r\nd.\r\n..\r\n.\r\n",
		".leading\r\nmiddle . dot\r\n": "..leading\r\nmiddle . dot\r\n.\r\n",
	} {
		// Whole, and split at every position: stuffing must not depend on
		// how the input is cut.
		for cut := 0; cut <= len(in); cut++ {
			var out bytes.Buffer
			var d DotWriter
			d.Reset(&out)
			if _, err := d.Write([]byte(in[:cut])); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Write([]byte(in[cut:])); err != nil {
				t.Fatal(err)
			}
			if err := d.FinishBody(); err != nil {
				t.Fatal(err)
			}
			if err := d.Terminate(); err != nil {
				t.Fatal(err)
			}
			if out.String() != want {
				t.Fatalf("%q cut at %d: got %q, want %q", in, cut, out.String(), want)
			}
		}
	}
}

// FuzzReadReply checks the Reader against a plain reference parser on any
// input, read whole and in small pieces through a small buffer: the same
// replies, the same boundaries, the same kind of error, and every reply
// within the bound.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"250 OK\r\n",
		"220 mx ESMTP\r\n250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
		"250-a\n250 b\r\n",
		"550 5.7.1 no\r\n550-x\r\n",
		"250-a\r\n251 b\r\n",
		"250 a\rb\r\n\r\n",
		"354 go\r\n250 early\r\n",
		"2",
		"250\n250-\n250 \n",
		"199 x\r\n",
		"262 x\r\n",
	} {
		f.Add([]byte(s), uint16(64), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, max uint16, chunk uint8) {
		limit := int(max%512) + 1
		want, wantErr := referenceReplies(in, limit)
		for _, small := range []bool{false, true} {
			var src io.Reader = bytes.NewReader(in)
			r := NewReader(src, limit)
			if small {
				src = &chunkReader{r: bytes.NewReader(in), n: int(chunk%7) + 1}
				r = NewReader(src, limit)
				r.buf = make([]byte, int(chunk%5)+1)
			}
			var got []Reply
			var err error
			for {
				var rep Reply
				rep, err = r.ReadReply()
				if err != nil {
					break
				}
				if rep.Code < 200 || rep.Code > 559 || rep.Lines < 1 || strings.Count(rep.Text, "\n") != rep.Lines-1 || len(rep.Text) > limit {
					t.Fatalf("bad reply %+v", rep)
				}
				got = append(got, rep)
			}
			if len(got) != len(want) {
				t.Fatalf("small=%v: %d replies, reference %d (%v / %v)", small, len(got), len(want), err, wantErr)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("small=%v: reply %d: %+v, reference %+v", small, i, got[i], want[i])
				}
			}
			if kind(err) != kind(wantErr) {
				t.Fatalf("small=%v: error %v, reference %v", small, err, wantErr)
			}
		}
	})
}

func kind(err error) string {
	var se *SyntaxError
	switch {
	case errors.As(err, &se):
		return "syntax"
	case errors.Is(err, ErrTooLong):
		return "too long"
	case errors.Is(err, ErrTLSRecord):
		return "tls record"
	case err == io.EOF:
		return "eof"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected eof"
	}
	return "other: " + err.Error()
}

// referenceReplies parses in the obvious way: split into lines, group
// them into replies.
func referenceReplies(in []byte, limit int) ([]Reply, error) {
	var out []Reply
	for len(in) > 0 {
		if in[0] >= 20 && in[0] <= 23 {
			// A TLS record's content type where a reply code begins.
			return out, ErrTLSRecord
		}
		var lines []string
		size, code := 0, 0
		for {
			i := bytes.IndexByte(in[size:], '\n')
			if i < 0 {
				if len(in) > limit {
					return out, ErrTooLong
				}
				return out, io.ErrUnexpectedEOF
			}
			line := in[size : size+i+1]
			size += i + 1
			if size > limit {
				return out, ErrTooLong
			}
			l := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
			if len(l) < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '5' || l[2] < '0' || l[2] > '9' {
				return out, &SyntaxError{}
			}
			c := int(l[0]-'0')*100 + int(l[1]-'0')*10 + int(l[2]-'0')
			if len(lines) > 0 && c != code {
				return out, &SyntaxError{}
			}
			code = c
			if len(l) > 3 && l[3] != ' ' && l[3] != '-' {
				return out, &SyntaxError{}
			}
			text := ""
			if len(l) > 4 {
				text = l[4:]
			}
			lines = append(lines, text)
			if len(l) == 3 || l[3] == ' ' {
				break
			}
		}
		out = append(out, Reply{Code: code, Text: strings.Join(lines, "\n"), Lines: len(lines)})
		in = in[size:]
	}
	return out, io.EOF
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	return c.r.Read(p[:min(len(p), c.n)])
}

func TestXText(t *testing.T) {
	for _, tc := range []struct {
		f        func(string) string
		in, want string
	}{
		{XText, "abc+d=e f", "abc+2Bd+3De+20f"},
		{XText, "\x01\x7f", "+01+7F"},
		{UTF8AddrXText, "jöhn+x@example.org", `j\x{F6}hn\x{2B}x@example.org`},
		{UTF8AddrUnitext, "jöhn+x @example.org", `jöhn\x{2B}x\x{20}@example.org`},
	} {
		if got := tc.f(tc.in); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A peer that speaks TLS from the first byte never sends a line: the
// reader must say so as soon as the record's first byte arrives, not wait
// for a line ending that never comes.
func TestReadReplyTLSRecord(t *testing.T) {
	for _, rec := range [][]byte{
		{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46}, // alert: protocol version
		{0x16, 0x03, 0x01, 0x00, 0x40},             // handshake record header
	} {
		pr, pw := io.Pipe()
		go func() { _, _ = pw.Write(rec) }() // and then nothing, as a waiting TLS server
		got := make(chan error, 1)
		go func() {
			_, err := NewReader(pr, 0).ReadReply()
			got <- err
		}()
		select {
		case err := <-got:
			if !errors.Is(err, ErrTLSRecord) {
				t.Errorf("record %x: error %v, want ErrTLSRecord", rec, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("record %x: ReadReply still waiting for a line", rec)
		}
		pw.Close()
	}
	// A reply that merely contains such a byte later is not a TLS record.
	rep, err := NewReader(strings.NewReader("220 hello \x16 there\r\n"), 0).ReadReply()
	if err != nil || rep.Code != 220 {
		t.Errorf("reply with a 0x16 in its text: %v, %v", rep, err)
	}
}
