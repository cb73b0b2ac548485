package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Handshake failure reasons (Classify). The set is closed so that a hostile
// peer cannot grow a metric's label space.
const (
	ReasonNoClientCert = "no_client_cert" // the peer presented no certificate
	ReasonExpired      = "expired"        // the peer's certificate is expired or not yet valid
	ReasonUntrusted    = "untrusted"      // the chain does not verify against our bundle
	ReasonUnauthorized = "unauthorized"   // valid SVID, SPIFFE ID not allowed here
	ReasonNoSVID       = "no_svid"        // we had no valid certificate of our own to offer
	ReasonTimeout      = "timeout"        // the handshake did not finish in time
	ReasonClosed       = "closed"         // the peer went away mid-handshake
	ReasonProtocol     = "protocol"       // TLS version, cipher, ALPN or record errors
	ReasonRevoked      = "revoked"        // the peer's identity is denied or its certificate revoked
	ReasonOther        = "other"
)

// Reasons lists every reason Classify returns.
var Reasons = [...]string{ReasonNoClientCert, ReasonExpired, ReasonUntrusted, ReasonUnauthorized,
	ReasonNoSVID, ReasonTimeout, ReasonClosed, ReasonProtocol, ReasonRevoked, ReasonOther}

var (
	// ErrNoSVID marks a handshake refused because a (non-certs) SVID source
	// had no valid SVID for us (OwnSource); new handshakes fail until it
	// has one. certs.SVIDSource reports certs.ErrNoSVID or
	// certs.ErrSVIDExpired.
	ErrNoSVID = errors.New("proxy: no valid SVID")

	// ErrRevoked: the peer's identity is denied or a certificate of its
	// chain is revoked; Classify counts it as ReasonRevoked.
	ErrRevoked = errors.New("proxy: peer revoked")
)

// Serve runs srv on ln until ctx is cancelled, then shuts it down: it stops
// accepting, lets requests in flight finish for up to drain, and then cuts
// what is left.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, drain time.Duration, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("proxy: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		_ = srv.Close()
	}
	<-errc
	if err != nil {
		// Not an error of the part: shutting down was asked for and done.
		log.Warn("proxy: drain timed out, remaining connections closed",
			slog.String("addr", ln.Addr().String()), slog.Duration("drain", drain))
	}
	return nil
}

// ServerLimits bound an http.Server's connections.
type ServerLimits struct {
	ReadHeader     time.Duration // reading a request's headers
	Idle           time.Duration // keep-alive idle time
	MaxHeaderBytes int           // request header size
}

// NewServer is an http.Server with the limits every listener needs.
func NewServer(h http.Handler, lim ServerLimits, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeader,
		IdleTimeout:       lim.Idle,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: 250,
			MaxReadFrameSize:     1 << 20,
		},
	}
}

// Listen returns ln when set, else a TCP listener on addr.
func Listen(ln net.Listener, addr string) (net.Listener, error) {
	if ln != nil {
		return ln, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("proxy: listen: %w", err)
	}
	return l, nil
}
