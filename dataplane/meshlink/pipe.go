package meshlink

import (
	"context"
	"errors"
	"io"
	"net"
	"time"
)

// StreamConn is one direction pair of an HTTP/2 stream: what is read
// comes from r, what is written goes to w, CloseWrite ends our half.
type StreamConn struct {
	R      io.ReadCloser
	W      io.WriteCloser
	Flush  func() error // after each write (the server side)
	Cancel context.CancelFunc
}

func (s *StreamConn) Read(p []byte) (int, error) { return s.R.Read(p) }

func (s *StreamConn) Write(p []byte) (int, error) {
	n, err := s.W.Write(p)
	if err == nil && s.Flush != nil {
		err = s.Flush()
	}
	return n, err
}

func (s *StreamConn) CloseWrite() error { return s.W.Close() }

func (s *StreamConn) Close() error {
	_ = s.W.Close()
	err := s.R.Close()
	if s.Cancel != nil {
		s.Cancel()
	}
	return err
}

// HalfCloser is a stream whose sending half can end alone.
type HalfCloser interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// Pipe copies both ways between a and b until both directions end (each
// end of input half-closes the other side) or nothing moves for idle; it
// then closes both. onByte, if set, is called for activity (tests).
func Pipe(a net.Conn, b HalfCloser, idle time.Duration, onByte func()) {
	watchdog := time.AfterFunc(idle, func() {
		_ = a.Close()
		_ = b.Close()
	})
	defer watchdog.Stop()
	copyHalf := func(dst HalfCloser, src io.Reader, done chan<- struct{}) {
		buf := BufferPool{}.Get()
		defer BufferPool{}.Put(buf)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				watchdog.Reset(idle)
				if onByte != nil {
					onByte()
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					_ = a.Close()
					_ = b.Close()
					break
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					_ = a.Close()
					_ = b.Close()
				}
				break
			}
		}
		_ = dst.CloseWrite()
		close(done)
	}
	ab, ba := make(chan struct{}), make(chan struct{})
	go copyHalf(b, a, ab)
	copyHalf(asHalfCloser(a), b, ba)
	<-ab
	_ = a.Close()
	_ = b.Close()
}

// asHalfCloser gives a net.Conn a CloseWrite (TCP connections have one).
func asHalfCloser(c net.Conn) HalfCloser {
	if h, ok := c.(HalfCloser); ok {
		return h
	}
	return closeBoth{c}
}

type closeBoth struct{ net.Conn }

func (c closeBoth) CloseWrite() error { return c.Close() }

// BufferPool recycles ReverseProxy's 32 KiB copy buffers through a bounded
// free list; unlike sync.Pool it does not allocate to box a slice on Put.
type BufferPool struct{}

var freeBuffers = make(chan []byte, 512)

func (BufferPool) Get() []byte {
	select {
	case b := <-freeBuffers:
		return b
	default:
		return make([]byte, 32<<10)
	}
}

func (BufferPool) Put(b []byte) {
	if cap(b) != 32<<10 {
		return
	}
	select {
	case freeBuffers <- b[:cap(b)]:
	default:
	}
}
