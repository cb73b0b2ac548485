package external

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"minimesh/api"
	"minimesh/certs"
	"minimesh/dataplane/accesslog"
	"minimesh/dataplane/balancer"
	meshv1 "minimesh/proto/mesh/v1"
)

// Defaults of Config.
const (
	DefaultMaxConns        = 256
	DefaultMaxIdleConns    = 32
	DefaultConnectAttempts = 3
	DefaultReloadEvery     = 10 * time.Second
	DefaultResponseHeader  = 60 * time.Second
	DefaultResolveEvery    = 30 * time.Second
	// MaxResolvedAddrs bounds the addresses kept per DNS host.
	MaxResolvedAddrs = 64
	// MaxCertFileBytes bounds a client certificate or key file.
	MaxCertFileBytes = 1 << 20
)

// Results of a connection to a --external listener, the "result" label of
// minimesh_proxy_external_connections_total.
const (
	ResultRelayed    = "relayed"     // TLS/TCP: relayed to a host
	ResultHTTP       = "http"        // served as HTTP
	ResultDialFailed = "dial_failed" // no host could be reached (or verified)
	ResultUnknown    = "unknown"     // the name is not in the config from meshd
	ResultOverLimit  = "over_limit"  // MaxConns relays were open already
)

// Config configures a Set. The zero value works.
type Config struct {
	// Namespace of this proxy: only its ExternalServices are taken.
	// Default "default".
	Namespace string
	// Outlier tunes each service's balancer over its hosts. Its Clock
	// defaults to Clock, its Logger to Logger.
	Outlier balancer.Config
	// MaxConns bounds, per service, the TLS/TCP connections relayed at
	// once (more are closed at accept) and the HTTP connections open to
	// its hosts (more requests wait for one). Default 256.
	MaxConns int
	// MaxIdleConns bounds the idle keep-alive HTTP connections kept per
	// service. Default 32.
	MaxIdleConns int
	// ConnectAttempts is how many connects (TCP and, for tls and https,
	// the handshake) one call tries, each to a host the balancer picks,
	// before it fails. Default 3.
	ConnectAttempts int
	// ResponseHeader bounds the wait for an HTTP call's response head once
	// its request is written: a service that accepts and never answers
	// gets the app a 502 rather than a call that hangs. Default 60s, the
	// proxy's own bound on its upstreams (proxy.Limits.ResponseHeader).
	ResponseHeader time.Duration
	// ResolveEvery is how often Run resolves the services' DNS hosts for
	// Declares (registry-only), and after each commit. Default 30s.
	ResolveEvery time.Duration
	// Resolve looks a DNS host up (default net.DefaultResolver, each
	// lookup bounded by 5s).
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// ReloadEvery is how often Run re-reads the client certificate files.
	// Default 10s.
	ReloadEvery time.Duration
	// Observe records an HTTP call's response (0 for none) and duration,
	// by the external service's name and namespace: the sidecar passes
	// the outbound's per-destination metrics. Optional.
	Observe func(name, namespace string, code int, seconds float64)
	// AccessLog, when on (an AccessLog resource of this proxy's service),
	// gets a line per HTTP call. Optional.
	AccessLog *accesslog.Logger
	// Registerer, if set, gets minimesh_proxy_external_connections_total.
	Registerer prometheus.Registerer
	// RootCAs replaces the system roots for services without caBundle
	// (tests). Nil: the system roots.
	RootCAs *x509.CertPool
	Clock   certs.Clock  // the system clock if nil
	Logger  *slog.Logger // discards if nil
}

// Set is the ExternalServices in force, by name. Its Prepare is a sidecar
// Part; Serve and Route use what the last commit installed.
type Set struct {
	cfg   Config
	log   *slog.Logger
	conns *prometheus.CounterVec

	cur atomic.Pointer[table]
	mu  sync.Mutex // Prepare, commit and reload
	// resolved: the addresses of the DNS hosts of the table in force, by
	// "host:port" (Resolve), each with the service's port; committed
	// wakes Run to resolve a new table's hosts at once.
	resolved  atomic.Pointer[resolvedAddrs]
	committed chan struct{}
	// bals outlive the tables: ejection state survives a push.
	bals map[string]*balancer.Balancer
}

// table is one snapshot's ExternalServices.
type table struct {
	byName map[string]*Service
	// byHost: the http and https services by host name, in name order;
	// byServerName: by server name, where it is not one of their hosts.
	byHost, byServerName map[string][]*Service
	// byAddr: every service by the address of a host that is an IP.
	byAddr map[netip.AddrPort]*Service
}

// New builds a Set without services.
func New(cfg Config) (*Set, error) {
	if cfg.MaxConns < 0 || cfg.MaxIdleConns < 0 || cfg.ConnectAttempts < 0 || cfg.ReloadEvery < 0 || cfg.ResponseHeader < 0 || cfg.ResolveEvery < 0 {
		return nil, errors.New("external: negative limit in config")
	}
	if err := cfg.Outlier.Validate(); err != nil {
		return nil, fmt.Errorf("external: %w", err)
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxIdleConns == 0 {
		cfg.MaxIdleConns = DefaultMaxIdleConns
	}
	if cfg.ConnectAttempts == 0 {
		cfg.ConnectAttempts = DefaultConnectAttempts
	}
	if cfg.ResponseHeader == 0 {
		cfg.ResponseHeader = DefaultResponseHeader
	}
	if cfg.ResolveEvery == 0 {
		cfg.ResolveEvery = DefaultResolveEvery
	}
	if cfg.Resolve == nil {
		cfg.Resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if cfg.ReloadEvery == 0 {
		cfg.ReloadEvery = DefaultReloadEvery
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Outlier.Clock == nil {
		cfg.Outlier.Clock = cfg.Clock
	}
	if cfg.Outlier.Logger == nil {
		cfg.Outlier.Logger = cfg.Logger
	}
	s := &Set{cfg: cfg, log: cfg.Logger, bals: map[string]*balancer.Balancer{}, committed: make(chan struct{}, 1)}
	s.conns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "minimesh", Subsystem: "proxy", Name: "external_connections_total",
		Help: "Connections the app opened to --external listeners, by external service and result (relayed, http, dial_failed, unknown, over_limit).",
	}, []string{"external_service", "result"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.conns); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("external: metrics: %w", err)
			}
			s.conns = are.ExistingCollector.(*prometheus.CounterVec) // two sets, one registry (tests)
		}
	}
	s.cur.Store(&table{})
	return s, nil
}

// Get returns the service named name, nil when the config in force has
// none.
func (s *Set) Get(name string) *Service { return s.cur.Load().byName[name] }

// Names returns the names of the services in force, sorted.
func (s *Set) Names() []string {
	t := s.cur.Load()
	out := make([]string, 0, len(t.byName))
	for n := range t.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Route returns the http or https service that host ("name" or
// "name:port", as in a request's Host) names, or nil: one of its hosts,
// else its server name, and, when a port is given, the service's port.
// Should two services claim the same host and port, the first by name
// wins (Prepare logs the conflict).
func (s *Set) Route(host string) http.Handler {
	name, port := host, ""
	if h, p, err := net.SplitHostPort(host); err == nil {
		name, port = h, p
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	t := s.cur.Load()
	for _, m := range []map[string][]*Service{t.byHost, t.byServerName} {
		for _, sv := range m[name] {
			if port == "" || port == strconv.Itoa(int(sv.port)) {
				return sv
			}
		}
	}
	return nil
}

// Declares reports whether a service of the config in force has a host
// that is the IP of dst, or a DNS host that resolved to it when last
// looked up (Resolve), on the service's port: the transparent listener's
// registry-only check. A DNS host's addresses are this proxy's lookups,
// so an app whose resolver answered another address of the same name is
// refused until the next lookup sees it too.
func (s *Set) Declares(dst netip.AddrPort) bool {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if _, ok := s.cur.Load().byAddr[dst]; ok {
		return true
	}
	if r := s.resolved.Load(); r != nil {
		return r.addrs[dst]
	}
	return false
}

// resolvedAddrs is one round of lookups.
type resolvedAddrs struct {
	byHost map[string][]netip.AddrPort // "host:port"
	addrs  map[netip.AddrPort]bool
}

// Resolve looks up the DNS hosts of the services in force now (Run does it
// every ResolveEvery and after each commit) and puts their addresses in
// force for Declares. A host whose lookup fails keeps the addresses it
// had; one no service names any more is dropped.
func (s *Set) Resolve(ctx context.Context) {
	prev := s.resolved.Load()
	next := &resolvedAddrs{byHost: map[string][]netip.AddrPort{}, addrs: map[netip.AddrPort]bool{}}
	for _, sv := range s.cur.Load().byName {
		for _, h := range sv.spec.GetHosts() {
			if _, err := netip.ParseAddr(h); err == nil {
				continue // an IP: byAddr has it
			}
			key := net.JoinHostPort(h, strconv.Itoa(int(sv.port)))
			if _, done := next.byHost[key]; done {
				continue
			}
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ips, err := s.cfg.Resolve(lctx, h)
			cancel()
			var aps []netip.AddrPort
			switch {
			case err != nil:
				if prev != nil {
					aps = prev.byHost[key]
				}
				s.log.Debug("external: lookup failed; registry-only keeps the addresses it had", slog.String("host", h), slog.String("error", err.Error()))
			default:
				for _, ip := range ips[:min(len(ips), MaxResolvedAddrs)] {
					aps = append(aps, netip.AddrPortFrom(ip.Unmap(), uint16(sv.port)))
				}
			}
			next.byHost[key] = aps
			for _, ap := range aps {
				next.addrs[ap] = true
			}
		}
	}
	s.resolved.Store(next)
}

// Prepare compiles the snapshot's ExternalServices; the commit installs
// them. It implements the sidecar's Part. A client certificate that cannot
// be loaded refuses the snapshot, naming the resource, the file and why.
func (s *Set) Prepare(snap *meshv1.Snapshot) (func(), error) {
	s.mu.Lock()
	prev := s.cur.Load()
	s.mu.Unlock()
	next := &table{byName: map[string]*Service{}, byHost: map[string][]*Service{}, byServerName: map[string][]*Service{},
		byAddr: map[netip.AddrPort]*Service{}}
	var errs []error
	for _, r := range snap.GetResources() {
		if r.GetKind() != string(api.KindExternalService) || r.GetNamespace() != s.cfg.Namespace {
			continue
		}
		o, err := api.FromProto(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		es := o.(*api.ExternalService)
		if old := prev.byName[es.Name]; old != nil && proto.Equal(old.spec, es.Spec) {
			next.byName[es.Name] = old // unchanged: its pool and pair go on
			continue
		}
		sv, err := s.compile(es)
		if err != nil {
			errs = append(errs, fmt.Errorf("ExternalService %s/%s: %w", es.Namespace, es.Name, err))
			continue
		}
		next.byName[es.Name] = sv
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(next.byName))
	for n := range next.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	claimed := map[string]string{} // "host:port" -> the service that has it
	for _, n := range names {
		sv := next.byName[n]
		for _, h := range sv.spec.GetHosts() {
			if a, err := netip.ParseAddr(h); err == nil {
				if _, dup := next.byAddr[netip.AddrPortFrom(a.Unmap(), uint16(sv.port))]; !dup {
					next.byAddr[netip.AddrPortFrom(a.Unmap(), uint16(sv.port))] = sv
				}
			}
			if !sv.isHTTP() {
				continue
			}
			next.byHost[h] = append(next.byHost[h], sv)
			hp := net.JoinHostPort(h, strconv.Itoa(int(sv.port)))
			if first, dup := claimed[hp]; dup {
				s.log.Warn("external: two ExternalServices claim one host and port; requests routed by Host go to the first by name",
					slog.String("host", hp), slog.String("first", first), slog.String("also", n))
			} else {
				claimed[hp] = n
			}
		}
		if sn := sv.spec.GetServerName(); sv.isHTTP() && sn != "" && !slices.Contains(sv.spec.GetHosts(), sn) {
			next.byServerName[sn] = append(next.byServerName[sn], sv)
		}
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for name, sv := range next.byName {
			sv.bal.SetTargets(sv.targets)
			s.bals[name] = sv.bal
		}
		old := s.cur.Swap(next)
		select {
		case s.committed <- struct{}{}:
		default:
		}
		for name, sv := range old.byName {
			if next.byName[name] != sv {
				sv.retire()
			}
			if next.byName[name] == nil {
				delete(s.bals, name)
			}
		}
	}, nil
}

// Run re-reads the client certificate files every ReloadEvery and looks
// the DNS hosts up every ResolveEvery and after each commit, until ctx
// ends, then closes the idle connections.
func (s *Set) Run(ctx context.Context) error {
	tk := time.NewTicker(s.cfg.ReloadEvery)
	defer tk.Stop()
	rt := time.NewTicker(s.cfg.ResolveEvery)
	defer rt.Stop()
	s.Resolve(ctx)
	for {
		select {
		case <-ctx.Done():
			for _, sv := range s.cur.Load().byName {
				sv.retire()
			}
			return nil
		case <-tk.C:
			s.Reload()
		case <-rt.C:
			s.Resolve(ctx)
		case <-s.committed:
			s.Resolve(ctx)
		}
	}
}

// Reload re-reads the client certificate files of the services in force
// now (Run does it every ReloadEvery): a changed pair that loads is used
// by the next connections; one that does not is logged and the last good
// pair stays.
func (s *Set) Reload() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sv := range s.cur.Load().byName {
		if sv.pair == nil {
			continue
		}
		changed, err := sv.pair.reload()
		switch {
		case err != nil:
			if sv.pair.noteFailure(err) {
				s.log.Warn("external: client certificate does not load; the last good pair stays in use",
					slog.String("external_service", sv.Name), slog.String("error", err.Error()))
			}
		case changed:
			s.log.Info("external: client certificate reloaded", slog.String("external_service", sv.Name),
				slog.String("cert_file", sv.pair.certFile), slog.Time("not_after", sv.pair.notAfter()))
			if sv.transport != nil {
				sv.transport.CloseIdleConnections() // the next ones present the new pair
			}
		}
	}
}

// compile builds a service from its (validated) resource.
func (s *Set) compile(es *api.ExternalService) (*Service, error) {
	spec := es.Spec
	sv := &Service{
		Name: es.Name, Namespace: es.Namespace, spec: spec, set: s,
		proto: spec.GetProtocol(), port: spec.GetPort(),
		connectTimeout: api.DefaultConnectTimeout, idleTimeout: api.DefaultIdleTimeout,
		slots: make(chan struct{}, s.cfg.MaxConns),
	}
	if d := spec.GetConnectTimeout(); d != nil {
		sv.connectTimeout = d.AsDuration()
	}
	if d := spec.GetIdleTimeout(); d != nil {
		sv.idleTimeout = d.AsDuration()
	}
	for _, h := range spec.GetHosts() {
		sv.targets = append(sv.targets, balancer.Target{Addr: net.JoinHostPort(h, strconv.Itoa(int(sv.port)))})
	}
	sv.bal = s.bals[es.Name]
	if sv.bal == nil {
		b, err := balancer.New(s.cfg.Outlier)
		if err != nil {
			return nil, err
		}
		sv.bal = b
	}
	if sv.isTLS() {
		tc := &tls.Config{
			MinVersion: tls.VersionTLS12, // 1.3 is preferred: Go offers it first
			ServerName: api.ExternalServerName(spec),
			RootCAs:    s.cfg.RootCAs,
		}
		if b := spec.GetCaBundle(); b != "" {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM([]byte(b)) {
				return nil, errors.New("spec.caBundle: no certificate parses")
			}
			tc.RootCAs = pool
		}
		if sv.proto == meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_HTTPS {
			tc.NextProtos = []string{"http/1.1"}
		}
		if cc := spec.GetClientCertificate(); cc != nil {
			p := &pair{certFile: cc.GetCertFile(), keyFile: cc.GetKeyFile()}
			if _, err := p.reload(); err != nil {
				return nil, fmt.Errorf("spec.clientCertificate: %w", err)
			}
			sv.pair = p
			tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return p.cert.Load(), nil
			}
		}
		sv.tls = tc
	}
	if sv.isHTTP() {
		sv.initHTTP()
	}
	return sv, nil
}
