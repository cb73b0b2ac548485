package admin

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"minimesh/certs"
)

// DefaultAddr is where the admin server listens when no Addr or Listener
// is given: loopback only.
const DefaultAddr = "127.0.0.1:15000"

// Config configures a Server. The zero value serves /healthz, /ready
// (always ready) and an empty /metrics on DefaultAddr.
type Config struct {
	// Listener, when set, is served as is (and closed by Run); otherwise
	// Run listens on Addr (DefaultAddr if empty).
	Listener net.Listener
	Addr     string
	// Ready returns nil when the proxy should receive traffic, else the
	// reason it should not, which /ready shows. If nil, the proxy is ready
	// when SVID (if set) holds a valid SVID that, with Bundle, chains to a
	// root of the bundle.
	Ready func() error
	// Detail, when set, adds lines to /ready's body (ready or not): things
	// an operator should see that do not make the proxy unready, such as a
	// git sync that fails while the last good checkout still serves.
	Detail func() []string
	// SVID and Bundle are shown by /certs; Bundle is asked for the trust
	// domain of the current SVID.
	SVID   x509svid.Source
	Bundle x509bundle.Source
	// Registry is served on /metrics; nil serves an empty registry.
	Registry *prometheus.Registry
	// Gatherer, when set, is served on /metrics instead of Registry (the
	// sidecar's merge of the app's metrics, appmetrics.Merger).
	Gatherer prometheus.Gatherer
	Logger   *slog.Logger // slog.Default() if nil
	Clock    certs.Clock  // the system clock if nil; used for expires_in

	ReadHeaderTimeout time.Duration // 5s
	IdleTimeout       time.Duration // 60s
	MaxHeaderBytes    int           // 16 KiB
	DrainTimeout      time.Duration // 5s
}

// Validate reports whether the config can be used.
func (c Config) Validate() error {
	if c.Listener == nil && c.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			return fmt.Errorf("%w: Addr %q: %w", ErrInvalidConfig, c.Addr, err)
		}
	}
	if c.ReadHeaderTimeout < 0 || c.IdleTimeout < 0 || c.DrainTimeout < 0 || c.MaxHeaderBytes < 0 {
		return fmt.Errorf("%w: negative timeout or limit", ErrInvalidConfig)
	}
	return nil
}

// Server is the proxy's admin HTTP server.
type Server struct {
	cfg     Config
	mux     *http.ServeMux
	guard   *guard
	handler http.Handler // guard, then mux
}

var _ http.Handler = (*Server)(nil)

// New checks cfg and builds a Server with /healthz, /ready, /metrics and
// /certs; Handle adds more before Run.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.ReadHeaderTimeout == 0 {
		cfg.ReadHeaderTimeout = 5 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = 16 << 10
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	g, err := newGuard(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), guard: g}
	s.handler = g.wrap(s.mux)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok\n")
	})
	s.mux.HandleFunc("GET /ready", s.ready)
	// The names meshd and Kubernetes use: the same checks.
	s.mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok\n")
	})
	s.mux.HandleFunc("GET /readyz", s.ready)
	s.mux.HandleFunc("GET /certs", s.certs)
	var metrics prometheus.Gatherer = cfg.Registry
	if cfg.Gatherer != nil {
		metrics = cfg.Gatherer
	}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	return s, nil
}

// Handle adds a handler, with http.ServeMux patterns ("GET /config").
// Call it before Run; like ServeMux it panics on a conflicting pattern.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// ServeHTTP serves the admin endpoints (for tests and embedding), behind
// the same guard as Run (guard.go): Host must name the server, a
// state-changing request needs X-Mesh-Admin: 1.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Run serves until ctx is cancelled, then shuts down within DrainTimeout
// and returns nil. It closes the listener.
func (s *Server) Run(ctx context.Context) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("admin: listen: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}
	s.cfg.Logger.Info("admin: listening", slog.String("addr", ln.Addr().String()))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-errc
	return nil
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	var err error
	switch {
	case s.cfg.Ready != nil:
		err = s.cfg.Ready()
	case s.cfg.SVID != nil:
		err = s.ownSVID()
	}
	var detail string
	if s.cfg.Detail != nil {
		for _, line := range s.cfg.Detail() {
			detail += line + "\n"
		}
	}
	if err != nil {
		writeText(w, http.StatusServiceUnavailable, "not ready: "+err.Error()+"\n"+detail)
		return
	}
	writeText(w, http.StatusOK, "ready\n"+detail)
}

// ownSVID is nil when the SVID is valid and, with a Bundle, chains to one
// of its roots, as this proxy's peers will verify it. It never looks at
// peers: one proxy's readiness must not depend on another's.
func (s *Server) ownSVID() error {
	svid, err := s.cfg.SVID.GetX509SVID()
	if err != nil || s.cfg.Bundle == nil {
		return err
	}
	if _, _, err := certs.VerifyPeerCertificates(svid.Certificates, s.cfg.Bundle, s.cfg.Clock.Now()); err != nil {
		return fmt.Errorf("its SVID (serial %s) does not chain to a root of its own trust bundle: its peers refuse it: %w", svid.Certificates[0].SerialNumber.Text(16), err)
	}
	return nil
}

// CertsResponse is the JSON body of /certs.
type CertsResponse struct {
	SVID      *CertInfo `json:"svid,omitempty"`
	SVIDError string    `json:"svid_error,omitempty"`
	Bundle    *Bundle   `json:"bundle,omitempty"`
	// BundleError says why the bundle could not be shown.
	BundleError string `json:"bundle_error,omitempty"`
}

// CertInfo describes one certificate. Serial is lowercase hex without
// separators; ExpiresIn is negative once expired.
type CertInfo struct {
	SPIFFEID         string    `json:"spiffe_id,omitempty"`
	Subject          string    `json:"subject,omitempty"`
	Serial           string    `json:"serial"`
	NotBefore        time.Time `json:"not_before"`
	NotAfter         time.Time `json:"not_after"`
	ExpiresIn        string    `json:"expires_in"`
	ExpiresInSeconds int64     `json:"expires_in_seconds"`
}

// Bundle describes the trust bundle's roots.
type Bundle struct {
	TrustDomain string     `json:"trust_domain"`
	Roots       []CertInfo `json:"roots"`
}

func (s *Server) certs(w http.ResponseWriter, _ *http.Request) {
	var resp CertsResponse
	now := s.cfg.Clock.Now()
	var td spiffeid.TrustDomain
	if s.cfg.SVID == nil {
		resp.SVIDError = "no SVID source"
	} else if svid, err := s.cfg.SVID.GetX509SVID(); err != nil {
		resp.SVIDError = err.Error()
		// An expired SVID is still worth showing: that is when one looks.
		if c, ok := s.cfg.SVID.(interface{ Current() *x509svid.SVID }); ok {
			if cur := c.Current(); cur != nil && len(cur.Certificates) > 0 {
				resp.SVID = certInfo(cur.Certificates[0], cur.ID.String(), now)
				td = cur.ID.TrustDomain()
			}
		}
	} else if len(svid.Certificates) > 0 {
		resp.SVID = certInfo(svid.Certificates[0], svid.ID.String(), now)
		td = svid.ID.TrustDomain()
	}
	switch {
	case s.cfg.Bundle == nil:
		resp.BundleError = "no bundle source"
	case td.IsZero():
		resp.BundleError = "trust domain unknown without an SVID"
	default:
		b, err := s.cfg.Bundle.GetX509BundleForTrustDomain(td)
		if err != nil {
			resp.BundleError = err.Error()
			break
		}
		resp.Bundle = &Bundle{TrustDomain: td.Name(), Roots: []CertInfo{}}
		for _, root := range b.X509Authorities() {
			resp.Bundle.Roots = append(resp.Bundle.Roots, *certInfo(root, "", now))
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(resp)
}

func certInfo(c *x509.Certificate, id string, now time.Time) *CertInfo {
	left := c.NotAfter.Sub(now).Truncate(time.Second)
	info := &CertInfo{
		SPIFFEID:         id,
		Serial:           c.SerialNumber.Text(16),
		NotBefore:        c.NotBefore.UTC(),
		NotAfter:         c.NotAfter.UTC(),
		ExpiresIn:        left.String(),
		ExpiresInSeconds: int64(left / time.Second),
	}
	if id == "" {
		info.Subject = c.Subject.String()
	}
	return info
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}
