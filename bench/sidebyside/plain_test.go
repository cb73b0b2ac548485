package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"testing"
	"time"
)

// plainApp is the bench's app answer, and on /split the same answer in two
// writes 20 ms apart (a response that arrives in pieces).
func plainApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(appBody)))
		if r.URL.Path == "/split" {
			_, _ = w.Write(appBody[:10])
			http.NewResponseController(w).Flush()
			time.Sleep(20 * time.Millisecond)
			_, _ = w.Write(appBody[10:])
			return
		}
		_, _ = w.Write(appBody)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// checkPlain sends keep-alive requests through the prototype at addr: every
// answer is the app's, all on one connection, and a request with a body
// (which the prototypes do not carry) ends the connection rather than
// reaching the app half-read.
func checkPlain(t *testing.T, addr string) {
	t.Helper()
	checkProto(t, "http://"+addr, &http.Transport{MaxIdleConnsPerHost: 1})
}

func checkProto(t *testing.T, base string, tr *http.Transport) {
	t.Helper()
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	reused := 0
	for i, path := range []string{"/", "/split", "/", "/split", "/"} {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(ci httptrace.GotConnInfo) {
				if ci.Reused {
					reused++
				}
			},
		}))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request %d %s: %v", i, path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || string(b) != string(appBody) {
			t.Fatalf("request %d %s: %d %q %v", i, path, resp.StatusCode, b, err)
		}
	}
	if reused != 4 {
		t.Errorf("%d of 4 later requests reused the connection", reused)
	}
	resp, err := c.Post(base+"/", "text/plain", strings.NewReader("a body"))
	if err == nil {
		resp.Body.Close()
		t.Errorf("a request with a body was answered %d", resp.StatusCode)
	}
}

func TestPlainGoroutines(t *testing.T) {
	app := plainApp(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serveGoroutines(ln, app) }()
	checkPlain(t, ln.Addr().String())
	ln.Close()
	if err := <-done; err == nil {
		t.Error("serveGoroutines returned no error after its listener closed")
	}
}

func TestPlainGoroutinesTLS(t *testing.T) {
	app := plainApp(t)
	certs, err := writeCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tlsListener("127.0.0.1:0", certs.ServerCert, certs.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { _ = serveGoroutines(ln, app) }()
	checkProto(t, "https://"+ln.Addr().String(), keepAliveTLS(t, certs))
}

// keepAliveTLS is the bench's check client (trusting certs' CA) keeping
// one connection alive.
func keepAliveTLS(t *testing.T, c certFiles) *http.Transport {
	t.Helper()
	check, err := newCheckClient(c.CA)
	if err != nil {
		t.Fatal(err)
	}
	tr := check.Transport.(*http.Transport).Clone()
	tr.DisableKeepAlives, tr.MaxIdleConnsPerHost = false, 1
	return tr
}

func TestPlainEventLoop(t *testing.T) {
	app := plainApp(t)
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- serveLoops(addr, app, stop) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	checkPlain(t, addr)
	close(stop)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the loops did not end after stop")
	}
	// The port the loops freed may be taken at once by another test
	// package's listener (CI runs packages side by side): only an answer
	// of the loops' (the app's body) means they still listen.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	if resp, err := c.Get("http://" + addr + "/"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) == string(appBody) {
			t.Error("the loops' listeners are still open after stop")
		}
	}
}

func TestResponseLength(t *testing.T) {
	for head, body := range map[string]int{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n":          5,
		"HTTP/1.1 200 OK\r\ncontent-length:  7 \r\n\r\n":        7,
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n": -1,
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n":         -1,
		"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n":   -1, // past the buffer
	} {
		want := -1
		if body >= 0 {
			want = len(head) + body
		}
		if got := responseLength([]byte(head)); got != want {
			t.Errorf("%q: %d, want %d", head, got, want)
		}
	}
}

// TestPlainGoroutinesTLSReusePort: two workers' listeners bind the one
// port (SO_REUSEPORT; without it the second bind fails) and the pair
// serves as one proxy.
func TestPlainGoroutinesTLSReusePort(t *testing.T) {
	app := plainApp(t)
	certs, err := writeCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		ln, err := tlsReusePortListener(addr, certs.ServerCert, certs.ServerKey)
		if err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
		defer ln.Close()
		go func() { _ = serveGoroutines(ln, app) }()
	}
	checkProto(t, "https://"+addr, keepAliveTLS(t, certs))
}
