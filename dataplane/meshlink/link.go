//lint:file-ignore SA1019 x/net/http2.Transport is deprecated in favour of net/http's, whose pool dials once per waiting request while no HTTP/2 connection is up; this one dials once per address (see Link.H2). Its other settings have net/http equivalents; its pool does not.

package meshlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"

	"minimesh/dataplane/edge"
	"minimesh/dataplane/internal/turn"
)

// ErrConnect marks a failure to reach a remote proxy (TCP connect or TLS
// handshake), which retry policies and outlier detection tell apart from a
// reset.
var ErrConnect = errors.New("proxy: connect failed")

// Config is how a Link reaches its remote proxy.
type Config struct {
	// Addr is the remote proxy's inbound (host:port). Required.
	Addr string
	// TLS is the mTLS client config: our SVID, the bundle, and the
	// SPIFFE ID the remote must present. Required; cloned, not modified.
	TLS            *tls.Config
	Dial           time.Duration // TCP connect; required
	Handshake      time.Duration // TLS handshake, and a ping's answer; required
	Idle           time.Duration // an idle connection is closed after
	ResponseHeader time.Duration // HTTP/1.1 (Pool, upgrades) only
	KeepAlive      time.Duration // a silent HTTP/2 connection is pinged after
	// MaxConns bounds the Pool's HTTP/1.1 connections to the remote, idle
	// and in use; 64 (DefaultMaxConns).
	MaxConns int
	// PoolWait is how long a request waits for one of MaxConns busy
	// connections to come free before it goes over the HTTP/2 connection
	// instead (a stream there, so long-lived answers cannot starve the
	// pool's other requests); 1s (DefaultPoolWait). Negative: it waits
	// as long as its context lets it, and never overflows.
	PoolWait time.Duration
	// OnHandshakeFail, when set, is told every failed handshake with its
	// edge.Classify reason.
	OnHandshakeFail func(reason string, err error)
	// Admit, when set, decides a finished handshake once more: an error
	// refuses the connection (it is closed and the dial fails with
	// ErrConnect); otherwise the connection it returns is used (say, one
	// tracked for revocation).
	Admit func(*tls.Conn) (net.Conn, error)
}

// Link is the way to one remote proxy. Its HTTP/2 transport (H2) keeps one
// long-lived mTLS connection that every request to that proxy shares as a
// stream; when the connection fails (a dead peer is found by pings) the
// next request dials a new one. Pool is a bounded pool of HTTP/1.1
// keep-alive mTLS connections whose requests are written and answered on
// the caller's goroutine (plain HTTP ports: no goroutine per request on
// either side). Upgrades (WebSocket) need HTTP/1.1 and get a connection
// of their own from H1.
type Link struct {
	H2   RoundTripper // *http2.Transport
	H1   *http.Transport
	Pool *Pool
}

// RoundTripper is a transport whose idle connections can be closed.
type RoundTripper interface {
	http.RoundTripper
	CloseIdleConnections()
}

// New builds the transports of a Link; it dials nothing yet.
func New(cfg Config) (*Link, error) {
	if cfg.Addr == "" || cfg.TLS == nil {
		return nil, errors.New("proxy: meshlink: Addr and TLS are required")
	}
	r := &Link{}
	base := cfg.TLS.Clone()
	base.MinVersion = tls.VersionTLS13
	if host, _, err := net.SplitHostPort(cfg.Addr); err == nil && net.ParseIP(host) == nil && base.ServerName == "" {
		base.ServerName = host
	}
	h2Config, h1Config := base.Clone(), base.Clone()
	h2Config.NextProtos = []string{"h2"}
	h1Config.NextProtos = []string{"http/1.1"}
	dial := dialFunc(cfg)
	// x/net/http2's own pool rather than net/http's: it dials once per
	// address however many requests arrive together (net/http dials for
	// each request waiting while no connection is up), so a burst at
	// start still makes one connection. A silent connection is pinged
	// after KeepAlive and dropped if no answer comes within Handshake;
	// the next request dials a new one.
	h2dial := dial(h2Config)
	r.H2 = &http2.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return h2dial(ctx, network, addr)
		},
		DisableCompression: true,
		MaxHeaderListSize:  1 << 20,
		MaxReadFrameSize:   1 << 20,
		IdleConnTimeout:    cfg.Idle,
		ReadIdleTimeout:    cfg.KeepAlive,
		PingTimeout:        cfg.Handshake,
	}
	r.H1 = &http.Transport{
		Proxy:                  nil,
		DialTLSContext:         dial(h1Config),
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        cfg.Idle,
		ResponseHeaderTimeout:  cfg.ResponseHeader,
		MaxResponseHeaderBytes: 1 << 20,
		DisableCompression:     true,
	}
	// Without this the h1 transport would also offer h2 (it has a
	// DialTLSContext and no TLSNextProto entry would stop it).
	r.H1.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	pdial := dial(h1Config)
	r.Pool = newPool(cfg, func(ctx context.Context) (net.Conn, error) { return pdial(ctx, "tcp", cfg.Addr) }, r.H2)
	return r, nil
}

// dialFunc returns the dial of every transport of a link: it dials the
// remote's address, whatever the request URL says, and does the handshake
// itself so that failures are counted and logged by reason, like the
// listeners'.
func dialFunc(cfg Config) func(tc *tls.Config) func(context.Context, string, string) (net.Conn, error) {
	dialer := &net.Dialer{Timeout: cfg.Dial, KeepAlive: 30 * time.Second}
	return func(tc *tls.Config) func(context.Context, string, string) (net.Conn, error) {
		return func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, "tcp", cfg.Addr)
			if err != nil {
				return nil, fmt.Errorf("%w: dial %s: %w", ErrConnect, cfg.Addr, err)
			}
			// A turn.Conn: the pool's requests wait for their answers on
			// the poller (Pool.exchange).
			conn := tls.Client(turn.Wrap(c), tc)
			hctx, cancel := context.WithTimeout(ctx, cfg.Handshake)
			err = conn.HandshakeContext(hctx)
			cancel()
			if err != nil {
				_ = c.Close()
				if cfg.OnHandshakeFail != nil {
					cfg.OnHandshakeFail(edge.Classify(err), err)
				}
				return nil, fmt.Errorf("%w: handshake with %s: %w", ErrConnect, cfg.Addr, err)
			}
			if cfg.Admit == nil {
				return conn, nil
			}
			ac, err := cfg.Admit(conn)
			if err != nil {
				_ = conn.Close()
				return nil, fmt.Errorf("%w: handshake with %s: %w", ErrConnect, cfg.Addr, err)
			}
			return ac, nil
		}
	}
}

// CloseIdle closes the link's idle connections.
func (r *Link) CloseIdle() {
	r.H2.CloseIdleConnections()
	r.H1.CloseIdleConnections()
	r.Pool.CloseIdleConnections()
}
