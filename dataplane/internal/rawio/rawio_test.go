package rawio_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"minimesh/dataplane/internal/rawio"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns a wrapped client connection and the server's end of a real
// TCP connection on loopback.
func pair(t *testing.T) (net.Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	w := rawio.Wrap(c)
	t.Cleanup(func() { w.Close(); s.Close() })
	return w, s.(*net.TCPConn)
}

func TestWrapKeepsWhatItCannotMakeRaw(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := rawio.Wrap(a); got != a {
		t.Fatalf("Wrap(pipe) = %T, want the pipe itself", got)
	}
}

func TestWrapIsRawOnLinux(t *testing.T) {
	c, _ := pair(t)
	_, isTCP := c.(*net.TCPConn)
	if runtime.GOOS == "linux" && isTCP {
		t.Fatal("Wrap returned the *net.TCPConn on Linux")
	}
	// What callers reach through the wrapper: the raw connection (the
	// links' liveness check, SO_ORIGINAL_DST) and the half close.
	if _, ok := c.(syscall.Conn); !ok {
		t.Fatal("the wrapped connection is no syscall.Conn")
	}
	if _, ok := c.(interface{ CloseWrite() error }); !ok {
		t.Fatal("the wrapped connection has no CloseWrite")
	}
	if _, ok := rawio.Unwrap(c).(*net.TCPConn); !ok {
		t.Fatalf("Unwrap = %T, want the *net.TCPConn", rawio.Unwrap(c))
	}
}

// Both ways, every byte in order, in writes smaller and larger than
// MaxRaw (the larger take the runtime's path) while the peer reads
// slowly, so that raw writes meet a full socket buffer and wait.
func TestReadWriteEveryByte(t *testing.T) {
	c, s := pair(t)
	for _, size := range []int{1, 1000, rawio.MaxRaw, rawio.MaxRaw + 1, 4 << 20} {
		msg := make([]byte, size)
		_, _ = rand.Read(msg)
		got := make(chan []byte, 1)
		go func() {
			b := make([]byte, size)
			_, err := io.ReadFull(s, b)
			if err != nil {
				got <- nil
				return
			}
			got <- b
		}()
		// In pieces of at most 16 KB, as TLS records come; MaxRaw+1 in
		// one write, to take the runtime's path whole.
		step := 16 << 10
		if size == rawio.MaxRaw+1 {
			step = size
		}
		for off := 0; off < size; off += step {
			end := min(off+step, size)
			n, err := c.Write(msg[off:end])
			if err != nil || n != end-off {
				t.Fatalf("size %d: Write = %d, %v", size, n, err)
			}
		}
		if b := <-got; !bytes.Equal(b, msg) {
			t.Fatalf("size %d: the server read other bytes", size)
		}
		// And back: the wrapper reads what the server writes.
		go func() { _, _ = s.Write(msg) }()
		b := make([]byte, size)
		if _, err := io.ReadFull(c, b); err != nil || !bytes.Equal(b, msg) {
			t.Fatalf("size %d: read back: %v", size, err)
		}
	}
}

func TestEndOfStream(t *testing.T) {
	c, s := pair(t)
	if _, err := s.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "last" {
		t.Fatalf("ReadAll = %q, %v; want the bytes, then io.EOF", b, err)
	}
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("Read after the end = %d, %v; want io.EOF", n, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty Read = %d, %v; want 0, nil as net.Conn", n, err)
	}
}

// A deadline ends a read that waits, as for any net.Conn: a timeout error
// that is os.ErrDeadlineExceeded inside a *net.OpError.
func TestReadDeadline(t *testing.T) {
	c, _ := pair(t)
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := c.Read(make([]byte, 8))
	var ne net.Error
	var op *net.OpError
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &op) || op.Op != "read" {
		t.Fatalf("Read = %d, %v; want a read timeout", n, err)
	}
	// A past deadline fails at once; clearing it reads again.
	_ = c.SetReadDeadline(time.Time{})
}

// A write the peer does not read fills the socket buffers and waits; its
// deadline ends it with what was written so far.
func TestWriteDeadline(t *testing.T) {
	c, _ := pair(t)
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	chunk := make([]byte, 16<<10)
	total := 0
	var err error
	for range 10000 {
		var n int
		n, err = c.Write(chunk)
		total += n
		if err != nil {
			break
		}
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after %d bytes: %v; want the write deadline", total, err)
	}
}

// The peer's reset reaches the writer as ECONNRESET or EPIPE (the links
// match them to tell a stale connection), wrapped as net does.
func TestWriteAfterReset(t *testing.T) {
	c, s := pair(t)
	_ = s.SetLinger(0)
	s.Close() // RST
	var err error
	for range 100 {
		if _, err = c.Write([]byte("x")); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var op *net.OpError
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) || !errors.As(err, &op) || op.Op != "write" {
		t.Fatalf("write after the peer's reset: %v", err)
	}
}

// Close ends a read waiting on the netpoller with net.ErrClosed, and the
// concurrent reader, writer and closer leave nothing running (goleak).
func TestCloseEndsWaitingRead(t *testing.T) {
	c, s := pair(t)
	var wg sync.WaitGroup
	readErr := make(chan error, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, err := c.Read(make([]byte, 8))
		readErr <- err
	}()
	go func() {
		defer wg.Done()
		// Writes while the read waits: reads and writes are independent.
		for range 100 {
			if _, err := c.Write([]byte("ping")); err != nil {
				return
			}
		}
	}()
	b := make([]byte, 400)
	if _, err := io.ReadFull(s, b); err != nil {
		t.Fatal(err)
	}
	c.Close()
	wg.Wait()
	if err := <-readErr; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the waiting read ended with %v; want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
}
