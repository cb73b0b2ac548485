package proxy

// TCP between proxies: each relayed connection is one HTTP/2 CONNECT
// stream over the shared mTLS connection to the remote proxy, with
// HeaderTarget naming the app's TCP port. Half-closes cross over: the
// end of one side's bytes ends the stream's (or the socket's) write side
// and the other direction goes on until it ends too.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"minimesh/dataplane/balancer"
)

// tunnelSet tracks relayed connections so that shutdown can wait for them
// (up to the drain time) and then cut what is left.
type tunnelSet struct {
	mu     sync.Mutex
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
	conns  map[net.Conn]struct{}
}

// start runs relay for c in its own goroutine, under the set's context
// (cancelled when drain gives up), not the caller's: a relay in progress
// is let finish while the proxy drains.
func (s *tunnelSet) start(c net.Conn, relay func(context.Context)) {
	s.mu.Lock()
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.conns = map[net.Conn]struct{}{}
	}
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		_ = c.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	ctx := s.ctx
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
		relay(ctx)
	}()
}

// drain waits up to d for the relays to end, then cuts the rest and waits
// for their goroutines.
func (s *tunnelSet) drain(d time.Duration) {
	s.mu.Lock()
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(context.Background())
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	s.mu.Lock()
	s.cancel()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	<-done
}

// relay carries one app connection to an endpoint of svc's TCP port sp.
// Opening the stream is tried on up to three endpoints; once bytes flow,
// a failure ends the connection.
func (o *Outbound) relay(ctx context.Context, c net.Conn, svc *service, bal *balancer.Balancer, sp *svcPort) {
	defer c.Close()
	o.fwd.inflight.Add(1)
	defer o.fwd.inflight.Done()
	start := o.cfg.Clock.Now()
	log := o.log.With(slog.String("service", svc.label), slog.Any("port", sp.port))
	var prev *balancer.Endpoint
	for try := 0; try < 3; try++ {
		ep, err := bal.Pick()
		if prev != nil {
			bal.Done(prev, false)
			prev = nil
		}
		if err != nil {
			log.Warn("proxy: TCP connection refused: no endpoint", slog.String("error", err.Error()))
			o.metrics.observe(http.StatusServiceUnavailable, o.cfg.Clock.Now().Sub(start).Seconds())
			return
		}
		rm, err := o.remoteFor(ep.Target)
		if err != nil {
			prev = ep
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		pr, pw := io.Pipe()
		req, _ := http.NewRequestWithContext(sctx, http.MethodConnect, "https://"+svc.label, pr)
		req.Header[HeaderTarget] = sp.header
		req.ContentLength = -1
		resp, err := rm.h2.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			if err == nil {
				_ = resp.Body.Close()
				err = errors.New(resp.Status)
			}
			cancel()
			_ = pw.Close()
			log.Warn("proxy: TCP stream to endpoint failed", slog.String("endpoint", ep.Addr), slog.String("error", err.Error()))
			prev = ep
			continue
		}
		pipe(c, &streamConn{r: resp.Body, w: pw, cancel: cancel}, o.cfg.Limits.Idle, nil)
		cancel()
		bal.Done(ep, true)
		o.metrics.observe(http.StatusOK, o.cfg.Clock.Now().Sub(start).Seconds())
		return
	}
	if prev != nil {
		bal.Done(prev, false)
	}
	o.metrics.observe(http.StatusBadGateway, o.cfg.Clock.Now().Sub(start).Seconds())
}

// streamConn is one direction pair of an HTTP/2 stream: what is read
// comes from r, what is written goes to w, CloseWrite ends our half.
type streamConn struct {
	r      io.ReadCloser
	w      io.WriteCloser
	flush  func() error // after each write (the server side)
	cancel context.CancelFunc
}

func (s *streamConn) Read(p []byte) (int, error) { return s.r.Read(p) }

func (s *streamConn) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err == nil && s.flush != nil {
		err = s.flush()
	}
	return n, err
}

func (s *streamConn) CloseWrite() error { return s.w.Close() }

func (s *streamConn) Close() error {
	_ = s.w.Close()
	err := s.r.Close()
	if s.cancel != nil {
		s.cancel()
	}
	return err
}

type halfCloser interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// pipe copies both ways between a and b until both directions end (each
// end of input half-closes the other side) or nothing moves for idle; it
// then closes both. onByte, if set, is called for activity (tests).
func pipe(a net.Conn, b halfCloser, idle time.Duration, onByte func()) {
	watchdog := time.AfterFunc(idle, func() {
		_ = a.Close()
		_ = b.Close()
	})
	defer watchdog.Stop()
	copyHalf := func(dst halfCloser, src io.Reader, done chan<- struct{}) {
		buf := bufferPool{}.Get()
		defer bufferPool{}.Put(buf)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				watchdog.Reset(idle)
				if onByte != nil {
					onByte()
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					_ = a.Close()
					_ = b.Close()
					break
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					_ = a.Close()
					_ = b.Close()
				}
				break
			}
		}
		_ = dst.CloseWrite()
		close(done)
	}
	ab, ba := make(chan struct{}), make(chan struct{})
	go copyHalf(b, a, ab)
	copyHalf(asHalfCloser(a), b, ba)
	<-ab
	_ = a.Close()
	_ = b.Close()
}

// asHalfCloser gives a net.Conn a CloseWrite (TCP connections have one).
func asHalfCloser(c net.Conn) halfCloser {
	if h, ok := c.(halfCloser); ok {
		return h
	}
	return closeBoth{c}
}

type closeBoth struct{ net.Conn }

func (c closeBoth) CloseWrite() error { return c.Close() }
