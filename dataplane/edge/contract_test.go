package edge_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"minimesh/certs/certstest"
	"minimesh/dataplane/edge"
)

// serveStrict runs a TLS server behind NewTLSListener and Strict, and
// returns its address, the client config and the failures OnFail saw.
func serveStrict(t *testing.T, admit func(*tls.Conn) error) (string, *tls.Config, func() []string) {
	t.Helper()
	cert, pool := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reasons []string
	tl := edge.NewTLSListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}},
		edge.TLSOptions{Timeout: 5 * time.Second, MaxPending: 4, Admit: admit, OnFail: func(_ net.Conn, err error) {
			mu.Lock()
			defer mu.Unlock()
			reasons = append(reasons, edge.Classify(err))
		}})
	srv := edge.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), edge.ServerLimits{ReadHeader: 5 * time.Second, Idle: 5 * time.Second, MaxHeaderBytes: 1 << 16}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- edge.Serve(ctx, srv, edge.Strict(tl), time.Second, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "edge.test", MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}},
		func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), reasons...) }
}

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	return certstest.SelfSigned(t, "edge.test")
}

// A smuggling attempt (two Content-Length fields) is answered 400 and the
// connection closed, after the request before it was served.
func TestContractStrictAnswers400(t *testing.T) {
	addr, cfg, _ := serveStrict(t, nil)
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	_, _ = io.WriteString(c, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_, _ = io.WriteString(c, "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n")
	rest, _ := io.ReadAll(br)
	if !strings.HasPrefix(string(rest), "HTTP/1.1 400") {
		t.Fatalf("after a doubled Content-Length: %q", rest)
	}
}

// A handshake that Admit refuses is not handed out, and OnFail is told it
// with the reason Classify gives (ErrRevoked: revoked).
func TestContractAdmitRefusesAndClassifies(t *testing.T) {
	addr, cfg, reasons := serveStrict(t, func(*tls.Conn) error { return edge.ErrRevoked })
	c, err := tls.Dial("tcp", addr, cfg)
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		_, err = http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
	}
	if err == nil {
		t.Fatal("a refused handshake was served")
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(reasons()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := reasons(); len(got) != 1 || got[0] != edge.ReasonRevoked {
		t.Fatalf("OnFail reasons %v, want [%s]", got, edge.ReasonRevoked)
	}
	if r := edge.Classify(errors.New("something else")); r != edge.ReasonOther {
		t.Errorf("Classify(unknown) = %q, want other", r)
	}
}
