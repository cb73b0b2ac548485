package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"minimesh/dataplane/h1"
)

// HTTP1Env names the environment variable that chooses the server of the
// HTTP/1.1 connections ServeSplit is given: "own" (the default, also when
// empty: dataplane/h1's loop) or "nethttp" (net/http's server, as before),
// so that both can be measured in one binary.
const HTTP1Env = "MESH_PROXY_HTTP1"

// HTTP1Mode returns the server HTTP1Env chooses: true for our own loop.
// Any other value is an error naming the variable.
func HTTP1Mode() (own bool, err error) {
	switch v := os.Getenv(HTTP1Env); v {
	case "", "own":
		return true, nil
	case "nethttp":
		return false, nil
	default:
		return false, fmt.Errorf("proxy: %s=%q: want \"own\" or \"nethttp\"", HTTP1Env, v)
	}
}

// ServeSplit is Serve for a listener of TLS connections (a TLSListener,
// usually behind Strict): connections that negotiated h2 go to srv, that
// is net/http's HTTP/2 server with its GOAWAY on shutdown; the others to
// dataplane/h1's loop, built from srv's Handler, ReadHeaderTimeout,
// IdleTimeout, MaxHeaderBytes, ConnContext and ConnState. When ctx ends it
// stops accepting, drains both for at most drain, then cuts what is left
// (h1 connections' requests in flight see their context cancelled) and
// returns nil. HTTP1Env=nethttp serves everything with srv, as Serve.
func ServeSplit(ctx context.Context, srv *http.Server, ln net.Listener, drain time.Duration, log *slog.Logger) error {
	own, err := HTTP1Mode()
	if err != nil {
		_ = ln.Close()
		return err
	}
	if !own {
		return Serve(ctx, srv, ln, drain, log)
	}
	h, h2 := splitServers(srv, ln, log)
	return serveBoth(ctx, srv, h, h2, ln, func() error { return acceptLoop(ln, h2, h) }, nil, drain, log)
}

// splitServers builds the h1 loop from srv's settings and the listener
// that hands connections to srv (net/http).
func splitServers(srv *http.Server, ln net.Listener, log *slog.Logger) (*h1.Server, *chanListener) {
	h := &h1.Server{
		Handler: srv.Handler, ReadHeaderTimeout: srv.ReadHeaderTimeout, IdleTimeout: srv.IdleTimeout,
		MaxHeaderBytes: srv.MaxHeaderBytes, HTTPServer: srv, ConnContext: srv.ConnContext,
		ConnState: srv.ConnState, Logger: log,
	}
	return h, newChanListener(ln.Addr())
}

// serveBoth serves srv on the connections accept hands to h2 and runs accept until ln fails or ctx ends; then it calls
// stopped (if any), drains srv and h for at most drain and cuts what is
// left. It is ServeSplit's and ServeSplitPlain's end.
func serveBoth(ctx context.Context, srv *http.Server, h *h1.Server, h2 *chanListener, ln net.Listener, accept func() error, stopped func(), drain time.Duration, log *slog.Logger) error {
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(h2) // ends at Shutdown or Close
	}()
	accepted := make(chan error, 1)
	go func() { accepted <- accept() }()

	var failed error
	select {
	case err := <-accepted:
		_ = ln.Close()
		failed = fmt.Errorf("proxy: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
		_ = ln.Close()
		<-accepted
	}
	if stopped != nil {
		stopped()
	}
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if failed != nil {
		cancel() // nothing to drain for: cut
	}
	var wg sync.WaitGroup
	var e2 error
	wg.Add(1)
	go func() { defer wg.Done(); e2 = srv.Shutdown(sctx) }()
	e1 := h.Shutdown(sctx)
	wg.Wait()
	if e1 != nil || e2 != nil {
		_ = srv.Close()
		_ = h.Close()
		if failed == nil {
			log.Warn("proxy: drain timed out, remaining connections closed",
				slog.String("addr", ln.Addr().String()), slog.Duration("drain", drain))
		}
	}
	<-served
	return failed
}

// acceptLoop hands h2 connections to h2 and serves the others with h,
// until ln fails; temporary errors (EMFILE) back off as net/http does.
func acceptLoop(ln net.Listener, h2 *chanListener, h *h1.Server) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() && !errors.Is(err, net.ErrClosed) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if tc, ok := TLSConnOf(c); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
			if !h2.deliver(c) {
				_ = c.Close()
			}
			continue
		}
		go h.ServeConn(c)
	}
}

// chanListener is a net.Listener fed by acceptLoop: how net/http's server
// gets the h2 connections only.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
