package edge

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"minimesh/dataplane/h1"
)

// h2Preface is the HTTP/2 client connection preface (RFC 9113 section
// 3.4): how an h2c client with prior knowledge opens a connection.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// ServeSplitPlain is ServeSplit for plaintext connections (the outbound's
// app-facing ports, on loopback): srv must accept HTTP/1.1 and h2c
// (Protocols with HTTP1 and UnencryptedHTTP2). Each connection's first
// bytes are read on its own goroutine, for at most srv.ReadHeaderTimeout
// (10s if zero), until they either differ from the HTTP/2 client preface or
// are all of it. The preface goes to srv, that is net/http's h2c server,
// with its GOAWAY on shutdown; anything else to dataplane/h1's loop, built
// from srv's Handler and limits as ServeSplit builds it. Either gets the
// bytes read replayed. A connection that ends or times out before its
// first bytes decide is closed. So a first request's head may take up to
// twice ReadHeaderTimeout from accept (the look, then h1's own limit).
//
// ConnContext and ConnState of srv (and of the h1 loop) see the
// connection as ln accepted it, not the replaying wrapper: ServeSplitPlain
// replaces srv.ConnContext and srv.ConnState by functions that unwrap it,
// so srv must not be served elsewhere.
//
// When ctx ends it stops accepting, closes the connections still being
// looked at, drains both servers for at most drain, then cuts what is left
// and returns nil, as ServeSplit. HTTP1Env=nethttp serves everything with
// srv, as Serve.
func ServeSplitPlain(ctx context.Context, srv *http.Server, ln net.Listener, drain time.Duration, log *slog.Logger) error {
	own, err := HTTP1Mode()
	if err != nil {
		_ = ln.Close()
		return err
	}
	if !own {
		return Serve(ctx, srv, ln, drain, log)
	}
	if cc := srv.ConnContext; cc != nil {
		srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context { return cc(ctx, unreplay(c)) }
	}
	if cs := srv.ConnState; cs != nil {
		srv.ConnState = func(c net.Conn, st http.ConnState) { cs(unreplay(c), st) }
	}
	h, h2 := splitServers(srv, ln, log)
	lk := &looker{h1: h, h2: h2, wait: srv.ReadHeaderTimeout, conns: map[net.Conn]struct{}{}}
	if lk.wait <= 0 {
		lk.wait = 10 * time.Second
	}
	// Connections still being looked at have had no request read: closed,
	// as idle ones, once accepting stops.
	return serveBoth(ctx, srv, h, h2, ln, func() error { return plainAcceptLoop(ln, lk) }, lk.stop, drain, log)
}

// plainAcceptLoop starts a look at each connection ln accepts, until ln
// fails; temporary errors (EMFILE) back off as net/http does.
func plainAcceptLoop(ln net.Listener, lk *looker) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if temporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if !lk.track(c) {
			_ = c.Close()
			continue
		}
		go lk.look(c)
	}
}

func temporary(err error) bool {
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary() && !errors.Is(err, net.ErrClosed)
}

// looker decides, per connection, which server takes it. It tracks the
// connections it is reading so that shutdown can close them.
type looker struct {
	h1   *h1.Server
	h2   *chanListener
	wait time.Duration

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	stopping bool
	wg       sync.WaitGroup
}

func (lk *looker) track(c net.Conn) bool {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if lk.stopping {
		return false
	}
	lk.conns[c] = struct{}{}
	lk.wg.Add(1)
	return true
}

// untrack reports false when shutdown has begun: c is then closed.
func (lk *looker) untrack(c net.Conn) bool {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	delete(lk.conns, c)
	lk.wg.Done()
	return !lk.stopping
}

// stop closes the connections still being looked at and waits for their
// looks to end; later ones are refused.
func (lk *looker) stop() {
	lk.mu.Lock()
	lk.stopping = true
	for c := range lk.conns {
		_ = c.Close()
	}
	lk.mu.Unlock()
	lk.wg.Wait()
}

// look reads c's first bytes and hands c to the server they call for; on
// h1 it then serves c on this goroutine.
func (lk *looker) look(c net.Conn) {
	rc, h2, err := peekPreface(c, lk.wait)
	if !lk.untrack(c) || err != nil {
		_ = c.Close()
		return
	}
	if h2 {
		if !lk.h2.deliver(rc) {
			_ = c.Close()
		}
		return
	}
	lk.h1.ServeConn(rc)
}

// peekPreface reads c until its bytes differ from the HTTP/2 preface or
// hold all of it (h2), within wait; rc replays what was read. An error
// (EOF, the deadline) before that is returned as is.
func peekPreface(c net.Conn, wait time.Duration) (rc net.Conn, h2 bool, err error) {
	r := &replayConn{Conn: c}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	n := 0
	for n < len(h2Preface) {
		var k int
		k, err = c.Read(r.buf[n:])
		read := n + k
		for ; n < read; n++ {
			if r.buf[n] != h2Preface[n] {
				return r.done(read)
			}
		}
		if err != nil {
			return nil, false, err
		}
	}
	rc, _, err = r.done(n)
	return rc, true, err
}

// done ends the look at n bytes read.
func (r *replayConn) done(n int) (net.Conn, bool, error) {
	if err := r.Conn.SetReadDeadline(time.Time{}); err != nil {
		return nil, false, err
	}
	r.n = n
	if _, ok := r.Conn.(interface{ CloseWrite() error }); ok {
		return &replayConnCW{r}, false, nil
	}
	return r, false, nil
}

// replayConn is a connection whose first bytes, read to choose its
// server, are read again.
type replayConn struct {
	net.Conn
	buf [len(h2Preface)]byte
	off int
	n   int
}

func (r *replayConn) Read(p []byte) (int, error) {
	if r.off < r.n {
		k := copy(p, r.buf[r.off:r.n])
		r.off += k
		return k, nil
	}
	return r.Conn.Read(p)
}

// NetConn returns the connection as accepted.
func (r *replayConn) NetConn() net.Conn { return r.Conn }

// replayConnCW keeps a TCP connection's half-close (h1's lingering close,
// tunnels after a hijack) behind the wrapper.
type replayConnCW struct{ *replayConn }

func (r *replayConnCW) CloseWrite() error {
	return r.Conn.(interface{ CloseWrite() error }).CloseWrite()
}

// unreplay returns the connection under ServeSplitPlain's wrapper.
func unreplay(c net.Conn) net.Conn {
	switch r := c.(type) {
	case *replayConn:
		return r.Conn
	case *replayConnCW:
		return r.Conn
	}
	return c
}
