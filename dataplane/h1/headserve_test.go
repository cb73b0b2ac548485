package h1_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"minimesh/dataplane/h1"
)

// headHandler serves paths from their heads, but /decline (and every
// request's usual way says so in X-Way); /abort cuts its answer, /slow
// waits for its context to end.
type headHandler struct {
	ctxs  chan context.Context
	ended chan error
}

func (headHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Way", "usual")
	_, _ = io.WriteString(w, r.URL.Path)
}

func (h headHandler) ServeHead(w http.ResponseWriter, hd *h1.Head) bool {
	lw := w.(h1.LinesWriter)
	switch hd.Path {
	case "/decline":
		return false
	case "/abort":
		lw.WriteHeaderLines(200, []byte("X-Way: head\r\n"), 10, false, false)
		_, _ = io.WriteString(w, "12345")
		panic(http.ErrAbortHandler)
	case "/slow":
		select {
		case <-hd.Context().Done():
			h.ended <- hd.Context().Err()
		case <-time.After(10 * time.Second):
			h.ended <- nil
		}
		return true
	}
	h.ctxs <- hd.Context()
	lw.WriteHeaderLines(200, []byte("X-Way: head\r\n"), int64(len(hd.Path)), false, false)
	_, _ = io.WriteString(w, hd.Path)
	return true
}

// Heads a HeadServer serves are answered in order with requests it
// declines (served the usual way from the same bytes) on one connection,
// pipelined; each served head's context ends with it; a cut answer closes
// the connection; a client gone mid-request ends the context (the watch).
func TestHeadServer(t *testing.T) {
	hh := headHandler{ctxs: make(chan context.Context, 4), ended: make(chan error, 1)}
	addr, cfg := serveH1(t, &h1.Server{Handler: hh, WatchAfter: 20 * time.Millisecond})
	dial := func() (*tls.Conn, *bufio.Reader) {
		c, err := tls.Dial("tcp", addr, cfg.Clone())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}

	c, br := dial()
	const get = " HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"
	if _, err := io.WriteString(c, "GET /a"+get+"GET /decline"+get+"GET /b"+get); err != nil {
		t.Fatal(err)
	}
	for _, want := range [][2]string{{"head", "/a"}, {"usual", "/decline"}, {"head", "/b"}} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("X-Way") != want[0] || string(body) != want[1] || resp.Header.Get("Date") == "" {
			t.Errorf("answer %d %q %q %q, want %s %s", resp.StatusCode, resp.Header, body, resp.Header.Get("X-Way"), want[0], want[1])
		}
	}
	for range 2 {
		// It ends when the serve returns, which can be just after the
		// client read the answer.
		select {
		case <-(<-hh.ctxs).Done():
		case <-time.After(5 * time.Second):
			t.Error("a served head's context did not end with it")
		}
	}

	c, br = dial()
	_, _ = io.WriteString(c, "GET /abort"+get)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, err := io.ReadAll(resp.Body); err == nil || string(body) != "12345" {
		t.Errorf("cut answer read %q, %v; want 5 bytes and an error", body, err)
	}

	c, _ = dial()
	_, _ = io.WriteString(c, "GET /slow"+get)
	time.Sleep(50 * time.Millisecond)
	c.Close()
	if err := <-hh.ended; err == nil {
		t.Error("the client went away and the head's context did not end")
	}
}

// A head the usual way would not read as it is (a body, a close, a field
// that changes what the handler sees) is never offered: served the usual
// way.
func TestHeadServerNotOffered(t *testing.T) {
	hh := headHandler{ctxs: make(chan context.Context, 4), ended: make(chan error, 1)}
	addr, cfg := serveH1(t, &h1.Server{Handler: hh})
	for _, extra := range []string{"Content-Length: 0\r\n", "Connection: keep-alive\r\n", "Pragma: no-cache\r\n", "Expect: 100-continue\r\n"} {
		c, err := tls.Dial("tcp", addr, cfg.Clone())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(c, "GET /a HTTP/1.1\r\nHost: a\r\n"+extra+"\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if way := resp.Header.Get("X-Way"); way != "usual" {
			t.Errorf("%q: served %s", strings.TrimSpace(extra), way)
		}
		c.Close()
	}
}
