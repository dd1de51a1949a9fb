package mailsec

import (
	"bytes"
	"io"
	"mime/quotedprintable"
	"slices"
	"strings"
	"testing"
)

// writeQPStdlib is writeQP as it was before qpWriter: every octet
// through quotedprintable.Writer.
func writeQPStdlib(w io.Writer, s string, breaks textBreaks) error {
	qp := quotedprintable.NewWriter(w)
	if err := writeCRLF(qp, s, breaks); err != nil {
		return err
	}
	return qp.Close()
}

// qpChunks writes s to w in pieces whose lengths cycle through sizes
// (one piece when sizes is empty; a zero size is an empty write), and
// closes w.
func qpChunks(w io.WriteCloser, s []byte, sizes []int) error {
	if slices.Max(append([]int{0}, sizes...)) == 0 {
		sizes = nil // all empty: one write for all of s
	}
	for i := 0; len(s) > 0 && len(sizes) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(s))
		if _, err := w.Write(s[:n]); err != nil {
			return err
		}
		s = s[n:]
	}
	if len(s) > 0 {
		if _, err := w.Write(s); err != nil {
			return err
		}
	}
	return w.Close()
}

// checkQP compares what qpWriter and quotedprintable.Writer write for s
// given in pieces of the lengths sizes, and returns it.
func checkQP(t *testing.T, s []byte, sizes []int) []byte {
	t.Helper()
	var want, got bytes.Buffer
	if err := qpChunks(quotedprintable.NewWriter(&want), s, sizes); err != nil {
		t.Fatal(err)
	}
	var qp qpWriter
	qp.reset(&got)
	if err := qpChunks(&qp, s, sizes); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("qpWriter(%q in pieces %v) = %q, want %q", s, sizes, got.Bytes(), want.Bytes())
	}
	return got.Bytes()
}

// checkQPDecodes checks that enc, the encoding of s, decodes to s when s
// is canonical text (quotedprintable.Writer turns a lone CR or LF into
// CRLF).
func checkQPDecodes(t *testing.T, s, enc []byte) {
	t.Helper()
	if !isCanonical(string(s)) {
		return
	}
	dec, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(enc)))
	if err != nil {
		t.Fatalf("decoding %q, the encoding of %q: %v", enc, s, err)
	}
	if !bytes.Equal(dec, s) {
		t.Fatalf("%q encodes to %q, which decodes to %q", s, enc, dec)
	}
}

// checkWriteQP compares writeQP with writeQPStdlib for s, with both kinds
// of breaks.
func checkWriteQP(t *testing.T, s string) {
	t.Helper()
	for _, breaks := range []textBreaks{breaksCRLF, breaksLF} {
		var want, got bytes.Buffer
		if err := writeQPStdlib(&want, s, breaks); err != nil {
			t.Fatal(err)
		}
		if err := writeQP(&got, s, breaks); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("writeQP(%.60q..., %d) wrote %d octets %q, want %d octets %q", s, breaks, got.Len(), got.Bytes(), want.Len(), want.Bytes())
		}
	}
}

// qpHardCases are texts around every rule of quotedprintable.Writer:
// line lengths about its 76 columns, spaces and tabs before a break and at
// the end, octets it encodes, and every kind of line break or none.
func qpHardCases() []string {
	var lines []string
	for _, n := range []int{0, 1, 2, 74, 75, 76, 77, 78, 151, 152, 153, 300} {
		a := strings.Repeat("a", n)
		lines = append(lines, a)
		if n == 0 {
			continue
		}
		b := a[:n-1]
		lines = append(lines, b+" ", b+"\t", b+"=", b+"\xc3", b+"\x00", b+"\x7f", "="+b)
		if n > 2 {
			c := a[:n-2]
			lines = append(lines, c+"  ", c+" \t", c+"\t ", c+"é", c+" a", c+"=a", c[:n/2]+"=3D"+c[n/2:])
		}
	}
	lines = append(lines, " ", "\t", "  ", "=", "==", "é", "From me", "caf\xc3\xa9 au lait", "a\x00b", "\xff\xfe")
	breaks := []string{"\r\n", "\n", "\r", "\r\r\n", "\n\r", "\r\n\r\n", ""}
	var cases []string
	for _, l := range lines {
		for _, br := range breaks {
			cases = append(cases, l+br, l+br+"b\r\n", l+br+l, br+l)
		}
	}
	// Some pairs of lines, and a literal line after each kind of line.
	for i, l := range lines {
		m := lines[(i*7+3)%len(lines)]
		cases = append(cases, l+"\r\n"+m+"\r\n", m+"\r\n"+l, l+"\r\nliteral\r\n", l+"\n"+m)
	}
	return append(cases, "", "\r\n", "\r", "\n", "\r\xff\n", "a\r\xc3\nb\r\n", strings.Repeat("x\r\n", 40),
		strings.Repeat(strings.Repeat("w", 72)+"\r\n", 60))
}

func TestQPWriter(t *testing.T) {
	for _, s := range qpHardCases() {
		b := []byte(s)
		checkQPDecodes(t, b, checkQP(t, b, nil))
		for _, sizes := range [][]int{{1}, {2}, {3}, {0, 5}, {7}, {76}, {77}} {
			checkQP(t, b, sizes)
		}
		// Two writes, split at every point, for the shorter texts.
		if len(b) <= 100 {
			for i := 0; i <= len(b); i++ {
				checkQP(t, b, []int{i, len(b)})
			}
		}
		checkWriteQP(t, s)
		checkWriteQP(t, strings.ReplaceAll(s, "\r", ""))
	}
	// Lines split across writeCRLF's buffers, at every point around the
	// boundary.
	line := strings.Repeat("q", 72)
	for pad := range 160 {
		s := strings.Repeat("z", textBufSize-pad) + line + "\n" + line + " \nend"
		checkWriteQP(t, s)
		checkWriteQP(t, strings.ReplaceAll(s, "\n", "\r\n"))
	}
}

// qpLiteralPrefix stops at the first octet that qpLiteral does not mark,
// at every position and for every octet value, after any number of
// marked ones.
func TestQPLiteralPrefix(t *testing.T) {
	for c := range 256 {
		for pos := range 24 {
			b := []byte("abcdefghijklmnopqrstuvwx")
			b[pos] = byte(c)
			want := len(b)
			if !qpLiteral[c] {
				want = pos
			}
			if got := qpLiteralPrefix(b); got != want {
				t.Fatalf("qpLiteralPrefix(%q) = %d, want %d", b, got, want)
			}
			b[len(b)-1] = '='
			if got := qpLiteralPrefix(b); got != min(want, len(b)-1) {
				t.Fatalf("qpLiteralPrefix(%q) = %d, want %d", b, got, min(want, len(b)-1))
			}
		}
	}
}

// writeCounter counts the writes it is given.
type writeCounter struct {
	bytes.Buffer
	writes int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// A run of lines that need no encoding reaches the underlying writer in
// one write, also after a line break split between writes; other lines go
// through quotedprintable.Writer, one write per output line.
func TestQPWriterBypass(t *testing.T) {
	literal := strings.Repeat(strings.Repeat("v", 75)+"\r\n"+"a\tb c\r\n\r\n", 50)
	for _, pieces := range [][]string{
		{literal + "trailing \r\n" + literal},
		{literal + "trailing \r", "\n" + literal},
		{literal + "trailing ", "\r\n" + literal},
	} {
		var w writeCounter
		var qp qpWriter
		qp.reset(&w)
		for _, p := range pieces {
			if _, err := qp.Write([]byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		if err := qp.Close(); err != nil {
			t.Fatal(err)
		}
		// Close flushes an empty line.
		if w.writes != 4 {
			t.Errorf("%q: %d writes, want 4", pieces[0][len(pieces[0])-12:], w.writes)
		}
		if want := literal + "trailing=20\r\n" + literal; w.String() != want {
			t.Errorf("wrote %q, want %q", w.String(), want)
		}
	}
}

// clear, which writeQP defers, leaves nothing in the writer: not the
// start of a line quotedprintable.Writer holds.
func TestQPWriterClear(t *testing.T) {
	var qp qpWriter
	qp.reset(io.Discard)
	if _, err := qp.Write([]byte("secret é\r\nsecret")); err != nil {
		t.Fatal(err)
	}
	qp.clear()
	if qp != (qpWriter{}) {
		t.Error("clear left state behind")
	}
}

func FuzzQuotedPrintable(f *testing.F) {
	for _, s := range []string{"", "hello\r\nworld", "a \r\n", strings.Repeat("b", 76) + "\r\n", "é=\r\n\t", "x\r", "\r\n\n\r"} {
		f.Add([]byte(s), []byte{})
		f.Add([]byte(s), []byte{1, 3})
	}
	f.Add([]byte(strings.Repeat(strings.Repeat("l", 72)+"\r\n", 4)+"t \r\n"), []byte{80, 0, 150})
	f.Fuzz(func(t *testing.T, s, cuts []byte) {
		if len(s) > 1<<14 || len(cuts) > 64 {
			return
		}
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = int(c)
		}
		checkQPDecodes(t, s, checkQP(t, s, sizes))
		checkWriteQP(t, string(s))
	})
}

// qpBenchText is about 10 KB of 72-octet lines with LF breaks, one in
// every eight ending with a space, and with one in every four holding a
// non-ASCII word too when accents is set.
func qpBenchText(accents bool) string {
	var b strings.Builder
	for i := 0; b.Len() < 10<<10; i++ {
		line := []byte("Your order #12345 has shipped; track it at https://example.com/t/abcdef")
		if accents && i%4 == 1 {
			copy(line[len(line)-9:], "à côté")
		}
		if i%8 == 7 {
			line[len(line)-1] = ' '
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

func BenchmarkTextPartQP(b *testing.B) {
	for _, text := range []struct {
		name    string
		accents bool
	}{{"trailing", false}, {"accents", true}} {
		s := qpBenchText(text.accents)
		if clean, breaks, ok := scanText(s); clean || breaks != breaksLF || !ok {
			b.Fatalf("scanText = %v, %v, %v", clean, breaks, ok)
		}
		for _, path := range []struct {
			name  string
			write func(io.Writer, string, textBreaks) error
		}{{"stdlib", writeQPStdlib}, {"qpWriter", writeQP}} {
			b.Run(text.name+"/"+path.name, func(b *testing.B) {
				b.SetBytes(int64(len(s)))
				b.ReportAllocs()
				for b.Loop() {
					if err := path.write(io.Discard, s, breaksLF); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
