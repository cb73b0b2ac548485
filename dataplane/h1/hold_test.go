package h1_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"minimesh/dataplane/edge"
	"minimesh/dataplane/h1"
	"minimesh/dataplane/internal/turn"
)

// turnListener hands out turn.Conns, as the inbound's listener does, and
// keeps them for the test.
type turnListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*turn.Conn
}

func (l *turnListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	w := turn.Wrap(c)
	if tc, ok := w.(*turn.Conn); ok {
		l.mu.Lock()
		l.conns = append(l.conns, tc)
		l.mu.Unlock()
	}
	return w, nil
}

func (l *turnListener) exchanges() (n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		n += c.Exchanges()
	}
	return n
}

// On a turn.Conn (the inbound's), each kept answer goes out with the read
// of the next request (turn.Conn.Hold), on both of h1's paths: every
// answer arrives, one held exchange per answer. Answers to pipelined
// requests are not held while the next request is already buffered, and an
// answer that closes the connection is not held either: it arrives, then
// the end of the stream.
func TestAnswersHeldOnATurnConn(t *testing.T) {
	cert, pool := selfSigned(t)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln := &turnListener{Listener: raw}
	tl := edge.NewTLSListener(tln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		NextProtos: []string{"http/1.1"}}, edge.TLSOptions{Timeout: 5 * time.Second, MaxPending: 4, OnFail: func(net.Conn, error) {}})
	ln := edge.Strict(tl)
	hh := headHandler{ctxs: make(chan context.Context, 64), ended: make(chan error, 1)}
	s := &h1.Server{Handler: hh}
	serveH1On(t, ln, s)
	go func() {
		for range hh.ctxs {
		}
	}()
	t.Cleanup(func() { close(hh.ctxs) })

	c, err := tls.Dial("tcp", raw.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "h1.test", MinVersion: tls.VersionTLS13,
		NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	read := func(wantWay, wantBody string) *http.Response {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.Header.Get("X-Way") != wantWay || string(body) != wantBody {
			t.Fatalf("answer %q %q, want %s %s", resp.Header.Get("X-Way"), body, wantWay, wantBody)
		}
		return resp
	}
	const get = " HTTP/1.1\r\nHost: a\r\n\r\n"
	// One at a time, as a remote proxy's pool sends: the head-served path
	// and the usual one.
	for i := range 10 {
		path, way := "/a", "head"
		if i%2 == 1 {
			path, way = "/decline", "usual"
		}
		if _, err := io.WriteString(c, "GET "+path+get); err != nil {
			t.Fatal(err)
		}
		read(way, path)
	}
	if n := tln.exchanges(); n != 10 {
		t.Fatalf("%d held exchanges for 10 answers, want 10", n)
	}
	// Pipelined: the first two answers find the next request buffered.
	if _, err := io.WriteString(c, "GET /p1"+get+"GET /decline"+get+"GET /p3"+get); err != nil {
		t.Fatal(err)
	}
	read("head", "/p1")
	read("usual", "/decline")
	read("head", "/p3")
	if n := tln.exchanges(); n != 11 {
		t.Fatalf("%d held exchanges after three pipelined answers, want 11 (only the last held)", n)
	}
	// An answer that closes the connection is sent at once.
	if _, err := io.WriteString(c, "GET /decline HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	read("usual", "/decline")
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after a closing answer: %v, want EOF", err)
	}
	if n := tln.exchanges(); n != 11 {
		t.Fatalf("%d held exchanges, want 11: a closing answer is not held", n)
	}
}
