// Package smtpwire frames the SMTP client's side of the wire: the server's
// replies, read one at a time with exact boundaries (RFC 5321 section
// 4.2), and the DATA stream with its dot-stuffing and terminator (section
// 4.5.2).
//
// A Reader never reads a reply on behalf of a later command: it returns one
// reply per call, and whatever the server sent beyond it stays in the
// Reader's buffer, where Buffered shows it. A client that issues one command
// at a time can therefore tell a server that answers a command twice, or
// answers before it was asked, from one that keeps to the protocol. The
// client decides what to do with such bytes; the Reader only makes them
// visible.
//
// Nothing in this package quotes what the server sent in an error: a reply
// can carry anything the server chooses (an echo of a credential, say), and
// errors end up in logs.
package smtpwire

import (
	"bytes"
	"errors"
	"io"
	"strconv"
)

// DefaultMaxReply is the bound NewReader applies to one reply when given
// no other: far more than any legitimate reply (an EHLO reply is well under
// a kilobyte), small enough that a hostile server cannot make the client
// hold much.
const DefaultMaxReply = 1 << 20

// ErrTooLong is returned when a reply exceeds the Reader's bound.
var ErrTooLong = errors.New("smtpwire: reply longer than the limit")

// ErrTLSRecord is returned when a reply begins with the first byte of a
// TLS record (a handshake, alert, change cipher spec or application data
// record, RFC 8446 §5.1) instead of a reply code: the peer speaks TLS
// from the first byte. It is returned as soon as that byte arrives,
// without waiting for a line that a TLS peer never sends.
var ErrTLSRecord = errors.New("smtpwire: a TLS record where an SMTP reply should begin")

// isTLSRecordType reports whether b is a TLS record's content type.
func isTLSRecordType(b byte) bool { return b >= 20 && b <= 23 }

// SyntaxError reports bytes that are not an SMTP reply. It names the
// rule broken and the line, never the text.
type SyntaxError struct {
	Line   int // 1-based line within the reply
	Reason string
}

func (e *SyntaxError) Error() string {
	return "smtpwire: malformed reply: line " + strconv.Itoa(e.Line) + ": " + e.Reason
}

// Reply is one server reply.
type Reply struct {
	// Code is the three-digit reply code, the same on every line.
	Code int
	// Text is the text of every line after the code and its separator,
	// lines joined by "\n", line endings removed. It is the server's text
	// as sent: clean it before printing it.
	Text string
	// Lines counts the reply's lines.
	Lines int
}

// Reader reads SMTP replies from a byte stream.
//
// A line ends at LF; a CR just before the LF belongs to the line ending and
// any other CR is text (RFC 5321 asks for CRLF, and some servers end lines
// with a bare LF; neither choice changes where a reply ends). Each line is
// a three-digit code whose first digit is 2 to 5 and whose second is 0 to
// 5, then "-" if more lines follow, or " " or the line's end if it is the
// last. Every line of a reply carries the same code.
type Reader struct {
	src  io.Reader
	buf  []byte
	r, w int // unread bytes are buf[r:w]
	max  int
}

// NewReader returns a Reader that reads from src and refuses replies
// longer than max bytes (line endings included); max <= 0 means
// DefaultMaxReply.
func NewReader(src io.Reader, max int) *Reader {
	if max <= 0 {
		max = DefaultMaxReply
	}
	return &Reader{src: src, buf: make([]byte, min(4096, max)), max: max}
}

// SetMax changes the bound on one reply for the replies read after it.
func (r *Reader) SetMax(max int) {
	if max <= 0 {
		max = DefaultMaxReply
	}
	r.max = max
}

// Buffered returns the number of bytes read from the source and not yet
// returned in a reply.
func (r *Reader) Buffered() int { return r.w - r.r }

// Fill reads once from the source into the buffer and returns the number of
// bytes read. It lets a caller look for bytes the server sent unasked
// (with a source that does not block, say) without parsing them.
func (r *Reader) Fill() (int, error) {
	if r.w == len(r.buf) {
		if err := r.makeRoom(); err != nil {
			return 0, err
		}
	}
	return r.read()
}

// read reads once into buf[w:], which must have room.
func (r *Reader) read() (int, error) {
	n, err := r.src.Read(r.buf[r.w:])
	if n < 0 || n > len(r.buf)-r.w {
		return 0, io.ErrShortBuffer
	}
	r.w += n
	return n, err
}

// makeRoom makes room after buf[:w], which is full: it moves the unread
// bytes to the front, or grows the buffer up to the bound plus one byte
// (so that a reply one byte too long is seen to be too long).
func (r *Reader) makeRoom() error {
	if r.r > 0 {
		n := copy(r.buf, r.buf[r.r:r.w])
		r.r, r.w = 0, n
		return nil
	}
	if len(r.buf) > r.max {
		return ErrTooLong
	}
	nb := make([]byte, min(2*len(r.buf), r.max+1))
	copy(nb, r.buf[:r.w])
	r.buf = nb
	return nil
}

// maxEmptyReads bounds how often a source may return nothing and no error
// in a row (io.Reader discourages it; bufio gives up after 100 too).
const maxEmptyReads = 100

// ReadReply reads one reply. After an error the Reader is unusable, except
// after a timeout, when the same call may be repeated.
func (r *Reader) ReadReply() (Reply, error) {
	// buf[r.r:ls] holds the reply's complete lines so far, each checked as
	// it completed; buf[ls:scan] is the current line, searched for its LF
	// up to scan. The text is taken once the last line is complete.
	ls, scan := r.r, r.r
	line, code := 0, 0
	empty := 0
	for {
		if line == 0 && r.w > r.r && isTLSRecordType(r.buf[r.r]) {
			// A reply code begins with a digit; these bytes never do.
			return Reply{}, ErrTLSRecord
		}
		i := bytes.IndexByte(r.buf[scan:r.w], '\n')
		if i < 0 {
			scan = r.w
			if r.w-r.r > r.max {
				return Reply{}, ErrTooLong
			}
			if r.w == len(r.buf) {
				off := r.r
				if err := r.makeRoom(); err != nil {
					return Reply{}, err
				}
				ls -= off - r.r
				scan -= off - r.r
			}
			n, err := r.read()
			if n > 0 {
				empty = 0
				continue
			}
			if err == nil {
				if empty++; empty < maxEmptyReads {
					continue
				}
				err = io.ErrNoProgress
			}
			if err == io.EOF && r.w > r.r {
				err = io.ErrUnexpectedEOF
			}
			return Reply{}, err
		}
		end := scan + i + 1 // one past the LF
		if end-r.r > r.max {
			return Reply{}, ErrTooLong
		}
		line++
		c, last, err := lineHead(r.buf[ls:end], line)
		if err != nil {
			return Reply{}, err
		}
		if line == 1 {
			code = c
		} else if c != code {
			return Reply{}, &SyntaxError{Line: line, Reason: "reply code differs from the first line's"}
		}
		ls, scan = end, end
		if last {
			rep := Reply{Code: code, Text: text(r.buf[r.r:end], line), Lines: line}
			r.r = end
			if r.r == r.w {
				r.r, r.w = 0, 0
			}
			return rep, nil
		}
	}
}

// lineHead checks one line (LF included) and returns its code and whether
// it is the reply's last.
func lineHead(l []byte, n int) (code int, last bool, err error) {
	body := trimEOL(l)
	if len(body) < 3 {
		return 0, false, &SyntaxError{Line: n, Reason: "shorter than a reply code"}
	}
	a, b, c := body[0], body[1], body[2]
	if a < '2' || a > '5' || b < '0' || b > '5' || c < '0' || c > '9' {
		return 0, false, &SyntaxError{Line: n, Reason: "does not start with a reply code (2xx to 5xx)"}
	}
	code = int(a-'0')*100 + int(b-'0')*10 + int(c-'0')
	if len(body) == 3 {
		return code, true, nil
	}
	switch body[3] {
	case ' ':
		return code, true, nil
	case '-':
		return code, false, nil
	}
	return 0, false, &SyntaxError{Line: n, Reason: "reply code not followed by a space, a hyphen or the line's end"}
}

// text joins the text of a complete reply's lines with "\n".
func text(b []byte, lines int) string {
	if lines == 1 {
		body := trimEOL(b)
		if len(body) <= 4 {
			return ""
		}
		return string(body[4:])
	}
	out := make([]byte, 0, len(b))
	for n := 0; len(b) > 0; n++ {
		i := bytes.IndexByte(b, '\n')
		body := trimEOL(b[:i+1])
		if n > 0 {
			out = append(out, '\n')
		}
		if len(body) > 4 {
			out = append(out, body[4:]...)
		}
		b = b[i+1:]
	}
	return string(out)
}

func trimEOL(l []byte) []byte {
	l = l[:len(l)-1] // the LF
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	return l
}
