//go:build !unix

package transport

import (
	"net"
	"syscall"
)

// rawConnOf returns nil: outside Unix, a connection is polled by a brief
// read (see ctxConn.readNow).
func rawConnOf(net.Conn) syscall.RawConn { return nil }

func readSocketNow(syscall.RawConn, []byte) (int, error) { return 0, errWouldBlock }
