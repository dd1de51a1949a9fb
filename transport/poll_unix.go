//go:build unix

package transport

import (
	"io"
	"net"
	"os"
	"syscall"
)

// socketReader reads a socket without waiting. It is used by one
// goroutine at a time (the one that owns the session), and its read
// function is made once, so that a read allocates nothing.
type socketReader struct {
	rc    syscall.RawConn
	p     []byte
	n     int
	errno error
	read  func(fd uintptr) bool
}

// newSocketReader returns a reader of the socket under c, or nil if c is
// not a socket.
func newSocketReader(c net.Conn) *socketReader {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &socketReader{rc: rc}
	s.read = func(fd uintptr) bool {
		s.n, s.errno = syscall.Read(int(fd), s.p)
		return true // done: never wait for readiness
	}
	return s
}

// readNow reads what has arrived on the socket, without waiting.
func (s *socketReader) readNow(p []byte) (int, error) {
	s.p = p
	err := s.rc.Read(s.read)
	n, errno := s.n, s.errno
	s.p, s.n, s.errno = nil, 0, nil
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
