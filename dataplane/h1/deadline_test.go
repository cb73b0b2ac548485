package h1_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"minimesh/dataplane/h1"
)

// The connection's timer runs on from request to request (watch.go): a
// slow request that follows quick ones on the same connection gets its
// watch no sooner than WatchAfter after it began (not when the timer set
// by an earlier request fires), and the watch still sees its client go.
func TestWatchAfterQuickRequests(t *testing.T) {
	const after = 300 * time.Millisecond
	cancelled := make(chan error, 1)
	addr, cfg := serveH1(t, &h1.Server{WatchAfter: after, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			cancelled <- waitCancel(r)
			return
		}
		_, _ = io.WriteString(w, "quick")
	})})
	c, br, events := dial(t, addr, cfg)
	// Quick requests for about half of WatchAfter: the timer armed by the
	// first is still running when the slow one begins.
	for begun := time.Now(); time.Since(begun) < after/2; {
		_, _ = io.WriteString(c, "GET /quick HTTP/1.1\r\nHost: a\r\n\r\n")
		if code, body := answer(t, br); code != 200 || body != "quick" {
			t.Fatalf("%d %q", code, body)
		}
	}
	sent := time.Now()
	_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	expect(t, events, "start")
	if waited := time.Since(sent); waited < after {
		t.Fatalf("the watch started %v after the request, before WatchAfter (%v)", waited, after)
	}
	_ = c.Close()
	if err := <-cancelled; err == nil {
		t.Fatal("the client closed, and the slow request's context did not end")
	}
}

// ReadHeaderTimeout bounds the head of a request after the first too:
// the idle wait's deadline, left in force when a head comes whole
// (deadline.go), is replaced by the head's own when it comes in parts.
func TestReadHeaderTimeoutOnALaterRequest(t *testing.T) {
	addr, cfg := serveH1(t, &h1.Server{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: time.Minute,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })})
	c, br, _ := dial(t, addr, cfg)
	for range 3 {
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if code, _ := answer(t, br); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	// A head that never ends, a field every 50 ms: cut at the head's
	// timeout, long before the idle one (a minute).
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\n")
	done := make(chan error, 1)
	go func() { _, err := br.ReadByte(); done <- err }()
	for range 200 { // 10 s at most
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("the server answered a head that never ended")
			}
			return
		case <-time.After(50 * time.Millisecond):
			_, _ = io.WriteString(c, "X: 1\r\n")
		}
	}
	t.Fatal("a later request's head sent too slowly was not cut")
}
