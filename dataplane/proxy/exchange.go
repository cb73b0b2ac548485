package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"minimesh/api"
	"minimesh/api/authz"
	"minimesh/api/pathnorm"
	"minimesh/dataplane/accesslog"
	"minimesh/dataplane/h1"
	"minimesh/dataplane/internal/resphead"
	"minimesh/dataplane/ratelimit"
	"minimesh/dataplane/route"
)

// MaxSourceServices bounds the source_service label values of one proxy's
// inbound metrics, and the destination_service values of its outbound's;
// values beyond it are counted as "other".
const MaxSourceServices = 256

// SetPolicy makes p the policy of the next request, also on connections
// already open: authorization, rate limits and the access log. A nil p
// allows everything and switches the access log off. Connections whose
// peer p revokes are closed, and so are TCP streams that p no longer
// allows.
func (in *Inbound) SetPolicy(p *Policy) {
	in.policy.Store(p)
	var al *api.AccessLog
	if p != nil {
		al = p.accessLog
	}
	if err := in.accessLog.Apply(al); err != nil {
		// CompilePolicy validated it; Apply only fails on what Validate
		// refuses.
		in.log.Warn("proxy: access log not applied", slog.String("error", err.Error()))
	}
	in.enforceOnOpen(p)
}

// seriesSet maps a key (a caller's "namespace/service-account" at the
// inbound, sourceKey; a destination service at the outbound) to its
// request series, at most MaxSourceServices of them.
type seriesSet struct {
	mu     sync.Mutex
	m      map[string]*requestSeries
	series func(value string) *requestSeries // makes a value's series
}

// requestSeries is one label value's request counters by class and its
// duration histogram.
type requestSeries struct {
	classes  [len(responseClasses)]prometheus.Counter
	duration prometheus.Observer
	// ids are the verified SPIFFE IDs counted here (inbound), at most
	// maxSeriesIDs; guarded by the seriesSet's mu. Set once per
	// connection (peer.src), never per request: stats.go reports them.
	ids []string
}

// newSourceSet is the inbound's series, by caller, for its own service
// dest in namespace ns.
func newSourceSet(m *Metrics, dest, ns string) *seriesSet {
	if dest == "" {
		dest = "unknown"
	}
	return &seriesSet{m: map[string]*requestSeries{}, series: func(key string) *requestSeries {
		sa, srcNS := splitSourceKey(key)
		sm := &requestSeries{duration: m.inDuration.WithLabelValues(sa, srcNS, dest, ns)}
		for i, c := range responseClasses {
			sm.classes[i] = m.inRequests.WithLabelValues(sa, srcNS, dest, ns, c)
		}
		return sm
	}}
}

// Values of the outbound series' destination_kind label.
const (
	destService  = "service"  // a service of the mesh
	destExternal = "external" // an ExternalService
)

// newDestinationSet is the outbound's series, by destination of one kind
// (destService or destExternal): "name.namespace", the key, labelled as
// name and namespace apart.
func newDestinationSet(m *Metrics, kind string) *seriesSet {
	return &seriesSet{m: map[string]*requestSeries{}, series: func(dst string) *requestSeries {
		name, ns := splitServiceLabel(dst)
		sm := &requestSeries{duration: m.outDuration.WithLabelValues(name, ns, kind)}
		for i, c := range responseClasses {
			sm.classes[i] = m.outRequests.WithLabelValues(name, ns, kind, c)
		}
		return sm
	}}
}

// splitServiceLabel splits a service's "name.namespace" (two DNS labels)
// into its name and namespace; "other" has no namespace.
func splitServiceLabel(v string) (name, ns string) {
	name, ns, _ = strings.Cut(v, ".")
	return name, ns
}

// get returns the series of the label value v.
func (s *seriesSet) get(v string) *requestSeries {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sm, ok := s.m[v]; ok {
		return sm
	}
	if len(s.m) >= MaxSourceServices {
		v = "other"
		if sm, ok := s.m[v]; ok {
			return sm
		}
	}
	sm := s.series(v)
	s.m[v] = sm
	return sm
}

// getFor is get for a connection of the verified identity id: the series
// also keeps id (stats.go), once per connection.
func (s *seriesSet) getFor(v, id string) *requestSeries {
	sm := s.get(v)
	s.mu.Lock()
	if len(sm.ids) < maxSeriesIDs && !slices.Contains(sm.ids, id) {
		sm.ids = append(sm.ids, id)
	}
	s.mu.Unlock()
	return sm
}

func (sm *requestSeries) observe(code int, seconds float64) {
	sm.classes[classIndex(code)].Inc()
	sm.duration.Observe(seconds)
}

// sourceKey returns "<ns>/<sa>" for a SPIFFE ID path of the form
// /ns/<ns>/sa/<sa>, else "other" (the label space stays closed).
func sourceKey(path string) string {
	rest, ok := strings.CutPrefix(path, "/ns/")
	if !ok {
		return "other"
	}
	ns, sa, ok := strings.Cut(rest, "/sa/")
	if !ok || ns == "" || sa == "" || strings.Contains(ns, "/") || strings.Contains(sa, "/") {
		return "other"
	}
	return ns + "/" + sa
}

// splitSourceKey is sourceKey's service account and namespace apart:
// ("other", "") for "other", and ("", "") for "" (the public port).
func splitSourceKey(key string) (sa, ns string) {
	ns, sa, ok := strings.Cut(key, "/")
	if !ok {
		return key, ""
	}
	return sa, ns
}

// decisionCounters are the authz and rate-limit decision series.
type decisionCounters struct {
	allow, deny, dryRunDeny, audit, badPath prometheus.Counter
	rlAllowed, rlLimited                    prometheus.Counter
	closed                                  map[string]prometheus.Counter
	denies                                  *denyRing // the proxy's one (Metrics), read by stats.go
}

func newDecisionCounters(m *Metrics) *decisionCounters {
	d := &decisionCounters{
		allow: m.authz.WithLabelValues("allow"), deny: m.authz.WithLabelValues("deny"),
		dryRunDeny: m.authz.WithLabelValues("dry_run_deny"), audit: m.authz.WithLabelValues("audit"),
		badPath:   m.authz.WithLabelValues("bad_path"),
		rlAllowed: m.rateLimits.WithLabelValues("allowed"), rlLimited: m.rateLimits.WithLabelValues("limited"),
		closed: map[string]prometheus.Counter{},
		denies: m.denies,
	}
	for _, r := range []string{closeRevoked, closeUntrusted, closeUnauthorized} {
		d.closed[r] = m.revokedConns.WithLabelValues(ListenerInbound, r)
	}
	return d
}

// Reasons of minimesh_proxy_connections_closed_total.
const (
	closeRevoked      = "revoked"
	closeUntrusted    = "untrusted"
	closeUnauthorized = "unauthorized"
)

// inExchange is one request at the inbound as the access log and metrics
// see it: the status and bytes written, the bytes read.
type inExchange struct {
	http.ResponseWriter
	code    int
	written int64
	pe      *peer
	// body counts the request body; not pooled, because the transport
	// may still be reading it after the handler returned.
	body *countingBody
	// d is the request's decision, kept here (pooled) rather than
	// allocated; flags are the access-log response flags of a response
	// that aborts (loggedAbort).
	d     decision
	flags string
}

var inExchangePool = sync.Pool{New: func() any { return new(inExchange) }}

// newExchange wraps w for one request of pe (nil at the public port), and
// r's body to count it; release returns it to the pool.
func newExchange(w http.ResponseWriter, r *http.Request, pe *peer) *inExchange {
	ex := inExchangePool.Get().(*inExchange)
	*ex = inExchange{ResponseWriter: w, pe: pe}
	if r.Body != nil && r.Body != http.NoBody {
		ex.body = &countingBody{ReadCloser: r.Body}
		r.Body = ex.body
	}
	return ex
}

func (e *inExchange) release() {
	*e = inExchange{}
	inExchangePool.Put(e)
}

func (e *inExchange) WriteHeader(code int) {
	if e.code == 0 && code >= 200 {
		e.code = code
		// A retiring connection (its peer no longer verifies): the
		// answer asks to close it, which over HTTP/2 is a graceful GOAWAY
		// (net/http's server sends one for "Connection: close") and over
		// HTTP/1.1 a close once this answer is written.
		if e.pe != nil && e.pe.retiring.Load() {
			e.Header().Set("Connection", "close")
		}
	}
	e.ResponseWriter.WriteHeader(code)
}

// WriteHeaderLines is WriteHeader for an answer whose fields come as
// lines (direct.go's linesWriter: e's writer takes them). A retiring
// connection's answer goes through the header map, to ask to close.
func (e *inExchange) WriteHeaderLines(code int, lines []byte, n int64, hasType, hasDate bool) {
	if e.pe != nil && e.pe.retiring.Load() {
		h := e.Header()
		resphead.AddLines(h, lines)
		h.Set("Content-Length", strconv.FormatInt(n, 10))
		e.WriteHeader(code) // with Connection: close
		return
	}
	if e.code == 0 {
		e.code = code
	}
	e.ResponseWriter.(h1.LinesWriter).WriteHeaderLines(code, lines, n, hasType, hasDate)
}

func (e *inExchange) Write(b []byte) (int, error) {
	if e.code == 0 {
		e.WriteHeader(http.StatusOK)
	}
	n, err := e.ResponseWriter.Write(b)
	e.written += int64(n)
	return n, err
}

// status is the status answered; a handler that wrote nothing answered 200.
func (e *inExchange) status() int {
	if e.code == 0 {
		return http.StatusOK
	}
	return e.code
}

func (e *inExchange) received() int64 {
	if e.body == nil {
		return 0
	}
	return e.body.n.Load()
}

func (e *inExchange) Unwrap() http.ResponseWriter { return e.ResponseWriter }

type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// normalizedPath is the path of r that is matched and forwarded:
// pathnorm's canonical form of the request target as received (the raw
// origin-form path, not Go's decoded URL.Path).
func normalizedPath(r *http.Request) (string, error) {
	raw := r.RequestURI
	if strings.HasPrefix(raw, "/") {
		if i := strings.IndexByte(raw, '?'); i >= 0 {
			raw = raw[:i]
		}
	} else {
		raw = r.URL.EscapedPath()
	}
	return pathnorm.Normalize(raw)
}

// enforcer applies a Policy to requests of one listener: the inbound's
// from peers, the public listener's from clients outside the mesh (with no
// identity: rules naming sources do not match them, and rate limits count
// them all as one source).
type enforcer struct {
	decisions *decisionCounters
	log       *slog.Logger
	san       *sanitizer
}

// admit runs r through the listener's sanitizer (sanitize.go) before
// anything else reads it: false means it was answered 400.
func (e enforcer) admit(w http.ResponseWriter, r *http.Request, fwd *forwarder) bool {
	err := e.san.sanitize(r)
	if err == nil {
		return true
	}
	body := "bad request method\n"
	if errors.Is(err, errHost) {
		body = "bad request host\n"
	}
	fwd.refuse(w, r, http.StatusBadRequest, body, err)
	return false
}

// authorize decides req, counts the decision and logs dry-run denials
// and audited requests.
func (e enforcer) authorize(pol *Policy, req authz.Request) authz.Decision {
	d := pol.Authz().Check(req)
	switch {
	case !d.Allowed:
		e.decisions.deny.Inc()
		e.decisions.denies.record(req, d)
	case d.DryRun:
		e.decisions.dryRunDeny.Inc()
		e.log.LogAttrs(context.Background(), slog.LevelInfo, "proxy: dry-run policy would deny",
			slog.String("peer", req.Peer), slog.String("method", req.Method), slog.String("path", req.Path),
			slog.String("policy", d.DryRunPolicy), slog.Int("rule", d.DryRunRule))
	default:
		e.decisions.allow.Inc()
	}
	if d.Audit {
		e.decisions.audit.Inc()
		e.log.LogAttrs(context.Background(), slog.LevelInfo, "proxy: audited request",
			slog.String("peer", req.Peer), slog.String("method", req.Method), slog.String("path", req.Path),
			slog.String("policy", d.AuditPolicy), slog.Int("rule", d.AuditRule), slog.Bool("allowed", d.Allowed))
	}
	return d
}

// serveHTTP runs an HTTP request from peerID ("" outside the mesh)
// through the policy, then fwd: path normalization (400), authorization
// (403), rate limit (429). It returns the route matched and the normalized
// path, for the access log. proto is the app port's protocol.
func (e enforcer) serveHTTP(w http.ResponseWriter, r *http.Request, pol *Policy, peerID string, fwd *forwarder, d *decision) {
	path, err := normalizedPath(r)
	if err != nil {
		e.decisions.badPath.Inc()
		fwd.refuse(w, r, http.StatusBadRequest, "bad request path\n", err)
		return
	}
	d.path = path
	if ad := e.authorize(pol, authz.Request{Peer: peerID, Method: r.Method, Path: path}); !ad.Allowed {
		fwd.refuse(w, r, http.StatusForbidden, "forbidden by authorization policy\n", ErrForbidden)
		return
	}
	if pol != nil {
		if rt := pol.routes.Match(route.Request{Method: r.Method, Path: path, Host: r.Host, Header: r.Header}); rt != nil {
			d.routeName = rt.Name
		}
		if res := pol.limiter.Allow(d.routeName, peerID); res.Policy != "" {
			if !res.Allowed {
				e.decisions.rlLimited.Inc()
				ratelimit.WriteTooManyRequests(w, res)
				fwd.metrics.observe(http.StatusTooManyRequests, 0)
				return
			}
			e.decisions.rlAllowed.Inc()
			res.SetHeaders(w.Header())
		}
	}
	if !fwd.admitBody(w, r, d.proto) {
		return
	}
	// The app receives the normalized path, the form the policy matched
	// (the common, canonical case leaves the request's own).
	if path != r.URL.EscapedPath() {
		d.app.Path = path
	}
	fwd.serve(w, r, d)
}

// logExchange writes the access-log line and the per-source metrics of a
// finished request.
func (in *Inbound) logExchange(r *http.Request, pe *peer, ex *inExchange, start time.Time) {
	code := ex.status()
	if ex.flags != "" {
		code = codeAborted
	}
	d := in.cfg.Clock.Now().Sub(start)
	pe.src(in.sources).observe(code, d.Seconds())
	logExchange(in.accessLog, r, pe.header[0], ex, start, d)
}

// logExchange writes the access-log line of a finished request from
// peerID ("" for a client outside the mesh) when the log is on.
func logExchange(al *accesslog.Logger, r *http.Request, peerID string, ex *inExchange, start time.Time, d time.Duration) {
	if !al.Enabled() {
		return
	}
	path, routeName, upstream := ex.d.path, ex.d.routeName, ex.d.upstream
	if path == "" {
		path = r.URL.EscapedPath() // refused as is; escaped in the line
	}
	al.Log(&accesslog.Entry{
		Time: start, SourceIdentity: peerID, SourceAddress: r.RemoteAddr, Method: r.Method,
		Authority: r.Host, Path: path, Protocol: r.Proto, Route: routeName, Status: ex.status(),
		BytesReceived: ex.received(), BytesSent: ex.written, Duration: d, Upstream: upstream,
		UserAgent: r.UserAgent(), RequestID: r.Header.Get(HeaderRequestID), ResponseFlags: ex.flags,
	})
}

// loggedAbort, deferred by a listener's handler, logs and counts a
// response that aborts (http.ErrAbortHandler: the app broke off mid-body,
// or the client went away) and passes the panic on, so the client still
// sees the response fail. log is the listener's logExchange.
func loggedAbort(r *http.Request, ex *inExchange, log func(ex *inExchange)) {
	p := recover()
	if p == nil {
		return
	}
	if p == http.ErrAbortHandler {
		ex.flags = abortFlags(r)
		log(ex)
	}
	panic(p)
}

// abortFlags are the access-log response flags of an aborted response,
// as Envoy's: "DC" the client went away, "UC" the app's answer broke off.
func abortFlags(r *http.Request) string {
	if r.Context().Err() != nil {
		return "DC"
	}
	return "UC"
}

// keepRawPath makes out carry the path of in as the client spelled it.
// net/http re-encodes a path holding bytes not allowed raw (non-ASCII,
// say) from its decoded form, which turns "%2F" into "/": another path.
// Here only those bytes are percent-encoded and every escape is kept, so
// the next hop (the remote inbound's policy) sees what the app sent.
func keepRawPath(in *http.Request, out *url.URL) {
	raw := in.RequestURI
	if !strings.HasPrefix(raw, "/") {
		return
	}
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	if raw == out.EscapedPath() {
		return
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c > 0x20 && c < 0x7f && c != '"' && c != '<' && c != '>' && c != '\\' && c != '^' && c != '`' && c != '{' && c != '|' && c != '}' {
			b.WriteByte(c)
			continue
		}
		const hex = "0123456789ABCDEF"
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	enc := b.String()
	if dec, err := url.PathUnescape(enc); err == nil {
		out.Path, out.RawPath = dec, enc
	}
}
