package proxy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/dataplane/edge"
)

// Listener names used as the "listener" label.
const (
	ListenerInbound  = "inbound"
	ListenerPublic   = "public"
	ListenerOutbound = "outbound"
)

// Handshake failure reasons used as the "reason" label (edge.Classify).
const (
	ReasonNoClientCert = edge.ReasonNoClientCert
	ReasonExpired      = edge.ReasonExpired
	ReasonUntrusted    = edge.ReasonUntrusted
	ReasonUnauthorized = edge.ReasonUnauthorized
	ReasonNoSVID       = edge.ReasonNoSVID
	ReasonTimeout      = edge.ReasonTimeout
	ReasonClosed       = edge.ReasonClosed
	ReasonProtocol     = edge.ReasonProtocol
	ReasonRevoked      = edge.ReasonRevoked
	ReasonOther        = edge.ReasonOther
)

var (
	listenerNames   = [...]string{ListenerInbound, ListenerPublic, ListenerOutbound}
	handshakeReason = edge.Reasons
	// "aborted": the response was cut after its status was sent (the app
	// broke off mid-body, the client went away: http.ErrAbortHandler);
	// "other" stays last.
	responseClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx", "aborted", "other"}
)

// codeAborted stands for the status of an aborted response in the
// metrics' observe: it counts in the class "aborted".
const codeAborted = -1

// classIndex is the index in responseClasses of a response's class.
func classIndex(code int) int {
	switch {
	case code == codeAborted:
		return 5
	case code >= 100 && code < 600:
		return code/100 - 1
	}
	return len(responseClasses) - 1
}

// Metrics are the proxy's Prometheus collectors. One Metrics is shared by
// the Inbound, Public and Outbound parts of a proxy; label values are
// precomputed so that recording a request allocates nothing. No raw paths or
// identities appear in labels.
type Metrics struct {
	requests          *prometheus.CounterVec
	duration          *prometheus.HistogramVec
	handshakeFailures *prometheus.CounterVec
	retries           *prometheus.CounterVec
	overflows         *prometheus.CounterVec
	fromHead          *prometheus.CounterVec

	// At the inbound, by source and destination service (policy.go).
	inRequests   *prometheus.CounterVec
	inDuration   *prometheus.HistogramVec
	authz        *prometheus.CounterVec
	rateLimits   *prometheus.CounterVec
	revokedConns *prometheus.CounterVec
	// Request headers removed before the app (sanitize.go).
	headersDropped *prometheus.CounterVec

	// At the outbound, by destination service.
	outRequests *prometheus.CounterVec
	outDuration *prometheus.HistogramVec

	listeners map[string]*listenerMetrics
	// denies keeps the last requests an AuthorizationPolicy denied, for
	// the stats report (stats.go).
	denies *denyRing
}

type listenerMetrics struct {
	classes   [len(responseClasses)]prometheus.Counter
	duration  prometheus.Observer
	failures  map[string]prometheus.Counter
	retries   prometheus.Counter
	overflows prometheus.Counter
	fromHead  prometheus.Counter // servehead.go
}

// durationBuckets are the request duration histograms' buckets, in seconds.
var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewMetrics creates the proxy's collectors and registers them on reg (a
// *prometheus.Registry in practice). A nil reg leaves them unregistered,
// which is what a Config without Metrics gets.
//
//	minimesh_proxy_requests_total{listener,class}  (class 1xx..5xx, aborted, other)
//	minimesh_proxy_request_duration_seconds{listener}
//	minimesh_proxy_handshake_failures_total{listener,reason}
//	minimesh_proxy_retries_total{listener}
//	minimesh_proxy_overflows_total{listener}
//	minimesh_proxy_served_from_head_total{listener}
//	minimesh_proxy_inbound_requests_total{source_service,source_namespace,destination_service,destination_namespace,class}
//	minimesh_proxy_inbound_request_duration_seconds{source_service,source_namespace,destination_service,destination_namespace}
//	minimesh_proxy_authz_decisions_total{decision}
//	minimesh_proxy_ratelimit_decisions_total{decision}
//	minimesh_proxy_connections_closed_total{listener,reason}
//	minimesh_proxy_outbound_requests_total{destination_service,destination_namespace,destination_kind,class}
//	minimesh_proxy_outbound_request_duration_seconds{destination_service,destination_namespace,destination_kind}
//
// destination_service is a service's name alone on both sides ("api"),
// and destination_namespace its namespace ("default"), so that the
// caller's outbound series and the callee's inbound series of one edge
// join on the same labels. At the inbound, source_service and
// source_namespace are the service account and namespace of the caller's
// SPIFFE ID (two callers of one name in two namespaces are two sources),
// and the destination the inbound's own
// service and namespace; at the outbound, the destination is the service
// a request went to (the route's backend when a route chose one). The
// namespace label is not called "namespace": Prometheus gives every
// series of a Kubernetes target the pod's namespace under that name, and
// would rename ours to exported_namespace. Each takes at most
// MaxSourceServices distinct values per proxy (later ones count as
// "other", with an empty namespace). At the outbound, destination_kind
// says what the destination is: "service" for a service of the mesh,
// "external" for an ExternalService (external.go). The two kinds are
// named apart, so a service and an ExternalService of one name and
// namespace are two series, never one sum.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	r := &registrar{reg: reg}
	m := &Metrics{
		requests: r.counterVec(prometheus.CounterOpts{
			Namespace: "minimesh", Subsystem: "proxy", Name: "requests_total",
			Help: "Requests forwarded, by listener and response class.",
		}, []string{"listener", "class"}),
		duration: r.histogramVec(prometheus.HistogramOpts{
			Namespace: "minimesh", Subsystem: "proxy", Name: "request_duration_seconds",
			Help:    "Time from request received to response handler done, by listener.",
			Buckets: durationBuckets,
		}, []string{"listener"}),
		handshakeFailures: r.counterVec(prometheus.CounterOpts{
			Namespace: "minimesh", Subsystem: "proxy", Name: "handshake_failures_total",
			Help: "TLS handshakes that failed, by listener and reason.",
		}, []string{"listener", "reason"}),
		retries: r.counterVec(prometheus.CounterOpts{
			Namespace: "minimesh", Subsystem: "proxy", Name: "retries_total",
			Help: "Requests tried again after a failed try, by listener.",
		}, []string{"listener"}),
		overflows: r.counterVec(prometheus.CounterOpts{
			Namespace: "minimesh", Subsystem: "proxy", Name: "overflows_total",
			Help: "Requests answered 503 at once because their service had its maximum in flight, by listener.",
		}, []string{"listener"}),
		fromHead: r.counterVec(prometheus.CounterOpts{
			Namespace: "minimesh", Subsystem: "proxy", Name: "served_from_head_total",
			Help: "Requests served from their heads, without a header map (the common GET), by listener; also counted in requests_total.",
		}, []string{"listener"}),
		inRequests: r.counterVec(prometheus.CounterOpts{
			Namespace: "minimesh", Subsystem: "proxy", Name: "inbound_requests_total",
			Help: "Requests into the inbound, by source service and namespace (the caller's service account and namespace), destination service and response class.",
		}, []string{"source_service", "source_namespace", "destination_service", "destination_namespace", "class"}),
		inDuration: r.histogramVec(prometheus.HistogramOpts{
			Namespace: "minimesh", Subsystem: "proxy", Name: "inbound_request_duration_seconds",
			Help:    "Time from request received to response handler done at the inbound, by source and destination service.",
			Buckets: durationBuckets,
		}, []string{"source_service", "source_namespace", "destination_service", "destination_namespace"}),
		outRequests: r.counterVec(prometheus.CounterOpts{
			Namespace: "minimesh", Subsystem: "proxy", Name: "outbound_requests_total",
			Help: "Requests the outbound forwarded, by destination (a service of the mesh or an ExternalService: destination_kind) and response class.",
		}, []string{"destination_service", "destination_namespace", "destination_kind", "class"}),
		outDuration: r.histogramVec(prometheus.HistogramOpts{
			Namespace: "minimesh", Subsystem: "proxy", Name: "outbound_request_duration_seconds",
			Help:    "Time from request received to response handler done at the outbound, by destination (destination_kind: service or external).",
			Buckets: durationBuckets,
		}, []string{"destination_service", "destination_namespace", "destination_kind"}),
		authz: r.counterVec(prometheus.CounterOpts{
			Namespace: "minimesh", Subsystem: "proxy", Name: "authz_decisions_total",
			Help: "Authorization decisions at the inbound: allow, deny, dry_run_deny, audit, bad_path.",
		}, []string{"decision"}),
		rateLimits: r.counterVec(prometheus.CounterOpts{
			Namespace: "minimesh", Subsystem: "proxy", Name: "ratelimit_decisions_total",
			Help: "Rate-limit decisions at the inbound: allowed, limited (only requests some RateLimit applied to).",
		}, []string{"decision"}),
		revokedConns: r.counterVec(prometheus.CounterOpts{
			Namespace: "minimesh", Subsystem: "proxy", Name: "connections_closed_total",
			Help: "Connections closed because their peer is no longer admitted: revoked, untrusted (no longer verifies against the bundle), unauthorized (a TCP stream the policy no longer allows).",
		}, []string{"listener", "reason"}),
		headersDropped: newHeadersDropped(r),
		listeners:      make(map[string]*listenerMetrics, len(listenerNames)),
		denies:         &denyRing{},
	}
	for _, l := range listenerNames {
		lm := &listenerMetrics{
			duration:  m.duration.WithLabelValues(l),
			failures:  make(map[string]prometheus.Counter, len(handshakeReason)),
			retries:   m.retries.WithLabelValues(l),
			overflows: m.overflows.WithLabelValues(l),
			fromHead:  m.fromHead.WithLabelValues(l),
		}
		for i, c := range responseClasses {
			lm.classes[i] = m.requests.WithLabelValues(l, c)
		}
		for _, r := range handshakeReason {
			lm.failures[r] = m.handshakeFailures.WithLabelValues(l, r)
		}
		m.listeners[l] = lm
	}
	if r.err != nil {
		return nil, fmt.Errorf("proxy: register metrics: %w", r.err)
	}
	return m, nil
}

// registrar is the package's one way to make metrics: each collector is
// made and registered on reg (none when reg is nil) in one call, and the
// first registration error is kept for the constructor to return.
type registrar struct {
	reg prometheus.Registerer
	err error
}

func (r *registrar) register(c prometheus.Collector) {
	if r.reg == nil || r.err != nil {
		return
	}
	r.err = r.reg.Register(c)
}

func (r *registrar) counterVec(opts prometheus.CounterOpts, labels []string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(opts, labels)
	r.register(c)
	return c
}

func (r *registrar) histogramVec(opts prometheus.HistogramOpts, labels []string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(opts, labels)
	r.register(h)
	return h
}

func (m *Metrics) listener(name string) *listenerMetrics { return m.listeners[name] }

func (lm *listenerMetrics) observe(code int, seconds float64) {
	lm.classes[classIndex(code)].Inc()
	lm.duration.Observe(seconds)
}

func (lm *listenerMetrics) handshakeFailed(reason string) {
	c, ok := lm.failures[reason]
	if !ok {
		c = lm.failures[ReasonOther]
	}
	c.Inc()
}

func (lm *listenerMetrics) retried()  { lm.retries.Inc() }
func (lm *listenerMetrics) overflow() { lm.overflows.Inc() }
