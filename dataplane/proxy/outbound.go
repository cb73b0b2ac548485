package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"minimesh/api/pathnorm"
	"minimesh/certs"
	"minimesh/dataplane/applink"
	"minimesh/dataplane/balancer"
	"minimesh/dataplane/edge"
	"minimesh/dataplane/h1"
	"minimesh/dataplane/route"
	meshv1 "minimesh/proto/mesh/v1"
)

// Upstream is a local port the app calls for one service of the mesh.
type Upstream struct {
	// Name is the service, as the flag names it: "api", "api.prod" (in
	// namespace prod) or either with ":PORT" for one of its ports.
	Name string
	// Service and Namespace are the parts of Name (Namespace empty: the
	// proxy's own). Port selects one of the service's ports; 0: the
	// first (for HTTP, the first that is not TCP). A TCP port makes the
	// local port a TCP relay; any other protocol makes it HTTP.
	Service, Namespace string
	Port               uint32
	// Listen is the local address the app calls, e.g. "127.0.0.1:15001".
	// It must be a loopback address: anyone who can reach it speaks with
	// our identity.
	Listen string
	// Listener, when set, is served instead of listening on Listen.
	Listener net.Listener
	// Remote and ID, when set, are a static endpoint used while discovery
	// knows no endpoint of the service (the flag's 4-field form): the
	// remote proxy's inbound and the SPIFFE ID it must present.
	Remote string
	ID     spiffeid.ID
}

// ParseUpstream parses the mesh-proxy flag forms NAME=LISTEN (endpoints
// from discovery) and NAME=LISTEN=REMOTE=SPIFFEID (a static endpoint as
// well), where NAME is SERVICE[.NAMESPACE][:PORT], e.g. "api=127.0.0.1:15001"
// or "api=127.0.0.1:15001=10.0.0.7:15006=spiffe://minimesh.local/ns/default/sa/api".
func ParseUpstream(s string) (Upstream, error) {
	parts := strings.Split(s, "=")
	if len(parts) != 2 && len(parts) != 4 {
		return Upstream{}, fmt.Errorf("%w: upstream %q: want NAME=LISTEN or NAME=LISTEN=REMOTE=SPIFFEID", ErrInvalidConfig, s)
	}
	u := Upstream{Name: parts[0], Listen: parts[1]}
	var err error
	if u.Service, u.Namespace, u.Port, err = parseUpstreamName(u.Name); err != nil {
		return Upstream{}, fmt.Errorf("%w: upstream %q: %w", ErrInvalidConfig, s, err)
	}
	if len(parts) == 4 {
		id, err := spiffeid.FromString(parts[3])
		if err != nil {
			return Upstream{}, fmt.Errorf("%w: upstream %q: %w", ErrInvalidConfig, s, err)
		}
		u.Remote, u.ID = parts[2], id
	}
	if err := u.Validate(); err != nil {
		return Upstream{}, err
	}
	return u, nil
}

func parseUpstreamName(n string) (svc, ns string, port uint32, err error) {
	if n == "" {
		return "", "", 0, errors.New("name is required")
	}
	if i := strings.LastIndexByte(n, ':'); i >= 0 {
		p, ok := parsePort(n[i+1:])
		if !ok {
			return "", "", 0, fmt.Errorf("name %q: port must be 1 to 65535", n)
		}
		n, port = n[:i], p
	}
	svc, ns, _ = strings.Cut(n, ".")
	if !isDNSLabel(svc) || (ns != "" && !isDNSLabel(ns)) {
		return "", "", 0, fmt.Errorf("name %q: want SERVICE[.NAMESPACE][:PORT] of DNS labels", n)
	}
	return svc, ns, port, nil
}

func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Validate reports whether the upstream can be used.
func (u Upstream) Validate() error {
	if u.Name == "" {
		return fmt.Errorf("%w: upstream: Name is required", ErrInvalidConfig)
	}
	if u.Service == "" {
		_, ns, port, err := parseUpstreamName(u.Name)
		if err != nil {
			return fmt.Errorf("%w: upstream: %w", ErrInvalidConfig, err)
		}
		if (u.Namespace != "" && u.Namespace != ns) || (u.Port != 0 && u.Port != port) {
			return fmt.Errorf("%w: upstream %s: Namespace or Port disagree with Name", ErrInvalidConfig, u.Name)
		}
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
	if u.Remote != "" || !u.ID.IsZero() {
		if err := validateHostPort("Remote", u.Remote); err != nil {
			return fmt.Errorf("%w: upstream %s: %w", ErrInvalidConfig, u.Name, err)
		}
		if u.ID.IsZero() {
			return fmt.Errorf("%w: upstream %s: ID is required with Remote", ErrInvalidConfig, u.Name)
		}
	}
	return nil
}

// Destination is the service an upstream port calls; namespace is empty
// when the upstream does not name one (the proxy's own then).
func (u Upstream) Destination() (namespace, service string) {
	u = u.normalized()
	return u.Namespace, u.Service
}

// normalized fills Service, Namespace and Port from Name.
func (u Upstream) normalized() Upstream {
	if u.Service == "" {
		u.Service, u.Namespace, u.Port, _ = parseUpstreamName(u.Name)
	}
	return u
}

// OutboundConfig configures an Outbound.
type OutboundConfig struct {
	// Upstreams are local ports, one per upstream service.
	Upstreams []Upstream
	// HTTPAddr (or HTTPListener) is one local plain-HTTP port for every
	// service: the Host header names the service ("api", "api.ns",
	// "api.ns.svc", with an optional ":port"). Optional; it must be a
	// loopback address.
	HTTPAddr     string
	HTTPListener net.Listener
	// Egress lists the destinations outside the mesh that the Host-routed
	// port may reach, in plain HTTP (the mesh cannot encrypt to them):
	// "host" (any port) or "host:port", compared case-insensitively with
	// the request's Host. Empty: none; every other Host that is not a
	// service of the mesh gets 502. Deprecated: declare an
	// ExternalService (External), which also originates TLS.
	Egress []string
	// External, when set, finds the http and https ExternalServices by the
	// Host of a request to the Host-routed port that names no service of
	// the mesh; it supersedes Egress for the same host.
	External ExternalRouter
	// Namespace of this proxy, where bare service names are looked up.
	// Default "default".
	Namespace string
	// SVID is our client certificate, read at every handshake. Required.
	SVID x509svid.Source
	// Bundle verifies the remote proxies. Required.
	Bundle x509bundle.Source
	// Outlier configures each service's balancer (power of two choices
	// over least outstanding requests, outlier ejection). Its Clock
	// defaults to Clock, its Logger to Logger.
	Outlier balancer.Config
	// MaxRequestsPerService is how many requests to one service may be in
	// flight from this proxy; more are answered 503 at once (a circuit
	// breaker). Default 1024.
	MaxRequestsPerService int
	Limits                Limits
	// KeepAlive is how long the HTTP/2 connection to a remote may stay
	// silent before it is checked with a ping; 30s.
	KeepAlive time.Duration
	// MeshLink is how requests for a remote's "http" ports travel:
	// MeshLinkHTTP1, over a bounded pool of HTTP/1.1 keep-alive mTLS
	// connections per remote (meshlink.Pool: no goroutine per request on
	// either side); MeshLinkH2, as streams of the one HTTP/2 connection.
	// gRPC, http2 ports, TCP ports and upgrades take HTTP/2 (upgrades
	// HTTP/1.1) either way. Empty: $MESH_PROXY_MESH_LINK, else
	// MeshLinkHTTP1.
	MeshLink string
	// MaxLinkConns bounds the HTTP/1.1 connections to one remote proxy,
	// idle and in use; a request finding them all busy for a second goes
	// over the HTTP/2 connection. Default 64.
	MaxLinkConns int
	Logger       *slog.Logger // slog.Default() if nil
	Clock        certs.Clock  // the system clock if nil
	Metrics      *Metrics     // unregistered metrics if nil
}

// Validate reports whether the config can be used.
func (c OutboundConfig) Validate() error {
	if c.SVID == nil || c.Bundle == nil {
		return fmt.Errorf("%w: outbound: SVID and Bundle sources are required", ErrInvalidConfig)
	}
	addrs := make(map[string]bool, len(c.Upstreams))
	for _, u := range c.Upstreams {
		if err := u.Validate(); err != nil {
			return err
		}
		if u.Listener == nil {
			if addrs[u.Listen] {
				return fmt.Errorf("%w: outbound: %s is the local port of two upstreams", ErrInvalidConfig, u.Listen)
			}
			addrs[u.Listen] = true
		}
	}
	if c.HTTPListener == nil && c.HTTPAddr != "" {
		if err := validateHostPort("HTTPAddr", c.HTTPAddr); err != nil {
			return fmt.Errorf("%w: outbound: %w", ErrInvalidConfig, err)
		}
		host, _, _ := net.SplitHostPort(c.HTTPAddr)
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("%w: outbound: HTTPAddr %q is not a loopback address", ErrInvalidConfig, c.HTTPAddr)
		}
	}
	for _, e := range c.Egress {
		name, port := splitHost(e)
		if name == "" || strings.ContainsAny(name, "/@ ") || (port == 0 && strings.Contains(e, ":") && !strings.HasSuffix(e, "]")) {
			return fmt.Errorf("%w: outbound: egress %q: want host or host:port", ErrInvalidConfig, e)
		}
	}
	if err := c.Outlier.Validate(); err != nil {
		return fmt.Errorf("%w: outbound: %w", ErrInvalidConfig, err)
	}
	if c.MeshLink != "" && c.MeshLink != MeshLinkHTTP1 && c.MeshLink != MeshLinkH2 {
		return fmt.Errorf("%w: outbound: MeshLink %q: want %q or %q", ErrInvalidConfig, c.MeshLink, MeshLinkHTTP1, MeshLinkH2)
	}
	if c.MaxLinkConns < 0 {
		return fmt.Errorf("%w: outbound: MaxLinkConns %d: must not be negative", ErrInvalidConfig, c.MaxLinkConns)
	}
	return nil
}

// The ways of OutboundConfig.MeshLink.
const (
	MeshLinkHTTP1 = "http1"
	MeshLinkH2    = "h2"
	// EnvMeshLink names the variable read when MeshLink is empty, so
	// that one binary can be compared both ways.
	EnvMeshLink = "MESH_PROXY_MESH_LINK"
)

// Outbound is the app's way out: local plain ports (one per upstream
// service, and one that routes by Host) whose requests are routed by the
// pushed Routes, balanced over the service's endpoints, retried and timed
// out as the route says, and carried over mTLS HTTP/2 to the remote
// proxies, one long-lived connection per remote that every request shares.
// A destination that is not a service of the mesh gets 502 and nothing is
// sent, unless Egress lets it out. Ports declared "tcp" are relayed as byte streams (one HTTP/2
// CONNECT stream each, over the same connection).
type Outbound struct {
	cfg       OutboundConfig
	log       *slog.Logger
	metrics   *listenerMetrics
	upstreams []*upstream
	fwd       *forwarder

	// view is the table in force with what the outbound keeps for it.
	view atomic.Pointer[view]
	// hostConns takes connections for the Host-routed server (ServeConn);
	// nil until Run serves.
	hostConns atomic.Pointer[connQueue]

	mu sync.Mutex // installs and remote creation
	// balancers (by "ns/name" and "ns/name/subset") and each service's
	// outbound metric series outlive the tables: ejections and load
	// survive a push.
	balancers map[string]*balancer.Balancer
	series    map[svcKey]*atomic.Pointer[requestSeries]
	remotes   atomic.Pointer[map[balancer.Target]*remote]
	static    map[balancer.Target]*remote // never pruned
	retired   []*remote

	// direct is forwardDirect (outdirect.go), made once. Tests only:
	// noDirect sends every request through ReverseProxy; directs, when
	// set, counts the requests sent by the direct path.
	direct   func(http.ResponseWriter, *http.Request, *decision)
	noDirect bool
	directs  *atomic.Int64

	tunnels tunnelSet
	guard   remoteGuard // revocations and connections to remotes
	// inflight counts each service's requests in flight
	// (MaxRequestsPerService): runtime state, kept outside the compiled
	// tables so that a push does not reset it.
	inflight inflightSet

	// egress: allowed destinations outside the mesh, by lower-case host
	// name, each with its ports (nil: any).
	egress    map[string][]uint32
	egressFwd *forwarder
	egressTr  *http.Transport
}

type upstream struct {
	Upstream
	log *slog.Logger
	// static stands in for the service while discovery knows no endpoint
	// of it, with its balancer (staticRun); nil without a static endpoint.
	static    *service
	staticRun *svcRun
}

// view is a compiled Table as one Outbound runs it: the Table stays
// immutable, and what changes at runtime (balancers, metric series) is the
// outbound's, found per service of that table. Installed whole, by one
// atomic store.
type view struct {
	table *Table
	runs  map[*service]*svcRun
}

// svcRun is the runtime state of one service of a table: its balancers
// (kept across tables, by name) and its outbound metric series.
type svcRun struct {
	bal     *balancer.Balancer
	subsets map[string]*balancer.Balancer
	series  *atomic.Pointer[requestSeries] // on first use
}

// balancerFor returns the balancer of the service's endpoints, or of one
// subset; nil when there is none.
func (r *svcRun) balancerFor(subset string) *balancer.Balancer {
	if r == nil {
		return nil
	}
	if subset == "" {
		return r.bal
	}
	return r.subsets[subset]
}

// run returns the runtime state of s, a service of v's table or an
// upstream's static one.
func (o *Outbound) run(v *view, up *upstream, s *service) *svcRun {
	if up != nil && s == up.static {
		return up.staticRun
	}
	if v == nil {
		return nil
	}
	return v.runs[s]
}

// table is the Table in force; nil before the first Install.
func (o *Outbound) table() *Table {
	if v := o.view.Load(); v != nil {
		return v.table
	}
	return nil
}

var _ http.Handler = (*Outbound)(nil)

// NewOutbound checks cfg and builds an Outbound; Run starts it.
func NewOutbound(cfg OutboundConfig) (*Outbound, error) {
	if cfg.MeshLink == "" {
		if v := os.Getenv(EnvMeshLink); v != "" {
			cfg.MeshLink = v
			if err := cfg.Validate(); err != nil {
				return nil, fmt.Errorf("%w (from $%s)", err, EnvMeshLink)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MeshLink == "" {
		cfg.MeshLink = MeshLinkHTTP1
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 30 * time.Second
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if cfg.MaxRequestsPerService <= 0 {
		cfg.MaxRequestsPerService = 1024
	}
	var err error
	if cfg.Logger, cfg.Clock, cfg.Metrics, err = defaults(cfg.Logger, cfg.Clock, cfg.Metrics); err != nil {
		return nil, err
	}
	if cfg.Outlier.Clock == nil {
		cfg.Outlier.Clock = cfg.Clock
	}
	if cfg.Outlier.Logger == nil {
		cfg.Outlier.Logger = cfg.Logger.With(slog.String("listener", ListenerOutbound))
	}
	o := &Outbound{
		cfg: cfg, log: cfg.Logger.With(slog.String("listener", ListenerOutbound)),
		metrics:   cfg.Metrics.listener(ListenerOutbound),
		balancers: map[string]*balancer.Balancer{},
		series:    map[svcKey]*atomic.Pointer[requestSeries]{},
		static:    map[balancer.Target]*remote{},
	}
	o.direct = o.forwardDirect
	empty := map[balancer.Target]*remote{}
	o.remotes.Store(&empty)
	dests := newDestinationSet(cfg.Metrics, destService)
	o.fwd = newForwarder(forwarderConfig{name: ListenerOutbound, log: o.log, now: cfg.Clock.Now, metrics: cfg.Metrics,
		transport: roundTripper{o}, rewrite: o.rewrite, maxBody: cfg.Limits.MaxRequestBodyBytes,
		done: func(d *decision, code int, seconds float64) {
			if d.series == nil {
				return
			}
			sm := d.series.Load()
			if sm == nil {
				sm = dests.get(d.dst.label)
				d.series.Store(sm)
			}
			sm.observe(code, seconds)
		}})
	if len(cfg.Egress) > 0 {
		o.egress = map[string][]uint32{}
		for _, e := range cfg.Egress {
			name, port := splitHost(e)
			if port == 0 {
				o.egress[name] = nil
			} else if ports, ok := o.egress[name]; !ok || ports != nil {
				o.egress[name] = append(ports, port)
			}
		}
		o.egressTr = applink.Transport(cfg.Limits.app())
		o.egressFwd = newForwarder(forwarderConfig{name: ListenerOutbound, log: o.log, now: cfg.Clock.Now, metrics: cfg.Metrics,
			transport: o.egressTr, maxBody: cfg.Limits.MaxRequestBodyBytes,
			rewrite: func(pr *httputil.ProxyRequest) {
				pr.Out.URL.Scheme = "http"
				pr.Out.URL.Host = pr.In.Host
				if _, port := splitHost(pr.In.Host); port == 0 {
					pr.Out.URL.Host = strings.TrimSuffix(pr.In.Host, ":") + ":80"
				}
				applink.StripMeshHeaders(pr.Out.Header)
				ensureRequestID(pr.Out.Header)
				for _, k := range applink.ForwardingHeaders {
					if v, ok := pr.In.Header[k]; ok {
						pr.Out.Header[k] = v
					}
				}
			}})
	}
	for _, u := range cfg.Upstreams {
		u = u.normalized()
		if u.Namespace == "" {
			u.Namespace = cfg.Namespace
		}
		up := &upstream{Upstream: u, log: o.log.With(slog.String("upstream", u.Name))}
		if u.Remote != "" {
			tg := balancer.Target{Addr: u.Remote, Identity: u.ID.String()}
			b, err := balancer.New(cfg.Outlier)
			if err != nil {
				return nil, fmt.Errorf("%w: outbound: %w", ErrInvalidConfig, err)
			}
			b.SetTargets([]balancer.Target{tg})
			if o.static[tg] == nil {
				rm, err := newRemote(&o.cfg, tg, o.metrics, o.log, &o.guard)
				if err != nil {
					return nil, fmt.Errorf("%w: outbound: %w", ErrInvalidConfig, err)
				}
				o.static[tg] = rm
			}
			up.static = &service{key: svcKey{u.Namespace, u.Service}, label: u.Service + "." + u.Namespace,
				targets: []balancer.Target{tg}}
			up.staticRun = &svcRun{bal: b, series: new(atomic.Pointer[requestSeries])}
		}
		o.upstreams = append(o.upstreams, up)
	}
	return o, nil
}

// Install makes t the table in force, from the next request on (also on
// connections already open). Each service's balancer keeps its endpoints'
// load and ejection state across tables; t itself is not modified (the
// runtime state is the outbound's), so one Table may be installed in
// several Outbounds. Installing the table in force again does nothing.
func (o *Outbound) Install(t *Table) {
	if t == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if v := o.view.Load(); v != nil && v.table == t {
		return
	}
	// 1. Remotes for every endpoint, before any balancer can pick one.
	old := *o.remotes.Load()
	next := make(map[balancer.Target]*remote, t.nEps)
	for _, s := range t.services {
		for _, tg := range s.targets {
			if rm := old[tg]; rm != nil {
				next[tg] = rm
			} else if next[tg] == nil {
				rm, err := newRemote(&o.cfg, tg, o.metrics, o.log, &o.guard)
				if err != nil { // the table's identities are parsed; not reached
					o.log.Error("proxy: endpoint left out", slog.String("addr", tg.Addr), slog.String("error", err.Error()))
					continue
				}
				next[tg] = rm
			}
		}
	}
	o.remotes.Store(&next)
	// 2. Balancers and metric series, found again by service (and
	// subset).
	balancers := make(map[string]*balancer.Balancer, len(t.services))
	series := make(map[svcKey]*atomic.Pointer[requestSeries], len(t.services))
	runs := make(map[*service]*svcRun, len(t.services))
	bal := func(key string, targets []balancer.Target) *balancer.Balancer {
		b := o.balancers[key]
		if b == nil {
			b, _ = balancer.New(o.cfg.Outlier) // validated in NewOutbound
		}
		b.SetTargets(targets)
		balancers[key] = b
		return b
	}
	for _, s := range t.services {
		key := s.key.ns + "/" + s.key.name
		run := &svcRun{bal: bal(key, s.targets), series: o.series[s.key]}
		if run.series == nil {
			run.series = new(atomic.Pointer[requestSeries])
		}
		series[s.key] = run.series
		for name, sub := range s.subsets {
			if run.subsets == nil {
				run.subsets = map[string]*balancer.Balancer{}
			}
			run.subsets[name] = bal(key+"/"+name, sub)
		}
		runs[s] = run
	}
	o.balancers, o.series = balancers, series
	// 3. In-flight counters of services gone (and idle) are dropped; the
	// others go on.
	o.inflight.prune(func(k svcKey) bool { return t.services[k] != nil || o.isStatic(k) })
	// 4. The table itself, with its runtime state, in one store.
	o.view.Store(&view{table: t, runs: runs})
	// 5. Connections to endpoints that are gone are closed once idle: now,
	// and again at each later Install and at shutdown (a request in
	// flight keeps its connection until it ends).
	for _, rm := range o.retired {
		rm.CloseIdle()
	}
	for tg, rm := range old {
		if next[tg] == nil {
			rm.CloseIdle()
			o.retired = append(o.retired, rm)
		}
	}
	if len(o.retired) > 256 {
		o.retired = o.retired[len(o.retired)-256:]
	}
	for _, r := range t.rejected {
		o.log.Warn("proxy: endpoint refused: its identity may not serve the service", slog.String("endpoint", r))
	}
}

// isStatic reports whether an upstream port has a static endpoint for k.
func (o *Outbound) isStatic(k svcKey) bool {
	for _, up := range o.upstreams {
		if up.static != nil && up.static.key == k {
			return true
		}
	}
	return false
}

// inflightSet holds a counter of requests in flight per service, for
// MaxRequestsPerService. It outlives the tables (a push that reset the
// counts would lift the cap at every config change); a request finds its
// service's counter without a lock (copy on write).
type inflightSet struct {
	m  atomic.Pointer[map[svcKey]*atomic.Int64]
	mu sync.Mutex // writers
}

// counter returns k's counter, making it on first use.
func (s *inflightSet) counter(k svcKey) *atomic.Int64 {
	if m := s.m.Load(); m != nil {
		if c := (*m)[k]; c != nil {
			return c
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.m.Load()
	if old != nil {
		if c := (*old)[k]; c != nil {
			return c
		}
	}
	next := make(map[svcKey]*atomic.Int64, 1)
	if old != nil {
		next = make(map[svcKey]*atomic.Int64, len(*old)+1)
		maps.Copy(next, *old)
	}
	c := new(atomic.Int64)
	next[k] = c
	s.m.Store(&next)
	return c
}

// prune drops the counters of services not kept that have nothing in
// flight, so the set stays as large as the table. A request in flight
// keeps its counter until it ends.
func (s *inflightSet) prune(keep func(svcKey) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.m.Load()
	if old == nil {
		return
	}
	next := make(map[svcKey]*atomic.Int64, len(*old))
	for k, c := range *old {
		if keep(k) || c.Load() != 0 {
			next[k] = c
		}
	}
	s.m.Store(&next)
}

// remoteFor returns the transports to an endpoint, making them if a
// request picked an endpoint that a concurrent Install just removed.
func (o *Outbound) remoteFor(tg balancer.Target) (*remote, error) {
	if rm := (*o.remotes.Load())[tg]; rm != nil {
		return rm, nil
	}
	if rm := o.static[tg]; rm != nil {
		return rm, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if rm := (*o.remotes.Load())[tg]; rm != nil {
		return rm, nil
	}
	rm, err := newRemote(&o.cfg, tg, o.metrics, o.log, &o.guard)
	if err != nil {
		return nil, err
	}
	o.retired = append(o.retired, rm) // closed at the next Install or at shutdown
	return rm, nil
}

// service returns the service an upstream's port calls: from the table,
// or its static endpoint while the table has no endpoint for it.
func (up *upstream) service(t *Table) *service {
	s := t.lookup(up.Namespace, up.Service)
	if up.static != nil && (s == nil || len(s.targets) == 0) {
		return up.static
	}
	return s
}

// upstreamKey marks a connection of an upstream port (its http.Server's
// ConnContext): which port a request came in on is the connection's.
type upstreamKey struct{}

// ServeHTTP routes one request from the app.
func (o *Outbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.serveHTTP(w, r, nil)
}

// serveHTTP is ServeHTTP for r, or for a request served from its head
// (ServeHead) when fields is not nil: r then has no header map, and the
// head's fields are written by the direct path (outHead.WriteHead) until a
// step needs the map (headerOf: routes that read a header, a try over
// HTTP/2, ReverseProxy). Such a request is declined (false, nothing
// written) when it is not for a service of the mesh: External and Egress
// take the usual way.
func (o *Outbound) serveHTTP(w http.ResponseWriter, r *http.Request, fields []h1.Field) bool {
	v := o.view.Load()
	var t *Table
	if v != nil {
		t = v.table
	}
	var svc *service
	var port uint32
	up, _ := r.Context().Value(upstreamKey{}).(*upstream)
	if up != nil {
		svc, port = up.service(t), up.Port
	} else {
		svc, port = t.lookupHost(r.Host)
	}
	if svc == nil && fields != nil {
		return false
	}
	if svc == nil && up == nil && o.cfg.External != nil {
		if h := o.cfg.External.Route(r.Host); h != nil {
			h.ServeHTTP(w, r)
			return true
		}
	}
	if svc == nil && up == nil && o.egressAllowed(r.Host) {
		o.egressFwd.serve(w, r, nil) // no decision: the Host is the destination
		return true
	}
	if svc == nil && t == nil {
		o.fwd.refuse(w, r, http.StatusServiceUnavailable, "minimesh: no configuration from meshd yet\n",
			fmt.Errorf("%w: no table yet", ErrNoEndpoint))
		return true
	}
	if svc == nil {
		dest := r.Host
		if up != nil {
			dest = up.Service + "." + up.Namespace
		}
		o.fwd.refuse(w, r, http.StatusBadGateway, fmt.Sprintf("minimesh: %q is not a service of the mesh; nothing was sent (traffic leaves the mesh only where configured)\n", dest),
			fmt.Errorf("%w: %q", ErrUnknownService, dest))
		return true
	}
	c := &decision{dst: svc, fields: fields}
	subset := ""
	if svc.routes != nil {
		if r.Header == nil && svc.routes.ReadsHeader() {
			r.Header = headerOf(fields)
		}
		path, err := pathnorm.Normalize(r.URL.EscapedPath())
		if err != nil {
			path = r.URL.Path // no route names a path that does not normalize
		}
		if c.route = svc.routes.Match(route.Request{Method: r.Method, Path: path, Host: r.Host, Header: r.Header}); c.route != nil {
			b := c.route.PickBackend()
			if c.dst = t.lookup(svc.key.ns, b.Service); c.dst == nil {
				o.fwd.refuse(w, r, http.StatusServiceUnavailable, fmt.Sprintf("minimesh: route %s: service %s.%s has no endpoints\n", c.route.Name, b.Service, svc.key.ns),
					fmt.Errorf("%w: %s.%s", ErrNoEndpoint, b.Service, svc.key.ns))
				return true
			}
			subset = b.Subset
			if b.Port != 0 {
				port = b.Port
			}
		}
	}
	if c.port = c.dst.port(port, true); c.port != nil && c.port.proto == meshv1.Protocol_PROTOCOL_TCP {
		o.fwd.refuse(w, r, http.StatusBadGateway, fmt.Sprintf("minimesh: port %d of %s is TCP; call it through an upstream port of its own\n", c.port.port, c.dst.label),
			fmt.Errorf("%w: HTTP request for TCP port %d of %s", ErrInvalidConfig, c.port.port, c.dst.label))
		return true
	}
	run := o.run(v, up, c.dst)
	if c.bal = run.balancerFor(subset); c.bal == nil || c.dst.endpoints(subset) == 0 {
		what := c.dst.label
		if subset != "" {
			what = "subset " + subset + " of " + what
		}
		o.fwd.refuse(w, r, http.StatusServiceUnavailable, fmt.Sprintf("minimesh: %s has no endpoints\n", what),
			fmt.Errorf("%w: %s", ErrNoEndpoint, c.dst.label))
		return true
	}
	inflight := o.inflight.counter(c.dst.key)
	if n := inflight.Add(1); n > int64(o.cfg.MaxRequestsPerService) {
		inflight.Add(-1)
		o.fwd.metrics.overflow()
		o.fwd.refuse(w, r, http.StatusServiceUnavailable, fmt.Sprintf("minimesh: %s has %d requests in flight already\n", c.dst.label, o.cfg.MaxRequestsPerService),
			fmt.Errorf("%w: %s", ErrOverloaded, c.dst.label))
		return true
	}
	defer inflight.Add(-1)
	c.series = run.series
	var proto meshv1.Protocol
	if c.port != nil {
		proto = c.port.proto
	}
	if !o.fwd.admitBody(w, r, proto) {
		return true
	}
	ctx := r.Context()
	if c.route != nil && c.route.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.route.Timeout)
		defer cancel()
	}
	c.ctx = ctx
	if o.directable(r, c) {
		if ctx != r.Context() {
			r = r.WithContext(ctx)
		}
		o.fwd.forward(w, r, c, o.direct)
		return true
	}
	if r.Header == nil {
		r.Header = headerOf(fields)
	}
	o.fwd.serve(w, r.WithContext(context.WithValue(ctx, decisionKey{}, c)), c)
	return true
}

// egressAllowed reports whether Egress lets a request for host leave the
// mesh.
func (o *Outbound) egressAllowed(host string) bool {
	if o.egress == nil {
		return false
	}
	name, port := splitHost(host)
	ports, ok := o.egress[name]
	if !ok {
		return false
	}
	if ports == nil {
		return true
	}
	if port == 0 {
		port = 80
	}
	return slices.Contains(ports, port)
}

// rewrite prepares the request for the remote inbound. The URL's host is
// the service's name: each endpoint's transport dials its own address.
func (o *Outbound) rewrite(pr *httputil.ProxyRequest) {
	rewriteOut(decisionFrom(pr.In.Context()), pr.In, pr.Out)
}

// rewriteOut is rewrite for the request c decided (also the direct
// path's, for a try that overflows to HTTP/2). The direct path's head
// (outHead.WriteHead) is written to match it.
func rewriteOut(c *decision, in, out *http.Request) {
	out.URL.Scheme = "https"
	out.URL.Host = c.dst.label
	keepRawPath(in, out.URL)
	// Bytes a request line cannot carry (an h2c :path may hold a space)
	// are percent-encoded, as towards the app.
	out.URL.RawQuery = applink.CleanQuery(out.URL.RawQuery)
	// The remote inbound sets the mesh headers; nothing the app sends may
	// pose as them.
	applink.StripMeshHeaders(out.Header)
	if c.port != nil {
		out.Header[HeaderTarget] = c.port.header
	}
	ensureRequestID(out.Header)
	// ReverseProxy drops the forwarding headers before Rewrite; the app's
	// own (it may be a gateway) go on as it sent them.
	for _, k := range applink.ForwardingHeaders {
		if v, ok := in.Header[k]; ok {
			out.Header[k] = v
		}
	}
}

// Run serves every local port until ctx is cancelled, then drains
// (Limits.Drain), closes the connections to the remotes and returns nil.
// It closes the listeners.
func (o *Outbound) Run(ctx context.Context) error {
	rctx, stopRecheck := context.WithCancel(ctx)
	var rechecking sync.WaitGroup
	rechecking.Add(1)
	changed := bundleWatch(o.cfg.Bundle, o.trustDomain) // before serving: the baseline
	go func() { defer rechecking.Done(); o.recheckLoop(rctx, time.Second, changed) }()
	defer rechecking.Wait()
	defer stopRecheck()
	type port struct {
		ln net.Listener
		up *upstream // nil: the Host-routed port
	}
	var ports []port
	closeAll := func() {
		for _, p := range ports {
			_ = p.ln.Close()
		}
	}
	for _, up := range o.upstreams {
		ln, err := edge.Listen(up.Listener, up.Listen)
		if err != nil {
			closeAll()
			return fmt.Errorf("proxy: upstream %s: %w", up.Name, err)
		}
		ports = append(ports, port{ln, up})
	}
	if o.cfg.HTTPListener != nil || o.cfg.HTTPAddr != "" {
		ln, err := edge.Listen(o.cfg.HTTPListener, o.cfg.HTTPAddr)
		if err != nil {
			closeAll()
			return fmt.Errorf("proxy: outbound HTTP port: %w", err)
		}
		ports = append(ports, port{ln, nil})
	}
	if len(ports) == 0 {
		<-ctx.Done()
		o.closeRemotes()
		return nil
	}
	// Every local port's HTTP connections go to one server (HTTP/1.1 and
	// h2c, for gRPC apps); the accept loops decide per connection, from
	// the table in force, whether a port is HTTP or a TCP relay.
	conns := newConnQueue(ports[0].ln.Addr())
	o.hostConns.Store(conns)
	srv := newServer(o, o.cfg.Limits, o.log)
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if uc, ok := c.(*upstreamConn); ok {
			return context.WithValue(ctx, upstreamKey{}, uc.up)
		}
		return ctx
	}
	actx, stopAccept := context.WithCancel(ctx)
	// Stop taking connections as soon as shutdown starts; those already
	// taken drain.
	stopListening := context.AfterFunc(actx, closeAll)
	defer stopListening()
	var accepting sync.WaitGroup
	for _, p := range ports {
		if p.up != nil {
			p.up.log.Info("proxy: outbound listening", slog.String("addr", p.ln.Addr().String()),
				slog.String("upstream_service", p.up.Service+"."+p.up.Namespace), slog.Any("port", p.up.Port))
		} else {
			o.log.Info("proxy: outbound HTTP port listening (routes by Host)", slog.String("addr", p.ln.Addr().String()))
		}
		accepting.Add(1)
		go func() {
			defer accepting.Done()
			o.accept(actx, p.ln, p.up, conns)
		}()
	}
	// HTTP/1.1 on dataplane/h1's loop, the h2c preface on srv.
	err := edge.ServeSplitPlain(ctx, srv, conns, o.cfg.Limits.Drain, o.log)
	stopAccept()
	accepting.Wait()
	o.tunnels.drain(o.cfg.Limits.Drain)
	o.fwd.inflight.Wait()
	if o.egressFwd != nil {
		o.egressFwd.closeIdle(o.egressTr)
	}
	o.closeRemotes()
	return err
}

func (o *Outbound) closeRemotes() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rm := range *o.remotes.Load() {
		rm.CloseIdle()
	}
	for _, rm := range o.static {
		rm.CloseIdle()
	}
	for _, rm := range o.retired {
		rm.CloseIdle()
	}
}

// accept takes the connections of one local port: a TCP port's are
// relayed, the others handed to the HTTP server.
func (o *Outbound) accept(ctx context.Context, ln net.Listener, up *upstream, conns *connQueue) {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err == nil && ctx.Err() != nil {
			_ = c.Close()
			return
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off as http.Server does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			o.log.Warn("proxy: accept failed", slog.String("addr", ln.Addr().String()), slog.String("error", err.Error()))
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		if up == nil {
			if !conns.put(ctx, c) {
				return
			}
			continue
		}
		v := o.view.Load()
		var t *Table
		if v != nil {
			t = v.table
		}
		if svc := up.service(t); svc != nil {
			if sp := svc.port(up.Port, false); sp != nil && sp.proto == meshv1.Protocol_PROTOCOL_TCP {
				bal := o.run(v, up, svc).balancerFor("")
				o.tunnels.start(c, func(ctx context.Context) { o.relay(ctx, c, svc, bal, sp) })
				continue
			}
		}
		if !conns.put(ctx, &upstreamConn{Conn: c, up: up}) {
			return
		}
	}
}

// upstreamConn tags a connection with the upstream port it came in on.
type upstreamConn struct {
	net.Conn
	up *upstream
}

// connQueue is the listener the HTTP server serves: connections that the
// accept loops hand over.
type connQueue struct {
	addr  net.Addr
	ch    chan net.Conn
	done  chan struct{}
	close sync.Once
}

var _ net.Listener = (*connQueue)(nil)

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) put(ctx context.Context, c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
	case <-ctx.Done():
	}
	_ = c.Close()
	return false
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.close.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// trustDomain is our own SVID's trust domain, whose bundle verifies remotes.
func (o *Outbound) trustDomain() (spiffeid.TrustDomain, bool) {
	svid, err := o.cfg.SVID.GetX509SVID()
	if err != nil {
		return spiffeid.TrustDomain{}, false
	}
	return svid.ID.TrustDomain(), true
}

var _ HTTPRouter = (*Outbound)(nil)

// PortProtocol implements HTTPRouter from the table in force.
func (o *Outbound) PortProtocol(port uint16) (meshv1.Protocol, bool) {
	t := o.table()
	if t == nil {
		return 0, false
	}
	p, ok := t.ports[uint32(port)]
	return p, ok
}

// ServeConn implements HTTPRouter: c is served as a connection to the
// Host-routed port. False (c closed) when the outbound is not serving.
func (o *Outbound) ServeConn(c net.Conn) bool {
	q := o.hostConns.Load()
	if q == nil {
		_ = c.Close()
		return false
	}
	return q.put(context.Background(), c)
}
