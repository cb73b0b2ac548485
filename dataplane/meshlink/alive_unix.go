//go:build unix

package meshlink

import (
	"errors"
	"net"
	"syscall"
)

// Results of peeker.state.
const (
	peekEmpty = iota // nothing to read: the connection is quiet
	peekData         // bytes wait
	peekGone         // end of stream, or the connection is unusable
)

// peeker looks at an idle connection's TCP socket without reading from it
// or blocking: one MSG_PEEK system call. Its callback is made once per
// connection, so a check does not allocate.
type peeker struct {
	rc    syscall.RawConn
	fn    func(fd uintptr) bool
	res   int
	unset bool // no raw connection: every check says peekEmpty
	buf   [1]byte
}

func (p *peeker) state(c net.Conn) int {
	if p.fn == nil && !p.unset {
		sc, ok := c.(syscall.Conn)
		if !ok {
			p.unset = true
			return peekEmpty
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return peekGone
		}
		p.rc, p.fn = rc, p.peek
	}
	if p.unset {
		return peekEmpty
	}
	p.res = peekGone
	if err := p.rc.Read(p.fn); err != nil {
		return peekGone
	}
	return p.res
}

func (p *peeker) peek(fd uintptr) bool {
	n, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK):
		p.res = peekEmpty
	case err == nil && n > 0:
		p.res = peekData
	default:
		p.res = peekGone
	}
	return true // never wait
}
