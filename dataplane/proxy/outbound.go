package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"

	"minimesh/certs"
)

// Upstream is one remote service reached through a local plain-HTTP port.
type Upstream struct {
	// Name labels logs; it is not a metric label.
	Name string
	// Listen is the local address the app calls, e.g. "127.0.0.1:15001".
	// It must be a loopback address: anyone who can reach it speaks with
	// our identity.
	Listen string
	// Listener, when set, is served instead of listening on Listen.
	Listener net.Listener
	// Remote is the host:port of the remote proxy's inbound.
	Remote string
	// ID is the SPIFFE ID the remote must present; any other is refused.
	ID spiffeid.ID
}

// ParseUpstream parses the mesh-proxy flag form NAME=LISTEN=REMOTE=SPIFFEID,
// e.g. "api=127.0.0.1:15001=10.0.0.7:15006=spiffe://minimesh.local/ns/default/sa/api".
func ParseUpstream(s string) (Upstream, error) {
	parts := strings.Split(s, "=")
	if len(parts) != 4 {
		return Upstream{}, fmt.Errorf("%w: upstream %q: want NAME=LISTEN=REMOTE=SPIFFEID", ErrInvalidConfig, s)
	}
	id, err := spiffeid.FromString(parts[3])
	if err != nil {
		return Upstream{}, fmt.Errorf("%w: upstream %q: %w", ErrInvalidConfig, s, err)
	}
	u := Upstream{Name: parts[0], Listen: parts[1], Remote: parts[2], ID: id}
	if err := u.Validate(); err != nil {
		return Upstream{}, err
	}
	return u, nil
}

// Validate reports whether the upstream can be used.
func (u Upstream) Validate() error {
	if u.Name == "" {
		return fmt.Errorf("%w: upstream: Name is required", ErrInvalidConfig)
	}
	if u.Listener == nil {
		if err := validateHostPort("Listen", u.Listen); err != nil {
			return fmt.Errorf("%w: upstream %s: %w", ErrInvalidConfig, u.Name, err)
		}
		host, _, _ := net.SplitHostPort(u.Listen)
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("%w: upstream %s: Listen %q is not a loopback address", ErrInvalidConfig, u.Name, u.Listen)
		}
	}
	if err := validateHostPort("Remote", u.Remote); err != nil {
		return fmt.Errorf("%w: upstream %s: %w", ErrInvalidConfig, u.Name, err)
	}
	if u.ID.IsZero() {
		return fmt.Errorf("%w: upstream %s: ID is required", ErrInvalidConfig, u.Name)
	}
	return nil
}

// OutboundConfig configures an Outbound.
type OutboundConfig struct {
	Upstreams []Upstream
	// SVID is our client certificate, read at every handshake. Required.
	SVID x509svid.Source
	// Bundle verifies the remote proxies. Required.
	Bundle x509bundle.Source
	Limits Limits
	// KeepAlive is how long the HTTP/2 connection to a remote may stay
	// silent before it is checked with a ping; 30s.
	KeepAlive time.Duration
	Logger    *slog.Logger // slog.Default() if nil
	Clock     certs.Clock  // the system clock if nil
	Metrics   *Metrics     // unregistered metrics if nil
}

// Validate reports whether the config can be used.
func (c OutboundConfig) Validate() error {
	if c.SVID == nil || c.Bundle == nil {
		return fmt.Errorf("%w: outbound: SVID and Bundle sources are required", ErrInvalidConfig)
	}
	names := make(map[string]bool, len(c.Upstreams))
	for _, u := range c.Upstreams {
		if err := u.Validate(); err != nil {
			return err
		}
		if names[u.Name] {
			return fmt.Errorf("%w: outbound: upstream %q given twice", ErrInvalidConfig, u.Name)
		}
		names[u.Name] = true
	}
	return nil
}

// Outbound gives the app one local plain-HTTP port per upstream and carries
// its requests to the remote proxy over mTLS, refusing a remote whose
// SPIFFE ID is not the configured one (the app gets 502). Each upstream has
// one http.Transport speaking HTTP/2, so requests multiplex over a
// long-lived connection and no request pays a handshake.
type Outbound struct {
	cfg       OutboundConfig
	log       *slog.Logger
	upstreams []*upstream
}

type upstream struct {
	Upstream
	log       *slog.Logger
	transport *http.Transport
	fwd       *forwarder
}

// NewOutbound checks cfg and builds an Outbound; Run starts it.
func NewOutbound(cfg OutboundConfig) (*Outbound, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 30 * time.Second
	}
	var err error
	if cfg.Logger, cfg.Clock, cfg.Metrics, err = defaults(cfg.Logger, cfg.Clock, cfg.Metrics); err != nil {
		return nil, err
	}
	o := &Outbound{cfg: cfg, log: cfg.Logger.With(slog.String("listener", ListenerOutbound))}
	for _, u := range cfg.Upstreams {
		o.upstreams = append(o.upstreams, o.newUpstream(u))
	}
	return o, nil
}

func (o *Outbound) newUpstream(u Upstream) *upstream {
	cfg := o.cfg
	up := &upstream{Upstream: u, log: o.log.With(slog.String("upstream", u.Name))}
	tlsConfig := certs.MTLSClientConfig(ownSource(cfg.SVID), cfg.Bundle, certs.AuthorizeID(u.ID),
		certs.TLSOptions{Clock: cfg.Clock})
	tlsConfig.MinVersion = tls.VersionTLS13
	tlsConfig.NextProtos = []string{"h2", "http/1.1"}
	if host, _, err := net.SplitHostPort(u.Remote); err == nil && net.ParseIP(host) == nil {
		tlsConfig.ServerName = host
	}
	failed := cfg.Metrics.listener(ListenerOutbound)
	dialer := &net.Dialer{Timeout: cfg.Limits.Dial, KeepAlive: 30 * time.Second}
	// The handshake is done here rather than by the Transport so that
	// failures are counted and logged by reason, like the listeners'.
	dialTLS := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, fmt.Errorf("proxy: dial upstream %s: %w", u.Name, err)
		}
		tc := tls.Client(c, tlsConfig)
		hctx, cancel := context.WithTimeout(ctx, cfg.Limits.Handshake)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = c.Close()
			reason := classify(err)
			failed.handshakeFailed(reason)
			up.log.Warn("proxy: handshake with upstream failed", slog.String("remote", addr),
				slog.String("reason", reason), slog.String("error", err.Error()))
			return nil, fmt.Errorf("proxy: handshake with upstream %s: %w", u.Name, err)
		}
		return tc, nil
	}
	up.transport = &http.Transport{
		Proxy:                  nil,
		DialTLSContext:         dialTLS,
		ForceAttemptHTTP2:      true,
		MaxIdleConnsPerHost:    cfg.Limits.MaxIdleConnsPerHost,
		IdleConnTimeout:        cfg.Limits.Idle,
		ResponseHeaderTimeout:  cfg.Limits.ResponseHeader,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
		DisableCompression:     true,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: cfg.KeepAlive,
			PingTimeout:     cfg.Limits.Handshake,
		},
	}
	remote := u.Remote
	up.fwd = newForwarder(ListenerOutbound, up.log, cfg.Clock.Now, cfg.Metrics, up.transport,
		func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "https"
			pr.Out.URL.Host = remote
			// The remote inbound sets the mesh headers; nothing the app
			// sends may pose as them.
			stripMeshHeaders(pr.Out.Header)
		})
	return up
}

// Run serves every upstream's local port until ctx is cancelled, then
// drains (Limits.Drain), closes the connections to the remotes and returns
// nil. It closes the listeners.
func (o *Outbound) Run(ctx context.Context) error {
	lns := make([]net.Listener, len(o.upstreams))
	for i, up := range o.upstreams {
		ln, err := listen(up.Listener, up.Listen)
		if err != nil {
			for _, l := range lns[:i] {
				_ = l.Close()
			}
			return fmt.Errorf("proxy: upstream %s: %w", up.Name, err)
		}
		lns[i] = ln
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, up := range o.upstreams {
		srv := newServer(up.fwd, o.cfg.Limits, up.log)
		ln := lns[i]
		up.log.Info("proxy: outbound listening", slog.String("addr", ln.Addr().String()),
			slog.String("remote", up.Remote), slog.String("id", up.ID.String()))
		g.Go(func() error {
			defer up.fwd.closeIdle(up.transport)
			return serve(gctx, srv, ln, o.cfg.Limits.Drain, up.log)
		})
	}
	return g.Wait()
}
