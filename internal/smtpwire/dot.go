package smtpwire

import (
	"bytes"
	"io"
)

// DotWriter writes the body of DATA: it stuffs a dot at the start of every
// line that begins with one (RFC 5321 section 4.5.2) and ends the body with
// the terminator. Its input must already be canonical (every line ending
// CRLF, as package internal/smtpdata writes it); it treats every LF as the
// end of a line.
//
// Ending the body is split in two, so that a client can look for a reply
// the server sent too early after the body has gone out and before the
// terminator does: FinishBody completes the last line, Terminate writes
// ".\r\n".
type DotWriter struct {
	w   io.Writer
	bol bool // at the beginning of a line
}

// Reset makes d write a new body to w.
func (d *DotWriter) Reset(w io.Writer) { *d = DotWriter{w: w, bol: true} }

// Write implements io.Writer.
func (d *DotWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if d.bol && p[0] == '.' {
			if _, err := d.w.Write(dot); err != nil {
				return n, err
			}
		}
		// Write up to the next line that starts with a dot, or all.
		chunk := p
		if i := bytes.Index(p, lfDot); i >= 0 {
			chunk = p[:i+1]
		}
		m, err := d.w.Write(chunk)
		n += m
		if err != nil {
			return n, err
		}
		d.bol = chunk[len(chunk)-1] == '\n'
		p = p[len(chunk):]
	}
	return n, nil
}

var (
	dot   = []byte{'.'}
	lfDot = []byte("\n.")
	crlf  = []byte("\r\n")
	term  = []byte(".\r\n")
)

// FinishBody ends the last line with CRLF if it has no line ending yet.
func (d *DotWriter) FinishBody() error {
	if d.bol {
		return nil
	}
	d.bol = true
	_, err := d.w.Write(crlf)
	return err
}

// Terminate writes the terminator. Call FinishBody first.
func (d *DotWriter) Terminate() error {
	_, err := d.w.Write(term)
	return err
}
