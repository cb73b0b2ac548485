package edge_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"minimesh/dataplane/edge"
)

type connKey struct{}

// servePlain runs ServeSplitPlain on 127.0.0.1:0 with an http.Server that
// takes HTTP/1.1 and h2c, as the outbound's. Its handler answers with the
// request line, the ResponseWriter's type (whose server answered) and the
// type of the connection ConnContext was given. It returns the address
// and the function that stops it (also run at cleanup).
func servePlain(t *testing.T, lim edge.ServerLimits) (string, func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Writer", fmt.Sprintf("%T", w))
		w.Header().Set("X-Conn", fmt.Sprintf("%T", r.Context().Value(connKey{})))
		fmt.Fprintf(w, "%s %s %s %s", r.Method, r.RequestURI, r.Proto, b)
	})
	srv := edge.NewServer(h, lim, slog.New(slog.DiscardHandler))
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- edge.ServeSplitPlain(ctx, srv, ln, time.Second, slog.New(slog.DiscardHandler)) }()
	var once sync.Once
	var serr error
	stop := func() error {
		once.Do(func() { cancel(); serr = <-done })
		return serr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("ServeSplitPlain: %v", err)
		}
	})
	return ln.Addr().String(), stop
}

func dialPlain(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c, bufio.NewReader(c)
}

func h2cClient(t *testing.T) *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// HTTP/1.1 goes to our loop and h2c (prior knowledge) to net/http's
// server; both see the connection as accepted in ConnContext, and bytes
// read to decide are replayed, even when they came in several reads (a
// request split after "P", a preface split after "PRI * HTTP/2.0").
func TestSplitPlainChoosesTheServer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	addr, stop := servePlain(t, limits)

	c, br := dialPlain(t, addr)
	_, _ = io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body := readResp(t, br, "GET")
	if body != "GET /1 HTTP/1.1 " || resp.Header.Get("X-Writer") != "*h1.response" || resp.Header.Get("X-Conn") != "*net.TCPConn" {
		t.Fatalf("HTTP/1.1: %q, writer %s, ConnContext saw %s", body, resp.Header.Get("X-Writer"), resp.Header.Get("X-Conn"))
	}
	// Keep-alive: the same connection, a body.
	_, _ = io.WriteString(c, "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
	if _, body := readResp(t, br, "POST"); body != "POST /2 HTTP/1.1 hi" {
		t.Fatalf("second request: %q", body)
	}

	// Split after the first byte, which the preface shares.
	c2, br2 := dialPlain(t, addr)
	_, _ = io.WriteString(c2, "P")
	time.Sleep(50 * time.Millisecond) // let the first read return "P" alone
	_, _ = io.WriteString(c2, "OST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
	if _, body := readResp(t, br2, "POST"); body != "POST /3 HTTP/1.1 x" {
		t.Fatalf("request split after P: %q", body)
	}
	// The preface's request line but not the rest of it: HTTP/1.1's
	// rules (our loop refuses the PRI method with 505).
	c3, br3 := dialPlain(t, addr)
	_, _ = io.WriteString(c3, "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
	if line, _ := br3.ReadString('\n'); !strings.HasPrefix(line, "HTTP/1.1 505 ") {
		t.Fatalf("half a preface: %q", line)
	}

	hc := h2cClient(t)
	resp, err := hc.Get("http://" + addr + "/h2c")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "GET /h2c HTTP/2.0 " || resp.Header.Get("X-Conn") != "*net.TCPConn" {
		t.Fatalf("h2c: %s %q, ConnContext saw %s", resp.Proto, b, resp.Header.Get("X-Conn"))
	}

	// The preface in two writes: still h2c (a SETTINGS frame comes back).
	c4, br4 := dialPlain(t, addr)
	_, _ = io.WriteString(c4, "PRI * HTTP/2.0\r\n")
	time.Sleep(50 * time.Millisecond)
	_, _ = io.WriteString(c4, "\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00") // an empty SETTINGS
	var frame [9]byte
	if _, err := io.ReadFull(br4, frame[:]); err != nil || frame[3] != 0x4 {
		t.Fatalf("split preface: frame header %x, %v", frame, err)
	}
	hc.CloseIdleConnections()
	_ = c4.Close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// A connection that says nothing does not hold up the others, and is
// closed after ReadHeaderTimeout; one that sends part of the preface and
// closes is closed, nothing answered; nothing is left running.
func TestSplitPlainSlowAndShortClients(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	addr, stop := servePlain(t, edge.ServerLimits{ReadHeader: 300 * time.Millisecond, Idle: 5 * time.Second})

	silent, sbr := dialPlain(t, addr)
	prefix, pbr := dialPlain(t, addr)
	_, _ = io.WriteString(prefix, "PRI * HTTP/2") // a prefix of the preface, then nothing
	// Served while those two wait.
	c, br := dialPlain(t, addr)
	_, _ = io.WriteString(c, "GET /other HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, body := readResp(t, br, "GET"); body != "GET /other HTTP/1.1 " {
		t.Fatalf("another connection: %q", body)
	}
	if !closed(sbr) || !closed(pbr) {
		t.Fatal("a silent connection, or one stopped inside the preface, was answered or left open")
	}
	_ = silent

	short, shbr := dialPlain(t, addr)
	_, _ = io.WriteString(short, "PRI * HT")
	_ = short.(*net.TCPConn).CloseWrite()
	if !closed(shbr) {
		t.Fatal("a client that sent part of the preface and closed got an answer")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// Shutdown closes connections still being looked at at once, so it does
// not wait for their ReadHeaderTimeout, and refuses new ones.
func TestSplitPlainShutdownClosesLooks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	addr, stop := servePlain(t, edge.ServerLimits{ReadHeader: time.Hour, Idle: time.Hour})
	c, br := dialPlain(t, addr)
	_, _ = io.WriteString(c, "PRI * ")
	// Its look has started once another connection is answered after it.
	c2, br2 := dialPlain(t, addr)
	_, _ = io.WriteString(c2, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	readResp(t, br2, "GET")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !closed(br) {
		t.Fatal("a connection being looked at was not closed at shutdown")
	}
}

// MESH_PROXY_HTTP1=nethttp serves HTTP/1.1 with net/http's server too.
func TestSplitPlainNetHTTPMode(t *testing.T) {
	t.Setenv(edge.HTTP1Env, "nethttp")
	addr, _ := servePlain(t, limits)
	c, br := dialPlain(t, addr)
	_, _ = io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, _ := readResp(t, br, "GET")
	if w := resp.Header.Get("X-Writer"); w != "*http.response" || resp.Header.Get("X-Conn") != "*net.TCPConn" {
		t.Fatalf("nethttp mode: writer %s, ConnContext saw %s", w, resp.Header.Get("X-Conn"))
	}
	t.Setenv(edge.HTTP1Env, "bogus")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = edge.ServeSplitPlain(context.Background(), &http.Server{}, ln, time.Second, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), edge.HTTP1Env) {
		t.Fatalf("a bad %s: %v", edge.HTTP1Env, err)
	}
}
