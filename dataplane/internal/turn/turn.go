//go:build unix

// Package turn lets a connection that takes turns (a request, then its
// answer) wait for the answer the way an event loop does.
//
// Go reads a socket before it waits on the poller: a read that finds
// nothing returns EAGAIN, the goroutine parks, and when the poller says
// the socket is readable it reads again. Reading an answer right after
// writing its request therefore costs one system call that returns
// EAGAIN, every time (about 1.7 µs on the bench machine: a quarter of the
// reads mesh-proxy makes). nginx waits for epoll's readiness before it
// reads and makes no such call.
//
// Waiting first is not safe in general: syscall.RawConn.Read resets the
// descriptor's readiness before it waits (the runtime's pollReset), so
// bytes that arrived before that spent their edge and nothing would wake
// the reader. It is safe when what wakes the reader can only arrive after
// the reset, which is the case of an answer to a request written after
// it. So Conn.Hold holds the request's last write back until the next
// Read, and that Read does, inside one RawConn.Read: reset, write the
// request (through RawConn.Write, under the descriptor's write lock, with
// its deadline and its wait for room), wait for readiness, read.
//
// The rule for callers: Hold only right before the last write of a
// message whose reply is what the same goroutine reads next, and only on
// a connection whose peer sends nothing unasked (or whose unasked bytes
// may wait for the reply: they are read with it). A peer that has nothing
// to send after the request, or closed the connection before it, is
// noticed when the write fails or the peer's reset arrives, or at the
// read deadline.
package turn

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// maxHeld bounds what one Hold keeps back; a longer write goes out at
// once, with what was held before it.
const maxHeld = 64 << 10

// Conn is a TCP connection whose writes can be held back until the next
// Read (Hold). Its methods are *net.TCPConn's otherwise.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	holding   atomic.Bool
	mu        sync.Mutex // guards held
	held      []byte
	exchanges atomic.Int64 // Reads that carried held bytes

	// The exchange in flight, for the callbacks; used by Read only.
	out     []byte
	sent    int
	in      []byte
	n       int
	err     error
	wrote   bool // err is the write's
	reads   int  // read system calls of held exchanges, for tests
	onRead  func(fd uintptr) bool
	onWrite func(fd uintptr) bool
}

// Wrap returns c as a *Conn when it is a TCP connection, else c.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	t := &Conn{TCPConn: tc, rc: rc}
	t.onRead, t.onWrite = t.readable, t.writable
	return t
}

// Of returns the *Conn under c (through the NetConn of a *tls.Conn and of
// wrappers that have one), or nil.
func Of(c net.Conn) *Conn {
	for range 4 {
		switch x := c.(type) {
		case *Conn:
			return x
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// WrapListener returns ln whose TCP connections are *Conn.
func WrapListener(ln net.Listener) net.Listener { return listener{ln} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// Exchanges returns how many Reads carried held bytes.
func (c *Conn) Exchanges() int64 { return c.exchanges.Load() }

// Hold keeps what is written from now on (at most 64 KiB) until the next
// Read, which sends it and then waits for the answer before reading. Call
// it on the goroutine that reads the answer, right before the request's
// last write (see the package's rule).
func (c *Conn) Hold() { c.holding.Store(true) }

// take ends the hold and returns what was held; reuse keeps the buffer for
// the next hold (the owner's goroutine only: another's take must not share
// the array the owner appends to next).
func (c *Conn) take(reuse bool) []byte {
	c.holding.Store(false)
	out := c.held
	if reuse {
		c.held = c.held[:0]
	} else {
		c.held = nil
	}
	return out
}

func (c *Conn) Write(b []byte) (int, error) {
	if c.holding.Load() {
		c.mu.Lock()
		if c.holding.Load() && len(c.held)+len(b) <= maxHeld {
			c.held = append(c.held, b...)
			c.mu.Unlock()
			return len(b), nil
		}
		out := c.take(false)
		c.mu.Unlock()
		if len(out) > 0 {
			if _, err := c.TCPConn.Write(out); err != nil {
				return 0, err
			}
		}
	}
	return c.TCPConn.Write(b)
}

func (c *Conn) Read(b []byte) (int, error) {
	if !c.holding.Load() {
		return c.TCPConn.Read(b)
	}
	c.mu.Lock()
	out := c.take(true)
	c.mu.Unlock()
	if len(out) == 0 {
		return c.TCPConn.Read(b)
	}
	if len(b) == 0 {
		if _, err := c.TCPConn.Write(out); err != nil {
			return 0, err
		}
		return 0, nil
	}
	c.out, c.sent, c.in, c.n, c.err, c.wrote = out, 0, b, 0, nil, false
	c.exchanges.Add(1) // before the peer can see the bytes
	err := c.rc.Read(c.onRead)
	n, op := c.n, "read"
	if c.err != nil {
		err = c.err
	}
	if c.wrote {
		op = "write"
	}
	c.out, c.in, c.err = nil, nil, nil
	if err != nil {
		return n, c.opError(op, err)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// readable is the RawConn.Read callback: first the held bytes go out,
// then it waits for the answer (false), then reads once the poller says
// the socket is readable.
func (c *Conn) readable(fd uintptr) bool {
	if c.sent < len(c.out) {
		if err := c.rc.Write(c.onWrite); err != nil && c.err == nil {
			c.err, c.wrote = err, true
		}
		return c.err != nil // else the answer comes after the request: wait for it
	}
	for {
		c.reads++
		n, err := syscall.Read(int(fd), c.in)
		switch err {
		case nil:
			c.n = n
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // woken early (an edge from before): wait again
		}
		c.err = os.NewSyscallError("read", err)
		return true
	}
}

// writable is the RawConn.Write callback: the held bytes, until done (true),
// the socket's buffer is full (false: wait for room) or an error.
func (c *Conn) writable(fd uintptr) bool {
	for c.sent < len(c.out) {
		n, err := syscall.Write(int(fd), c.out[c.sent:])
		if n > 0 {
			c.sent += n
		}
		switch err {
		case nil, syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.err, c.wrote = os.NewSyscallError("write", err), true
		return true
	}
	return true
}

// opError makes err look as *net.TCPConn's Read or Write would report it.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		e := *oe
		e.Op = op
		return &e
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Close sends what is held, as a Write would (bounded by the write
// deadline in force: a past one, set to cut an exchange, sends nothing),
// then closes. A held answer is whole before the end of the stream.
func (c *Conn) Close() error {
	_ = c.sendHeld()
	return c.TCPConn.Close()
}

// CloseWrite sends what is held, then shuts the writing side.
func (c *Conn) CloseWrite() error {
	if err := c.sendHeld(); err != nil {
		return err
	}
	return c.TCPConn.CloseWrite()
}

// ReadFrom is io.Copy's path into the connection: what is held goes first.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if err := c.sendHeld(); err != nil {
		return 0, err
	}
	return c.TCPConn.ReadFrom(r)
}

// WriteTo is io.Copy's path out of the connection: what is held is sent
// before anything is read.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	if err := c.sendHeld(); err != nil {
		return 0, err
	}
	return c.TCPConn.WriteTo(w)
}

// sendHeld writes what is held, waiting for room as Write does (within
// the write deadline).
func (c *Conn) sendHeld() error {
	if !c.holding.Load() {
		return nil
	}
	c.mu.Lock()
	out := c.take(false)
	c.mu.Unlock()
	if len(out) == 0 {
		return nil
	}
	_, err := c.TCPConn.Write(out)
	return err
}
