// Package rawio makes a TCP connection's small reads and writes system
// calls the Go scheduler does not take part in.
//
// Go enters every read and write on a socket as a system call that might
// block: the goroutine's P is marked as in a system call, and when the
// call outlasts sysmon's tick (20 µs; on a busy two-core machine a
// loopback write that does the receiver's TCP work in the caller, or a
// thread the kernel preempts inside the call, does) sysmon hands the P to
// another thread, a futex wake and a context switch, and goes on polling
// every 20 µs. A proxy's sockets are non-blocking (Go's netpoller), so
// these calls never block: the data is there or EAGAIN comes back at
// once. nginx's workers make the same calls holding their CPU.
//
// Wrap returns a connection whose reads and writes of at most MaxRaw
// bytes are made with syscall.RawSyscall inside the connection's
// syscall.RawConn (so the descriptor cannot be closed and reused under
// the call, and deadlines and the netpoller's wait work as for any
// connection); larger writes take the runtime's path. Errors are the
// *net.OpError a net.Conn returns, wrapping the same errno, deadline and
// closed-connection errors.
package rawio

import "net"

// MaxRaw is the most a raw call reads or writes: a write larger than this
// takes the runtime's path (the kernel may take a while over it), a read
// asks for at most this much.
const MaxRaw = 64 << 10

// Wrap returns c with raw reads and writes when c is a *net.TCPConn on
// Linux, and c itself otherwise.
func Wrap(c net.Conn) net.Conn { return wrap(c) }

// Unwrap returns the connection Wrap was given, or c when Wrap did not
// wrap it.
func Unwrap(c net.Conn) net.Conn { return unwrap(c) }
