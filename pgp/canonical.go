package pgp

import (
	"bytes"
	"fmt"
	"io"

	"github.com/emersion/go-message"
)

// canonical returns the entity in b in the form RFC 3156 §5 requires of a
// signed part: CRLF line endings, 7-bit, no trailing white space, no line
// starting with "From ". An entity already in that form (what mailsec's
// builder writes for ordinary text) is returned unchanged; otherwise every
// leaf part that breaks a rule is re-encoded as base64.
func canonical(b []byte) ([]byte, error) {
	if isCanonical(b) {
		return b, nil
	}
	e, err := message.Read(bytes.NewReader(b))
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return nil, fmt.Errorf("pgp: reading the part to sign: %w", err)
	}
	var out bytes.Buffer
	create := func(h message.Header) (*message.Writer, error) { return message.CreateWriter(&out, h) }
	if err := reencode(create, e); err != nil {
		return nil, fmt.Errorf("pgp: canonicalising the part to sign: %w", err)
	}
	if !isCanonical(out.Bytes()) {
		return nil, fmt.Errorf("pgp: the part to sign cannot be made 7-bit clean")
	}
	return out.Bytes(), nil
}

// reencode writes e through writers made by create, re-encoding every
// leaf part that is not base64 already as base64 (which is 7-bit, short-
// lined and free of trailing white space and "From " lines).
func reencode(create func(message.Header) (*message.Writer, error), e *message.Entity) error {
	h := e.Header.Copy()
	mr := e.MultipartReader()
	if mr == nil {
		h.Set("Content-Transfer-Encoding", "base64")
	}
	mw, err := create(h)
	if err != nil {
		return err
	}
	if mr != nil {
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			if err := reencode(mw.CreatePart, p); err != nil {
				return err
			}
		}
	} else if _, err := io.Copy(mw, e.Body); err != nil {
		return err
	}
	return mw.Close()
}

// isCanonical reports whether every line of b ends in CRLF, is 7-bit,
// has no trailing space or tab, is at most 998 octets and does not start
// with "From ".
func isCanonical(b []byte) bool {
	for len(b) > 0 {
		i := bytes.Index(b, []byte("\r\n"))
		if i < 0 {
			return false
		}
		line := b[:i]
		b = b[i+2:]
		if len(line) > 998 || bytes.HasPrefix(line, []byte("From ")) {
			return false
		}
		if n := len(line); n > 0 && (line[n-1] == ' ' || line[n-1] == '\t') {
			return false
		}
		for _, c := range line {
			if c >= 0x80 || c == '\r' || c == '\n' || c == 0 {
				return false
			}
		}
	}
	return true
}
