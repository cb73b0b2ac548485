package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"minimesh/api"
	"minimesh/certs"
	"minimesh/dataplane/admin"
	"minimesh/dataplane/agent"
	"minimesh/dataplane/balancer"
	"minimesh/dataplane/filesync"
	"minimesh/dataplane/logship"
	"minimesh/dataplane/proxy"
	"minimesh/internal/version"
	meshv1 "minimesh/proto/mesh/v1"
)

// Config is everything mesh-proxy is told.
type Config struct {
	ControlPlane   string
	TrustDomain    string // default minimesh.local
	Token          string
	CAPin          string
	SATokenFile    string // a pod's projected service-account token (agent.Config.SATokenFile)
	Namespace      string // default "default"
	ServiceAccount string // default Service
	Service        string
	Version        string

	// App is the application's host:port on loopback.
	App string
	// Inbound is where other proxies connect over mTLS; Advertise is how
	// they reach it (default: Inbound).
	Inbound   string
	Advertise string
	// Admin serves /ready, /metrics, /certs (default 127.0.0.1:15000).
	Admin    string
	StateDir string

	// AppProbes are the app's kubelet probes that `meshctl inject` moved
	// to the admin port, under /app-health/; empty serves none.
	AppProbes admin.AppProbes

	// Upstreams are local ports, one per upstream service; OutboundHTTP is
	// one local HTTP port that routes by Host (off when empty). Both are
	// loopback only. Outlier tunes each upstream service's balancer.
	Upstreams            []proxy.Upstream
	OutboundHTTP         string
	OutboundHTTPListener net.Listener
	Outlier              balancer.Config
	// Egress lists hosts ("host" or "host:port") outside the mesh that
	// OutboundHTTP may reach in plain HTTP; others get 502.
	Egress []string
	// Transparent (or TransparentListener) receives the app's outbound
	// connections that `mesh-proxy redirect --outbound-port` captured:
	// HTTP goes to the Host-routed port (OutboundHTTP, required), anything
	// else to its original destination as it is. Off when empty.
	Transparent         string
	TransparentListener net.Listener
	// TransparentOriginalDst replaces SO_ORIGINAL_DST (tests).
	TransparentOriginalDst func(net.Conn) (netip.AddrPort, error)
	// Externals are local ports for ExternalServices (--external), and
	// OutboundPolicy what captured traffic to undeclared destinations
	// gets (--outbound-policy): external.go.
	Externals      []ExternalListener
	OutboundPolicy string

	// Public, PublicCert and PublicKey enable plain TLS for clients outside
	// the mesh.
	Public     string
	PublicCert string
	PublicKey  string

	// SharedDir is the pod's shared directory, where ConfigFile resources
	// are written; Reload tells the app after a change.
	SharedDir string
	Reload    filesync.Reload

	// Roles: git sync into SharedDir, /topz and /procz (roles.go).
	Roles RolesConfig

	// SpoolDir holds the log shipper's spool (shipping.go), in its
	// subdirectory SpoolSubdir (made 0700, ours): the batches waiting for
	// the object store of a LogShipping. Off when empty.
	// Pod names the object keys (default: the hostname, a pod's name).
	SpoolDir string
	Pod      string
	// AppMetrics is where the app serves Prometheus metrics, "PORT" or
	// "PORT/path" on loopback (mesh-proxy --app-metrics, from the pod's
	// prometheus.io annotations): merged into /metrics unless the
	// Service's spec.metrics says otherwise (adapter.go).
	AppMetrics string

	// Pre-opened listeners, for tests; each overrides its address.
	InboundListener, AdminListener, PublicListener net.Listener

	Clock  certs.Clock
	Logger *slog.Logger
	// Registry collects every metric; default a new one with Go and
	// process collectors.
	Registry *prometheus.Registry
	// AgentBackoffMax bounds the agent's retry delay (default 30s).
	AgentBackoffMax time.Duration

	// AccessLog receives the inbound's access log when an AccessLog
	// resource switches it on (default os.Stdout); AccessLogFile, when
	// set, is opened (append, 0600) instead.
	AccessLog     io.Writer
	AccessLogFile string
	// Drain is the grace period of a shutdown (SIGTERM, POST /quitquitquit
	// with X-Mesh-Admin: 1 from loopback):
	// listeners stop accepting and requests in flight have this long to
	// finish (default 10s).
	Drain time.Duration
	// RecheckEvery is how often open connections are checked against a
	// changed trust bundle (default 1s).
	RecheckEvery time.Duration
	// StatsInterval is how often the traffic stats go to meshd over the
	// stream (default 10s; only to a meshd that takes them).
	StatsInterval time.Duration
}

// Sidecar is a running mesh-proxy's parts.
type Sidecar struct {
	cfg   Config
	Agent *agent.Agent
	Roles *Roles
	tasks []task

	quit     chan struct{} // closed by /quitquitquit
	quitOnce sync.Once
	// configured is closed when the first snapshot has been applied (from
	// meshd, or the last good one from the state dir): the listeners of
	// app traffic start only then (fail closed: before it no
	// AuthorizationPolicy is in force, and a missing policy allows all).
	configured chan struct{}
	ap         *applier
	closers    []func() error // run when Run returns
	// shipper is the log shipper (shipping.go): nil without SpoolDir.
	shipper *logship.Shipper
}

type task struct {
	name string
	run  func(context.Context) error
}

// New builds every part; nothing listens until Run.
func New(cfg Config) (*Sidecar, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = "minimesh.local"
	}
	if cfg.Admin == "" {
		cfg.Admin = "127.0.0.1:15000"
	}
	explicit := cfg.Advertise != ""
	if !explicit {
		cfg.Advertise = cfg.Inbound
		if cfg.InboundListener != nil {
			cfg.Advertise = cfg.InboundListener.Addr().String()
		}
	}
	// Other proxies dial it: a wildcard is no address (meshd refuses it),
	// so say so here rather than fail to register.
	if host, _, err := net.SplitHostPort(cfg.Advertise); err == nil {
		if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
			if explicit {
				return nil, fmt.Errorf("sidecar: --advertise %s: a wildcard is no address other proxies can dial: give this host's address", cfg.Advertise)
			}
			return nil, fmt.Errorf("sidecar: --inbound %s listens on every address: give --advertise HOST:PORT, the address other proxies dial", cfg.Advertise)
		}
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
		cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	// minimesh_proxy_build_info; a registry shared by two sidecars (tests)
	// keeps the first, which says the same.
	if err := cfg.Registry.Register(version.BuildInfo("minimesh_proxy")); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		return nil, err
	}
	if cfg.App == "" {
		return nil, errors.New("sidecar: --app is required")
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("sidecar: trust domain: %w", err)
	}
	log := cfg.Logger
	configured := make(chan struct{})
	var configuredOnce sync.Once
	ap := &applier{service: cfg.Service, onApplied: func() { configuredOnce.Do(func() { close(configured) }) }}
	if cfg.SharedDir != "" {
		// Refused now rather than NACKing every snapshot later (the
		// listeners, which wait for the first applied one, would never
		// open): a typo or a directory never made.
		if fi, err := os.Stat(cfg.SharedDir); err != nil || !fi.IsDir() {
			if err == nil {
				err = errors.New("not a directory")
			}
			return nil, fmt.Errorf("sidecar: --shared-dir %s: %w (create it: in Kubernetes it is the pod's shared emptyDir volume)", cfg.SharedDir, err)
		}
		fsync, err := sharedFiles(cfg)
		if err != nil {
			return nil, err
		}
		ap.files = fsync
	}
	roles := &Roles{}
	// Set below, before anything runs: the inbound needs the agent's SVID.
	var stats *proxy.StatsReporter
	ag, err := agent.New(agent.Config{
		Stats:          func() *meshv1.StatsReport { return stats.Report() },
		StatsInterval:  cfg.StatsInterval,
		Applier:        ap,
		Querier:        roles.Query,
		ControlPlane:   cfg.ControlPlane,
		TrustDomain:    td,
		Token:          cfg.Token,
		CAPin:          cfg.CAPin,
		SATokenFile:    cfg.SATokenFile,
		Namespace:      cfg.Namespace,
		ServiceAccount: cfg.ServiceAccount,
		Service:        cfg.Service,
		Advertise:      cfg.Advertise,
		Version:        cfg.Version,
		EndpointScope:  endpointScope(cfg),
		StateDir:       cfg.StateDir,
		BackoffMax:     cfg.AgentBackoffMax,
		Clock:          cfg.Clock,
		Logger:         log.With("component", "agent"),
		Registerer:     cfg.Registry,
	})
	if err != nil {
		return nil, err
	}
	metrics, err := proxy.NewMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	s := &Sidecar{cfg: cfg, Agent: ag, Roles: roles, quit: make(chan struct{}), configured: configured, ap: ap}
	s.add("agent", ag.Run)
	if err := s.addShipping(ag); err != nil {
		return nil, err
	}

	al, err := s.accessLog()
	if err != nil {
		return nil, err
	}
	limits := proxy.Limits{Drain: cfg.Drain}
	in, err := proxy.NewInbound(proxy.InboundConfig{
		Listener: cfg.InboundListener, Addr: cfg.Inbound, App: cfg.App,
		SVID: ag.SVIDSource(), Bundle: ag.BundleSource(), TrustDomain: td,
		Service: cfg.Service, Namespace: cfg.Namespace, AccessLog: al, RecheckEvery: cfg.RecheckEvery, Limits: limits,
		Logger: log.With("component", "inbound"), Clock: cfg.Clock, Metrics: metrics,
	})
	if err != nil {
		return nil, err
	}
	s.addTraffic("inbound", in.Run, cfg.InboundListener)

	var pub *proxy.Public
	if cfg.Public != "" || cfg.PublicListener != nil {
		fc, err := certs.NewFileCertificate(certs.FileCertificateConfig{CertFile: cfg.PublicCert, KeyFile: cfg.PublicKey, Clock: cfg.Clock, Logger: log.With("component", "public-cert")})
		if err != nil {
			return nil, err
		}
		pub, err = proxy.NewPublic(proxy.PublicConfig{
			Listener: cfg.PublicListener, Addr: cfg.Public, App: cfg.App, Certificate: fc, Limits: limits,
			AccessLog: al, Logger: log.With("component", "public"), Clock: cfg.Clock, Metrics: metrics,
		})
		if err != nil {
			return nil, err
		}
		s.addTraffic("public", pub.Run, cfg.PublicListener)
	}

	stats = proxy.NewStatsReporter(in, pub)

	ns := cfg.Namespace
	if ns == "" {
		ns = "default"
	}
	ext, err := s.newExternal(ns, al, metrics)
	if err != nil {
		return nil, err
	}
	routing := &traffic{cfg: proxy.TableConfig{Namespace: ns, Service: cfg.Service, TrustDomain: td, Clock: cfg.Clock}, in: in}
	if len(cfg.Upstreams) > 0 || cfg.OutboundHTTP != "" || cfg.OutboundHTTPListener != nil {
		out, err := proxy.NewOutbound(proxy.OutboundConfig{
			Upstreams: cfg.Upstreams, HTTPAddr: cfg.OutboundHTTP, HTTPListener: cfg.OutboundHTTPListener,
			Namespace: ns, Outlier: cfg.Outlier, Egress: cfg.Egress, External: ext, SVID: ag.SVIDSource(), Bundle: ag.BundleSource(), Limits: limits,
			Logger: log.With("component", "outbound"), Clock: cfg.Clock, Metrics: metrics,
		})
		if err != nil {
			return nil, err
		}
		routing.out = out
		pre := []net.Listener{cfg.OutboundHTTPListener}
		for _, u := range cfg.Upstreams {
			pre = append(pre, u.Listener)
		}
		s.addTraffic("outbound", out.Run, pre...)
	}
	if cfg.Transparent != "" || cfg.TransparentListener != nil {
		if cfg.OutboundHTTP == "" && cfg.OutboundHTTPListener == nil {
			return nil, fmt.Errorf("sidecar: --transparent needs --outbound-http (the Host-routed port its HTTP goes to)")
		}
		tr, err := proxy.NewTransparent(proxy.TransparentConfig{
			Listener: cfg.TransparentListener, Addr: cfg.Transparent, HTTP: routing.out, Limits: limits,
			Registerer: cfg.Registry, Logger: log.With("component", "transparent"),
			OriginalDst: cfg.TransparentOriginalDst, RegistryOnly: cfg.OutboundPolicy == OutboundRegistryOnly, Declared: ext.Declares,
		})
		if err != nil {
			return nil, err
		}
		s.addTraffic("transparent", tr.Run, cfg.TransparentListener)
	}
	enforce := &policy{cfg: proxy.PolicyConfig{Namespace: ns, Service: cfg.Service, Clock: cfg.Clock}, in: in, pub: pub, out: routing.out}
	// Revocations first: connections of revoked peers close before the
	// new table retires their endpoints.
	ap.parts = append(ap.parts, enforce, routing, ext)

	merged, err := s.addAdapter(ag)
	if err != nil {
		return nil, err
	}
	adm, err := admin.New(admin.Config{
		Listener: cfg.AdminListener, Addr: cfg.Admin, Ready: s.ready(ag.Ready), Detail: s.detail,
		SVID: ag.SVIDSource(), Bundle: ag.BundleSource(), Registry: cfg.Registry, Gatherer: merged,
		Logger: log.With("component", "admin"), Clock: cfg.Clock,
	})
	if err != nil {
		return nil, err
	}
	if len(cfg.AppProbes) > 0 {
		probes, err := admin.NewProbeHandler(admin.ProbeConfig{Probes: cfg.AppProbes, Logger: log.With("component", "app-probes")})
		if err != nil {
			return nil, err
		}
		adm.Handle("GET "+admin.AppHealthPrefix, probes)
	}
	// The applied snapshot, redacted, and only to the pod itself: the
	// admin port listens on the pod IP for the kubelet.
	adm.Handle("/config", adm.LoopbackOnly(configHandler(ag.Applied)))
	adm.Handle("/quitquitquit", http.HandlerFunc(s.quitquitquit))
	adm.Handle("GET /external", adm.LoopbackOnly(externalHandler(ext, cfg.Externals)))
	if err := s.addRoles(adm); err != nil {
		return nil, err
	}
	s.add("admin", adm.Run)
	return s, nil
}

func (s *Sidecar) add(name string, run func(context.Context) error) {
	s.tasks = append(s.tasks, task{name, run})
}

// addTraffic adds a listener of app traffic (inbound, public, outbound,
// transparent): it starts, and binds its address, only once the first
// snapshot is applied. Until then its port refuses connections (a
// pre-opened listener, as tests pass, holds them in its backlog), so no
// request reaches the app before its AuthorizationPolicy is in force. A
// pre-opened listener of a task that never starts is closed when Run ends.
func (s *Sidecar) addTraffic(name string, run func(context.Context) error, preOpened ...net.Listener) {
	s.add(name, func(ctx context.Context) error {
		select {
		case <-s.configured:
		case <-ctx.Done():
			for _, l := range preOpened {
				if l != nil {
					_ = l.Close()
				}
			}
			return ctx.Err()
		}
		return run(ctx)
	})
}

// Configured is closed once the first snapshot has been applied and the
// listeners of app traffic may start.
func (s *Sidecar) Configured() <-chan struct{} { return s.configured }

// Run runs every part until ctx is cancelled, /quitquitquit is called or
// one part fails; then all stop, the listeners draining for Config.Drain.
func (s *Sidecar) Run(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.quit:
			cancel()
		case <-runCtx.Done():
		}
	}()
	ctx = runCtx
	defer func() {
		for _, c := range s.closers {
			_ = c()
		}
	}()
	g, ctx := errgroup.WithContext(ctx)
	for _, t := range s.tasks {
		g.Go(func() error {
			if err := t.run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// sharedFiles is the Syncer of the ConfigFile resources in SharedDir; they
// may not land in git sync's directory.
func sharedFiles(cfg Config) (*filesync.Syncer, error) {
	reserved := []string{api.LogsDir} // the app's logs (the adapter reads them)
	if dir := cfg.Roles.gitDir(); cfg.Roles.GitRepo != "" && filepath.IsLocal(dir) {
		reserved = append(reserved, filepath.ToSlash(dir))
	}
	return filesync.New(filesync.Config{Dir: cfg.SharedDir, Reload: cfg.Reload, Reserved: reserved,
		Clock: cfg.Clock, Logger: cfg.Logger.With("component", "filesync"), Registerer: cfg.Registry})
}

// endpointScope is the services whose endpoints this proxy needs: with a
// Host-routed outbound port, any (nil); else those of its --upstream
// ports (none without any), so meshd does not send every replica of every
// service to proxies that call two of them.
func endpointScope(cfg Config) *meshv1.EndpointScope {
	if cfg.OutboundHTTP != "" || cfg.OutboundHTTPListener != nil {
		return nil
	}
	sc := &meshv1.EndpointScope{}
	for _, u := range cfg.Upstreams {
		ns, svc := u.Destination()
		if ns == "" {
			ns = cfg.Namespace
		}
		if ns == "" {
			ns = "default"
		}
		sc.Services = append(sc.Services, ns+"/"+svc)
	}
	return sc
}
