package proxy

// The transparent listener is the receiving end of `mesh-proxy redirect`:
// connections the pod's iptables rules redirected to it are either handed
// to the outbound's Host-routed HTTP server (HTTP: to a mesh service over
// mTLS, or out through the egress list) or relayed, as plain TCP, to where
// they were going (anything else: the app's DNS-over-TCP, TLS to outside
// hosts, databases outside the mesh), as Istio's passthrough does; under
// RegistryOnly (Istio's REGISTRY_ONLY) those are refused unless an
// ExternalService declares their address.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"minimesh/dataplane/meshlink"
	"minimesh/dataplane/redirect"
	meshv1 "minimesh/proto/mesh/v1"
)

// DefaultTransparentAddr is where a Transparent listens by default: the
// OUTPUT chain's REDIRECT sends the app's connections to 127.0.0.1.
const DefaultTransparentAddr = "127.0.0.1:15001"

// Results of a transparent connection, the "result" label of
// minimesh_proxy_transparent_connections_total.
const (
	TransparentHTTP          = "http"           // handed to the outbound's Host-routed HTTP server
	TransparentRelayed       = "relayed"        // relayed to its original destination
	TransparentNotRedirected = "not_redirected" // reached the listener directly; refused
	TransparentDialFailed    = "dial_failed"    // the original destination did not answer
	TransparentOverLimit     = "over_limit"     // MaxConns connections were already open
	TransparentRefused       = "refused"        // not HTTP, to an undeclared destination, under RegistryOnly
)

// TransparentConfig configures a Transparent listener.
type TransparentConfig struct {
	// Listener, when set, is served as is (and closed by Run); otherwise
	// Run listens on Addr (DefaultTransparentAddr if empty). To receive
	// redirected inbound traffic, listen on the pod's address or 0.0.0.0.
	Listener net.Listener
	Addr     string
	// OriginalDst finds where a connection was going; default
	// redirect.OriginalDst (SO_ORIGINAL_DST).
	OriginalDst func(net.Conn) (netip.AddrPort, error)
	// Limits: Dial bounds the connect to the original destination, Idle
	// closes a relay with no byte either way for that long, Drain bounds
	// shutdown. Other fields are unused.
	Limits Limits
	// MaxConns bounds the connections relayed at once (default 1024);
	// further ones are closed at accept.
	MaxConns int
	// HTTP, when set (an *Outbound with a Host-routed port), takes the
	// connections that carry HTTP: those to a port a Service of the mesh
	// declares http, http2 or grpc, and, to a port no Service declares,
	// those whose first bytes are an HTTP/1.x request line or the HTTP/2
	// preface (waiting at most SniffTimeout for them; a protocol where the
	// server speaks first is relayed once it has passed). Nil: every
	// connection is relayed.
	HTTP HTTPRouter
	// SniffTimeout bounds the wait for a connection's first bytes to an
	// undeclared port; default 200ms.
	SniffTimeout time.Duration
	// RegistryOnly (mesh-proxy --outbound-policy registry-only, Istio's
	// REGISTRY_ONLY) refuses, counts ("refused") and logs the connections
	// that would be relayed as they are, unless Declared says their
	// original destination is declared. HTTP still goes to the HTTP
	// router, whose Host-routed port answers 502 for undeclared hosts.
	RegistryOnly bool
	// Declared reports whether a destination is declared outside the mesh
	// (an ExternalService with that IP address and port). Nil: none is.
	Declared func(dst netip.AddrPort) bool
	// Registerer, if set, gets minimesh_proxy_transparent_connections_total{result}.
	Registerer prometheus.Registerer
	Logger     *slog.Logger // discards if nil
}

// HTTPRouter takes redirected connections that carry HTTP. *Outbound is
// one.
type HTTPRouter interface {
	// PortProtocol says what protocol the Services of the mesh declare for
	// port; false when none declares it (or they disagree).
	PortProtocol(port uint16) (meshv1.Protocol, bool)
	// ServeConn serves c as a connection to the Host-routed port; false
	// when it cannot (no such port, shutting down): c is then closed.
	ServeConn(c net.Conn) bool
}

// Validate reports whether the config can be used.
func (c TransparentConfig) Validate() error {
	if c.Listener == nil && c.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			return fmt.Errorf("%w: transparent Addr %q: %w", ErrInvalidConfig, c.Addr, err)
		}
	}
	if c.MaxConns < 0 {
		return fmt.Errorf("%w: transparent MaxConns %d is negative", ErrInvalidConfig, c.MaxConns)
	}
	return nil
}

// Transparent relays redirected TCP connections to their original
// destination.
type Transparent struct {
	cfg     TransparentConfig
	lim     Limits
	results *prometheus.CounterVec
	slots   chan struct{}
	// refusals bounds the log lines of refused connections (RegistryOnly);
	// every one is counted.
	refusals *rate.Limiter

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewTransparent checks cfg and builds a Transparent; nothing listens
// until Run.
func NewTransparent(cfg TransparentConfig) (*Transparent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultTransparentAddr
	}
	if cfg.OriginalDst == nil {
		cfg.OriginalDst = redirect.OriginalDst
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 1024
	}
	if cfg.SniffTimeout <= 0 {
		cfg.SniffTimeout = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Transparent{
		cfg:   cfg,
		lim:   cfg.Limits.withDefaults(),
		slots: make(chan struct{}, cfg.MaxConns),
		conns: map[net.Conn]struct{}{},
		// A burst of 10 lines, then one a second.
		refusals: rate.NewLimiter(1, 10),
	}
	r := &registrar{reg: cfg.Registerer}
	t.results = r.counterVec(prometheus.CounterOpts{
		Name: "minimesh_proxy_transparent_connections_total",
		Help: "Connections accepted by the transparent listener, by result.",
	}, []string{"result"})
	for _, r := range []string{TransparentHTTP, TransparentRelayed, TransparentNotRedirected, TransparentDialFailed, TransparentOverLimit, TransparentRefused} {
		t.results.WithLabelValues(r)
	}
	if r.err != nil {
		return nil, fmt.Errorf("proxy: transparent metrics: %w", r.err)
	}
	return t, nil
}

// Run accepts until ctx is cancelled, then stops accepting, lets relays
// finish for up to Limits.Drain and cuts what is left. It closes the
// listener and returns once every relay has ended.
func (t *Transparent) Run(ctx context.Context) error {
	ln := t.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", t.cfg.Addr); err != nil {
			return fmt.Errorf("proxy: transparent listen: %w", err)
		}
	}
	t.cfg.Logger.Info("transparent: listening", slog.String("addr", ln.Addr().String()))
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var err error
	for {
		var c net.Conn
		c, err = ln.Accept()
		if err != nil {
			break
		}
		select {
		case t.slots <- struct{}{}:
		default:
			t.results.WithLabelValues(TransparentOverLimit).Inc()
			_ = c.Close()
			continue
		}
		t.track(c, true)
		t.wg.Go(func() {
			defer func() { <-t.slots }()
			defer t.track(c, false)
			t.relay(ctx, c)
		})
	}
	_ = ln.Close()
	t.drain()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("proxy: transparent accept: %w", err)
}

// drain waits for relays for up to Limits.Drain, then closes them all.
func (t *Transparent) drain() {
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	timer := time.NewTimer(t.lim.Drain)
	defer timer.Stop()
	select {
	case <-done:
		return
	case <-timer.C:
	}
	t.mu.Lock()
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	<-done
}

func (t *Transparent) track(c net.Conn, add bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if add {
		t.conns[c] = struct{}{}
	} else {
		delete(t.conns, c)
	}
}

// relay finds c's original destination, hands c to the HTTP router when
// it carries HTTP, and otherwise copies bytes both ways.
func (t *Transparent) relay(ctx context.Context, c net.Conn) {
	log := t.cfg.Logger
	dst, err := t.cfg.OriginalDst(c)
	local, _ := c.LocalAddr().(*net.TCPAddr)
	// A connection made straight to this listener has no other original
	// destination than the listener itself; relaying it would connect the
	// listener to itself, so it is refused.
	if err != nil || (local != nil && dst == local.AddrPort()) {
		t.results.WithLabelValues(TransparentNotRedirected).Inc()
		log.Debug("transparent: refused a connection that was not redirected",
			slog.String("src", c.RemoteAddr().String()), slog.Any("error", err))
		_ = c.Close()
		return
	}
	if t.cfg.HTTP != nil {
		var isHTTP bool
		c, isHTTP = t.carriesHTTP(c, dst.Port())
		if isHTTP {
			// The HTTP server owns c from here; it is no relay to track.
			if t.cfg.HTTP.ServeConn(c) {
				t.results.WithLabelValues(TransparentHTTP).Inc()
			}
			return
		}
	}
	defer c.Close()
	if t.cfg.RegistryOnly && (t.cfg.Declared == nil || !t.cfg.Declared(dst)) {
		t.results.WithLabelValues(TransparentRefused).Inc()
		if t.refusals.Allow() {
			log.Warn("transparent: refused a connection to a destination outside the mesh that no ExternalService declares (outbound policy registry-only)",
				slog.String("src", c.RemoteAddr().String()), slog.String("original_dst", dst.String()))
		}
		return
	}
	dctx, cancel := context.WithTimeout(ctx, t.lim.Dial)
	up, err := (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext(dctx, "tcp", dst.String())
	cancel()
	if err != nil {
		t.results.WithLabelValues(TransparentDialFailed).Inc()
		log.Warn("transparent: original destination unreachable",
			slog.String("src", c.RemoteAddr().String()), slog.String("original_dst", dst.String()), slog.Any("error", err))
		return
	}
	t.track(up, true)
	defer t.track(up, false)
	defer up.Close()
	t.results.WithLabelValues(TransparentRelayed).Inc()
	log.Debug("transparent: relaying",
		slog.String("src", c.RemoteAddr().String()), slog.String("original_dst", dst.String()),
		slog.String("via", up.LocalAddr().String()))

	var last atomic.Int64 // unix nanoseconds of the last byte either way
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.pipe(up, c, &last)
	}()
	t.pipe(c, up, &last)
	<-done
}

// pipe copies src to dst until src ends, then half-closes dst so the other
// side sees the end too while the reverse direction may still run. When no
// byte went either way for Limits.Idle (last is shared by both directions,
// so a long download behind a quiet request is not idle), or on any error,
// both connections are cut.
func (t *Transparent) pipe(dst, src net.Conn, last *atomic.Int64) {
	buf := meshlink.BufferPool{}.Get()
	defer meshlink.BufferPool{}.Put(buf)
	for {
		_ = src.SetReadDeadline(time.Unix(0, last.Load()).Add(t.lim.Idle))
		n, err := src.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) && n == 0 && time.Since(time.Unix(0, last.Load())) < t.lim.Idle {
			continue // the other direction was busy
		}
		if n > 0 {
			last.Store(time.Now().UnixNano())
			_ = dst.SetWriteDeadline(time.Now().Add(t.lim.Idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				_ = src.Close()
				_ = dst.Close()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
					return
				}
			}
			_ = src.Close()
			_ = dst.Close()
			return
		}
	}
}

// carriesHTTP decides whether c, to port, carries HTTP: by the protocol
// the mesh declares for the port, else by its first bytes. The returned
// conn replays the bytes read to decide.
func (t *Transparent) carriesHTTP(c net.Conn, port uint16) (net.Conn, bool) {
	if proto, ok := t.cfg.HTTP.PortProtocol(port); ok {
		return c, proto != meshv1.Protocol_PROTOCOL_TCP
	}
	br := bufio.NewReaderSize(c, 64)
	_ = c.SetReadDeadline(time.Now().Add(t.cfg.SniffTimeout))
	_, _ = br.Peek(len(http2Preface)) // what came in time
	_ = c.SetReadDeadline(time.Time{})
	b, _ := br.Peek(br.Buffered())
	return &peekedConn{Conn: c, r: br}, looksLikeHTTP(b)
}

const http2Preface = "PRI * HTTP/2.0\r\n"

// looksLikeHTTP reports whether b starts an HTTP/1.x request line (a
// method token and a space) or the HTTP/2 preface.
func looksLikeHTTP(b []byte) bool {
	if bytes.HasPrefix(b, []byte("PRI * HTTP/2")) {
		return true
	}
	for _, m := range []string{"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "TRACE ", "CONNECT "} {
		if bytes.HasPrefix(b, []byte(m)) {
			return true
		}
	}
	return false
}

// peekedConn reads first what was peeked from the connection.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite passes a half-close on to the connection, for the relay.
func (c *peekedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
