package meshlink_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"minimesh/dataplane/internal/resphead"
	"minimesh/dataplane/meshlink"
)

func newPoolLink(t *testing.T, addr string, pool *x509.CertPool) *meshlink.Link {
	t.Helper()
	link, err := meshlink.New(meshlink.Config{Addr: addr, TLS: &tls.Config{RootCAs: pool, ServerName: "peer.test"},
		Dial: 5 * time.Second, Handshake: 5 * time.Second, Idle: time.Minute, KeepAlive: time.Minute,
		ResponseHeader: 20 * time.Second, PoolWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(link.CloseIdle)
	return link
}

func do(t *testing.T, rt http.RoundTripper, req *http.Request, readAll bool) (string, error) {
	t.Helper()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if !readAll {
		return "", nil
	}
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// The pool reuses a connection only after an answer read to its end that
// did not ask to close; it speaks HTTP/1.1 (ALPN), whatever the URL's host.
func TestContractPoolReuse(t *testing.T) {
	cert, pool := selfSigned(t)
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		_, _ = io.WriteString(w, r.Proto+" "+r.Host+" "+strings.Repeat("x", 64<<10))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	link := newPoolLink(t, srv.Listener.Addr().String(), pool)
	step := func(path string, readAll bool, wantConns int64) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "https://api.default"+path, nil)
		body, err := do(t, link.Pool, req, readAll)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if readAll && !strings.HasPrefix(body, "HTTP/1.1 api.default ") {
			t.Fatalf("%s: answered %.40q", path, body)
		}
		if n := conns.Load(); n != wantConns {
			t.Fatalf("after %s: %d connections, want %d", path, n, wantConns)
		}
	}
	step("/a", true, 1)
	step("/b", true, 1)     // reused
	step("/half", false, 1) // its body closed unread: not reused
	step("/c", true, 2)     // so a new one
	step("/close", true, 2) // the answer asks to close
	step("/d", true, 3)     // so a new one
	step("/e", true, 3)     // reused
	link.Pool.CloseIdleConnections()
	step("/f", true, 4) // the pool goes on with a new connection
	// A connection busy at CloseIdleConnections (made under certificates
	// or a bundle that may be gone) is closed when its request ends.
	req, _ := http.NewRequest(http.MethodGet, "https://api.default/busy", nil)
	resp, err := link.Pool.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	link.Pool.CloseIdleConnections()
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	step("/g", true, 5)
}

// scriptedRemote is an HTTP/1.1 mTLS-less remote that answers each
// connection's first request and closes the connection on reading its
// second, unanswered: the remote closing a pooled connection just as a
// request goes out.
type scriptedRemote struct {
	ln       net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	seen     []string // method and path of every request read
	wg       sync.WaitGroup
}

func startScriptedRemote(t *testing.T) (*scriptedRemote, *x509.CertPool) {
	t.Helper()
	cert, pool := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	r := &scriptedRemote{ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.accepted.Add(1)
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					r.mu.Lock()
					r.seen = append(r.seen, req.Method+" "+req.URL.Path)
					r.mu.Unlock()
					if i == 1 {
						return // closed, no answer
					}
					_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); r.wg.Wait() })
	return r, pool
}

func (r *scriptedRemote) count(what string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.seen {
		if s == what {
			n++
		}
	}
	return n
}

// A reused connection the remote closes as the request goes out: an
// idempotent request (or one with an Idempotency-Key, its body to be had
// again) is sent again on a new connection; a POST is not, and fails.
func TestContractPoolRetryRule(t *testing.T) {
	r, pool := startScriptedRemote(t)
	link := newPoolLink(t, r.ln.Addr().String(), pool)
	send := func(method, path, key string) (string, error) {
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader("order")
		}
		req, _ := http.NewRequest(method, "https://api.default"+path, body)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		return do(t, link.Pool, req, true)
	}
	if b, err := send(http.MethodGet, "/1", ""); err != nil || b != "ok" {
		t.Fatalf("first GET: %q %v", b, err)
	}
	if b, err := send(http.MethodGet, "/2", ""); err != nil || b != "ok" {
		t.Fatalf("GET on a connection closed under it: %q %v, want sent again", b, err)
	}
	if n := r.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	if _, err := send(http.MethodPost, "/order", ""); err == nil {
		t.Fatal("a POST on a connection closed under it was answered")
	}
	if n := r.count("POST /order"); n != 1 {
		t.Errorf("the remote read the POST %d times, want once (not sent again)", n)
	}
	if b, err := send(http.MethodGet, "/3", ""); err != nil || b != "ok" {
		t.Fatalf("GET: %q %v", b, err)
	}
	if b, err := send(http.MethodPost, "/keyed", "k1"); err != nil || b != "ok" {
		t.Fatalf("POST with an Idempotency-Key: %q %v, want sent again", b, err)
	}
	if n := r.count("POST /keyed"); n != 2 {
		t.Errorf("the remote read the keyed POST %d times, want twice", n)
	}
}

// testHead writes its own head for Pool.Do, whatever the request holds,
// and takes the 1xx answers.
type testHead struct {
	early []int
	raw   *resphead.Fields
}

func (h *testHead) Fields() *resphead.Fields { return h.raw }

func (h *testHead) WriteHead(bw *bufio.Writer, req *http.Request) {
	_, _ = bw.WriteString(req.Method + " " + req.URL.Path + " HTTP/1.1\r\nHost: api.default\r\nX-Head: written\r\n")
	if req.ContentLength > 0 {
		_, _ = fmt.Fprintf(bw, "Content-Length: %d\r\n", req.ContentLength)
	}
	_, _ = bw.WriteString("\r\n")
}

func (h *testHead) Got1xx(code int, _ http.Header) { h.early = append(h.early, code) }

func (h *testHead) Request(req *http.Request) *http.Request {
	out := req.Clone(req.Context())
	out.Header = http.Header{"X-Head": {"overflow"}}
	return out
}

// Pool.Do sends the head its Head writes (not the request's own fields),
// passes 1xx answers to it, and keeps the connection though the request
// says Close (the caller's own connection); a remote that does not agree
// to http/1.1 gets Head.Request over HTTP/2.
func TestContractPoolDo(t *testing.T) {
	cert, pool := selfSigned(t)
	var conns atomic.Int64
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/early" {
			w.WriteHeader(http.StatusEarlyHints)
		}
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Proto+" "+r.Header.Get("X-Head")+" "+r.Header.Get("X-Own")+string(b))
	})
	start := func(protos ...string) *httptest.Server {
		srv := httptest.NewUnstartedServer(handler)
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: protos}
		srv.EnableHTTP2 = true
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv
	}
	h1 := start("h2", "http/1.1")
	link := newPoolLink(t, h1.Listener.Addr().String(), pool)
	for _, path := range []string{"/a", "/early", "/b"} {
		req, _ := http.NewRequest(http.MethodGet, "https://api.default"+path, nil)
		req.Header.Set("X-Own", "own")
		req.Close = true
		head := &testHead{raw: &resphead.Fields{}}
		resp, err := link.Pool.Do(req, head)
		if err != nil {
			t.Fatal(err)
		}
		// The answer's head in the head's Fields, not a map.
		if resp.Header != nil || !head.raw.Taken || string(head.raw.ContentType) != "text/plain; charset=utf-8" ||
			!strings.Contains(string(head.raw.Lines), "Content-Type: text/plain; charset=utf-8\r\n") ||
			!strings.Contains(string(head.raw.Lines), "Date: ") || !head.raw.HasDate {
			t.Fatalf("%s: header %v, fields %q", path, resp.Header, head.raw.Lines)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "HTTP/1.1 written " {
			t.Fatalf("%s: %q %v", path, b, err)
		}
		if path == "/early" && (len(head.early) != 1 || head.early[0] != http.StatusEarlyHints) {
			t.Errorf("%s: 1xx %v, want [103]", path, head.early)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("3 requests with Close set: %d connections, want 1 (the head never asked to close)", n)
	}
	// A body of known length follows the head; one of unknown length is
	// refused.
	req, _ := http.NewRequest(http.MethodPut, "https://api.default/body", strings.NewReader("hello"))
	if b, err := do(t, doer{link.Pool}, req, true); err != nil || b != "HTTP/1.1 written hello" {
		t.Errorf("PUT with a body: %q %v", b, err)
	}
	req, _ = http.NewRequest(http.MethodPut, "https://api.default/body", io.NopCloser(strings.NewReader("hello")))
	req.ContentLength = -1
	if _, err := link.Pool.Do(req, &testHead{}); err == nil {
		t.Error("a body of unknown length was sent")
	}
	h2only := start("h2")
	link2 := newPoolLink(t, h2only.Listener.Addr().String(), pool)
	req, _ = http.NewRequest(http.MethodGet, "https://api.default/c", nil)
	overflow := &testHead{raw: &resphead.Fields{}}
	resp, err := link2.Pool.Do(req, overflow)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header == nil || overflow.raw.Taken {
		t.Error("an answer over HTTP/2 has no header map")
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "HTTP/2.0 overflow " {
		t.Errorf("to an HTTP/2-only remote: %q, want Head.Request over HTTP/2", b)
	}
}

// doer is a Pool as a RoundTripper whose requests go by Do.
type doer struct{ p *meshlink.Pool }

func (d doer) RoundTrip(req *http.Request) (*http.Response, error) { return d.p.Do(req, &testHead{}) }

// A replayable request takes a connection idle for less than
// CheckIdleAfter without the liveness check's system call; a request that
// could not be sent again is checked whatever the idle time, and so is any
// request after CheckIdleAfter. The skip is safe: a GET on a connection
// the remote closed goes again on a new one.
func TestContractPoolCheckSkippedOnlyWhenReplayable(t *testing.T) {
	cert, pool := selfSigned(t)
	var conns, open atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+" "+string(b))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			conns.Add(1)
			open.Add(1)
		case http.StateClosed:
			open.Add(-1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	var checks atomic.Int64
	defer meshlink.SetCheckHook(func() { checks.Add(1) })()
	link := newPoolLink(t, srv.Listener.Addr().String(), pool)
	link.Pool.SetCheckIdleAfter(time.Hour) // every pooled connection counts as just used
	send := func(method, body string, wantChecks int64) {
		t.Helper()
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, "https://api.default/", r)
		got, err := do(t, link.Pool, req, true)
		want := method + " " + body
		if method == http.MethodHead {
			want = ""
		}
		if err != nil || got != want {
			t.Fatalf("%s %q: %q %v, want %q", method, body, got, err, want)
		}
		if n := checks.Load(); n != wantChecks {
			t.Fatalf("after %s %q: %d liveness checks, want %d", method, body, n, wantChecks)
		}
	}
	send(http.MethodGet, "", 0) // a new connection: nothing to check
	send(http.MethodGet, "", 0) // reused at once: skipped
	send(http.MethodHead, "", 0)
	send(http.MethodPost, "", 1)          // not sent again (isIdempotent): checked
	send(http.MethodPut, "payload", 2)    // the same
	send(http.MethodDelete, "payload", 3) // the same
	link.Pool.SetCheckIdleAfter(0)
	send(http.MethodGet, "", 4) // idle for longer: checked
	if n := conns.Load(); n != 1 {
		t.Fatalf("the remote saw %d connections, want 1", n)
	}
	// The same rule holds a request back for the read of its answer
	// (turn.Conn.Hold): the four GETs and the HEAD, not the others.
	if n := link.Pool.HeldExchanges(); n != 4 {
		t.Fatalf("%d held exchanges, want 4 (the replayable requests)", n)
	}

	link.Pool.SetCheckIdleAfter(time.Hour)
	srv.CloseClientConnections()
	deadline := time.Now().Add(10 * time.Second)
	for open.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	send(http.MethodGet, "", 4) // unchecked, found closed, sent again on a new connection
	if n := conns.Load(); n != 2 {
		t.Errorf("the remote saw %d connections, want 2 (the GET sent again on a new one)", n)
	}
}

// The response header's deadline stays in force after an answer whose
// body came whole with its head (dataplane/internal/deadline): a pooled
// connection idle past it is still checked alive and reused, and a
// stalled answer on it is cut at the header timeout again.
func TestContractPoolHeaderDeadlineLeftInForce(t *testing.T) {
	cert, pool := selfSigned(t)
	const rh = 150 * time.Millisecond
	var conns atomic.Int64
	stall := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stall" {
			select {
			case <-stall:
			case <-r.Context().Done():
			}
		}
		_, _ = io.WriteString(w, "ok")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	defer close(stall)
	link, err := meshlink.New(meshlink.Config{Addr: srv.Listener.Addr().String(), TLS: &tls.Config{RootCAs: pool, ServerName: "peer.test"},
		Dial: 5 * time.Second, Handshake: 5 * time.Second, Idle: time.Minute, KeepAlive: time.Minute,
		ResponseHeader: rh, PoolWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer link.CloseIdle()
	req, _ := http.NewRequest(http.MethodGet, "https://api.default/a", nil)
	if body, err := do(t, link.Pool, req, true); err != nil || body != "ok" {
		t.Fatalf("first: %q %v", body, err)
	}
	time.Sleep(2 * rh)
	// A POST is checked alive before it goes (not replayable).
	req, _ = http.NewRequest(http.MethodPost, "https://api.default/b", strings.NewReader("x"))
	if body, err := do(t, link.Pool, req, true); err != nil || body != "ok" {
		t.Fatalf("after the deadline passed: %q %v", body, err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1 (the idle one reused)", n)
	}
	req, _ = http.NewRequest(http.MethodGet, "https://api.default/stall", nil)
	_, err = do(t, link.Pool, req, true)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a stalled answer on the reused connection: %v, want the header timeout", err)
	}
}
