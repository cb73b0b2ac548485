package main

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func caFile(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every scheduled request is sent and answered over TLS 1.3 and the
// connections it dialed first; answers of every framing are read whole
// (the next answer on the connection parses).
func TestOpenLoopSendsEveryRequest(t *testing.T) {
	var reqs atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := reqs.Add(1)
		if r.TLS == nil || r.TLS.Version != 0x0304 {
			t.Errorf("not TLS 1.3: %+v", r.TLS)
		}
		switch n % 3 {
		case 0:
			_, _ = w.Write([]byte(strings.Repeat("x", 100)))
		case 1: // chunked
			w.(http.Flusher).Flush()
			_, _ = w.Write([]byte("a"))
		default: // ends its connection
			w.Header().Set("Connection", "close")
			_, _ = w.Write([]byte("bye"))
		}
	}))
	srv.StartTLS()
	defer srv.Close()
	res, err := run(options{url: srv.URL + "/x", rate: 400, duration: 500 * time.Millisecond, conns: 4,
		ca: caFile(t, srv), timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 200 || reqs.Load() != 200 {
		t.Fatalf("sent %d, server saw %d, want 200", res.Sent, reqs.Load())
	}
	if res.Errors != 0 {
		t.Errorf("%d errors", res.Errors)
	}
	if !(0 < res.P50 && res.P50 <= res.P99 && res.P99 <= res.P999) {
		t.Errorf("percentiles %d %d %d", res.P50, res.P99, res.P999)
	}
}

// Open loop: requests due while the only connection waits for a stalled
// answer are charged from when they were due, so the stall shows in the
// tail of many requests, not one; answers other than 200 are errors.
func TestOpenLoopChargesTheStall(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 10:
			time.Sleep(300 * time.Millisecond)
		case 20:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	res, err := run(options{url: srv.URL, rate: 200, duration: time.Second, conns: 1, timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 200 || res.Errors != 1 {
		t.Fatalf("sent %d with %d errors, want 200 with 1", res.Sent, res.Errors)
	}
	// 60 requests are due during the 300 ms stall (one every 5 ms): the
	// 2nd of them waits 295 ms, the 59th 10 ms, so 10 % of the 200 wait
	// over 150 ms. A closed loop would show one slow request.
	if res.P99 < 150*time.Millisecond.Nanoseconds() {
		t.Errorf("p99 %v: the requests queued behind the stall were not charged their wait", time.Duration(res.P99))
	}
}

func TestOpenLoopRefusesBadOptions(t *testing.T) {
	for _, o := range []options{
		{url: "http://127.0.0.1:1/", rate: 0, duration: time.Second, conns: 1},
		{url: "ftp://x/", rate: 1, duration: time.Second, conns: 1},
		{url: "http://127.0.0.1:1/", rate: 1, duration: time.Second, conns: 1, timeout: time.Second}, // nothing listens
	} {
		if _, err := run(o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
