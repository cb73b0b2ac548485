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
	"minimesh/dataplane/meshlink"
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
	// "upstream": "service" is the proxy's own, on mesh-proxy's every line.
	log := o.log.With(slog.String("upstream", svc.label), slog.Any("port", sp.port))
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
		resp, err := rm.H2.RoundTrip(req)
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
		meshlink.Pipe(c, &meshlink.StreamConn{R: resp.Body, W: pw, Cancel: cancel}, o.cfg.Limits.Idle, nil)
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
