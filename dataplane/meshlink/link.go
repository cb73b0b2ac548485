//lint:file-ignore SA1019 x/net/http2.Transport is deprecated in favour of net/http's, whose pool dials once per waiting request while no HTTP/2 connection is up; this one dials once per address (see remote.h2). Its other settings have net/http equivalents; its pool does not.

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"minimesh/certs"
	"minimesh/dataplane/balancer"
	"minimesh/dataplane/edge"
)

// errConnect marks a failure to reach a remote proxy (TCP connect or TLS
// handshake), which retry policies and outlier detection tell apart from a
// reset.
var errConnect = errors.New("proxy: connect failed")

// remote is the way to one remote proxy (an endpoint: an address and the
// SPIFFE ID it must present). Its HTTP/2 transport keeps one long-lived
// mTLS connection that every request to that proxy shares as a stream;
// when the connection fails (a dead peer is found by pings) the next
// request dials a new one. Upgrades (WebSocket) need HTTP/1.1 and get a
// connection of their own from the h1 transport.
type remote struct {
	target balancer.Target
	h2     h2RoundTripper // *http2.Transport
	h1     *http.Transport
}

type h2RoundTripper interface {
	http.RoundTripper
	CloseIdleConnections()
}

func newRemote(cfg *OutboundConfig, target balancer.Target, failed *listenerMetrics, log *slog.Logger, guard *remoteGuard) (*remote, error) {
	id, err := spiffeid.FromString(target.Identity)
	if err != nil {
		return nil, fmt.Errorf("proxy: endpoint %s: %w", target.Addr, err)
	}
	r := &remote{target: target}
	base := certs.MTLSClientConfig(edge.OwnSource(cfg.SVID), cfg.Bundle, certs.AuthorizeID(id), certs.TLSOptions{Clock: cfg.Clock})
	base.MinVersion = tls.VersionTLS13
	if host, _, err := net.SplitHostPort(target.Addr); err == nil && net.ParseIP(host) == nil {
		base.ServerName = host
	}
	h2Config, h1Config := base.Clone(), base.Clone()
	h2Config.NextProtos = []string{"h2"}
	h1Config.NextProtos = []string{"http/1.1"}
	dialer := &net.Dialer{Timeout: cfg.Limits.Dial, KeepAlive: 30 * time.Second}
	// Every transport of a remote dials that remote's address, whatever
	// the request URL says, and does the handshake itself so that failures
	// are counted and logged by reason, like the listeners'.
	dial := func(tc *tls.Config) func(context.Context, string, string) (net.Conn, error) {
		return func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, "tcp", target.Addr)
			if err != nil {
				return nil, fmt.Errorf("%w: dial %s: %w", errConnect, target.Addr, err)
			}
			conn := tls.Client(c, tc)
			hctx, cancel := context.WithTimeout(ctx, cfg.Limits.Handshake)
			err = conn.HandshakeContext(hctx)
			cancel()
			if err != nil {
				_ = c.Close()
				reason := edge.Classify(err)
				failed.handshakeFailed(reason)
				log.Warn("proxy: handshake with upstream failed", slog.String("remote", target.Addr),
					slog.String("id", target.Identity), slog.String("reason", reason), slog.String("error", err.Error()))
				return nil, fmt.Errorf("%w: handshake with %s: %w", errConnect, target.Addr, err)
			}
			if guard == nil {
				return conn, nil
			}
			if err := guard.revoked.Load().Refused(target.Identity, conn.ConnectionState().PeerCertificates); err != nil {
				_ = conn.Close()
				failed.handshakeFailed(ReasonRevoked)
				log.Warn("proxy: upstream refused: revoked", slog.String("remote", target.Addr),
					slog.String("id", target.Identity), slog.String("error", err.Error()))
				return nil, fmt.Errorf("%w: handshake with %s: %w", errConnect, target.Addr, err)
			}
			guard.conns.add(conn)
			return &trackedConn{Conn: conn, set: &guard.conns}, nil
		}
	}
	// x/net/http2's own pool rather than net/http's: it dials once per
	// address however many requests arrive together (net/http dials for
	// each request waiting while no connection is up), so a burst at
	// start still makes one connection. A silent connection is pinged
	// after KeepAlive and dropped if no answer comes within Handshake;
	// the next request dials a new one.
	h2dial := dial(h2Config)
	r.h2 = &http2.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return h2dial(ctx, network, addr)
		},
		DisableCompression: true,
		MaxHeaderListSize:  1 << 20,
		MaxReadFrameSize:   1 << 20,
		IdleConnTimeout:    cfg.Limits.Idle,
		ReadIdleTimeout:    cfg.KeepAlive,
		PingTimeout:        cfg.Limits.Handshake,
	}
	r.h1 = &http.Transport{
		Proxy:                  nil,
		DialTLSContext:         dial(h1Config),
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        cfg.Limits.Idle,
		ResponseHeaderTimeout:  cfg.Limits.ResponseHeader,
		MaxResponseHeaderBytes: 1 << 20,
		DisableCompression:     true,
	}
	// Without this the h1 transport would also offer h2 (it has a
	// DialTLSContext and no TLSNextProto entry would stop it).
	r.h1.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	return r, nil
}

func (r *remote) closeIdle() {
	r.h2.CloseIdleConnections()
	r.h1.CloseIdleConnections()
}
