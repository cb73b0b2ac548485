package h1_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"minimesh/certs/certstest"
	"minimesh/dataplane/edge"
	"minimesh/dataplane/h1"
)

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	return certstest.SelfSigned(t, "h1.test")
}

// edgeListener is the proxy's public edge: real TLS 1.3, then the
// framing checker.
func edgeListener(t *testing.T) (net.Listener, *tls.Config) {
	t.Helper()
	cert, pool := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := edge.NewTLSListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2", "http/1.1"}}, edge.TLSOptions{Timeout: 5 * time.Second, MaxPending: 4, OnFail: func(net.Conn, error) {}})
	return edge.Strict(tl), &tls.Config{RootCAs: pool, ServerName: "h1.test", MinVersion: tls.VersionTLS13,
		NextProtos: []string{"http/1.1"}}
}

// serveSplit runs edge.ServeSplit (h1 as the proxy builds it: WatchAfter
// left at its default) with h; stopped at cleanup.
func serveSplit(t *testing.T, h http.Handler) (string, *tls.Config) {
	t.Helper()
	ln, cfg := edgeListener(t)
	srv := edge.NewServer(h, edge.ServerLimits{ReadHeader: 5 * time.Second, Idle: 5 * time.Second, MaxHeaderBytes: 4 << 10},
		slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- edge.ServeSplit(ctx, srv, ln, time.Second, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeSplit: %v", err)
		}
	})
	return ln.Addr().String(), cfg
}

// serveH1 runs s behind the edge listener; closed at cleanup.
func serveH1(t *testing.T, s *h1.Server) (string, *tls.Config) {
	t.Helper()
	ln, cfg := edgeListener(t)
	return serveH1On(t, ln, s), cfg
}

// serveH1On serves ln's connections with s until cleanup; ln's address.
func serveH1On(t *testing.T, ln net.Listener, s *h1.Server) string {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); s.ServeConn(c) }()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		_ = s.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// dial connects, and returns the connection's watch events too.
func dial(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, *bufio.Reader, <-chan string) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	events := h1.WatchEvents(raw.LocalAddr())
	c := tls.Client(raw, cfg)
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c, bufio.NewReader(c), events
}

// expect waits for the watch event want, failing on any other first.
func expect(t *testing.T, events <-chan string, want string) {
	t.Helper()
	select {
	case ev := <-events:
		if ev != want {
			t.Fatalf("watch event %q, want %q", ev, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no watch event %q", want)
	}
}

func answer(t *testing.T, br *bufio.Reader) (int, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading an answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading a body: %v", err)
	}
	return resp.StatusCode, string(b)
}

// waitCancel is a handler's wait for its request's context to end
// (bounded: nil after 10 s).
func waitCancel(r *http.Request) error {
	select {
	case <-r.Context().Done():
		return r.Context().Err()
	case <-time.After(10 * time.Second):
		return nil
	}
}

// wait is a handler's wait for ch, false if its request's context ends
// first (so that a failing test's handlers end at Close).
func wait(r *http.Request, ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-r.Context().Done():
		return false
	}
}

// Through edge.ServeSplit, as the proxy runs it (WatchAfter's default):
// a client that closes while its handler waits has the handler's context
// cancelled; a request pipelined while a slow handler runs (the watch
// takes its first byte) is answered in order and intact; quick requests
// are never watched.
func TestWatchThroughServeSplit(t *testing.T) {
	t.Run("client gone", func(t *testing.T) {
		t.Parallel()
		entered, gone := make(chan struct{}), make(chan error, 1)
		addr, cfg := serveSplit(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			gone <- waitCancel(r)
		}))
		c, _, events := dial(t, addr, cfg)
		_, _ = io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
		<-entered
		_ = c.Close()
		expect(t, events, "start")
		expect(t, events, "gone")
		if err := <-gone; !errors.Is(err, context.Canceled) {
			t.Fatalf("the handler's context after its client left: %v, want canceled", err)
		}
	})
	t.Run("pipelined", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		addr, cfg := serveSplit(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				wait(r, release)
			}
			_, _ = io.WriteString(w, r.Method+" "+r.URL.Path+" "+r.Header.Get("X-N"))
		}))
		c, br, events := dial(t, addr, cfg)
		_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
		expect(t, events, "start")
		_, _ = io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\nX-N: 2\r\n\r\n")
		expect(t, events, "byte")
		close(release)
		for _, want := range []string{"GET /slow ", "GET /next 2"} {
			if code, body := answer(t, br); code != 200 || body != want {
				t.Fatalf("%d %q, want 200 %q", code, body, want)
			}
		}
	})
	t.Run("quick requests not watched", func(t *testing.T) {
		t.Parallel()
		addr, cfg := serveSplit(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(w, r.Body)
		}))
		c, br, events := dial(t, addr, cfg)
		for i := range 20 {
			_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
			if code, body := answer(t, br); code != 200 || body != "hi" {
				t.Fatalf("request %d: %d %q", i, code, body)
			}
		}
		select {
		case ev := <-events:
			t.Fatalf("a quick request was watched: %q", ev)
		default:
		}
	})
}

// The watch starts only once the body is read to its end: read before
// the threshold, at the threshold; read after, at the body's end. Either
// way a client gone then cancels the request's context.
func TestWatchAfterBody(t *testing.T) {
	const after = 20 * time.Millisecond
	for _, late := range []bool{false, true} {
		entered, more, gone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
		addr, cfg := serveH1(t, &h1.Server{WatchAfter: after, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if late {
				var b [2]byte
				_, _ = io.ReadFull(r.Body, b[:])
				time.Sleep(5 * after) // the threshold passes with the body half read
				close(entered)
				wait(r, more)
			}
			if _, err := io.ReadAll(r.Body); err != nil {
				gone <- err
				return
			}
			gone <- waitCancel(r)
		})})
		c, _, events := dial(t, addr, cfg)
		if late {
			_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
			<-entered
			select {
			case ev := <-events:
				t.Fatalf("watch event %q with the body half read", ev)
			default:
			}
			_, _ = io.WriteString(c, "cd")
			close(more)
		} else {
			_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd")
		}
		expect(t, events, "start")
		_ = c.Close()
		expect(t, events, "gone")
		if err := <-gone; !errors.Is(err, context.Canceled) {
			t.Fatalf("late=%v: the handler's context after its client left: %v", late, err)
		}
	}
}

// A handler that returns stops its watch before the next request is read;
// one that hijacks stops it too, and reads what the watch took, or what
// comes after.
func TestWatchStopped(t *testing.T) {
	const after = 20 * time.Millisecond
	t.Run("at return", func(t *testing.T) {
		release := make(chan struct{})
		addr, cfg := serveH1(t, &h1.Server{WatchAfter: after, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				wait(r, release)
			}
			_, _ = io.WriteString(w, r.URL.Path)
		})})
		c, br, events := dial(t, addr, cfg)
		_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
		expect(t, events, "start")
		close(release)
		expect(t, events, "stopped")
		if code, body := answer(t, br); code != 200 || body != "/slow" {
			t.Fatalf("%d %q", code, body)
		}
		_, _ = io.WriteString(c, "GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
		if code, body := answer(t, br); code != 200 || body != "/after" {
			t.Fatalf("the next request: %d %q", code, body)
		}
	})
	// Hijacked while the watch reads: the client's bytes after the 101 go
	// to the handler whole. Hijacked after the watch took a byte: the
	// handler reads it first. (A client must wait for the 101 of a
	// WebSocket upgrade, or the framing checker takes its bytes for HTTP:
	// that case sends a request's line, not upgrading.)
	for _, tc := range []struct {
		name, upgrade, line string
		byteFirst           bool
	}{
		{"hijack while watching", "Upgrade: websocket\r\nConnection: Upgrade\r\n", "ping\n", false},
		{"hijack after the watch took a byte", "", "GET /x HTTP/1.1\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proceed := make(chan struct{})
			addr, cfg := serveH1(t, &h1.Server{WatchAfter: after, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !wait(r, proceed) {
					return
				}
				conn, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Errorf("hijack: %v", err)
					return
				}
				defer conn.Close()
				_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
				_ = brw.Flush()
				line, _ := brw.ReadString('\n')
				_, _ = brw.WriteString("echo " + line)
				_ = brw.Flush()
			})})
			c, br, events := dial(t, addr, cfg)
			_, _ = io.WriteString(c, "GET /up HTTP/1.1\r\nHost: a\r\n"+tc.upgrade+"\r\n")
			expect(t, events, "start")
			if tc.byteFirst {
				_, _ = io.WriteString(c, tc.line)
				expect(t, events, "byte")
				close(proceed)
			} else {
				close(proceed)
				expect(t, events, "stopped")
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 101 {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			if !tc.byteFirst {
				_, _ = io.WriteString(c, tc.line)
			}
			if line, _ := br.ReadString('\n'); line != "echo "+tc.line {
				t.Fatalf("after the hijack: %q, want %q", line, "echo "+tc.line)
			}
		})
	}
}
