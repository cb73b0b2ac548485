package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"minimesh/certs"
	"minimesh/controlplane/authn"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// MayServe decides whether id may serve service.
type MayServe func(id spiffeid.ID, service string) error

// SameServiceAccount is the default MayServe: an identity serves the service
// named like its service account (the Kubernetes convention), until Service
// resources say otherwise.
func SameServiceAccount(id spiffeid.ID, service string) error {
	_, sa, err := certs.ParseWorkloadID(id)
	if err != nil {
		return err
	}
	if sa != service {
		return fmt.Errorf("%w: %s serves service %q, not %q", ErrNotAllowed, id, sa, service)
	}
	return nil
}

// Config configures the stream server.
type Config struct {
	Store    *store.Store
	MayServe MayServe // default SameServiceAccount
	// Bundle returns the trust bundle's roots (DER) to put in snapshots.
	Bundle func() [][]byte
	// HelloTimeout bounds the wait for the first message. Default 10s.
	HelloTimeout time.Duration
	// Debounce is the quiet time after a change before snapshots are
	// recomputed (default 100ms); MaxDelay bounds the wait under a stream
	// of changes (default 1s).
	Debounce, MaxDelay time.Duration
	// QueryTimeout bounds an operator query to a proxy. Default 10s.
	QueryTimeout time.Duration
	// EndpointGrace is how long a proxy whose stream ended without a Drain
	// (meshd restarted or died, the proxy's network broke) stays an
	// endpoint, unless it reconnects first; a meshd that starts holds the
	// endpoints it last knew as long. Default DefaultEndpointGrace.
	EndpointGrace time.Duration
	// Tick is how often ACK state is flushed to the store in one batch
	// and, on etcd, other replicas' proxy records are looked for (the
	// leader also notices ended streams then). Default 1s. Other
	// replicas' configuration writes are taken at once (Store.Changed).
	Tick time.Duration
	// Stats takes the traffic reports of proxies (controlplane/stats),
	// with the instance, the verified identity and the service its stream
	// registered; it must not block. Nil: meshd does not announce
	// "stats" in Registered, and proxies send none.
	Stats      func(instance string, id spiffeid.ID, service string, r *meshv1.StatsReport)
	Clock      certs.Clock
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// AcceptsStats is the name in Registered.accepts of the StatsReport
// message.
const AcceptsStats = "stats"

// DefaultEndpointGrace is the agent's longest reconnect backoff (30s) plus
// a margin for a reconnect's handshake and a loaded meshd.
const DefaultEndpointGrace = 45 * time.Second

// Server implements meshv1.ConfigServiceServer: registration, snapshots
// with ACK/NACK, and operator queries to proxies.
type Server struct {
	meshv1.UnimplementedConfigServiceServer
	cfg Config

	trigger chan struct{}

	mu       sync.Mutex
	active   map[string]*session // by instance ID
	status   map[string]*instance
	current  map[group]*groupSnapshot
	members  map[string]group
	shutdown bool
	dirty    map[string]bool // instances whose ack state is not in the store yet
	nextID   uint64
	// graceNext is the earliest end of a running endpoint grace (zero:
	// none), for Run's timer.
	graceNext time.Time
	// revision is the store revision the current snapshots were computed
	// at (read before them: they hold every change up to it).
	revision uint64
	// cacheRev is the store cache's revision (store.CacheRevision, etcd:
	// every replica's commits, a proxy registering elsewhere too) when the
	// current snapshots were computed.
	cacheRev int64
	// ended: on the leader, the streams seen ended without a disconnect
	// written (record connected, no presence, no local stream), with when
	// that was first seen (noticeEnded).
	ended map[endedStream]time.Time

	pushes  prometheus.Counter
	acks    *prometheus.CounterVec
	connect prometheus.Gauge
	refused *prometheus.CounterVec
	inGrace prometheus.Gauge
	drains  prometheus.Counter
	// statsDropped: StatsReports on streams not told "stats".
	statsDropped prometheus.Counter
	metrics      *pushMetrics // sync states, push latency (metrics.go)
}

var _ meshv1.ConfigServiceServer = (*Server)(nil)

// instance is meshd's view of one proxy's sync state.
type instance struct {
	acked, nacked, reason string
	ackedSnap             *meshv1.Snapshot
	ackedRoots            []string
	lastMessage           time.Time
	files                 []*meshv1.FileStatus
}

// groupSnapshot is a group's snapshot and its wire form, encoded once.
type groupSnapshot struct {
	snap  *meshv1.Snapshot
	enc   *encoded
	roots []string // pins of the roots in its trust bundle
}

type session struct {
	cancel  context.CancelFunc
	updates chan *groupSnapshot  // latest wins
	queries chan *meshv1.Request // bounded
	replies map[uint64]chan *meshv1.Reply
	sent    string
	// claimed is the version the proxy said, in its Hello, it has in force.
	claimed string
	// serial and spiffeID are the caller's certificate's, checked against
	// revocations and denials at every recompute.
	serial, spiffeID string
	// stats hands a traffic report to Config.Stats (nil: not taken).
	stats func(*meshv1.StatsReport)
	// drained: the proxy said it is leaving (no endpoint grace); ended:
	// meshd ended the stream for a revocation or denial (none either).
	// Guarded by Server.mu.
	drained, ended bool
	// listed: a recompute's view held the session's record. Views only
	// move forward, so a later one without it saw the record forgotten.
	listed bool
}

// New builds the server and marks every stored proxy disconnected: a meshd
// that just started holds no streams. The proxies that were endpoints when
// the last meshd stopped (connected, or in their grace) stay endpoints for
// EndpointGrace from now: they are reconnecting, and a caller that
// reconnects first must not get a snapshot without them.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("push: Config.Store is required")
	}
	if cfg.MayServe == nil {
		cfg.MayServe = SameServiceAccount
	}
	if cfg.Bundle == nil {
		cfg.Bundle = func() [][]byte { return nil }
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = 10 * time.Second
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 100 * time.Millisecond
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = time.Second
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 10 * time.Second
	}
	if cfg.EndpointGrace < 0 {
		return nil, fmt.Errorf("push: Config.EndpointGrace: must not be negative, got %s", cfg.EndpointGrace)
	}
	if cfg.EndpointGrace == 0 {
		cfg.EndpointGrace = DefaultEndpointGrace
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:     cfg,
		trigger: make(chan struct{}, 1),
		active:  map[string]*session{},
		status:  map[string]*instance{},
		current: map[group]*groupSnapshot{},
		members: map[string]group{},
		dirty:   map[string]bool{},
		pushes:  prometheus.NewCounter(prometheus.CounterOpts{Name: "minimesh_meshd_snapshot_pushes_total", Help: "Snapshots sent to proxies."}),
		acks:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "minimesh_meshd_snapshot_replies_total", Help: "ACKs and NACKs received, by kind."}, []string{"kind"}),
		connect: prometheus.NewGauge(prometheus.GaugeOpts{Name: "minimesh_meshd_connected_proxies", Help: "Proxies with an open stream."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "minimesh_meshd_stream_refused_total",
			Help: "Registration streams refused or ended by meshd, by reason."}, []string{"reason"}),
		inGrace: prometheus.NewGauge(prometheus.GaugeOpts{Name: "minimesh_meshd_endpoints_in_grace",
			Help: "Endpoints of proxies without a stream kept for the endpoint grace."}),
		drains: prometheus.NewCounter(prometheus.CounterOpts{Name: "minimesh_meshd_proxy_drains_total", Help: "Proxies that said they were leaving."}),
		statsDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "minimesh_meshd_stats_reports_dropped_total",
			Help: "Traffic stats reports received on a stream this meshd did not announce them to (a proxy that sends them unasked)."}),
		metrics: newPushMetrics(),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.pushes, s.acks, s.connect, s.refused, s.inGrace, s.drains, s.statsDropped)
	}
	s.metrics.register(cfg.Registerer, s)
	now := cfg.Clock.Now()
	held := 0
	// The status table is filled outside the update functions (which may
	// run more than once), and the records are rewritten in transactions
	// of at most MaxWrites (etcd's limit), over the instances listed once.
	var ids []string
	// A proxy with a presence key has a stream on another replica (etcd):
	// its record is that replica's, not one the last meshd left behind.
	present, err := s.presence()
	if err != nil {
		return nil, err
	}
	err = cfg.Store.View(func(r *store.Reader) error {
		recs, err := r.List(store.TableProxies, "id")
		for _, rec := range recs {
			p := rec.(*store.Proxy)
			if present[p.InstanceID] == "" {
				ids = append(ids, p.InstanceID)
			}
			s.status[p.InstanceID] = &instance{acked: p.AckedVersion, nacked: p.NackedVersion, reason: p.NackReason, lastMessage: p.LastSeen}
		}
		return err
	})
	for len(ids) > 0 && err == nil {
		chunk := ids[:min(len(ids), cfg.Store.MaxWrites())]
		ids = ids[len(chunk):]
		n := 0
		err = cfg.Store.Update(func(tx *store.Txn) error {
			n = 0
			for _, id := range chunk {
				rec, err := tx.Get(store.TableProxies, id)
				if err != nil {
					continue // gone since
				}
				p := *rec.(*store.Proxy)
				// An endpoint when the last meshd stopped: connected, or in its
				// grace (an expired grace is cleared while meshd runs, so a
				// GraceUntil still set was running when it stopped).
				if !p.Connected && p.GraceUntil.IsZero() {
					continue
				}
				p.Connected = false
				p.GraceUntil = time.Time{}
				if !p.Revoked {
					p.GraceUntil = now.Add(cfg.EndpointGrace)
					n++
				}
				if err := tx.Put(store.TableProxies, &p); err != nil {
					return err
				}
			}
			return nil
		})
		held += n
	}
	if err != nil {
		return nil, err
	}
	if held > 0 {
		cfg.Logger.Info("holding the endpoints the last meshd knew until their proxies reconnect", "endpoints", held, "grace", cfg.EndpointGrace)
	}
	if err := s.recompute(); err != nil {
		return nil, err
	}
	return s, nil
}

// Trigger asks for the snapshots to be recomputed (debounced).
func (s *Server) Trigger() {
	s.metrics.changed()
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Run recomputes snapshots after changes, debounced, and flushes ACK state
// to the store, until ctx is cancelled.
func (s *Server) Run(ctx context.Context) error {
	flush := time.NewTicker(s.cfg.Tick)
	defer flush.Stop()
	defer s.flush()
	// One timer for the earliest end of an endpoint grace: its expiry is a
	// change like any other (the endpoint leaves every snapshot).
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	arm := func() {
		s.mu.Lock()
		next := s.graceNext
		s.mu.Unlock()
		expiry.Stop()
		if !next.IsZero() {
			// A little past the end, so the recompute sees it expired.
			expiry.Reset(max(next.Sub(s.cfg.Clock.Now()), 0) + 10*time.Millisecond)
		}
	}
	arm()
	for {
		// Another replica's configuration write reaches this one's cache
		// by etcd's watch: taken at once (it waited for the flush tick,
		// so an Apply through one replica reached the proxies of the
		// others up to a second later). Proxy records, which move only
		// the cache's revision, are left to the tick: ACK flushes would
		// otherwise recompute every snapshot many times a second.
		changed := s.cfg.Store.Changed()
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			rev, err := s.cfg.Store.Revision()
			s.mu.Lock()
			behind := err == nil && rev != s.revision
			s.mu.Unlock()
			if !behind {
				continue
			}
		case <-flush.C:
			s.flush()
			s.noticeEnded()
			// Another replica's commits (etcd) reach this one's cache by
			// its watch, not by Trigger: a cache newer than the snapshots
			// is a change like any other.
			// Revision moves only with configuration writes; the cache's
			// revision also with proxy records (a proxy registered on
			// another replica is a new member of a group).
			rev, err := s.cfg.Store.Revision()
			crev := s.cfg.Store.CacheRevision()
			s.mu.Lock()
			behind := err == nil && (rev != s.revision || crev != s.cacheRev)
			s.mu.Unlock()
			if !behind {
				continue
			}
		case <-expiry.C:
		case <-s.trigger:
		}
		// Debounce: wait for Debounce of quiet, at most MaxDelay in all.
		deadline := time.Now().Add(s.cfg.MaxDelay)
		timer := time.NewTimer(s.cfg.Debounce)
	wait:
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil
			case <-s.trigger:
				timer.Stop()
				d := min(s.cfg.Debounce, time.Until(deadline))
				if d <= 0 {
					break wait
				}
				timer.Reset(d)
			case <-timer.C:
				break wait
			}
		}
		if err := s.recompute(); err != nil {
			s.cfg.Logger.Error("could not compute snapshots", "error", err)
		}
		arm()
	}
}

// recompute builds every group's snapshot and pushes it to each connected
// proxy whose snapshot changed; it ends the streams of callers that are
// revoked (their instance or their certificate's serial) or denied.
func (s *Server) recompute() error {
	var c *computed
	now := s.cfg.Clock.Now()
	// Read before the snapshots: they hold every change up to rev.
	rev, err := s.cfg.Store.Revision()
	if err != nil {
		return err
	}
	crev := s.cfg.Store.CacheRevision()
	live := s.liveness()
	err = s.cfg.Store.View(func(r *store.Reader) error {
		var err error
		c, err = snapshots(r, s.cfg.Bundle(), now, live)
		return err
	})
	if err != nil {
		return err
	}
	if len(c.expired) > 0 {
		s.clearExpired(c.expired)
	}
	current := make(map[group]*groupSnapshot, len(c.snaps))
	changed := false
	for g, snap := range c.snaps {
		// Unchanged groups keep their encoding.
		if prev := s.snapshotOf(g); prev != nil && prev.snap.Version == snap.Version {
			current[g] = prev
			continue
		}
		changed = true
		enc, err := encodeSnapshot(snap)
		if err != nil {
			return err
		}
		current[g] = &groupSnapshot{snap: snap, enc: enc, roots: rootPins(snap.GetTrustBundle())}
	}
	s.inGrace.Set(float64(c.inGrace))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current, s.members = current, c.members
	s.revision = rev
	s.cacheRev = crev
	s.graceNext = c.graceNext
	for id, sess := range s.active {
		_, member := c.members[id]
		if member {
			sess.listed = true
		} else if sess.listed {
			// Forgotten through another replica (proxy forget --force):
			// the stream ends as ForgetInstance ends one here, no grace.
			if !sess.drained {
				sess.drained = true
				s.cfg.Logger.Warn("ending a proxy's stream: its record was forgotten through another replica", "instance_id", id, "spiffe_id", sess.spiffeID)
			}
			sess.cancel()
			delete(s.status, id)
			delete(s.dirty, id)
			continue
		}
		var why string
		switch {
		case c.revokedInstances[id]:
			why = "instance revoked"
		case c.revokedSerials[sess.serial]:
			why = "certificate revoked"
		case c.denied[sess.spiffeID]:
			why = "identity denied"
		}
		if why != "" {
			// No more config; the stream ends, and no grace.
			if !sess.ended {
				sess.ended = true
				s.refused.WithLabelValues("revoked_on_stream").Inc()
				s.cfg.Logger.Warn("ending a proxy's stream", "instance_id", id, "serial", sess.serial, "spiffe_id", sess.spiffeID, "reason", why)
			}
			sess.cancel()
			continue
		}
		s.pushLocked(id, sess)
	}
	s.beginRolloutLocked(changed)
	return nil
}

// clearExpired clears the ended graces of these instances' records.
func (s *Server) clearExpired(ids []string) {
	for max := s.cfg.Store.MaxWrites(); len(ids) > max; ids = ids[max:] { // etcd's Txn limit
		s.clearExpired(ids[:max])
	}
	now := s.cfg.Clock.Now()
	err := s.cfg.Store.Update(func(tx *store.Txn) error {
		for _, id := range ids {
			rec, err := tx.Get(store.TableProxies, id)
			if err != nil {
				continue
			}
			p := *rec.(*store.Proxy)
			if p.GraceUntil.IsZero() || now.Before(p.GraceUntil) {
				continue // reconnected, or a new grace since
			}
			p.GraceUntil = time.Time{}
			if err := tx.Put(store.TableProxies, &p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.cfg.Logger.Warn("could not clear ended endpoint graces", "error", err)
		return
	}
	s.cfg.Logger.Info("endpoint grace ended; no longer endpoints", "instances", ids)
}

// rootPins are the pins of DER root certificates.
func rootPins(der [][]byte) []string {
	roots, err := certs.ParseCertsDER(der)
	if err != nil {
		return nil
	}
	out := make([]string, len(roots))
	for i, r := range roots {
		out[i] = certs.SPKIPin(r)
	}
	return out
}

func (s *Server) snapshotOf(g group) *groupSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current[g]
}

// pushLocked queues the instance's current snapshot when it differs from
// what was last sent.
func (s *Server) pushLocked(id string, sess *session) {
	gs := s.current[s.members[id]]
	if gs == nil || gs.snap.Version == sess.sent {
		return
	}
	sess.sent = gs.snap.Version
	if gs.snap.Version == sess.claimed {
		// The proxy already has it in force (it said so in its Hello, as it
		// would in an ACK): record the ACK, do not send it again.
		st := s.state(id)
		st.acked, st.ackedSnap, st.ackedRoots = gs.snap.Version, gs.snap, gs.roots
		if st.nacked == st.acked {
			st.nacked, st.reason = "", ""
		}
		s.dirty[id] = true
		return
	}
	// From now on the proxy has this one, not the one its Hello claimed: a
	// later snapshot equal to the claimed one must be sent, not taken for
	// ACKed.
	sess.claimed = ""
	select {
	case <-sess.updates: // drop a stale pending one: latest wins
	default:
	}
	sess.updates <- gs
}

var (
	instanceIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	serviceRe    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

func validateHello(h *meshv1.Hello) error {
	// Empty: the instance the certificate is bound to.
	if h.GetInstanceId() != "" && !instanceIDRe.MatchString(h.GetInstanceId()) {
		return fmt.Errorf("%w: instance_id: must be 1-63 lowercase letters, digits or '-'", ErrBadHello)
	}
	if !serviceRe.MatchString(h.GetService()) {
		return fmt.Errorf("%w: service: must be a DNS label", ErrBadHello)
	}
	if err := checkAdvertise(h.GetAdvertiseAddress()); err != nil {
		return fmt.Errorf("%w: advertise_address: %v", ErrBadHello, err)
	}
	if len(h.GetProxyVersion()) > 64 {
		return fmt.Errorf("%w: proxy_version: longer than 64 characters", ErrBadHello)
	}
	if sc := h.GetEndpointScope(); sc != nil {
		if n := len(sc.GetServices()); n > maxScope {
			return fmt.Errorf("%w: endpoint_scope.services: %d, at most %d", ErrBadHello, n, maxScope)
		}
		for i, svc := range sc.GetServices() {
			ns, name, ok := strings.Cut(svc, "/")
			if !ok || !serviceRe.MatchString(ns) || !serviceRe.MatchString(name) {
				return fmt.Errorf("%w: endpoint_scope.services[%d]: %q: want namespace/name, two DNS labels", ErrBadHello, i, svc)
			}
		}
	}
	return nil
}

// checkAdvertise checks a Hello's advertised address, which other proxies
// will dial: host:port, the host an IP (neither unspecified nor multicast,
// no zone) or a DNS name, the port 1 to 65535.
func checkAdvertise(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("must be host:port")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q: must be 1 to 65535", port)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() || ip.IsMulticast() || ip.Zone() != "" {
			return fmt.Errorf("%s: an address other proxies can dial (not unspecified, multicast or zoned)", host)
		}
		return nil
	}
	if !dnsNameRe.MatchString(host) || len(host) > 253 {
		return fmt.Errorf("host %q: must be an IP address or a DNS name", host)
	}
	return nil
}

// dnsNameRe is a DNS name of labels of letters, digits and '-'.
var dnsNameRe = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

// loopbackFromPod refuses a loopback advertised address from a proxy that
// Kubernetes attested (its certificate names its pod): other pods dialing
// it would reach themselves.
func loopbackFromPod(caller authn.Caller, addr string) error {
	if caller.Leaf == nil || certs.PodUID(caller.Leaf) == "" {
		return nil
	}
	host, _, _ := net.SplitHostPort(addr)
	if ip, err := netip.ParseAddr(host); (err == nil && ip.IsLoopback()) || strings.EqualFold(host, "localhost") {
		return status.Errorf(codes.PermissionDenied, "advertise_address %s: a loopback address from a pod (other pods would dial themselves): advertise the pod's IP ($(POD_IP))", addr)
	}
	return nil
}

// maxScope bounds the services of a Hello's endpoint scope.
const maxScope = 256

// scopeOf is the endpoint scope a Hello asks for, sorted without
// duplicates; scoped is false when it asks for every endpoint.
func scopeOf(h *meshv1.Hello) (scope []string, scoped bool) {
	sc := h.GetEndpointScope()
	if sc == nil {
		return nil, false
	}
	scope = slices.Clone(sc.GetServices())
	slices.Sort(scope)
	return slices.Compact(scope), true
}

// Stream implements meshv1.ConfigServiceServer.
func (s *Server) Stream(stream meshv1.ConfigService_StreamServer) error {
	caller, ok := authn.CallerFrom(stream.Context())
	if !ok || caller.ID.IsZero() {
		return status.Error(codes.Unauthenticated, "stream needs a valid SVID")
	}
	serial := ""
	if caller.Leaf != nil {
		serial = caller.Leaf.SerialNumber.Text(16)
	}
	hello, err := s.recvHello(stream)
	if err != nil {
		s.refused.WithLabelValues("bad_hello").Inc()
		s.cfg.Logger.Warn("registration refused", "caller", caller.ID.String(), "serial", serial, "peer", caller.Addr, "error", err)
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	sess := &session{
		claimed:  hello.GetAppliedVersion(),
		cancel:   cancel,
		updates:  make(chan *groupSnapshot, 1),
		queries:  make(chan *meshv1.Request, 8),
		replies:  map[uint64]chan *meshv1.Reply{},
		serial:   serial,
		spiffeID: caller.ID.String(),
	}
	// The instance is the one the certificate is bound to; the Hello's
	// field only has to agree.
	id, reason, err := s.register(caller, hello, sess)
	if err != nil {
		if errors.Is(err, store.ErrUnavailable) {
			reason, err = "etcd_unavailable", status.Errorf(codes.Unavailable, "%v; try another meshd replica, or again when etcd is back", err)
		}
		s.refused.WithLabelValues(reason).Inc()
		s.cfg.Logger.Warn("registration refused", "caller", caller.ID.String(), "serial", serial, "claimed_instance_id", hello.GetInstanceId(),
			"bound_instance_id", id, "service", hello.GetService(), "peer", caller.Addr, "reason", reason, "error", err)
		return err
	}
	s.cfg.Logger.Info("proxy registered", "instance_id", id, "spiffe_id", caller.ID.String(), "service", hello.GetService(), "address", hello.GetAdvertiseAddress(), "version", hello.GetProxyVersion())
	defer s.unregister(id, sess)
	s.Trigger() // its endpoint changes every snapshot

	reg := &meshv1.Registered{SpiffeId: caller.ID.String()}
	if s.cfg.Stats != nil {
		reg.Accepts = []string{AcceptsStats}
		service := hello.GetService()
		sess.stats = func(r *meshv1.StatsReport) { s.cfg.Stats(id, caller.ID, service, r) }
	}
	if err := stream.Send(&meshv1.StreamResponse{Message: &meshv1.StreamResponse_Registered{Registered: reg}}); err != nil {
		return err
	}
	recvErr := make(chan error, 1)
	go func() { recvErr <- s.receive(stream, id, sess) }()
	for {
		select {
		case <-ctx.Done():
			if stream.Context().Err() == nil {
				s.mu.Lock()
				ended := sess.ended
				s.mu.Unlock()
				if ended {
					return status.Error(codes.PermissionDenied, "revoked or denied: stream ended by meshd")
				}
				return status.Error(codes.Unavailable, "stream closed by meshd (shutdown, or replaced by a newer stream for the same instance)")
			}
			return nil
		case <-recvErr:
			// The proxy closed the stream or the connection broke.
			return nil
		case gs := <-sess.updates:
			if err := stream.SendMsg(gs.enc); err != nil {
				return err
			}
			s.pushes.Inc()
			s.cfg.Logger.Debug("snapshot sent", "instance_id", id, "version", gs.snap.GetVersion())
		case q := <-sess.queries:
			if err := stream.Send(&meshv1.StreamResponse{Message: &meshv1.StreamResponse_Request{Request: q}}); err != nil {
				return err
			}
		}
	}
}

// receive handles ACK, NACK and replies until the stream breaks.
func (s *Server) receive(stream meshv1.ConfigService_StreamServer, id string, sess *session) error {
	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		if st := msg.GetStats(); st != nil {
			// Not under s.mu: the stats have their own lock. A meshd
			// that did not announce them drops them.
			if sess.stats != nil {
				sess.stats(st)
			} else {
				s.statsDropped.Inc()
			}
			continue
		}
		now := s.cfg.Clock.Now()
		s.mu.Lock()
		st := s.state(id)
		st.lastMessage = now
		switch m := msg.GetMessage().(type) {
		case *meshv1.StreamRequest_Ack:
			s.acks.WithLabelValues("ack").Inc()
			st.acked = m.Ack.GetVersion()
			st.files = m.Ack.GetFiles()
			if gs := s.current[s.members[id]]; gs != nil && gs.snap.Version == st.acked {
				st.ackedSnap = gs.snap
				st.ackedRoots = gs.roots
			}
			if st.nacked == st.acked {
				st.nacked, st.reason = "", ""
			}
			s.dirty[id] = true
			s.rolloutAckedLocked(id, st.acked)
		case *meshv1.StreamRequest_Nack:
			s.acks.WithLabelValues("nack").Inc()
			st.nacked, st.reason = m.Nack.GetVersion(), truncate(m.Nack.GetReason(), 1024)
			s.dirty[id] = true
			s.cfg.Logger.Warn("proxy refused a snapshot", "instance_id", id, "version", st.nacked, "reason", st.reason)
		case *meshv1.StreamRequest_Reply:
			if ch, ok := sess.replies[m.Reply.GetId()]; ok {
				delete(sess.replies, m.Reply.GetId())
				ch <- m.Reply
			}
		case *meshv1.StreamRequest_Drain:
			// The proxy is leaving: it stops being an endpoint now, with
			// no grace, and the stream ends.
			sess.drained = true
			s.mu.Unlock()
			s.drains.Inc()
			s.cfg.Logger.Info("proxy draining", "instance_id", id)
			return errDrained
		}
		s.mu.Unlock()
	}
}

// errDrained ends receive after a Drain.
var errDrained = errors.New("push: the proxy drained")

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (s *Server) state(id string) *instance {
	st, ok := s.status[id]
	if !ok {
		st = &instance{}
		s.status[id] = st
	}
	return st
}

func (s *Server) recvHello(stream meshv1.ConfigService_StreamServer) (*meshv1.Hello, error) {
	type result struct {
		msg *meshv1.StreamRequest
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := stream.Recv()
		ch <- result{m, err}
	}()
	timer := time.NewTimer(s.cfg.HelloTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		h := r.msg.GetHello()
		if h == nil {
			return nil, status.Error(codes.InvalidArgument, "the first message must be a hello")
		}
		if err := validateHello(h); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		return h, nil
	case <-timer.C:
		// Returning ends the stream, which unblocks the Recv goroutine.
		return nil, status.Error(codes.DeadlineExceeded, "no hello received in time")
	}
}

// register binds the stream to the instance of the caller's certificate
// and records it connected. It returns that instance (when known) and, on
// refusal, a reason for the refusal counter.
func (s *Server) register(caller authn.Caller, h *meshv1.Hello, sess *session) (id, reason string, err error) {
	if err := s.cfg.MayServe(caller.ID, h.GetService()); err != nil {
		return "", "not_allowed", status.Error(codes.PermissionDenied, err.Error())
	}
	if err := loopbackFromPod(caller, h.GetAdvertiseAddress()); err != nil {
		return "", "bad_address", err
	}
	now := s.cfg.Clock.Now()
	err = s.cfg.Store.Update(func(tx *store.Txn) error {
		var err error
		id, reason, err = bind(&tx.Reader, caller, h.GetInstanceId())
		if err != nil {
			return err
		}
		if reason, err = checkRevoked(&tx.Reader, caller, id, now); err != nil {
			return err
		}
		p := &store.Proxy{InstanceID: id}
		if rec, err := tx.Get(store.TableProxies, id); err == nil {
			prev := rec.(*store.Proxy)
			if prev.SPIFFEID != caller.ID.String() {
				reason = "conflict"
				return status.Errorf(codes.PermissionDenied, "instance %s is registered to another identity", id)
			}
			cp := *prev
			p = &cp
		}
		p.SPIFFEID = caller.ID.String()
		p.Service = h.GetService()
		p.Address = h.GetAdvertiseAddress()
		p.Version = h.GetProxyVersion()
		p.Scope, p.Scoped = scopeOf(h)
		p.Connected = true
		p.GraceUntil = time.Time{}
		p.ConnectedAt = now
		p.LastSeen = now
		if caller.Leaf != nil && caller.Leaf.NotAfter.After(p.SVIDExpiresAt) {
			p.SVIDExpiresAt = caller.Leaf.NotAfter
		}
		return tx.Put(store.TableProxies, p)
	})
	if err != nil {
		return id, reason, err
	}
	// The stream is on this replica: a key leased to it (etcd), gone with
	// it; the record above is never leased.
	if err := s.cfg.Store.SetPresence(id); err != nil {
		s.cfg.Logger.Warn("could not record the proxy's presence", "instance_id", id, "error", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return id, "shutdown", status.Error(codes.Unavailable, "meshd is shutting down")
	}
	if old, ok := s.active[id]; ok {
		old.cancel()
	}
	s.active[id] = sess
	s.connect.Set(float64(len(s.active)))
	s.state(id).lastMessage = now
	// A (re)connected proxy gets its current snapshot at once, if its group
	// already has one; new groups get theirs on the recompute it triggers.
	s.pushLocked(id, sess)
	return id, "", nil
}

// bind is the instance the caller's certificate is bound to: the one in
// its Subject (serialNumber), or for a certificate issued before instances
// were written there, the one meshd recorded when it issued it. Neither a
// store lookup by the request nor a request field decides it; the Hello's
// instance_id, when set, must agree.
func bind(r *store.Reader, caller authn.Caller, claimed string) (id, reason string, err error) {
	if caller.Leaf == nil {
		return "", "unbound", status.Error(codes.Unauthenticated, "stream needs a client certificate")
	}
	id = certs.InstanceID(caller.Leaf)
	serial := caller.Leaf.SerialNumber.Text(16)
	if id == "" {
		rec, err := r.Get(store.TableCertificates, serial)
		if err == nil {
			id = rec.(*store.Certificate).InstanceID
		} else if !errors.Is(err, store.ErrNotFound) {
			return "", "error", err
		}
		if id == "" {
			return "", "unbound", status.Errorf(codes.PermissionDenied, "certificate %s is bound to no proxy instance (meshd has no record of one); bootstrap again", serial)
		}
	}
	if err := certs.CheckInstanceID(id); err != nil {
		return "", "unbound", status.Errorf(codes.PermissionDenied, "certificate %s: bound instance: %v", serial, err)
	}
	if claimed != "" && claimed != id {
		return id, "instance_mismatch", status.Errorf(codes.InvalidArgument, "%v: instance_id: %q, but the certificate is bound to instance %q", ErrBadHello, claimed, id)
	}
	return id, "", nil
}

// checkRevoked refuses a caller whose identity is denied, whose instance
// is revoked, or whose certificate is: by serial (the revocations table),
// or as one meshd issued to an instance since revoked.
func checkRevoked(r *store.Reader, caller authn.Caller, id string, now time.Time) (reason string, err error) {
	if _, err := r.Get(store.TableDenials, caller.ID.String()); err == nil {
		return "denied", status.Errorf(codes.PermissionDenied, "%s is denied", caller.ID)
	}
	revoked := func(instance string) bool {
		rec, err := r.Get(store.TableProxies, instance)
		return err == nil && rec.(*store.Proxy).Revoked
	}
	if revoked(id) {
		return "revoked", status.Errorf(codes.PermissionDenied, "instance %s is revoked", id)
	}
	serial := caller.Leaf.SerialNumber.Text(16)
	if rec, err := r.Get(store.TableRevocations, serial); err == nil && now.Before(rec.(*store.Revocation).NotAfter) {
		return "revoked", status.Errorf(codes.PermissionDenied, "certificate %s is revoked", serial)
	}
	if rec, err := r.Get(store.TableCertificates, serial); err == nil {
		if c := rec.(*store.Certificate); c.InstanceID != "" && c.InstanceID != id && revoked(c.InstanceID) {
			return "revoked", status.Errorf(codes.PermissionDenied, "certificate %s was issued to revoked instance %s", serial, c.InstanceID)
		}
	}
	return "", nil
}

// Shutdown ends every stream (each marks its proxy disconnected) and
// refuses new ones, so a graceful gRPC stop does not wait on streams that
// would otherwise live forever.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdown = true
	for _, sess := range s.active {
		sess.cancel()
	}
}

func (s *Server) unregister(instanceID string, sess *session) {
	s.mu.Lock()
	mine := false
	if cur, ok := s.active[instanceID]; ok && cur == sess {
		delete(s.active, instanceID)
		s.rolloutGoneLocked(instanceID)
		mine = true
	}
	s.connect.Set(float64(len(s.active)))
	for id, ch := range sess.replies {
		close(ch)
		delete(sess.replies, id)
	}
	// Without a Drain, the proxy may be serving still (meshd is stopping,
	// or the network between them broke): it stays an endpoint for the
	// grace, or until it reconnects.
	grace := !sess.drained && !sess.ended
	s.mu.Unlock()
	if !mine {
		return // a newer stream for this instance took over
	}
	s.flush()
	now := s.cfg.Clock.Now()
	err := s.cfg.Store.Update(func(tx *store.Txn) error {
		rec, err := tx.Get(store.TableProxies, instanceID)
		if err != nil {
			return err
		}
		p := *rec.(*store.Proxy)
		p.Connected = false
		p.LastSeen = now
		p.GraceUntil = time.Time{}
		if grace && !p.Revoked {
			p.GraceUntil = now.Add(s.cfg.EndpointGrace)
		}
		return tx.Put(store.TableProxies, &p)
	})
	if err != nil {
		s.cfg.Logger.Warn("could not record proxy disconnect", "instance_id", instanceID, "error", err)
	}
	if err := s.cfg.Store.ClearPresence(instanceID); err != nil {
		s.cfg.Logger.Warn("could not clear the proxy's presence", "instance_id", instanceID, "error", err)
	}
	if grace {
		s.cfg.Logger.Info("proxy disconnected without draining; still an endpoint for the grace", "instance_id", instanceID, "grace", s.cfg.EndpointGrace)
	} else {
		s.cfg.Logger.Info("proxy disconnected", "instance_id", instanceID)
	}
	s.Trigger()
}

// flush writes the ACK state of changed instances to the store, in one
// transaction (ACKs come in bursts after a change; one fsync serves all).
// ackUpdate is one instance's ACK state to persist.
type ackUpdate struct {
	id                    string
	acked, nacked, reason string
	roots                 []string
	last                  time.Time
}

func (s *Server) flush() {
	s.expireRollouts()
	s.mu.Lock()
	if len(s.dirty) == 0 {
		s.mu.Unlock()
		return
	}
	var ups []ackUpdate
	for id := range s.dirty {
		st := s.status[id]
		ups = append(ups, ackUpdate{id, st.acked, st.nacked, st.reason, st.ackedRoots, st.lastMessage})
	}
	s.dirty = map[string]bool{}
	s.mu.Unlock()
	// In chunks of at most MaxWrites (etcd refuses a Txn of over 128 ops).
	for len(ups) > 0 {
		chunk := ups[:min(len(ups), s.cfg.Store.MaxWrites())]
		ups = ups[len(chunk):]
		s.flushChunk(chunk)
	}
}

func (s *Server) flushChunk(ups []ackUpdate) {
	err := s.cfg.Store.Update(func(tx *store.Txn) error {
		for _, u := range ups {
			rec, err := tx.Get(store.TableProxies, u.id)
			if err != nil {
				continue
			}
			p := *rec.(*store.Proxy)
			p.AckedVersion, p.NackedVersion, p.NackReason = u.acked, u.nacked, u.reason
			if u.roots != nil {
				p.AckedRoots = u.roots
			}
			if u.last.After(p.LastSeen) {
				p.LastSeen = u.last
			}
			if err := tx.Put(store.TableProxies, &p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Written at the next flush instead (etcd unreachable, say): a
		// dropped chunk left the records without an ACK that may never
		// come again, and every other replica said STALE from them.
		s.mu.Lock()
		for _, u := range ups {
			if _, ok := s.status[u.id]; ok {
				s.dirty[u.id] = true
			}
		}
		n := len(s.dirty)
		s.mu.Unlock()
		s.cfg.Logger.Warn("could not persist ACK state; retrying at the next flush", "error", err, "pending", n)
	}
}

// Forget removes the proxies disconnected since before cutoff: they are no
// longer listed, waited for by a root rotation, or endpoints.
func (s *Server) Forget(cutoff time.Time) error {
	var gone []string
	now := s.cfg.Clock.Now()
	// A proxy whose stream is on another replica is as live as one here.
	present, err := s.presence()
	if err != nil {
		return err
	}
	// A singleton: the leader forgets, fenced on its election; at most
	// MaxWrites a pass (the next tick takes the rest).
	err = s.cfg.Store.UpdateAsLeader(func(tx *store.Txn) error {
		gone = nil
		recs, err := tx.List(store.TableProxies, "id")
		if err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, rec := range recs {
			p := rec.(*store.Proxy)
			// A proxy in its endpoint grace is not stale, however old its
			// LastSeen (a stream that lived quietly for days, then a meshd
			// restart): forgetting it would drop the endpoint the grace holds.
			// A revoked instance's revocation is on its record: forgetting
			// it would let the instance bootstrap again.
			if s.connectedLocked(p, present) || p.Revoked || p.LastSeen.After(cutoff) || now.Before(p.GraceUntil) {
				continue
			}
			if len(gone) >= tx.MaxWrites() {
				break
			}
			if err := tx.Delete(store.TableProxies, p.InstanceID); err != nil {
				return err
			}
			gone = append(gone, p.InstanceID)
		}
		return nil
	})
	if err != nil || len(gone) == 0 {
		return err
	}
	s.mu.Lock()
	for _, id := range gone {
		delete(s.status, id)
		delete(s.dirty, id)
	}
	s.mu.Unlock()
	s.cfg.Logger.Info("forgot stale proxies", "instances", gone)
	s.Trigger()
	return nil
}

// Sync returns every stored proxy's sync state, by service and instance.
func (s *Server) Sync() ([]*meshv1.ProxySync, error) {
	var proxies []*store.Proxy
	var newest map[string]*store.Certificate
	err := s.cfg.Store.View(func(r *store.Reader) error {
		var err error
		if newest, err = NewestSVIDs(r); err != nil {
			return err
		}
		recs, err := r.List(store.TableProxies, "id")
		for _, rec := range recs {
			proxies = append(proxies, rec.(*store.Proxy))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	present, err := s.presence()
	if err != nil {
		return nil, err
	}
	sort.Slice(proxies, func(i, j int) bool {
		if proxies[i].Service != proxies[j].Service {
			return proxies[i].Service < proxies[j].Service
		}
		return proxies[i].InstanceID < proxies[j].InstanceID
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*meshv1.ProxySync, 0, len(proxies))
	for _, p := range proxies {
		out = append(out, s.syncLocked(p, newest, present))
	}
	return out, nil
}

// presence is every instance with a stream on some replica (etcd: the
// leased presence keys, gone with a dead replica's lease; bbolt: this
// process's streams).
func (s *Server) presence() (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.QueryTimeout)
	defer cancel()
	present, err := s.cfg.Store.Presence(ctx)
	if err != nil {
		return nil, fmt.Errorf("push: proxy presence: %w", err)
	}
	return present, nil
}

// syncLocked is one proxy's sync state, the same from any replica: a
// proxy whose stream is on this replica is described from memory (its
// newest ACK), any other from its record (ACK state flushed in batches by
// the replica that holds its stream) and connected when it has a presence
// key (one that went with a dead replica's lease says DISCONNECTED).
func (s *Server) syncLocked(p *store.Proxy, newest map[string]*store.Certificate, present map[string]string) *meshv1.ProxySync {
	_, local := s.active[p.InstanceID]
	connected := s.connectedLocked(p, present)
	st := s.state(p.InstanceID)
	if !local {
		st = &instance{acked: p.AckedVersion, nacked: p.NackedVersion, reason: p.NackReason, lastMessage: p.LastSeen}
	}
	ps := &meshv1.ProxySync{
		Proxy:         ProxyProto(p),
		AckedVersion:  st.acked,
		NackedVersion: st.nacked,
		NackReason:    st.reason,
		Files:         st.files,
	}
	if !st.lastMessage.IsZero() {
		ps.LastMessage = timestamppb.New(st.lastMessage)
	}
	gs := s.current[s.members[p.InstanceID]]
	if gs != nil {
		ps.CurrentVersion = gs.snap.Version
		ps.Revision = s.revision
	}
	ps.Proxy.Connected = connected
	trust(ps, p, st, gs, newest)
	switch {
	case p.Revoked:
		ps.State = meshv1.SyncState_SYNC_STATE_REVOKED
	case !connected:
		ps.State = meshv1.SyncState_SYNC_STATE_DISCONNECTED
	case ps.SvidRoot != "" && len(ps.AckedRoots) > 0 && !slices.Contains(ps.AckedRoots, ps.SvidRoot):
		ps.State = meshv1.SyncState_SYNC_STATE_UNTRUSTED
	case len(ps.UntrustedPeers) > 0:
		ps.State = meshv1.SyncState_SYNC_STATE_UNTRUSTED_PEERS
	case ps.CurrentVersion != "" && st.acked == ps.CurrentVersion:
		ps.State = meshv1.SyncState_SYNC_STATE_SYNCED
	case st.nacked != "" && st.nacked == ps.CurrentVersion:
		ps.State = meshv1.SyncState_SYNC_STATE_NACKED
	default:
		ps.State = meshv1.SyncState_SYNC_STATE_STALE
	}
	return ps
}

// Applied returns the snapshot the instance ACKed last (nil when meshd does
// not hold it, e.g. after a restart before the next ACK) and its status.
func (s *Server) Applied(instanceID string) (*meshv1.Snapshot, *meshv1.ProxySync, error) {
	var p *store.Proxy
	var newest map[string]*store.Certificate
	err := s.cfg.Store.View(func(r *store.Reader) error {
		rec, err := r.Get(store.TableProxies, instanceID)
		if err != nil {
			return err
		}
		p = rec.(*store.Proxy)
		newest, err = NewestSVIDs(r)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	present, err := s.presence()
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state(instanceID).ackedSnap, s.syncLocked(p, newest, present), nil
}

// Query sends an operator request to a connected proxy and waits for its
// reply.
func (s *Server) Query(ctx context.Context, instanceID string, req *meshv1.Request) (*meshv1.Reply, error) {
	s.mu.Lock()
	sess, ok := s.active[instanceID]
	if !ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrNotConnected, instanceID)
	}
	s.nextID++
	req.Id = s.nextID
	ch := make(chan *meshv1.Reply, 1)
	sess.replies[req.Id] = ch
	s.mu.Unlock()
	forget := func() {
		s.mu.Lock()
		delete(sess.replies, req.Id)
		s.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	select {
	case sess.queries <- req:
	case <-ctx.Done():
		forget()
		return nil, fmt.Errorf("push: query to %s: %w", instanceID, ctx.Err())
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%w: %s disconnected", ErrNotConnected, instanceID)
		}
		return r, nil
	case <-ctx.Done():
		forget()
		return nil, fmt.Errorf("push: query to %s: %w", instanceID, ctx.Err())
	}
}

// ProxyProto converts a stored proxy record.
func ProxyProto(p *store.Proxy) *meshv1.Proxy {
	out := &meshv1.Proxy{
		InstanceId: p.InstanceID,
		SpiffeId:   p.SPIFFEID,
		Service:    p.Service,
		Address:    p.Address,
		Version:    p.Version,
		Connected:  p.Connected,
		// The scope as registered; its Routes' backends come on top.
		EndpointScoped: p.Scoped,
		EndpointScope:  p.Scope,
		Revoked:        p.Revoked,
	}
	if !p.LastSeen.IsZero() {
		out.LastSeen = timestamppb.New(p.LastSeen)
	}
	if !p.SVIDExpiresAt.IsZero() {
		out.SvidExpiresAt = timestamppb.New(p.SVIDExpiresAt)
	}
	if !p.ConnectedAt.IsZero() {
		out.ConnectedAt = timestamppb.New(p.ConnectedAt)
	}
	return out
}
