//go:build unix

package turn

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// pair returns a *Conn dialed to a real loopback listener and the
// accepted end.
func pair(t *testing.T) (*Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	c, ok := Wrap(d).(*Conn)
	if !ok {
		t.Fatalf("Wrap(%T) is not a *Conn", d)
	}
	t.Cleanup(func() { _ = c.Close(); _ = peer.Close() })
	return c, peer.(*net.TCPConn)
}

// quiet reports whether nothing arrives at peer within d.
func quiet(t *testing.T, peer net.Conn, d time.Duration) bool {
	t.Helper()
	_ = peer.SetReadDeadline(time.Now().Add(d))
	defer peer.SetReadDeadline(time.Time{})
	var b [1]byte
	n, err := peer.Read(b[:])
	if n > 0 {
		return false
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("peer read: %v", err)
	}
	return true
}

// A held request is not sent until the Read; the Read sends it, waits
// for the answer without a read that finds nothing (one read system call
// for an answer that comes 30 ms later), and returns it.
func TestHoldSendsWithTheReadAndWaitsFirst(t *testing.T) {
	defer goleak.VerifyNone(t)
	c, peer := pair(t)
	c.Hold()
	if n, err := c.Write([]byte("GET / HTTP/1.1\r\n")); n != 16 || err != nil {
		t.Fatalf("held write: %d, %v", n, err)
	}
	if _, err := c.Write([]byte("\r\n")); err != nil {
		t.Fatal(err)
	}
	if !quiet(t, peer, 50*time.Millisecond) {
		t.Fatal("the held request went out before the Read")
	}
	done := make(chan error, 1)
	go func() {
		br := bufio.NewReader(peer)
		line, err := br.ReadString('\n')
		if err == nil && line != "GET / HTTP/1.1\r\n" {
			err = errors.New("peer read " + line)
		}
		if err == nil {
			_, err = br.ReadString('\n')
		}
		time.Sleep(30 * time.Millisecond) // the answer comes well after the request
		if err == nil {
			_, err = peer.Write([]byte("HTTP/1.1 204 No Content\r\n\r\n"))
		}
		done <- err
	}()
	b := make([]byte, 64)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b[:n]); got != "HTTP/1.1 204 No Content\r\n\r\n" {
		t.Fatalf("read %q", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c.reads != 1 {
		t.Fatalf("%d read system calls for one answer, want 1 (no read before the wait)", c.reads)
	}
	if n := c.Exchanges(); n != 1 {
		t.Fatalf("Exchanges %d, want 1", n)
	}
	// Without a hold, Read is the TCP connection's.
	go func() { _, _ = peer.Write([]byte("x")) }()
	if n, err := c.Read(b); n != 1 || err != nil {
		t.Fatalf("plain read: %d, %v", n, err)
	}
	if c.reads != 1 || c.Exchanges() != 1 {
		t.Fatal("a read without a hold went through the held path")
	}
}

// An answer written the moment the request arrives always wakes the
// reader: the readiness reset comes before the request is written, so no
// answer can spend its edge before the wait. Many exchanges in a row, with
// a deadline that would catch a lost wake-up.
func TestHoldNoLostWakeups(t *testing.T) {
	defer goleak.VerifyNone(t)
	c, peer := pair(t)
	go func() {
		b := make([]byte, 64)
		for {
			n, err := peer.Read(b)
			if err != nil {
				return
			}
			if _, err := peer.Write(b[:n]); err != nil {
				return
			}
		}
	}()
	b := make([]byte, 64)
	for i := range 3000 {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Hold()
		msg := []byte{'a' + byte(i%26), '\n'}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := 0
		for got < len(msg) {
			n, err := c.Read(b[got:])
			if err != nil {
				t.Fatalf("exchange %d: %v", i, err)
			}
			got += n
		}
		if !bytes.Equal(b[:got], msg) {
			t.Fatalf("exchange %d: echoed %q, want %q", i, b[:got], msg)
		}
	}
	_ = c.Close()
}

// What is held goes out, in order, before a close, a write too long to
// hold, and a copy into the connection.
func TestHeldBytesKeepTheirPlace(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("close", func(t *testing.T) {
		c, peer := pair(t)
		c.Hold()
		_, _ = c.Write([]byte("last answer"))
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(peer)
		if err != nil || string(got) != "last answer" {
			t.Fatalf("peer read %q, %v; want the held bytes then EOF", got, err)
		}
	})
	t.Run("close, more than the socket takes at once", func(t *testing.T) {
		c, peer := pair(t)
		_ = c.SetWriteBuffer(4096)
		_ = peer.SetReadBuffer(4096)
		c.Hold()
		want := bytes.Repeat([]byte("0123456789abcdef"), 4<<10) // 64 KiB
		_, _ = c.Write(want)
		closed := make(chan error, 1)
		go func() { closed <- c.Close() }()
		time.Sleep(50 * time.Millisecond) // the peer reads late
		_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(peer)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("peer read %d bytes, %v; want the whole held %d, then EOF", len(got), err, len(want))
		}
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("close after a past write deadline", func(t *testing.T) {
		c, peer := pair(t)
		c.Hold()
		_, _ = c.Write([]byte("cancelled request"))
		_ = c.SetWriteDeadline(time.Now().Add(-time.Second))
		_ = c.Close()
		_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(peer)
		if err != nil || len(got) != 0 {
			t.Fatalf("peer read %q, %v; want nothing: the exchange was cut", got, err)
		}
	})
	t.Run("close write", func(t *testing.T) {
		c, peer := pair(t)
		c.Hold()
		_, _ = c.Write([]byte("bye"))
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(peer)
		if err != nil || string(got) != "bye" {
			t.Fatalf("peer read %q, %v", got, err)
		}
	})
	t.Run("too long to hold", func(t *testing.T) {
		c, peer := pair(t)
		c.Hold()
		_, _ = c.Write([]byte("head;"))
		big := bytes.Repeat([]byte("b"), maxHeld)
		if n, err := c.Write(big); n != len(big) || err != nil {
			t.Fatalf("long write: %d, %v", n, err)
		}
		want := append([]byte("head;"), big...)
		got := make([]byte, len(want))
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(peer, got); err != nil {
			t.Fatalf("the held bytes and the long write did not both go out at once: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("bytes out of order")
		}
		// The hold ended: the next write goes out at once.
		_, _ = c.Write([]byte("z"))
		if quiet(t, peer, 2*time.Second) {
			t.Fatal("a write after the long one was held")
		}
	})
	t.Run("copy in", func(t *testing.T) {
		c, peer := pair(t)
		c.Hold()
		_, _ = c.Write([]byte("a"))
		if _, err := io.Copy(c, strings.NewReader("b")); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		got, _ := io.ReadAll(peer)
		if string(got) != "ab" {
			t.Fatalf("peer read %q, want ab", got)
		}
	})
}

// The held Read reports what a TCP read would: the end of the stream, a
// deadline (the request not sent when it had passed already), a reset.
func TestHoldErrors(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("EOF", func(t *testing.T) {
		c, peer := pair(t)
		go func() {
			b := make([]byte, 8)
			_, _ = peer.Read(b)
			_ = peer.Close()
		}()
		c.Hold()
		_, _ = c.Write([]byte("req"))
		n, err := c.Read(make([]byte, 8))
		if n != 0 || err != io.EOF {
			t.Fatalf("read %d, %v; want io.EOF", n, err)
		}
	})
	t.Run("deadline passed", func(t *testing.T) {
		c, peer := pair(t)
		_ = c.SetReadDeadline(time.Now().Add(-time.Second))
		c.Hold()
		_, _ = c.Write([]byte("req"))
		_, err := c.Read(make([]byte, 8))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read: %v; want a timeout", err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" {
			t.Fatalf("read: %#v; want a read *net.OpError", err)
		}
		if !quiet(t, peer, 50*time.Millisecond) {
			t.Fatal("a request was sent by a read whose deadline had passed")
		}
	})
	t.Run("deadline while waiting", func(t *testing.T) {
		c, peer := pair(t)
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		c.Hold()
		_, _ = c.Write([]byte("req"))
		_, err := c.Read(make([]byte, 8))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v; want a timeout", err)
		}
		got := make([]byte, 3)
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(peer, got); err != nil || string(got) != "req" {
			t.Fatalf("peer read %q, %v: the request went out before the wait", got, err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		c, peer := pair(t)
		_ = peer.SetLinger(0)
		_ = peer.Close() // a reset
		time.Sleep(20 * time.Millisecond)
		c.Hold()
		_, _ = c.Write([]byte("req"))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 8))
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("read: %v; want the reset", err)
		}
	})
}

// Of finds the *Conn under wrappers that have a NetConn, and nothing
// under a connection that is not one.
func TestOf(t *testing.T) {
	c, _ := pair(t)
	if Of(c) != c {
		t.Fatal("Of(*Conn)")
	}
	if Of(netConnOf{c}) != c || Of(netConnOf{netConnOf{c}}) != c {
		t.Fatal("Of through NetConn")
	}
	if Of(c.TCPConn) != nil {
		t.Fatal("Of(*net.TCPConn) is not nil")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("Wrap of a pipe is not the pipe")
	}
}

type netConnOf struct{ net.Conn }

func (w netConnOf) NetConn() net.Conn { return w.Conn }
