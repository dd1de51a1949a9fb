// Package smtpdata writes message content in the canonical form SMTP DATA
// requires (RFC 5321 section 2.3.8 and 4.5.3.1.6): every line ends in CRLF
// and no line is longer than 998 octets.
//
// A bare CR and a bare LF are both turned into CRLF, so no sequence in the
// input (such as "\n.\n" or "\r.\r\n") can be read by a receiver as the end
// of DATA followed by a second, smuggled message. Dot-stuffing and the
// terminating "CRLF.CRLF" are the job of the writer underneath
// (internal/smtpwire's DotWriter), which relies on this one: it reads every
// LF as the end of a line and leaves a bare CR as it is.
package smtpdata

import (
	"errors"
	"fmt"
	"io"

	"github.com/mailsec/mailsec/internal/syntax"
)

// ErrLineTooLong is returned by Write when a line exceeds 998 octets.
// Content that can have long lines must be encoded (quoted-printable or
// base64) before it reaches this writer; folding it here would change it.
var ErrLineTooLong = errors.New("smtpdata: line longer than 998 octets")

// flushAt is the buffered size at which Write passes data on.
const flushAt = 8 << 10

// Writer normalises line endings and enforces the line-length limit. It is
// not safe for concurrent use.
type Writer struct {
	w       io.Writer
	cr      bool // the last byte written was a CR whose LF is still pending
	lineLen int  // octets in the current line so far
	line    int  // 1-based number of the current line, for errors
	err     error
	buf     []byte
}

// NewWriter returns a Writer that writes canonical lines to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, line: 1, buf: make([]byte, 0, flushAt+1024)}
}

// Reset makes the Writer write a new message to w, keeping its buffer.
func (w *Writer) Reset(dst io.Writer) {
	*w = Writer{w: dst, line: 1, buf: w.buf[:0]}
}

// Write implements io.Writer. After the first error every call fails with
// it, so a caller that ignores one error cannot produce a half-clean stream.
func (w *Writer) Write(p []byte) (int, error) { return writeCanonical(w, p) }

// WriteString is Write for a string, without copying it first.
func (w *Writer) WriteString(s string) (int, error) { return writeCanonical(w, s) }

func writeCanonical[T string | []byte](w *Writer, p T) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	for n < len(p) {
		if w.cr {
			// The previous CR ends the line whatever follows; a following LF
			// belongs to it.
			w.cr = false
			w.newline()
			if p[n] == '\n' {
				n++
			}
			continue
		}
		rest := p[n:]
		i := indexEOL(rest)
		if w.lineLen+i > syntax.MaxLine {
			w.err = fmt.Errorf("%w (line %d)", ErrLineTooLong, w.line)
			return n, w.err
		}
		w.buf = append(w.buf, rest[:i]...)
		w.lineLen += i
		n += i
		if i < len(rest) {
			if rest[i] == '\r' {
				w.cr = true
			} else {
				w.newline()
			}
			n++
		}
		if len(w.buf) >= flushAt {
			if err := w.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, w.flush()
}

// indexEOL returns the index of the first CR or LF in p, or len(p).
func indexEOL[T string | []byte](p T) int {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c == '\r' || c == '\n' {
			return i
		}
	}
	return len(p)
}

func (w *Writer) newline() {
	w.buf = append(w.buf, '\r', '\n')
	w.lineLen = 0
	w.line++
}

func (w *Writer) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.w.Write(w.buf)
	w.buf = w.buf[:0]
	if err != nil {
		w.err = err
	}
	return err
}

// Close completes a pending CR as CRLF and flushes. It does not close the
// underlying writer and does not add a final line ending otherwise: the DATA
// terminator is written by the layer below.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.cr {
		w.cr = false
		w.newline()
	}
	return w.flush()
}
