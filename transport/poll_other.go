//go:build !unix

package transport

import "net"

// socketReader would read a socket without waiting; outside Unix there is
// none, and a connection is polled by a brief read (see ctxConn.readNow).
type socketReader struct{}

// newSocketReader returns nil: see socketReader.
func newSocketReader(net.Conn) *socketReader { return nil }

func (*socketReader) readNow([]byte) (int, error) { return 0, errWouldBlock }
