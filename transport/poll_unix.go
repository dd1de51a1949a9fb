//go:build unix

package transport

import (
	"io"
	"net"
	"os"
	"syscall"
)

// rawConnOf returns the socket under c, if c is one.
func rawConnOf(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// readSocketNow reads what has arrived on the socket, without waiting.
func readSocketNow(rc syscall.RawConn, p []byte) (int, error) {
	var n int
	var errno error
	err := rc.Read(func(fd uintptr) bool {
		n, errno = syscall.Read(int(fd), p)
		return true // done: never wait for readiness
	})
	switch {
	case err != nil:
		return 0, err
	case errno == syscall.EAGAIN || errno == syscall.EWOULDBLOCK || errno == syscall.EINTR:
		return 0, errWouldBlock
	case errno != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", errno)}
	case n <= 0:
		return 0, io.EOF
	}
	return n, nil
}
