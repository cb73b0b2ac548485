package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"minimesh/certs"
	"minimesh/internal/inject"
)

// DefaultDNSNames are the serving certificate's names: meshd's Service in
// minimesh-system, which the configuration's clientConfig.service names.
var DefaultDNSNames = []string{"meshd.minimesh-system.svc"}

// DefaultConfigurationName is the MutatingWebhookConfiguration whose
// caBundle meshd keeps current (deploy/k8s; RBAC grants get and patch on
// this name alone).
const DefaultConfigurationName = "minimesh-sidecar-injector"

// Config configures the webhook server.
type Config struct {
	// Listener is where it serves (TLS over it). Required.
	Listener net.Listener
	// DNSNames of the serving certificate; default DefaultDNSNames.
	DNSNames []string
	// CertTTL is the serving certificate's lifetime, renewed at half of
	// it (default 24h).
	CertTTL time.Duration
	// CA is the certificate authority in force (meshd's holder); the
	// serving certificate is renewed when its intermediate changes.
	CA func() *certs.CA
	// Options are inject's options for the next pod: the image, meshd's
	// address, and the pins of every root of the current bundle.
	Options func() inject.Options
	// Kube, when set, is used to keep ConfigurationName's caBundle equal
	// to the CA's roots, on the leader (IsLeader; nil: always).
	Kube              kubernetes.Interface
	ConfigurationName string
	IsLeader          func() bool
	// Validate, when set, answers ValidatePath (validate.go) for the
	// minimesh.io objects, and ValidatingConfigurationName's caBundle is
	// kept like ConfigurationName's.
	Validate                    ValidateFunc
	ValidatingConfigurationName string
	// Check is how often the certificate and caBundle are looked at
	// (default 1s); Resync is how often the configuration is read back
	// even when the roots did not change, to repair a caBundle someone
	// reset (default 1m).
	Check, Resync time.Duration
	Clock         certs.Clock
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

// Server is the webhook: a TLS HTTP server and the upkeep of its
// certificate and of the configuration's caBundle.
type Server struct {
	cfg     Config
	cert    atomic.Pointer[tls.Certificate]
	http    *http.Server
	handler *handler
	bundle  *caBundle
}

// New issues the first serving certificate. Nothing is served until Run.
func New(cfg Config) (*Server, error) {
	if cfg.Listener == nil || cfg.CA == nil || cfg.Options == nil {
		return nil, errors.New("webhook: Config.Listener, CA and Options are required")
	}
	if len(cfg.DNSNames) == 0 {
		cfg.DNSNames = DefaultDNSNames
	}
	if cfg.CertTTL <= 0 {
		cfg.CertTTL = 24 * time.Hour
	}
	if cfg.ConfigurationName == "" {
		cfg.ConfigurationName = DefaultConfigurationName
	}
	if cfg.IsLeader == nil {
		cfg.IsLeader = func() bool { return true }
	}
	if cfg.Check <= 0 {
		cfg.Check = time.Second
	}
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h, err := newHandler(cfg.Options, cfg.Logger, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, handler: h}
	if err := s.renew(); err != nil {
		return nil, err
	}
	if cfg.Kube != nil {
		validating := ""
		if cfg.Validate != nil {
			if validating = cfg.ValidatingConfigurationName; validating == "" {
				validating = DefaultValidatingConfigurationName
			}
		}
		if s.bundle, err = newCABundle(cfg.Kube, cfg.ConfigurationName, validating, cfg.Logger, cfg.Registerer); err != nil {
			return nil, err
		}
	}
	mux := http.NewServeMux()
	mux.Handle(Path, h)
	if cfg.Validate != nil {
		mux.Handle(ValidatePath, &validator{validate: cfg.Validate, log: cfg.Logger})
	}
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second, // the API server waits timeoutSeconds (10) at most
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS13,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cert.Load(), nil },
		},
	}
	return s, nil
}

// Certificate is the serving certificate in use.
func (s *Server) Certificate() *tls.Certificate { return s.cert.Load() }

// CABundle is the PEM of the CA's roots: what the configuration's
// caBundle is kept equal to.
func (s *Server) CABundle() []byte {
	return certs.EncodeCertsPEM(s.cfg.CA().Bundle().X509Authorities())
}

// Run serves TLS on the listener and keeps the certificate and caBundle
// current until ctx ends, then shuts down (in-flight reviews get 5 s).
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.ServeTLS(s.cfg.Listener, "", "") }()
	s.cfg.Logger.Info("admission webhook serving", "addr", s.cfg.Listener.Addr().String(), "dns_names", s.cfg.DNSNames, "configuration", s.cfg.ConfigurationName, "patch_ca_bundle", s.bundle != nil)
	tick := time.NewTicker(s.cfg.Check)
	defer tick.Stop()
	s.upkeep(ctx)
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("webhook: serve: %w", err)
		case <-tick.C:
			s.upkeep(ctx)
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.http.Shutdown(sctx); err != nil {
				_ = s.http.Close()
			}
			<-errc
			return nil
		}
	}
}

// upkeep renews the certificate when due and, on the leader, brings the
// caBundle up to date.
func (s *Server) upkeep(ctx context.Context) {
	if s.renewDue() {
		if err := s.renew(); err != nil {
			s.cfg.Logger.Error("could not renew the admission webhook's certificate", "error", err)
		}
	}
	if s.bundle != nil && s.cfg.IsLeader() {
		s.bundle.sync(ctx, s.CABundle(), s.cfg.Resync, s.cfg.Clock.Now())
	}
}

// renewDue: past half its life, or issued by another intermediate than
// the one that signs now (a root rotation activated, the intermediate
// re-issued): its chain would soon end at a root that leaves the bundle.
func (s *Server) renewDue() bool {
	c := s.cert.Load()
	leaf := c.Leaf
	half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	return !s.cfg.Clock.Now().Before(half) || !bytes.Equal(c.Certificate[1], s.cfg.CA().Intermediate().Raw)
}

func (s *Server) renew() error {
	c, err := s.cfg.CA().IssueDNSServing(s.cfg.DNSNames, s.cfg.CertTTL)
	if err != nil {
		return fmt.Errorf("webhook: serving certificate: %w", err)
	}
	s.cert.Store(c)
	s.cfg.Logger.Info("admission webhook certificate issued", "dns_names", s.cfg.DNSNames, "serial", c.Leaf.SerialNumber.Text(16), "not_after", c.Leaf.NotAfter, "root_pin", s.cfg.CA().RootPin())
	return nil
}
