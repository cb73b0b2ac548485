package applink

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"minimesh/dataplane/applink/applinktest"
)

// okAfter sends GET /ok?id=N through c and requires exactly "ok N": the
// connection a misbehaving answer left behind did not poison it.
func okAfter(t *testing.T, c http.RoundTripper, base string, id int, after string) {
	t.Helper()
	code, body, err := roundTrip(t, c, http.MethodGet, fmt.Sprintf("%s/ok?id=%d", base, id), nil)
	if want := fmt.Sprintf("ok %d", id); err != nil || code != http.StatusOK || body != want {
		t.Fatalf("request after %s: %d %q %v, want 200 %q", after, code, body, err, want)
	}
}

// The app client never reuses a connection that holds bytes after an
// answer (a HEAD answered with a body, a second answer, a body longer than
// its Content-Length, an answer sent later) nor one whose answer had
// doubtful framing; the next request gets its own answer.
func TestAppClientHostileAppNoPoisoning(t *testing.T) {
	checkLeaks(t)
	a := applinktest.NewHostileApp(t)
	c := newTestAppClient(t, Config{})
	base := "http://" + a.Addr()
	for i, tc := range []struct {
		method, path, want string
	}{
		{http.MethodGet, "/extra", "ok"},
		{http.MethodPost, "/extra", "ok"},
		{http.MethodGet, "/short-cl", "ok"},
		{http.MethodHead, "/head-body", ""},
		{http.MethodGet, "/te-cl", "abc"},
		{http.MethodGet, "/http10-te", "abc"},
	} {
		var body io.Reader
		if tc.method == http.MethodPost {
			body = strings.NewReader("payload")
		}
		code, got, err := roundTrip(t, c, tc.method, base+tc.path, body)
		if err != nil || code != http.StatusOK || got != tc.want {
			t.Fatalf("%s %s: %d %q %v, want 200 %q", tc.method, tc.path, code, got, err, tc.want)
		}
		c.mu.Lock()
		pooled := len(c.idle[a.Addr()])
		c.mu.Unlock()
		if pooled != 0 {
			t.Errorf("%s %s: its connection went back to the pool", tc.method, tc.path)
		}
		okAfter(t, c, base, i, tc.method+" "+tc.path)
	}
}

// Bytes the app sends once its answer was read and the connection pooled
// are found before the connection is used again, for every method.
func TestAppClientUnaskedAnswerWhileIdle(t *testing.T) {
	checkLeaks(t)
	a := applinktest.NewHostileApp(t)
	c := newTestAppClient(t, Config{})
	base := "http://" + a.Addr()
	if code, got, err := roundTrip(t, c, http.MethodGet, base+"/late-extra", nil); err != nil || code != http.StatusOK || got != "ok" {
		t.Fatalf("first: %d %q %v", code, got, err)
	}
	close(a.Late)
	<-a.LateDone
	eventually(t, "the unasked answer to reach the pooled connection", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		conns := c.idle[a.Addr()]
		return len(conns) == 1 && !connAlive(conns[0].Conn)
	})
	// A GET skips the check on a connection idle for less than
	// CheckIdleAfter (the unasked bytes are the app's answer all the
	// same); after it, the check finds them.
	time.Sleep(CheckIdleAfter)
	okAfter(t, c, base, 1, "an unasked answer on an idle connection")
}

// Early close, a storm of 1xx, slow headers: the request fails (the
// forwarder answers 502 or 504) and the next one is answered right.
func TestAppClientHostileAppFailures(t *testing.T) {
	checkLeaks(t)
	a := applinktest.NewHostileApp(t)
	c := newTestAppClient(t, Config{ResponseHeader: 300 * time.Millisecond})
	base := "http://" + a.Addr()
	for i, tc := range []struct {
		path    string
		timeout bool
	}{
		{"/close-mid-headers", false},
		{"/1xx-storm", false},
		{"/slow-headers", true},
	} {
		_, _, err := roundTrip(t, c, http.MethodGet, base+tc.path, nil)
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) != tc.timeout {
			t.Fatalf("%s: %v, want an error (timeout: %v)", tc.path, err, tc.timeout)
		}
		if tc.timeout {
			if p := <-a.Cut; p != tc.path {
				t.Fatalf("cut %s, want %s", p, tc.path)
			}
			<-a.Wrote
		}
		okAfter(t, c, base, i, tc.path)
	}
	// A body cut short by the app's close fails the body read.
	req, _ := http.NewRequest(http.MethodGet, base+"/close-mid-body", nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("a body cut at %d of 100 bytes read without error", len(b))
	}
	resp.Body.Close()
	okAfter(t, c, base, 10, "/close-mid-body")
}

// A cancellation after the request is written and before its response
// header deadline is set ends the request at once: it is not lost when
// the deadline is set (the app never answers; the header timeout is an
// hour).
func TestAppClientCancelBeforeHeaderDeadline(t *testing.T) {
	checkLeaks(t)
	url := rawApp(t, func(int) string { return "" })
	c := newTestAppClient(t, Config{ResponseHeader: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	testHookWritten = func(conn net.Conn) {
		cancel()
		// Wait for the cancel hook to have cut the connection (a read
		// then fails at once), as if it ran before the deadline was set.
		rc, err := conn.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Error(err)
			return
		}
		eventually(t, "the cancel hook to set a past deadline", func() bool {
			return rc.Read(func(uintptr) bool { return true }) != nil
		})
	}
	t.Cleanup(func() { testHookWritten = nil })
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	done := make(chan error, 1)
	go func() {
		resp, err := c.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(15 * time.Second): // stops a broken test; measures nothing
		t.Fatal("a request cancelled before its header deadline was set kept waiting for the app")
	}
}

// slowCheckConn is a real connection whose liveness check blocks until
// released.
type slowCheckConn struct {
	*net.TCPConn
	entered, release chan struct{}
}

func (s *slowCheckConn) SyscallConn() (syscall.RawConn, error) {
	rc, err := s.TCPConn.SyscallConn()
	return slowRawConn{rc, s}, err
}

type slowRawConn struct {
	syscall.RawConn
	s *slowCheckConn
}

func (r slowRawConn) Read(f func(uintptr) bool) error {
	close(r.s.entered)
	<-r.s.release
	return r.RawConn.Read(f)
}

// The liveness check of a pooled connection (a system call) runs outside
// the pool's lock: a check that blocks does not hold up the pool.
func TestAppClientLivenessCheckOutsideLock(t *testing.T) {
	checkLeaks(t)
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	c := newTestAppClient(t, Config{})
	raw, err := net.Dial("tcp", a.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc := &slowCheckConn{TCPConn: raw.(*net.TCPConn), entered: make(chan struct{}), release: make(chan struct{})}
	ac := &appConn{Conn: sc, addr: "slow"}
	ac.lr = headerLimit{c: sc, n: -1}
	ac.br = bufio.NewReader(&ac.lr)
	ac.bw = bufio.NewWriter(sc)
	c.put(ac)
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		if ac, _ := c.get("slow", false); ac != nil { // not replayable: always checked
			ac.Close()
		}
	}()
	<-sc.entered
	// The check of "slow" is under way; another address is served.
	served := make(chan error, 1)
	go func() {
		code, _, err := roundTrip(t, c, http.MethodGet, a.URL, nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		served <- err
	}()
	select {
	case err := <-served:
		close(sc.release)
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second): // stops a broken test; measures nothing
		t.Error("a request waited for the liveness check of another connection")
		close(sc.release)
		<-served
	}
	<-checked
}

// The check of a pooled connection before a reuse costs a system
// call and no allocation.
func TestAppClientLivenessCheckDoesNotAllocate(t *testing.T) {
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) {})
	c := newTestAppClient(t, Config{})
	ac, err := c.connect(context.Background(), a.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	if !ac.alive() {
		t.Fatal("a fresh connection is not alive")
	}
	if n := testing.AllocsPerRun(100, func() { ac.alive() }); n != 0 {
		t.Errorf("%v allocations per check", n)
	}
}
