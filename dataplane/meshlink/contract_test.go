package meshlink_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"minimesh/certs/certstest"
	"minimesh/dataplane/edge"
	"minimesh/dataplane/meshlink"
)

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	return certstest.SelfSigned(t, "peer.test")
}

// Concurrent requests through a Link share one HTTP/2 connection to the
// remote, whatever host their URL names; a remote that does not verify
// fails the dial with ErrConnect, told to OnHandshakeFail as untrusted.
func TestContractOneConnectionPerRemote(t *testing.T) {
	cert, pool := selfSigned(t)
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	link, err := meshlink.New(meshlink.Config{Addr: addr, TLS: &tls.Config{RootCAs: pool, ServerName: "peer.test"},
		Dial: 5 * time.Second, Handshake: 5 * time.Second, Idle: time.Minute, KeepAlive: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer link.CloseIdle()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, "https://api.default/x", nil)
			resp, err := link.H2.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "HTTP/2.0" {
				t.Errorf("answered over %q", b)
			}
		}()
	}
	wg.Wait()
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 8 requests, want 1", n)
	}

	var reasons []string
	var mu sync.Mutex
	bad, err := meshlink.New(meshlink.Config{Addr: addr, TLS: &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "peer.test"},
		Dial: 5 * time.Second, Handshake: 5 * time.Second,
		OnHandshakeFail: func(reason string, _ error) { mu.Lock(); reasons = append(reasons, reason); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.CloseIdle()
	req, _ := http.NewRequest(http.MethodGet, "https://api.default/x", nil)
	if _, err := bad.H2.RoundTrip(req); !errors.Is(err, meshlink.ErrConnect) {
		t.Fatalf("untrusted remote: %v, want ErrConnect", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reasons) != 1 || reasons[0] != edge.ReasonUntrusted {
		t.Errorf("OnHandshakeFail reasons %v, want [untrusted]", reasons)
	}
}

// Pipe relays both ways and passes an end of input on as a half-close:
// the other side still answers after its input ended.
func TestContractPipeHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The far side: reads everything, then answers and closes.
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		_, _ = io.WriteString(c, "got "+string(b))
	}()
	far, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	pr, pw := io.Pipe()
	go func() { _, _ = io.Copy(pw, b); _ = pw.Close() }()
	done := make(chan struct{})
	var out strings.Builder
	go func() {
		defer close(done)
		meshlink.Pipe(far.(*net.TCPConn), &meshlink.StreamConn{R: pr, W: nopCloser{&out}}, 10*time.Second, nil)
	}()
	_, _ = io.WriteString(a, "ping")
	_ = a.Close() // end of input: passed on as a half-close
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Pipe did not end")
	}
	if out.String() != "got ping" {
		t.Fatalf("relayed %q, want %q", out.String(), "got ping")
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
