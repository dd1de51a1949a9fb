package mailsec

import (
	"bytes"
	"encoding/binary"
	"io"
	"mime/quotedprintable"
)

// writeQP writes s, whose breaks are all of the kind breaks says,
// quoted-printable with CRLF breaks, as writeCRLF through a
// quotedprintable.Writer would.
func writeQP(w io.Writer, s string, breaks textBreaks) error {
	qp := new(qpWriter)
	qp.reset(w)
	defer qp.clear()
	if err := writeCRLF(qp, s, breaks); err != nil {
		return err
	}
	return qp.Close()
}

// qpWriter writes quoted-printable text exactly as mime/quotedprintable's
// Writer does, faster: a line that the encoding leaves as it is goes
// straight to the underlying writer, and only the other lines go through
// quotedprintable.Writer, which encodes them octet by octet.
//
// quotedprintable.Writer buffers the line it is writing until its line
// break. At a line's beginning it holds nothing, and it writes a line
// ending in CRLF unchanged when it is at most 75 octets of printable
// ASCII other than '=', spaces and tabs, with no space or tab last: a
// 76th octet takes a soft line break, and a space or tab before a break
// is encoded. qpWriter bypasses it only for such lines, and only while
// everything it has given it ends in CRLF, after which it holds nothing.
// A line split across writes goes through it, from its first piece up to
// its break.
//
// qpWriter keeps no copy of the text; clear erases what
// quotedprintable.Writer keeps of its last line.
type qpWriter struct {
	w  io.Writer
	qp quotedprintable.Writer
	// inLine is set while qp has been given the start of a line and not
	// yet the CRLF that ends it; cr while, besides, the last octet qp was
	// given is a CR (the next may be the LF of a break split between
	// writes).
	inLine, cr bool
}

// qpMaxLiteral is the longest line that quotedprintable.Writer writes
// without a soft line break: its lines are at most 76 octets, a soft
// break's '=' included.
const qpMaxLiteral = 75

// qpLiteral says which octets quotedprintable.Writer writes as they are
// (line breaks apart).
var qpLiteral = func() (t [256]bool) {
	for c := '!'; c <= '~'; c++ {
		t[c] = c != '='
	}
	t[' '], t['\t'] = true, true
	return t
}()

func (w *qpWriter) reset(dst io.Writer) {
	*w = qpWriter{w: dst, qp: *quotedprintable.NewWriter(dst)}
}

// clear forgets the writer's state, text included.
func (w *qpWriter) clear() {
	*w = qpWriter{}
}

func (w *qpWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if w.inLine {
			// The rest of the line, up to and including its break, goes
			// through qp too.
			end, ended := len(p), false
			if w.cr && p[n] == '\n' {
				end, ended = n+1, true
			} else if i := bytes.Index(p[n:], crlf); i >= 0 {
				end, ended = n+i+2, true
			}
			m, err := w.qp.Write(p[n:end])
			n += m
			if err != nil {
				return n, err
			}
			w.inLine, w.cr = !ended, !ended && p[end-1] == '\r'
			continue
		}
		if k := qpLiteralLines(p[n:]); k > 0 {
			m, err := w.w.Write(p[n : n+k])
			n += m
			if err == nil && m < k {
				err = io.ErrShortWrite
			}
			if err != nil {
				return n, err
			}
		}
		// What is left starts with a line to encode, or a piece of one.
		w.inLine = n < len(p)
	}
	return n, nil
}

// Close writes what quotedprintable.Writer still holds.
func (w *qpWriter) Close() error {
	return w.qp.Close()
}

var crlf = []byte("\r\n")

// qpLiteralLines returns the length of the longest prefix of p made of
// whole lines, each with its CRLF, that quotedprintable.Writer writes
// unchanged when it starts them at a line's beginning.
func qpLiteralLines(p []byte) int {
	n := 0
	for {
		line := p[n:min(len(p), n+qpMaxLiteral+2)]
		i := qpLiteralPrefix(line)
		if i+1 >= len(line) || line[i] != '\r' || line[i+1] != '\n' || i > 0 && (line[i-1] == ' ' || line[i-1] == '\t') {
			return n
		}
		n += i + 2
	}
}

// qpLiteralPrefix returns the length of the longest prefix of p made of
// octets that qpLiteral marks. It skips eight octets at a time while
// they are printable ASCII other than '=' (as unprintable does, and
// testing for '=' as it tests for DEL), and tests the rest one by one.
func qpLiteralPrefix(p []byte) int {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(p); i += 8 {
		w := binary.LittleEndian.Uint64(p[i:])
		x, e := w^0x7f*ones, w^'='*ones
		if (w|(w-0x20*ones)|(x-ones)&^x|(e-ones)&^e)&high != 0 {
			break
		}
	}
	for i < len(p) && qpLiteral[p[i]] {
		i++
	}
	return i
}
