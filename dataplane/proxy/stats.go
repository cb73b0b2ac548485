package proxy

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"minimesh/api/authz"
	meshv1 "minimesh/proto/mesh/v1"
)

// Traffic stats for meshd (issue 26). The report is read from the very
// counters /metrics shows: the inbound's per-caller series (requestSeries)
// and the public listener's, so a request costs nothing more than it did.
// Only a deny (already the slow path: a 403 and its counter) writes one
// entry into a ring of MaxReportDenies.

// Bounds of one report.
const (
	// MaxReportEdges caps the edges of one report; the rest are summed
	// into one edge from "other".
	MaxReportEdges = 256
	// MaxReportDenies is the deny ring: the most recent denies of one
	// interval; older ones of the interval are counted as dropped.
	MaxReportDenies = 20
	// maxSeriesIDs caps the verified identities kept per caller series.
	maxSeriesIDs = 4
	// maxDenyMethod and maxDenyPath cut what a caller sent.
	maxDenyMethod = 32
	maxDenyPath   = 256
)

// LatencyBounds are the upper bounds, in seconds, of the latency buckets
// of every report (the request duration histograms' buckets); meshd keeps
// the same ones (controlplane/stats).
func LatencyBounds() []float64 { return append([]float64(nil), durationBuckets...) }

// denyRing is the last MaxReportDenies denies since the last take.
type denyRing struct {
	mu      sync.Mutex
	ev      [MaxReportDenies]denyEvent
	next, n int
	dropped uint64
}

type denyEvent struct {
	at                 time.Time
	peer, method, path string
	policy             string
	rule               int
}

// record keeps one deny: the slices of the caller's strings are cut, not
// copied (they live as long as the entry).
func (r *denyRing) record(req authz.Request, d authz.Decision) {
	if r == nil {
		return
	}
	now := time.Now()
	r.mu.Lock()
	if r.n == MaxReportDenies {
		r.dropped++
	} else {
		r.n++
	}
	r.ev[r.next] = denyEvent{at: now, peer: req.Peer, method: cut(req.Method, maxDenyMethod), path: cut(req.Path, maxDenyPath), policy: d.Policy, rule: d.Rule}
	r.next = (r.next + 1) % MaxReportDenies
	r.mu.Unlock()
}

// take returns the denies kept, oldest first, and empties the ring.
func (r *denyRing) take() ([]*meshv1.DenyEvent, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*meshv1.DenyEvent, 0, r.n)
	for i := range r.n {
		e := r.ev[(r.next-r.n+i+MaxReportDenies)%MaxReportDenies]
		out = append(out, &meshv1.DenyEvent{Time: timestamppb.New(e.at), SourceIdentity: validUTF8(e.peer), Method: validUTF8(e.method),
			Path: validUTF8(e.path), Policy: validUTF8(e.policy), Rule: int32(e.rule)})
	}
	dropped := r.dropped
	r.n, r.dropped = 0, 0
	r.ev = [MaxReportDenies]denyEvent{}
	return out, dropped
}

// cut returns at most n bytes of s.
func cut(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// validUTF8 is s with invalid bytes replaced (protobuf strings must be
// UTF-8; a cut may split a rune).
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// edgeTotals is one edge's counts since the proxy started.
type edgeTotals struct {
	source  string
	ids     []string
	mtls    bool
	classes [len(responseClasses)]uint64
	buckets []uint64 // cumulative, as the histogram keeps them; +Inf last
	sum     float64
}

func (t *edgeTotals) read(classes *[len(responseClasses)]prometheus.Counter, duration prometheus.Observer) {
	var m dto.Metric
	for i, c := range classes {
		m.Reset()
		if c.Write(&m) == nil {
			t.classes[i] = uint64(m.GetCounter().GetValue())
		}
	}
	h, ok := duration.(prometheus.Metric)
	if !ok {
		return
	}
	m.Reset()
	if h.Write(&m) != nil {
		return
	}
	hist := m.GetHistogram()
	t.buckets = make([]uint64, len(durationBuckets)+1)
	for i, b := range hist.GetBucket() {
		if i < len(durationBuckets) {
			t.buckets[i] = b.GetCumulativeCount()
		}
	}
	t.buckets[len(durationBuckets)] = hist.GetSampleCount()
	t.sum = hist.GetSampleSum()
}

// StatsReporter turns the counters of a proxy's inbound and public
// listener into StatsReports: each Report holds what happened since the
// previous one. One goroutine calls Report (the agent's stream).
type StatsReporter struct {
	in      *Inbound
	pub     *Public // nil without a public port
	metrics *Metrics
	last    map[edgeKey]edgeTotals
	lastAt  time.Time
	now     func() time.Time
}

type edgeKey struct {
	source string
	mtls   bool
}

// NewStatsReporter reports the traffic of in and pub (nil: none) from
// their Metrics. The first Report covers the time since this call.
func NewStatsReporter(in *Inbound, pub *Public) *StatsReporter {
	r := &StatsReporter{in: in, pub: pub, metrics: in.metrics, now: time.Now}
	r.last, _ = r.totals()
	r.lastAt = r.now()
	return r
}

// totals reads every edge's counts now.
func (r *StatsReporter) totals() (map[edgeKey]edgeTotals, []edgeKey) {
	out := map[edgeKey]edgeTotals{}
	var order []edgeKey
	s := r.in.sources
	s.mu.Lock()
	type src struct {
		name string
		sm   *requestSeries
		ids  []string
	}
	srcs := make([]src, 0, len(s.m))
	for name, sm := range s.m {
		srcs = append(srcs, src{name, sm, append([]string(nil), sm.ids...)})
	}
	s.mu.Unlock()
	for _, x := range srcs {
		t := edgeTotals{source: x.name, ids: x.ids, mtls: true}
		t.read(&x.sm.classes, x.sm.duration)
		k := edgeKey{x.name, true}
		out[k] = t
		order = append(order, k)
	}
	if r.pub != nil {
		lm := r.metrics.listener(ListenerPublic)
		t := edgeTotals{}
		t.read(&lm.classes, lm.duration)
		k := edgeKey{"", false}
		out[k] = t
		order = append(order, k)
	}
	return out, order
}

// Report returns the deltas since the previous Report, and the denies.
func (r *StatsReporter) Report() *meshv1.StatsReport {
	now := r.now()
	cur, order := r.totals()
	rep := &meshv1.StatsReport{Interval: durationpb.New(now.Sub(r.lastAt)), LatencyBounds: LatencyBounds()}
	var other *meshv1.EdgeStats
	for _, k := range order {
		t := cur[k]
		e := delta(t, r.last[k])
		if e == nil {
			continue
		}
		if len(rep.Edges) == MaxReportEdges-1 && other == nil {
			other = &meshv1.EdgeStats{SourceService: "other", Mtls: true}
			rep.Edges = append(rep.Edges, other)
		}
		if other != nil {
			addEdge(other, e)
			continue
		}
		rep.Edges = append(rep.Edges, e)
	}
	r.last, r.lastAt = cur, now
	rep.Denies, rep.DeniesDropped = r.metrics.denies.take()
	return rep
}

// delta is cur minus prev as an EdgeStats; nil when nothing happened.
func delta(cur, prev edgeTotals) *meshv1.EdgeStats {
	sa, ns := splitSourceKey(cur.source)
	e := &meshv1.EdgeStats{SourceService: validUTF8(sa), SourceNamespace: validUTF8(ns), Mtls: cur.mtls, Classes: make([]uint64, len(cur.classes))}
	var n uint64
	for i := range cur.classes {
		e.Classes[i] = sub(cur.classes[i], prev.classes[i])
		n += e.Classes[i]
	}
	if n == 0 {
		return nil
	}
	for _, id := range cur.ids {
		e.SourceIdentities = append(e.SourceIdentities, validUTF8(id))
	}
	if len(cur.buckets) > 0 {
		e.LatencyBuckets = make([]uint64, len(cur.buckets))
		var below, belowPrev uint64
		for i := range cur.buckets {
			var p uint64
			if i < len(prev.buckets) {
				p = prev.buckets[i]
			}
			// Cumulative to per bucket, then the delta.
			e.LatencyBuckets[i] = sub(sub(cur.buckets[i], below), sub(p, belowPrev))
			below, belowPrev = cur.buckets[i], p
		}
		e.LatencySumSeconds = max(cur.sum-prev.sum, 0)
	}
	return e
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// addEdge adds e's counts into into.
func addEdge(into, e *meshv1.EdgeStats) {
	if len(into.Classes) < len(e.Classes) {
		into.Classes = append(into.Classes, make([]uint64, len(e.Classes)-len(into.Classes))...)
	}
	for i, v := range e.Classes {
		into.Classes[i] += v
	}
	if len(into.LatencyBuckets) < len(e.LatencyBuckets) {
		into.LatencyBuckets = append(into.LatencyBuckets, make([]uint64, len(e.LatencyBuckets)-len(into.LatencyBuckets))...)
	}
	for i, v := range e.LatencyBuckets {
		into.LatencyBuckets[i] += v
	}
	into.LatencySumSeconds += e.LatencySumSeconds
}
