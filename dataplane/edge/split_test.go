package edge_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"minimesh/dataplane/edge"
)

// serveSplit runs ServeSplit behind NewTLSListener and Strict with h and
// lim, and returns its address, a client config (HTTP/1.1 only unless h2)
// and the function that stops it (also run at cleanup).
func serveSplit(t *testing.T, h http.Handler, lim edge.ServerLimits, drain time.Duration) (string, func(h2 bool) *tls.Config, func() error) {
	t.Helper()
	cert, pool := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := edge.NewTLSListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2", "http/1.1"}},
		edge.TLSOptions{Timeout: 5 * time.Second, MaxPending: 4, OnFail: func(net.Conn, error) {}})
	srv := edge.NewServer(h, lim, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- edge.ServeSplit(ctx, srv, edge.Strict(tl), drain, slog.New(slog.DiscardHandler)) }()
	var once sync.Once
	var serr error
	stop := func() error {
		once.Do(func() { cancel(); serr = <-done })
		return serr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("ServeSplit: %v", err)
		}
	})
	return ln.Addr().String(), func(h2 bool) *tls.Config {
		protos := []string{"http/1.1"}
		if h2 {
			protos = []string{"h2"}
		}
		return &tls.Config{RootCAs: pool, ServerName: "edge.test", MinVersion: tls.VersionTLS13, NextProtos: protos}
	}, stop
}

var limits = edge.ServerLimits{ReadHeader: 5 * time.Second, Idle: 5 * time.Second, MaxHeaderBytes: 4 << 10}

func echo() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		w.Header().Set("X-Proto", r.Proto)
		fmt.Fprintf(w, "%s %s %s %s", r.Method, r.RequestURI, b, r.Trailer.Get("X-Sum"))
	})
}

func dialRaw(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c, bufio.NewReader(c)
}

func readResp(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading an answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading a body: %v", err)
	}
	return resp, string(b)
}

// closed reports whether the server closed c (EOF) with nothing more.
func closed(br *bufio.Reader) bool {
	rest, err := io.ReadAll(br)
	return err == nil && len(rest) == 0
}

// Over HTTP/1.1 through the real TLS edge: pipelined requests answered in
// order on one connection, a chunked body with a trailer, Expect:
// 100-continue, HEAD, HTTP/1.0, Connection: close; and h2 still served.
func TestSplitHTTP1Exchanges(t *testing.T) {
	addr, cfg, _ := serveSplit(t, echo(), limits, time.Second)
	c, br := dialRaw(t, addr, cfg(false))
	_, _ = io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"+
		"POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 7\r\n\r\n"+
		"HEAD /3 HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, want := range []struct{ method, body string }{{"GET", "GET /1  "}, {"POST", "POST /2 abc 7"}, {"HEAD", ""}} {
		resp, body := readResp(t, br, want.method)
		if resp.StatusCode != 200 || body != want.body || resp.Header.Get("X-Proto") != "HTTP/1.1" {
			t.Fatalf("%s: %d %q %v", want.method, resp.StatusCode, body, resp.Header)
		}
		if want.method == "HEAD" && resp.ContentLength != int64(len("HEAD /3  ")) {
			t.Errorf("HEAD: Content-Length %d", resp.ContentLength)
		}
	}
	// Expect: 100-continue: the 100 comes first, then the answer.
	_, _ = io.WriteString(c, "PUT /4 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
	line, _ := br.ReadString('\n')
	if line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("before the body: %q", line)
	}
	_, _ = br.ReadString('\n')
	_, _ = io.WriteString(c, "hi")
	if resp, body := readResp(t, br, "PUT"); body != "PUT /4 hi " || resp.Close {
		t.Fatalf("PUT: %q close=%v", body, resp.Close)
	}
	// Connection: close is honoured.
	_, _ = io.WriteString(c, "GET /5 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	if resp, _ := readResp(t, br, "GET"); !resp.Close || !closed(br) {
		t.Fatalf("Connection: close: answer close=%v, connection not closed", resp.Close)
	}
	// HTTP/1.0: closed after the answer unless keep-alive is asked.
	c2, br2 := dialRaw(t, addr, cfg(false))
	_, _ = io.WriteString(c2, "GET /6 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /7 HTTP/1.0\r\n\r\n")
	if resp, body := readResp(t, br2, "GET"); resp.Proto != "HTTP/1.0" || body != "GET /6  " || resp.Close {
		t.Fatalf("HTTP/1.0 keep-alive: %s %q close=%v", resp.Proto, body, resp.Close)
	}
	if _, body := readResp(t, br2, "GET"); body != "GET /7  " || !closed(br2) {
		t.Fatalf("HTTP/1.0: %q, or not closed after", body)
	}
	// HTTP/2 goes to net/http's server.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg(true), ForceAttemptHTTP2: true}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + addr + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "GET /h2  " {
		t.Fatalf("h2: %s %q", resp.Proto, b)
	}
}

// Each limit: a header block over MaxHeaderBytes and too many fields are
// 431, smuggling attempts 400, each with the connection closed; a head
// sent too slowly and a keep-alive connection left idle are closed.
func TestSplitHTTP1Limits(t *testing.T) {
	addr, cfg, _ := serveSplit(t, echo(), edge.ServerLimits{ReadHeader: 300 * time.Millisecond, Idle: 300 * time.Millisecond, MaxHeaderBytes: 4 << 10}, time.Second)
	for _, tc := range []struct {
		name, raw string
		code      int
	}{
		{"header block too large", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("x", 16<<10) + "\r\n\r\n", 431},
		{"too many fields", "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-A: 1\r\n", 101) + "\r\n", 431},
		{"Content-Length and Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"two Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400},
		{"Transfer-Encoding on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", 400},
	} {
		c, br := dialRaw(t, addr, cfg(false))
		// The smuggled request behind must never be answered.
		_, _ = io.WriteString(c, tc.raw+"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body := readResp(t, br, "GET")
		if resp.StatusCode != tc.code || !resp.Close || strings.Contains(body, "smuggled") || !closed(br) {
			t.Errorf("%s: %d close=%v %q, want %d and the connection closed", tc.name, resp.StatusCode, resp.Close, body, tc.code)
		}
	}
	// 100 fields is within the limit.
	c, br := dialRaw(t, addr, cfg(false))
	_, _ = io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: a\r\n"+strings.Repeat("X-A: 1\r\n", 99)+"\r\n")
	if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 {
		t.Fatalf("100 fields: %d", resp.StatusCode)
	}
	// Idle keep-alive: closed without a word once IdleTimeout passes.
	if !closed(br) {
		t.Error("an idle keep-alive connection was not closed")
	}
	// Slowloris: a head that never ends is cut at ReadHeaderTimeout.
	c, br = dialRaw(t, addr, cfg(false))
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n")
	for range 3 {
		time.Sleep(100 * time.Millisecond)
		if _, err := io.WriteString(c, "X: 1\r\n"); err != nil {
			break
		}
	}
	if !closed(br) {
		t.Error("a head sent too slowly was not cut")
	}
}

// A shutdown lets a request in flight finish, its answer saying
// Connection: close, and closes idle connections at once.
func TestSplitHTTP1Drain(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	addr, cfg, stop := serveSplit(t, h, limits, 10*time.Second)
	idle, ibr := dialRaw(t, addr, cfg(false))
	_, _ = io.WriteString(idle, "GET /quick HTTP/1.1\r\nHost: a\r\n\r\n")
	readResp(t, ibr, "GET")
	busy, bbr := dialRaw(t, addr, cfg(false))
	_, _ = io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	if !closed(ibr) {
		t.Error("an idle connection was not closed at shutdown")
	}
	close(release)
	resp, body := readResp(t, bbr, "GET")
	if body != "done" || !resp.Close {
		t.Errorf("in flight at shutdown: %q close=%v", body, resp.Close)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// A WebSocket upgrade: the handler hijacks the connection and answers 101
// itself; bytes then flow both ways unchecked by Strict.
func TestSplitHTTP1Hijack(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	})
	addr, cfg, _ := serveSplit(t, h, limits, time.Second)
	c, br := dialRaw(t, addr, cfg(false))
	_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	_, _ = io.WriteString(c, "not http\n at all\r\r\n")
	if line, _ := br.ReadString('\n'); line != "echo not http\n" {
		t.Fatalf("after the upgrade: %q", line)
	}
}

// HTTP1Env: a bad value is refused, naming the variable.
func TestSplitHTTP1EnvRefused(t *testing.T) {
	t.Setenv(edge.HTTP1Env, "fast")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = edge.ServeSplit(context.Background(), &http.Server{}, ln, time.Second, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), edge.HTTP1Env) {
		t.Fatalf("ServeSplit with %s=fast: %v", edge.HTTP1Env, err)
	}
}
