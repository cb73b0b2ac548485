package applink

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// connApp is a real HTTP app that counts the connections it accepted and
// those still open.
type connApp struct {
	*httptest.Server
	conns, open atomic.Int64
}

func newConnApp(t *testing.T, h http.HandlerFunc) *connApp {
	t.Helper()
	a := &connApp{Server: httptest.NewUnstartedServer(h)}
	a.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			a.conns.Add(1)
			a.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			a.open.Add(-1)
		}
	}
	a.Start()
	t.Cleanup(a.Close)
	return a
}

func newTestAppClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c := New(cfg)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// roundTrip sends one request through c and returns the status and body.
func roundTrip(t *testing.T, c http.RoundTripper, method, url string, body io.Reader) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestAppClientReusesConnections(t *testing.T) {
	checkLeaks(t)
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(b))
	})
	c := newTestAppClient(t, Config{})
	for i, tc := range []struct {
		method, path, body, want string
	}{
		{http.MethodGet, "/a", "", "GET /a "},
		{http.MethodPost, "/b", "hello", "POST /b hello"},
		{http.MethodHead, "/c", "", ""},
		{http.MethodPut, "/d", strings.Repeat("x", 100<<10), "PUT /d " + strings.Repeat("x", 100<<10)},
		{http.MethodGet, "/e", "", "GET /e "},
	} {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		code, got, err := roundTrip(t, c, tc.method, a.URL+tc.path, body)
		if err != nil || code != http.StatusOK || got != tc.want {
			t.Fatalf("request %d: %d %.40q %v, want 200 %.40q", i, code, got, err, tc.want)
		}
	}
	if n := a.conns.Load(); n != 1 {
		t.Errorf("the app saw %d connections for 5 requests in turn, want 1 (kept alive)", n)
	}
}

func TestAppClientConnectionCloseNotReused(t *testing.T) {
	checkLeaks(t)
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		_, _ = io.WriteString(w, "ok")
	})
	c := newTestAppClient(t, Config{})
	for _, p := range []string{"/close", "/keep", "/keep"} {
		if code, _, err := roundTrip(t, c, http.MethodGet, a.URL+p, nil); err != nil || code != http.StatusOK {
			t.Fatalf("%s: %d %v", p, code, err)
		}
	}
	if n := a.conns.Load(); n != 2 {
		t.Errorf("the app saw %d connections, want 2 (the one it closed, then one kept)", n)
	}
}

// An idle connection the app closed is found out: an idempotent request
// without a body goes again on a new connection; any other is never sent
// on it (the pooled connection is checked first).
func TestAppClientAppClosedIdleConnection(t *testing.T) {
	checkLeaks(t)
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+" "+string(b))
	})
	c := newTestAppClient(t, Config{})
	for _, tc := range []struct{ method, body string }{
		{http.MethodGet, ""},           // sent, fails, sent again
		{http.MethodPost, ""},          // not idempotent: checked
		{http.MethodPost, "payload"},   // a body: checked
		{http.MethodDelete, "payload"}, // idempotent but a body: checked
	} {
		if code, _, err := roundTrip(t, c, http.MethodGet, a.URL, nil); err != nil || code != http.StatusOK {
			t.Fatalf("first: %d %v", code, err)
		}
		// The app ends its idle keep-alive connections (as an idle
		// timeout would) while one sits in the pool.
		a.CloseClientConnections()
		eventually(t, "the pooled connection to be closed by the app", func() bool {
			ac, _ := c.pop(a.Listener.Addr().String())
			if ac == nil {
				return false
			}
			defer c.put(ac)
			return !connAlive(ac.Conn)
		})
		var r io.Reader
		if tc.body != "" {
			r = strings.NewReader(tc.body)
		}
		code, got, err := roundTrip(t, c, tc.method, a.URL, r)
		if want := tc.method + " " + tc.body; err != nil || code != http.StatusOK || got != want {
			t.Fatalf("%s %q after the app closed the pooled connection: %d %q %v, want %q", tc.method, tc.body, code, got, err, want)
		}
	}
}

// An app that answers before reading the request's body (say, 413) gets
// its answer through; the connection, in an unknown state, is not reused.
func TestAppClientEarlyAnswer(t *testing.T) {
	checkLeaks(t)
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/early" {
			w.Header().Set("Connection", "close")
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
	})
	c := newTestAppClient(t, Config{})
	code, _, err := roundTrip(t, c, http.MethodPost, a.URL+"/early", strings.NewReader(strings.Repeat("x", 8<<20)))
	if err != nil || code != http.StatusRequestEntityTooLarge {
		t.Fatalf("early answer: %d %v, want 413", code, err)
	}
	if code, _, err := roundTrip(t, c, http.MethodPost, a.URL+"/ok", strings.NewReader("small")); err != nil || code != http.StatusOK {
		t.Fatalf("next request: %d %v", code, err)
	}
	if n := a.conns.Load(); n != 2 {
		t.Errorf("the app saw %d connections, want 2", n)
	}
}

// A cancelled request (the client went away, a route timed out) ends the
// exchange at once, even mid-body, and its connection is not reused.
func TestAppClientCancel(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			_, _ = io.WriteString(w, "first part")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	defer close(release)
	c := newTestAppClient(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.URL+"/slow", nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len("first part"))
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := resp.Body.Read(buf); done <- err }()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read after cancel succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled request kept reading the app's body")
	}
	resp.Body.Close()
	if code, _, err := roundTrip(t, c, http.MethodGet, a.URL+"/ok", nil); err != nil || code != http.StatusOK {
		t.Fatalf("next request: %d %v", code, err)
	}
	if n := a.conns.Load(); n != 2 {
		t.Errorf("the app saw %d connections, want 2 (the cut one is not reused)", n)
	}
}

// rawApp answers every connection with the bytes reply returns for it.
func rawApp(t *testing.T, reply func(n int) string) string {
	t.Helper()
	ln := listenLocal(t)
	go func() {
		for n := 0; ; n++ {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_, _ = http.ReadRequest(bufio.NewReader(conn))
				_, _ = io.WriteString(conn, reply(n))
				_, _ = io.Copy(io.Discard, conn)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return "http://" + ln.Addr().String()
}

func TestAppClientResponseLimits(t *testing.T) {
	t.Run("header timeout", func(t *testing.T) {
		url := rawApp(t, func(int) string { return "" }) // never answers
		c := newTestAppClient(t, Config{ResponseHeader: 100 * time.Millisecond})
		_, _, err := roundTrip(t, c, http.MethodGet, url, nil)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("got %v, want a timeout (the forwarder answers 504 to it)", err)
		}
	})
	t.Run("header size", func(t *testing.T) {
		url := rawApp(t, func(int) string {
			return "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\nContent-Length: 0\r\n\r\n"
		})
		c := newTestAppClient(t, Config{})
		if _, _, err := roundTrip(t, c, http.MethodGet, url, nil); err == nil {
			t.Fatal("a 2 MiB response header was accepted")
		}
	})
	t.Run("switching protocols unasked", func(t *testing.T) {
		url := rawApp(t, func(int) string { return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n" })
		c := newTestAppClient(t, Config{})
		if _, _, err := roundTrip(t, c, http.MethodGet, url, nil); err == nil {
			t.Fatal("101 to a request without Upgrade was accepted")
		}
	})
	t.Run("informational", func(t *testing.T) {
		url := rawApp(t, func(int) string {
			return "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		})
		c := newTestAppClient(t, Config{})
		var hints []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, h.Get("Link"))
			return nil
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil)
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "ok" || len(hints) != 1 || hints[0] != "</s.css>; rel=preload" {
			t.Fatalf("got %d %q, hints %q", resp.StatusCode, b, hints)
		}
	})
}

// Idle connections are closed after the idle timeout, and all of them by
// CloseIdleConnections; nothing is pooled after that.
func TestAppClientIdleConnectionsEnd(t *testing.T) {
	checkLeaks(t)
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	open := &a.open
	c := newTestAppClient(t, Config{Idle: 200 * time.Millisecond})
	if code, _, err := roundTrip(t, c, http.MethodGet, a.URL, nil); err != nil || code != http.StatusOK {
		t.Fatalf("%d %v", code, err)
	}
	eventually(t, "the idle connection to expire", func() bool { return open.Load() == 0 })

	c = newTestAppClient(t, Config{})
	if code, _, err := roundTrip(t, c, http.MethodGet, a.URL, nil); err != nil || code != http.StatusOK {
		t.Fatalf("%d %v", code, err)
	}
	if open.Load() != 1 {
		t.Fatalf("%d open connections, want the pooled one", open.Load())
	}
	c.CloseIdleConnections()
	eventually(t, "CloseIdleConnections to close the pooled connection", func() bool { return open.Load() == 0 })
	if code, _, err := roundTrip(t, c, http.MethodGet, a.URL, nil); err != nil || code != http.StatusOK {
		t.Fatalf("after close: %d %v", code, err)
	}
	eventually(t, "a connection used after CloseIdleConnections to be closed, not pooled", func() bool { return open.Load() == 0 })
}

// failingBody yields some bytes, then fails as a client's body does when
// its connection breaks mid-body.
type failingBody struct{ sent bool }

func (b *failingBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, "partial"), nil
	}
	return 0, errors.New("client connection broke mid-body")
}

func (b *failingBody) Close() error { return nil }

// TestAppClientBodyReadFailureEndsExchange: when the caller's body fails
// mid-way the app still waits for the rest of it and will not answer, so
// the exchange must end at once (and the connection go), as net/http's
// Transport closes a connection whose body write failed; waiting would
// hold the app's connection until the response-header timeout (here an
// hour).
func TestAppClientBodyReadFailureEndsExchange(t *testing.T) {
	checkLeaks(t)
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	})
	c := newTestAppClient(t, Config{ResponseHeader: time.Hour})
	req, _ := http.NewRequest(http.MethodPost, a.URL+"/upload", &failingBody{})
	req.ContentLength = 1000
	done := make(chan error, 1)
	go func() {
		resp, err := c.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("status %d for a request whose body failed", resp.StatusCode)
			done <- err
			return
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the exchange waited on the app after the request body failed")
	}
	if code, body, err := roundTrip(t, c, http.MethodPost, a.URL+"/ok", strings.NewReader("small")); err != nil || code != http.StatusOK || body != "ok" {
		t.Fatalf("next request: %d %q %v", code, body, err)
	}
}

// A replayable request (idempotent, no body) takes a connection idle for
// less than CheckIdleAfter without the liveness check's system call; a
// request that could not be sent again is checked whatever the idle time,
// and so is any request after CheckIdleAfter. A skipped check is safe: a
// GET on a connection the app closed is sent again on a new one.
func TestAppClientCheckSkippedOnlyWhenReplayable(t *testing.T) {
	checkLeaks(t)
	var checks atomic.Int64
	testHookChecked = func() { checks.Add(1) }
	t.Cleanup(func() { testHookChecked = nil })
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+" "+string(b))
	})
	c := newTestAppClient(t, Config{})
	if c.checkIdleAfter != CheckIdleAfter {
		t.Fatalf("checkIdleAfter %v, want CheckIdleAfter", c.checkIdleAfter)
	}
	c.checkIdleAfter = time.Hour // every pooled connection counts as just used
	send := func(method, body string, wantChecks int64) {
		t.Helper()
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		code, got, err := roundTrip(t, c, method, a.URL, r)
		want := method + " " + body
		if method == http.MethodHead {
			want = ""
		}
		if err != nil || code != http.StatusOK || got != want {
			t.Fatalf("%s %q: %d %q %v, want %q", method, body, code, got, err, want)
		}
		if n := checks.Load(); n != wantChecks {
			t.Fatalf("after %s %q: %d liveness checks, want %d", method, body, n, wantChecks)
		}
	}
	send(http.MethodGet, "", 0) // a new connection: nothing to check
	send(http.MethodGet, "", 0) // reused at once: skipped
	send(http.MethodHead, "", 0)
	send(http.MethodPost, "", 1)          // not idempotent: checked
	send(http.MethodPut, "payload", 2)    // a body: checked
	send(http.MethodDelete, "payload", 3) // idempotent but a body: checked
	c.checkIdleAfter = 0
	send(http.MethodGet, "", 4) // idle for longer: checked
	if n := a.conns.Load(); n != 1 {
		t.Fatalf("the app saw %d connections, want 1", n)
	}

	c.checkIdleAfter = time.Hour
	a.CloseClientConnections()
	eventually(t, "the app to close its side", func() bool { return a.open.Load() == 0 })
	send(http.MethodGet, "", 4) // unchecked, found closed, sent again on a new connection
	if n := a.conns.Load(); n != 2 {
		t.Errorf("the app saw %d connections, want 2 (the GET sent again on a new one)", n)
	}
}

// The response header's deadline stays in force after an answer whose
// body came whole with its head (dataplane/internal/deadline): a
// connection idle past it is still checked alive and reused, and the
// next exchange on it is bounded by the header timeout again.
func TestAppClientHeaderDeadlineLeftInForce(t *testing.T) {
	checkLeaks(t)
	const rh = 150 * time.Millisecond
	stall := make(chan struct{})
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stall" {
			select {
			case <-stall:
			case <-r.Context().Done():
			}
		}
		_, _ = io.WriteString(w, "ok")
	})
	defer close(stall)
	c := newTestAppClient(t, Config{ResponseHeader: rh})
	if code, _, err := roundTrip(t, c, http.MethodGet, a.URL+"/a", nil); err != nil || code != 200 {
		t.Fatalf("first: %d %v", code, err)
	}
	time.Sleep(2 * rh) // past the deadline left in force
	// A POST is checked alive before it goes (not replayable): the past
	// deadline must not fail the check.
	if code, got, err := roundTrip(t, c, http.MethodPost, a.URL+"/b", strings.NewReader("x")); err != nil || code != 200 || got != "ok" {
		t.Fatalf("after the deadline passed: %d %q %v", code, got, err)
	}
	if n := a.conns.Load(); n != 1 {
		t.Errorf("the app saw %d connections, want 1 (the idle one reused)", n)
	}
	_, _, err := roundTrip(t, c, http.MethodGet, a.URL+"/stall", nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a stalled answer on the reused connection: %v, want the header timeout", err)
	}
}

// A replayable request (idempotent, no body) goes out with the read of its
// answer (turn.Conn.Hold), which waits for it on the poller; any other is
// written at once, as before.
func TestAppClientHoldsOnlyReplayable(t *testing.T) {
	checkLeaks(t)
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+" "+string(b))
	})
	c := newTestAppClient(t, Config{})
	host := strings.TrimPrefix(a.URL, "http://")
	send := func(method, body string, wantHeld int64) {
		t.Helper()
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		code, got, err := roundTrip(t, c, method, a.URL, r)
		want := method + " " + body
		if method == http.MethodHead {
			want = ""
		}
		if err != nil || code != http.StatusOK || got != want {
			t.Fatalf("%s %q: %d %q %v, want %q", method, body, code, got, err, want)
		}
		ac, _ := c.pop(host)
		if ac == nil || ac.hold == nil {
			t.Fatalf("after %s: no pooled turn.Conn", method)
		}
		if n := ac.hold.Exchanges(); n != wantHeld {
			t.Fatalf("after %s %q: %d held exchanges, want %d", method, body, n, wantHeld)
		}
		c.put(ac)
	}
	send(http.MethodGet, "", 1)
	send(http.MethodHead, "", 2)
	send(http.MethodPost, "", 2)          // not idempotent: written at once
	send(http.MethodPut, "payload", 2)    // a body: the same
	send(http.MethodDelete, "payload", 2) // idempotent but a body
	send(http.MethodGet, "", 3)
	if n := a.conns.Load(); n != 1 {
		t.Fatalf("the app saw %d connections, want 1", n)
	}
}
