package proxy

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
	"minimesh/dataplane/balancer"
	"minimesh/dataplane/edge"
	"minimesh/dataplane/meshlink"
)

// remote is the way to one endpoint (an address and the SPIFFE ID it must
// present): a meshlink.Link whose handshakes are counted and logged by
// reason, and checked against the revocations in force (guard). Its Pool
// (HTTP/1.1) and H2 connections are dialed, admitted and tracked alike.
type remote = meshlink.Link

func newRemote(cfg *OutboundConfig, target balancer.Target, failed *listenerMetrics, log *slog.Logger, guard *remoteGuard) (*remote, error) {
	id, err := spiffeid.FromString(target.Identity)
	if err != nil {
		return nil, fmt.Errorf("proxy: endpoint %s: %w", target.Addr, err)
	}
	lc := meshlink.Config{
		Addr: target.Addr,
		TLS:  certs.MTLSClientConfig(edge.OwnSource(cfg.SVID), cfg.Bundle, certs.AuthorizeID(id), certs.TLSOptions{Clock: cfg.Clock}),
		Dial: cfg.Limits.Dial, Handshake: cfg.Limits.Handshake, Idle: cfg.Limits.Idle,
		ResponseHeader: cfg.Limits.ResponseHeader, KeepAlive: cfg.KeepAlive, MaxConns: cfg.MaxLinkConns,
		OnHandshakeFail: func(reason string, err error) {
			failed.handshakeFailed(reason)
			log.Warn("proxy: handshake with upstream failed", slog.String("remote", target.Addr),
				slog.String("id", target.Identity), slog.String("reason", reason), slog.String("error", err.Error()))
		},
	}
	if guard != nil {
		lc.Admit = func(conn *tls.Conn) (net.Conn, error) {
			if err := guard.revoked.Load().Refused(target.Identity, conn.ConnectionState().PeerCertificates); err != nil {
				failed.handshakeFailed(ReasonRevoked)
				log.Warn("proxy: upstream refused: revoked", slog.String("remote", target.Addr),
					slog.String("id", target.Identity), slog.String("error", err.Error()))
				return nil, err
			}
			guard.conns.add(conn)
			return &trackedConn{Conn: conn, set: &guard.conns}, nil
		}
	}
	return meshlink.New(lc)
}
