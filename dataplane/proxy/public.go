package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"minimesh/certs"
	"minimesh/dataplane/accesslog"
	"minimesh/dataplane/applink"
	"minimesh/dataplane/edge"
	meshv1 "minimesh/proto/mesh/v1"
)

// CertificateSource gives the certificate for each TLS handshake; a
// *certs.FileCertificate is one.
type CertificateSource interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// PublicConfig configures a Public listener.
type PublicConfig struct {
	// Listener, when set, is served as is (and closed by Run); otherwise
	// Run listens on Addr. One of the two is required.
	Listener net.Listener
	Addr     string
	// App is the host:port of the application, e.g. "127.0.0.1:8080".
	App string
	// Certificate is asked at every handshake, so a reloaded certificate
	// is served from the next handshake on without touching live
	// connections. If it also has a Run(ctx) error method (as
	// *certs.FileCertificate does, to watch its files), Public.Run runs it
	// for as long as the listener runs: do not run it elsewhere. Required.
	Certificate CertificateSource
	Limits      Limits
	// AccessLog, if set, gets a line per request while it is on: pass
	// the inbound's, which its policy switches (InboundConfig.AccessLog).
	// The lines have no source identity and the client's address.
	AccessLog *accesslog.Logger
	Logger    *slog.Logger // slog.Default() if nil
	Clock     certs.Clock  // the system clock if nil
	Metrics   *Metrics     // unregistered metrics if nil
}

// Validate reports whether the config can be used.
func (c PublicConfig) Validate() error {
	if c.Listener == nil && c.Addr == "" {
		return fmt.Errorf("%w: public: Listener or Addr is required", ErrInvalidConfig)
	}
	if err := validateHostPort("App", c.App); err != nil {
		return fmt.Errorf("%w: public: %w", ErrInvalidConfig, err)
	}
	if c.Certificate == nil {
		return fmt.Errorf("%w: public: Certificate is required", ErrInvalidConfig)
	}
	return nil
}

// Public serves HTTPS without client certificates to clients outside the
// mesh and forwards to the app: an unmodified app gets HTTPS. Callers can
// set no mesh header (X-Mesh-* and X-Forwarded-Client-Cert are removed)
// nor any header stating a client address, host or scheme (Forwarded,
// X-Forwarded-*, X-Real-IP, True-Client-IP…: removed); the app gets this
// hop's X-Forwarded-For, X-Forwarded-Host and X-Forwarded-Proto (https).
// HTTP/1.1 framing is checked as at the inbound (framing.go), and requests
// are cleaned as there (sanitize.go).
// The service's policy (SetPolicy) applies as at the inbound, to a caller
// without an identity. Handshake failures are logged at debug level only (the port faces
// scanners); the metrics count them by reason.
type Public struct {
	cfg       PublicConfig
	log       *slog.Logger
	tlsConfig *tls.Config
	transport *applink.Client
	fwd       *forwarder
	enf       enforcer
	policy    atomic.Pointer[Policy]
}

var _ http.Handler = (*Public)(nil)

// NewPublic checks cfg and builds a Public; Run starts it.
func NewPublic(cfg PublicConfig) (*Public, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Limits = cfg.Limits.withDefaults()
	var err error
	if cfg.Logger, cfg.Clock, cfg.Metrics, err = defaults(cfg.Logger, cfg.Clock, cfg.Metrics); err != nil {
		return nil, err
	}
	p := &Public{cfg: cfg, log: cfg.Logger.With(slog.String("listener", ListenerPublic))}
	p.tlsConfig = &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: cfg.Certificate.GetCertificate,
		Time:           cfg.Clock.Now,
	}
	p.transport = applink.New(cfg.Limits.app())
	p.fwd = newForwarder(forwarderConfig{name: ListenerPublic, log: p.log, now: cfg.Clock.Now, metrics: cfg.Metrics,
		transport: p.transport, direct: p.transport, maxBody: cfg.Limits.MaxRequestBodyBytes})
	p.enf = enforcer{decisions: newDecisionCounters(cfg.Metrics), log: p.log, san: newSanitizer(cfg.Metrics, ListenerPublic)}
	return p, nil
}

// SetPolicy makes p the policy of the next request, also on connections
// already open: its path normalization, authorization and rate limits
// apply to clients outside the mesh as to a caller without an identity
// (rules that name sources never match them; rate limits count them as one
// source). Its access log is the inbound's only. A nil p allows
// everything.
func (p *Public) SetPolicy(pol *Policy) { p.policy.Store(pol) }

// ServeHTTP forwards one request to the app, once the policy in force
// allows it: the path is normalized (400 when refused), authorized (403)
// and rate-limited (429); then it is logged when the access log is on.
func (p *Public) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pol := p.policy.Load()
	ensureRequestID(r.Header) // once: the app, by either path, and the access log get this one
	al := p.cfg.AccessLog
	if al == nil || !al.Enabled() {
		d := decisionPool.Get().(*decision)
		p.serve(w, r, pol, d)
		*d = decision{}
		decisionPool.Put(d)
		return
	}
	start := p.cfg.Clock.Now()
	ex := newExchange(w, r, nil)
	defer loggedAbort(r, ex, func(ex *inExchange) {
		logExchange(al, r, "", ex, start, p.cfg.Clock.Now().Sub(start))
	})
	p.serve(ex, r, pol, &ex.d)
	logExchange(al, r, "", ex, start, p.cfg.Clock.Now().Sub(start))
	ex.release()
}

// serve decides r once, into d, and forwards it or refuses it.
func (p *Public) serve(w http.ResponseWriter, r *http.Request, pol *Policy, d *decision) {
	// What the app receives: the app's address, this hop's forwarding
	// headers instead of the client's, and the path the policy matches
	// (enforcer.serveHTTP).
	d.app = applink.Head{Addr: p.cfg.App, Public: true}
	d.proto, d.upstream = meshv1.Protocol_PROTOCOL_HTTP, p.cfg.App
	if !p.enf.admit(w, r, p.fwd) {
		return
	}
	switch r.Method {
	case http.MethodConnect:
		// An app port, not a forward proxy: a CONNECT would reach the app
		// as "CONNECT / HTTP/1.1", authorized as path "/", and a tunnel
		// the app opened would carry requests no policy saw.
		p.fwd.refuse(w, r, http.StatusMethodNotAllowed, "method not allowed\n", fmt.Errorf("proxy: CONNECT %q at the public port", r.Host))
		return
	case http.MethodTrace:
		// An app that echoes TRACE would hand an outside client the
		// request as the app saw it: its cookies and credentials, and the
		// headers the proxy added (cross-site tracing). nginx refuses it
		// too; inside the mesh, where callers are authenticated, it goes on.
		p.fwd.refuse(w, r, http.StatusMethodNotAllowed, "method not allowed\n", errors.New("proxy: TRACE at the public port"))
		return
	}
	p.enf.serveHTTP(w, r, pol, "", p.fwd, d)
}

// Run serves until ctx is cancelled, then drains (Limits.Drain) and
// returns nil. It closes the listener.
func (p *Public) Run(ctx context.Context) error {
	ln, err := edge.Listen(p.cfg.Listener, p.cfg.Addr)
	if err != nil {
		return err
	}
	lim := p.cfg.Limits
	tl := edge.NewTLSListener(ln, p.tlsConfig, edge.TLSOptions{Timeout: lim.Handshake, MaxPending: lim.MaxPendingHandshakes,
		OnFail: handshakeFailed(p.log, p.cfg.Metrics.listener(ListenerPublic), slog.LevelDebug)})
	srv := newServer(p, lim, p.log)
	p.log.Info("proxy: public listening", slog.String("addr", ln.Addr().String()), slog.String("app", p.cfg.App))
	defer p.fwd.closeIdle(p.transport)

	g, gctx := errgroup.WithContext(ctx)
	if r, ok := p.cfg.Certificate.(interface{ Run(context.Context) error }); ok {
		g.Go(func() error { return r.Run(gctx) })
	}
	// The same HTTP/1.1 framing checks as the inbound (framing.go): this
	// port faces anyone.
	g.Go(func() error { return edge.ServeSplit(gctx, srv, edge.Strict(tl), lim.Drain, p.log) })
	return g.Wait()
}
