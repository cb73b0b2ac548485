package external

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"minimesh/dataplane/accesslog"
)

// ListenerLimits bound a --external listener.
type ListenerLimits struct {
	// Drain is how long open connections may finish after ctx ends;
	// default 10s.
	Drain time.Duration
	// SniffTimeout bounds the wait for the first bytes of a connection to
	// a name not in the config, to answer HTTP with a 502; default 200ms.
	SniffTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's head; default 10s.
	ReadHeaderTimeout time.Duration
}

// Serve runs a --external listener for the service name until ctx ends:
// each connection is relayed to a host over TLS (tls) or as it is (tcp),
// or served as HTTP and forwarded (http, https), by the protocol of the
// config in force when it arrives. While the config has no such name, an
// HTTP request is answered 502 with the reason and any other connection
// is closed; both are logged and counted. Serve closes ln.
func (s *Set) Serve(ctx context.Context, ln net.Listener, name string, lim ListenerLimits) error {
	if lim.Drain <= 0 {
		lim.Drain = 10 * time.Second
	}
	if lim.SniffTimeout <= 0 {
		lim.SniffTimeout = 200 * time.Millisecond
	}
	if lim.ReadHeaderTimeout <= 0 {
		lim.ReadHeaderTimeout = 10 * time.Second
	}
	log := s.log.With(slog.String("external_service", name), slog.String("addr", ln.Addr().String()))
	q := &chanListener{addr: ln.Addr(), c: make(chan net.Conn), done: make(chan struct{})}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sv := s.Get(name)
			if sv == nil {
				log.Warn("external: request refused: the name is not in the config from meshd", slog.String("method", r.Method), slog.String("path", r.URL.Path))
				Refuse(w, fmt.Sprintf("minimesh: external service %q is not in this proxy's config from meshd (not declared in namespace %s, or not allowed for this service); nothing was sent\n", name, s.cfg.Namespace))
				return
			}
			sv.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(q) })
	var relays sync.WaitGroup
	var open sync.Map // net.Conn -> struct{}: relays to cut after Drain
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	log.Info("external: listening")
	var err error
	for {
		var c net.Conn
		if c, err = ln.Accept(); err != nil {
			break
		}
		relays.Go(func() {
			open.Store(c, struct{}{})
			defer open.Delete(c)
			s.handle(ctx, c, name, q, log, lim)
		})
	}
	close(q.done)
	dctx, cancel := context.WithTimeout(context.Background(), lim.Drain)
	_ = srv.Shutdown(dctx)
	cancel()
	done := make(chan struct{})
	go func() { relays.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(lim.Drain):
		open.Range(func(k, _ any) bool { _ = k.(net.Conn).Close(); return true })
		<-done
	}
	_ = srv.Close()
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("external %s: accept: %w", name, err)
}

// handle serves one connection to a --external listener.
func (s *Set) handle(ctx context.Context, c net.Conn, name string, q *chanListener, log *slog.Logger, lim ListenerLimits) {
	sv := s.Get(name)
	if sv == nil {
		br := bufio.NewReaderSize(c, 64)
		_ = c.SetReadDeadline(time.Now().Add(lim.SniffTimeout))
		_, _ = br.Peek(8)
		_ = c.SetReadDeadline(time.Time{})
		b, _ := br.Peek(br.Buffered())
		s.conns.WithLabelValues(name, ResultUnknown).Inc()
		if looksLikeHTTP(b) {
			q.put(&peekedConn{Conn: c, r: br}) // the handler answers 502 with the reason
			return
		}
		log.Warn("external: connection closed: the name is not in the config from meshd",
			slog.String("src", c.RemoteAddr().String()), slog.String("namespace", s.cfg.Namespace))
		_ = c.Close()
		return
	}
	if sv.isHTTP() {
		s.conns.WithLabelValues(name, ResultHTTP).Inc()
		q.put(c)
		return
	}
	defer c.Close()
	select {
	case sv.slots <- struct{}{}:
		defer func() { <-sv.slots }()
	default:
		s.conns.WithLabelValues(name, ResultOverLimit).Inc()
		log.Warn("external: connection closed: too many open", slog.Int("max_conns", cap(sv.slots)))
		return
	}
	start := s.cfg.Clock.Now()
	up, err := sv.Dial(ctx)
	if err != nil {
		s.conns.WithLabelValues(name, ResultDialFailed).Inc()
		log.Warn("external: connection closed: no host reached", slog.String("src", c.RemoteAddr().String()), slog.String("error", err.Error()))
		sv.record(c, "", http.StatusBadGateway, 0, 0, start)
		return
	}
	defer up.Close()
	s.conns.WithLabelValues(name, ResultRelayed).Inc()
	var last atomic.Int64
	last.Store(start.UnixNano())
	var in, out int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		out = pipe(up, c, &last, sv.idleTimeout)
	}()
	in = pipe(c, up, &last, sv.idleTimeout)
	<-done
	log.Debug("external: connection ended", slog.String("src", c.RemoteAddr().String()),
		slog.String("upstream", up.RemoteAddr().String()), slog.Int64("bytes_sent", out), slog.Int64("bytes_received", in),
		slog.Duration("duration", s.cfg.Clock.Now().Sub(start)))
	sv.record(c, up.RemoteAddr().String(), http.StatusOK, out, in, start)
}

// record puts a relayed connection in the metrics and, when on, the
// access log, as the mesh's TCP streams are: one CONNECT, 200 when a host
// was reached (502 when none was), with the bytes each way.
func (sv *Service) record(c net.Conn, upstream string, code int, fromApp, toApp int64, start time.Time) {
	cfg := &sv.set.cfg
	d := cfg.Clock.Now().Sub(start)
	if cfg.Observe != nil {
		cfg.Observe(sv.Name, sv.Namespace, code, d.Seconds())
	}
	if al := cfg.AccessLog; al != nil && al.Enabled() {
		up := sv.Name
		if upstream != "" {
			up += " " + upstream
		}
		al.Log(&accesslog.Entry{Time: start, SourceAddress: c.RemoteAddr().String(), Method: http.MethodConnect, Authority: sv.Name,
			Protocol: protoName(sv.proto), Status: code, BytesReceived: fromApp, BytesSent: toApp, Duration: d, Upstream: up})
	}
}

// pipe copies src to dst until src ends, then half-closes dst; after idle
// with no byte either way, or on an error, it cuts both. It returns the
// bytes copied.
func pipe(dst, src net.Conn, last *atomic.Int64, idle time.Duration) int64 {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		_ = src.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
		k, err := src.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) && k == 0 && time.Since(time.Unix(0, last.Load())) < idle {
			continue // the other direction was busy
		}
		if k > 0 {
			last.Store(time.Now().UnixNano())
			_ = dst.SetWriteDeadline(time.Now().Add(idle))
			if _, werr := dst.Write(buf[:k]); werr != nil {
				_ = src.Close()
				_ = dst.Close()
				return n
			}
			n += int64(k)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
					return n
				}
			}
			_ = src.Close()
			_ = dst.Close()
			return n
		}
	}
}

// looksLikeHTTP reports whether b starts an HTTP/1.x request line.
func looksLikeHTTP(b []byte) bool {
	for _, m := range []string{"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "TRACE ", "CONNECT "} {
		if bytes.HasPrefix(b, []byte(m)) || (len(b) < len(m) && len(b) >= 3 && bytes.HasPrefix([]byte(m), b)) {
			return true
		}
	}
	return false
}

// peekedConn reads first what was peeked.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener hands accepted connections to an http.Server.
type chanListener struct {
	addr net.Addr
	c    chan net.Conn
	done chan struct{}
}

func (l *chanListener) put(c net.Conn) {
	select {
	case l.c <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }
