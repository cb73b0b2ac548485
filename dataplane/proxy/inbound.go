package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"minimesh/certs"
	"minimesh/dataplane/accesslog"
	"minimesh/dataplane/applink"
	"minimesh/dataplane/edge"
	"minimesh/dataplane/internal/turn"
	"minimesh/dataplane/meshlink"
	meshv1 "minimesh/proto/mesh/v1"
)

// HeaderPeerID carries the caller's SPIFFE ID from the inbound to the app.
// Only the inbound sets it, from the verified peer certificate; any value a
// client sends is removed first.
const HeaderPeerID = applink.HeaderPeerID

// InboundConfig configures an Inbound.
type InboundConfig struct {
	// Listener, when set, is served as is (and closed by Run); otherwise
	// Run listens on Addr. One of the two is required.
	Listener net.Listener
	Addr     string
	// App is the host:port of the application, e.g. "127.0.0.1:8080".
	App string
	// SVID is read at every handshake, so a rotation (a new SVID in the
	// source) never rebuilds the listener nor cuts live connections, and
	// an expired SVID refuses new handshakes. Required.
	SVID x509svid.Source
	// Bundle verifies peers. Required.
	Bundle x509bundle.Source
	// TrustDomain admits peers of this trust domain only. Zero means the
	// trust domain of our own SVID, read at each handshake.
	TrustDomain spiffeid.TrustDomain
	Limits      Limits
	// Service is this proxy's service: the destination_service label of
	// the inbound's metrics ("unknown" if empty).
	Service string
	// Namespace is this proxy's namespace: the destination_namespace
	// label of the inbound's metrics (default "default").
	Namespace string
	// AccessLog writes the access log that SetPolicy switches on and off;
	// nil: a log to stdout, off until a policy enables it.
	AccessLog *accesslog.Logger
	// RecheckEvery is how often open connections are checked against the
	// trust bundle in force (a root dropped from it closes the
	// connections of peers it alone verified); default 1s.
	RecheckEvery time.Duration
	Logger       *slog.Logger // slog.Default() if nil
	Clock        certs.Clock  // the system clock if nil
	Metrics      *Metrics     // unregistered metrics if nil
}

// Validate reports whether the config can be used.
func (c InboundConfig) Validate() error {
	if c.Listener == nil && c.Addr == "" {
		return fmt.Errorf("%w: inbound: Listener or Addr is required", ErrInvalidConfig)
	}
	if err := validateHostPort("App", c.App); err != nil {
		return fmt.Errorf("%w: inbound: %w", ErrInvalidConfig, err)
	}
	if c.SVID == nil || c.Bundle == nil {
		return fmt.Errorf("%w: inbound: SVID and Bundle sources are required", ErrInvalidConfig)
	}
	return nil
}

// Inbound terminates mTLS from other proxies of the trust domain and
// forwards their requests (HTTP/1.1 or HTTP/2) to the app, telling the app
// who called in the X-Mesh-Peer-Id header.
//
// Other proxies say which app port and protocol a request is for in
// HeaderTarget: the port must be one the Service of this proxy's service
// declares (or the app's own), and the request goes to it on the app's
// host in that protocol: HTTP/1.1, h2c for http2 and grpc, and a byte
// stream for tcp (an HTTP/2 CONNECT stream). Without HeaderTarget it goes
// to App in HTTP/1.1.
type Inbound struct {
	cfg       InboundConfig
	log       *slog.Logger
	metrics   *Metrics
	tlsConfig *tls.Config
	transport *applink.Client // HTTP/1.1 to the app
	h2c       *http.Transport // h2c to the app (http2, grpc)
	fwd       *forwarder
	fwdH2C    *forwarder

	appHost string
	appPort uint32
	ports   atomic.Pointer[inboundPorts]

	policy    atomic.Pointer[Policy]
	accessLog *accesslog.Logger
	sources   *seriesSet
	decisions *decisionCounters
	enf       enforcer
	conns     connSet   // open connections, to close revoked ones
	tunnels   tunnelReg // TCP streams, to close those no longer allowed
}

// inboundPorts is the app's ports from the table in force.
type inboundPorts map[uint32]inboundPort

type inboundPort struct {
	proto meshv1.Protocol
	addr  string // host:port of the app
}

var _ http.Handler = (*Inbound)(nil)

// NewInbound checks cfg and builds an Inbound; Run starts it.
func NewInbound(cfg InboundConfig) (*Inbound, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Limits = cfg.Limits.withDefaults()
	var err error
	if cfg.Logger, cfg.Clock, cfg.Metrics, err = defaults(cfg.Logger, cfg.Clock, cfg.Metrics); err != nil {
		return nil, err
	}
	in := &Inbound{cfg: cfg, log: cfg.Logger.With(slog.String("listener", ListenerInbound)), metrics: cfg.Metrics}

	in.tlsConfig = certs.MTLSServerConfig(edge.OwnSource(cfg.SVID), cfg.Bundle, in.authorizer(),
		certs.TLSOptions{Clock: cfg.Clock})
	in.tlsConfig.MinVersion = tls.VersionTLS13
	in.tlsConfig.NextProtos = []string{"h2", "http/1.1"}

	in.transport = applink.New(cfg.Limits.app())
	in.h2c = applink.Transport(cfg.Limits.app())
	in.h2c.Protocols = new(http.Protocols)
	in.h2c.Protocols.SetUnencryptedHTTP2(true)
	in.h2c.HTTP2 = &http.HTTP2Config{MaxReadFrameSize: 1 << 20}
	// A gRPC server sends its response headers with its first message,
	// which on a stream may wait for the client indefinitely: no
	// response-header timeout here (route timeouts and pings bound it).
	in.h2c.ResponseHeaderTimeout = 0
	host, port, _ := net.SplitHostPort(cfg.App)
	in.appHost = host
	if p, ok := parsePort(port); ok {
		in.appPort = p
	}
	in.SetTable(nil)
	in.accessLog = cfg.AccessLog
	if in.accessLog == nil {
		in.accessLog = accesslog.New(accesslog.Config{Clock: cfg.Clock, Logger: cfg.Logger})
	}
	if in.cfg.RecheckEvery <= 0 {
		in.cfg.RecheckEvery = time.Second
	}
	in.sources = newSourceSet(cfg.Metrics, cfg.Service, cmp.Or(cfg.Namespace, "default"))
	in.decisions = newDecisionCounters(cfg.Metrics)
	in.enf = enforcer{decisions: in.decisions, log: in.log, san: newSanitizer(cfg.Metrics, ListenerInbound)}
	in.fwd = newForwarder(forwarderConfig{name: ListenerInbound, log: in.log, now: cfg.Clock.Now, metrics: in.metrics,
		transport: in.transport, direct: in.transport, maxBody: cfg.Limits.MaxRequestBodyBytes})
	in.fwdH2C = newForwarder(forwarderConfig{name: ListenerInbound, log: in.log, now: cfg.Clock.Now, metrics: in.metrics,
		transport: in.h2c, maxBody: cfg.Limits.MaxRequestBodyBytes})
	return in, nil
}

// SetTable makes the ports of t's Service for this proxy's service the
// ones other proxies may reach, from the next request on. The app's own
// port (App) is always reachable, in HTTP/1.1 unless the Service says
// otherwise. A nil t leaves only the app's port.
func (in *Inbound) SetTable(t *Table) {
	ports := inboundPorts{}
	if in.appPort != 0 {
		ports[in.appPort] = inboundPort{proto: meshv1.Protocol_PROTOCOL_HTTP, addr: in.cfg.App}
	}
	if t != nil {
		for p, proto := range t.own {
			ports[p] = inboundPort{proto: proto, addr: net.JoinHostPort(in.appHost, strconv.FormatUint(uint64(p), 10))}
		}
	}
	in.ports.Store(&ports)
}

// target returns where a request goes: the app's port HeaderTarget names
// (ok false when it names one this proxy does not serve), or App.
func (in *Inbound) target(h http.Header) (inboundPort, bool, error) {
	v := h[HeaderTarget]
	if len(v) == 0 {
		return in.appDefault(), true, nil
	}
	return in.targetOf(v[0])
}

// appDefault is where a request without HeaderTarget goes.
func (in *Inbound) appDefault() inboundPort {
	return inboundPort{proto: meshv1.Protocol_PROTOCOL_HTTP, addr: in.cfg.App}
}

// targetOf is target for the HeaderTarget value v.
func (in *Inbound) targetOf(v string) (inboundPort, bool, error) {
	tg, err := ParseTarget(v)
	if err != nil {
		return inboundPort{}, false, err
	}
	p, ok := (*in.ports.Load())[tg.Port]
	return p, ok, nil
}

// admit refuses a new connection from a peer the policy in force revokes.
func (in *Inbound) admit(c *tls.Conn) error {
	rev := in.policy.Load().Revocations()
	if rev == nil {
		return nil
	}
	certs := c.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return nil // the handshake verified it; cannot happen
	}
	return rev.Refused(id.String(), certs)
}

// trustDomain is the trust domain peers verify in.
func (in *Inbound) trustDomain() (spiffeid.TrustDomain, bool) {
	if td := in.cfg.TrustDomain; !td.IsZero() {
		return td, true
	}
	svid, err := in.cfg.SVID.GetX509SVID()
	if err != nil {
		return spiffeid.TrustDomain{}, false
	}
	return svid.ID.TrustDomain(), true
}

// authorizer admits workloads (not meshd, not the operator) of the
// configured trust domain or, when none is configured, of our own SVID's.
func (in *Inbound) authorizer() func(spiffeid.ID) error {
	if td := in.cfg.TrustDomain; !td.IsZero() {
		return certs.AuthorizeWorkloadOf(td)
	}
	return func(id spiffeid.ID) error {
		svid, err := in.cfg.SVID.GetX509SVID()
		if err != nil {
			return fmt.Errorf("%w: %w", ErrNoSVID, err)
		}
		return certs.AuthorizeWorkloadOf(svid.ID.TrustDomain())(id)
	}
}

// ServeHTTP forwards a request whose connection carried a verified SPIFFE
// ID; anything else is refused with 403. Its method, Host and headers are
// checked and cleaned first (sanitize.go: 400 for a method or Host the app
// could read otherwise). The policy in force decides it then: the path is
// normalized (400 when refused), authorized (403) and rate-limited (429);
// then it is logged and counted.
func (in *Inbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pe, ok := peerFrom(r.Context())
	if !ok {
		in.log.Warn("proxy: request without peer identity refused", slog.String("remote", r.RemoteAddr))
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	start := in.cfg.Clock.Now()
	ex := newExchange(w, r, pe)
	ensureRequestID(r.Header) // once: the app, by either path, and the access log get this one
	pe.begin()
	defer pe.end()
	defer loggedAbort(r, ex, func(ex *inExchange) { in.logExchange(r, pe, ex, start) })
	in.serve(ex, r, pe, &ex.d)
	in.logExchange(r, pe, ex, start)
	ex.release()
}

// serve decides r once, into d (its target, path and route; the peer is
// pe), and forwards it or refuses it.
func (in *Inbound) serve(w http.ResponseWriter, r *http.Request, pe *peer, d *decision) {
	pol := in.policy.Load()
	if err := pol.Revocations().Refused(pe.header[0], pe.chain); err != nil {
		// The connection is being closed (SetPolicy); until then nothing
		// more is served on it.
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		in.fwd.refuse(w, r, http.StatusForbidden, "forbidden: peer revoked\n", err)
		return
	}
	if !in.enf.admit(w, r, in.fwd) {
		return
	}
	p, ok, err := in.target(r.Header)
	switch {
	case err != nil:
		in.fwd.refuse(w, r, http.StatusBadRequest, "bad "+HeaderTarget+"\n", err)
		return
	case !ok:
		in.fwd.refuse(w, r, http.StatusMisdirectedRequest, "port not served here\n",
			fmt.Errorf("proxy: %s %q names a port this service does not declare", HeaderTarget, r.Header.Get(HeaderTarget)))
		return
	case r.Method == http.MethodConnect:
		if p.proto != meshv1.Protocol_PROTOCOL_TCP || r.ProtoMajor != 2 {
			in.fwd.refuse(w, r, http.StatusMisdirectedRequest, "not a TCP port\n",
				fmt.Errorf("proxy: CONNECT over HTTP/%d for %s port %s", r.ProtoMajor, protocolNames[p.proto], p.addr))
			return
		}
		if d := in.enf.authorize(pol, authzTCP(pe)); !d.Allowed {
			in.fwd.refuse(w, r, http.StatusForbidden, "forbidden by authorization policy\n", ErrForbidden)
			return
		}
		d.upstream = p.addr
		in.tunnel(w, r, p.addr, pe)
		return
	case p.proto == meshv1.Protocol_PROTOCOL_TCP:
		in.fwd.refuse(w, r, http.StatusMisdirectedRequest, "TCP port\n",
			fmt.Errorf("proxy: HTTP request for TCP port %s", p.addr))
		return
	}
	fwd := in.fwd
	if (p.proto == meshv1.Protocol_PROTOCOL_HTTP2 || p.proto == meshv1.Protocol_PROTOCOL_GRPC) && r.Header.Get("Upgrade") == "" {
		fwd = in.fwdH2C
	}
	// What the app receives: the port's address, X-Mesh-Peer-Id, and
	// the path the policy matches (enforcer.serveHTTP).
	d.app = applink.Head{Addr: p.addr, Peer: pe.header}
	d.proto, d.peer, d.upstream = p.proto, pe, p.addr
	in.enf.serveHTTP(w, r, pol, pe.header[0], fwd, d)
}

// tunnel relays an HTTP/2 CONNECT stream to a TCP port of the app.
func (in *Inbound) tunnel(w http.ResponseWriter, r *http.Request, addr string, pe *peer) {
	in.fwd.inflight.Add(1)
	defer in.fwd.inflight.Done()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer in.tunnels.add(pe, cancel)()
	r = r.WithContext(ctx)
	start := in.cfg.Clock.Now()
	d := net.Dialer{Timeout: in.cfg.Limits.Dial}
	app, err := d.DialContext(r.Context(), "tcp", addr)
	if err != nil {
		in.fwd.refuse(w, r, http.StatusBadGateway, "app port unreachable\n", fmt.Errorf("proxy: dial app %s: %w", addr, err))
		return
	}
	stop := context.AfterFunc(r.Context(), func() { _ = app.Close() })
	defer stop()
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		_ = app.Close()
		return
	}
	meshlink.Pipe(app, &meshlink.StreamConn{R: r.Body, W: nopWriteCloser{w}, Flush: rc.Flush}, in.cfg.Limits.Idle, nil)
	in.fwd.metrics.observe(http.StatusOK, in.cfg.Clock.Now().Sub(start).Seconds())
}

// nopWriteCloser: an HTTP/2 handler's response ends when it returns, not
// before; a half-close of the app's side is passed on then.
type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// Run serves until ctx is cancelled, then drains (Limits.Drain) and
// returns nil. It closes the listener.
func (in *Inbound) Run(ctx context.Context) error {
	ln, err := edge.Listen(in.cfg.Listener, in.cfg.Addr)
	if err != nil {
		return err
	}
	lim := in.cfg.Limits
	// Its connections are turn.Conns: a remote proxy's pool sends one
	// request at a time, so each answer can go out with the read of the
	// next request (h1's hold).
	tl := edge.NewTLSListener(turn.WrapListener(ln), in.tlsConfig, edge.TLSOptions{Timeout: lim.Handshake, MaxPending: lim.MaxPendingHandshakes,
		OnFail: handshakeFailed(in.log, in.metrics.listener(ListenerInbound), slog.LevelInfo), Admit: in.admit})
	srv := newServer(in, lim, in.log)
	srv.ConnContext = in.withPeer
	srv.ConnState = in.connState
	in.log.Info("proxy: inbound listening", slog.String("addr", ln.Addr().String()), slog.String("app", in.cfg.App))
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	changed := bundleWatch(in.cfg.Bundle, in.trustDomain) // before serving: the baseline
	go func() { defer wg.Done(); in.recheckLoop(rctx, changed) }()
	defer wg.Wait()
	defer stop()
	defer in.fwdH2C.closeIdle(in.h2c)
	defer in.fwd.closeIdle(in.transport)
	return edge.ServeSplit(ctx, srv, edge.Strict(tl), lim.Drain, in.log)
}

// peer is the verified identity of a connection, with the header value
// precomputed once per connection rather than per request.
type peer struct {
	id     spiffeid.ID
	header []string
	chain  []*x509.Certificate // as presented, leaf first
	source string              // "namespace/service-account" (sourceKey), for metric labels
	srcM   atomic.Pointer[requestSeries]
	peerState
}

// src returns the metric series of the peer's service account.
func (p *peer) src(s *seriesSet) *requestSeries {
	if m := p.srcM.Load(); m != nil {
		return m
	}
	m := s.getFor(p.source, p.header[0])
	p.srcM.Store(m)
	return m
}

type peerKey struct{}

// withPeer is the http.Server's ConnContext: the handshake is already done
// (tlsListener), so the peer's SPIFFE ID is read once per connection.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	tc, ok := edge.TLSConnOf(c)
	if !ok {
		return ctx
	}
	st := tc.ConnectionState()
	if !st.HandshakeComplete || len(st.PeerCertificates) == 0 {
		return ctx
	}
	id, err := x509svid.IDFromCert(st.PeerCertificates[0])
	if err != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, &peer{id: id, header: []string{id.String()}, chain: st.PeerCertificates, source: sourceKey(id.Path())})
}

func peerFrom(ctx context.Context) (*peer, bool) {
	p, ok := ctx.Value(peerKey{}).(*peer)
	return p, ok
}

// PeerID returns the verified SPIFFE ID of the caller of a request served
// by an Inbound (from the request's context).
func PeerID(ctx context.Context) (spiffeid.ID, bool) {
	p, ok := peerFrom(ctx)
	if !ok {
		return spiffeid.ID{}, false
	}
	return p.id, true
}

// handshakeFailed counts a failed handshake and logs it: refusals at
// refusalLevel, peers that simply went away or stalled at debug.
func handshakeFailed(log *slog.Logger, lm *listenerMetrics, refusalLevel slog.Level) func(net.Conn, error) {
	return func(c net.Conn, err error) {
		reason := edge.Classify(err)
		lm.handshakeFailed(reason)
		level := refusalLevel
		if reason == ReasonClosed || reason == ReasonTimeout {
			level = slog.LevelDebug
		}
		log.LogAttrs(context.Background(), level, "proxy: handshake refused",
			slog.String("remote", c.RemoteAddr().String()), slog.String("reason", reason),
			slog.String("error", err.Error()))
	}
}

func validateHostPort(field, hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("%s %q: %w", field, hp, err)
	}
	if host == "" || port == "" {
		return fmt.Errorf("%s %q: host and port are required", field, hp)
	}
	return nil
}

func defaults(log *slog.Logger, clock certs.Clock, m *Metrics) (*slog.Logger, certs.Clock, *Metrics, error) {
	if log == nil {
		log = slog.Default()
	}
	if clock == nil {
		clock = certs.SystemClock
	}
	if m == nil {
		var err error
		if m, err = NewMetrics(nil); err != nil {
			return nil, nil, nil, err
		}
	}
	return log, clock, m, nil
}
