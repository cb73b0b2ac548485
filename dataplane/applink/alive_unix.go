//go:build unix

package applink

import (
	"errors"
	"net"
	"syscall"
)

// peeker checks whether an idle connection is still usable: a peek that
// does not block finds nothing to read. End of stream (the app closed it)
// or unexpected bytes (an answer nobody asked for) mean it cannot carry a
// request. Its callback is made once per connection, so a check does not
// allocate.
type peeker struct {
	rc    syscall.RawConn
	fn    func(fd uintptr) bool
	ok    bool // the last check's result
	unset bool // no raw connection: every check passes
	buf   [1]byte
}

// alive runs the check on c, the connection the peeker belongs to.
func (p *peeker) alive(c net.Conn) bool {
	if p.fn == nil && !p.unset {
		sc, ok := c.(syscall.Conn)
		if !ok {
			p.unset = true
			return true
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		p.rc, p.fn = rc, p.peek
	}
	if p.unset {
		return true
	}
	p.ok = false
	if err := p.rc.Read(p.fn); err != nil {
		return false
	}
	return p.ok
}

func (p *peeker) peek(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	p.ok = errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
	return true // never wait
}

// connAlive checks c once (tests).
func connAlive(c net.Conn) bool {
	var p peeker
	return p.alive(c)
}
