package bounce_test

import (
	"bytes"
	"io"
)

// crlf turns LF line endings into CRLF.
func crlf(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
