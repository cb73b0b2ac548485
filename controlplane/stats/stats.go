// Package stats keeps the traffic the proxies report over their
// registration streams (issue 26) and answers the operator's Stats query,
// across every meshd replica.
//
// Each replica keeps only what its own proxies reported: the last 15
// minutes per edge (caller → service) in 10 s samples, at most MaxEdges
// edges of MaxSamples samples (an edge past the cap is counted in the one
// edge "other"), and the last MaxDenies denies. It has its own lock: the
// push server hands a report over without taking its own.
//
// A Stats query is answered by the replica asked from its own data plus
// every other live replica's (ReplicaService.LocalStats over mTLS with
// meshd's own identity, bounded), and says how many replicas answered.
package stats

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"minimesh/certs"
	meshv1 "minimesh/proto/mesh/v1"
)

// Bounds of what a replica keeps.
const (
	Bucket     = 10 * time.Second
	MaxSamples = 90 // 15 minutes of Bucket
	Retention  = MaxSamples * Bucket
	MaxEdges   = 5000
	MaxDenies  = 1000
	// MaxIdentities caps the identities kept per edge side.
	MaxIdentities = 4
	// DefaultWindow is a query's window when it names none.
	DefaultWindow = time.Minute
	// MaxAnswerBytes bounds a Stats answer (fit), under the 4 MiB of a
	// gRPC message: 5000 edges with four 2 KiB identities a side would
	// not fit, nor would three replicas' distinct edges merged.
	MaxAnswerBytes = 3 << 20
	// MaxStepEdges caps the edges one answer carries steps for: an edge's
	// 90 samples of 22 counts are about 6 KB, and a gRPC message stops at
	// 4 MB. A chart of one edge names its source and needs one or two.
	MaxStepEdges = 64
)

// Other is the source and destination of the edge that counts every edge
// past MaxEdges.
const Other = "other"

// LatencyBounds are the latency buckets' upper bounds (seconds), the
// proxy's request duration buckets (proxy.LatencyBounds; e2e checks they
// agree). A report with other bounds is refused.
var LatencyBounds = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

const (
	nClasses = 7  // 1xx, 2xx, 3xx, 4xx, 5xx, aborted, other
	nBuckets = 15 // len(LatencyBounds)+1
	// MaxReportEdges is the most edges of one report meshd takes (the
	// proxy sends at most 256).
	MaxReportEdges = 256
)

// Config configures a Store.
type Config struct {
	Clock      certs.Clock
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Peers lists the other live replicas to ask (nil: none, bbolt).
	Peers func(ctx context.Context) ([]Peer, error)
	// Ask asks one replica for its own stats (ReplicaService.LocalStats);
	// required with Peers.
	Ask func(ctx context.Context, p Peer, req *meshv1.StatsRequest) (*meshv1.StatsResponse, error)
	// PeerTimeout bounds one fan-out (default 3s).
	PeerTimeout time.Duration
}

// Peer is another replica.
type Peer struct {
	Name string
	// Addr is where it serves gRPC; "" when it announces none.
	Addr string
}

type edgeKey struct {
	src, srcNS, dstNS, dst string
	mtls                   bool
}

type sample struct {
	bucket  int64 // unix time / Bucket
	classes [nClasses]uint64
	lat     [nBuckets]uint64
	sum     float64
}

type edge struct {
	srcIDs, dstIDs []string
	samples        []sample // ring of at most MaxSamples, by bucket % MaxSamples
	newest         int64
}

// Store is one replica's stats.
type Store struct {
	cfg Config

	mu     sync.Mutex
	edges  map[edgeKey]*edge
	denies [MaxDenies]*meshv1.DenyEvent
	next   int
	nDeny  int

	reports *prometheus.CounterVec
}

// New makes an empty Store.
func New(cfg Config) (*Store, error) {
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PeerTimeout <= 0 {
		cfg.PeerTimeout = 3 * time.Second
	}
	if cfg.Peers != nil && cfg.Ask == nil {
		return nil, errors.New("stats: Config.Ask is required with Peers")
	}
	s := &Store{cfg: cfg, edges: map[edgeKey]*edge{},
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "minimesh", Subsystem: "meshd", Name: "stats_reports_total",
			Help: "Traffic stats reports from proxies: accepted, or refused (bad_bounds).",
		}, []string{"result"}),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.reports); err != nil {
			return nil, fmt.Errorf("stats: register metrics: %w", err)
		}
	}
	return s, nil
}

// Record keeps a report from the proxy instance whose stream presented
// the verified identity id and registered service. Nothing in r names
// who sent it: the destination of every edge and deny is the reporter.
func (s *Store) Record(instance string, id spiffeid.ID, service string, r *meshv1.StatsReport) {
	if !slices.Equal(r.GetLatencyBounds(), LatencyBounds) {
		s.reports.WithLabelValues("bad_bounds").Inc()
		s.cfg.Logger.Warn("stats report refused: latency buckets differ from meshd's", "instance_id", instance)
		return
	}
	ns, _, _ := certs.ParseWorkloadID(id)
	now := s.cfg.Clock.Now()
	b := now.UnixNano() / int64(Bucket)
	s.mu.Lock()
	defer s.mu.Unlock()
	edges := r.GetEdges()
	if len(edges) > MaxReportEdges {
		edges = edges[:MaxReportEdges]
	}
	for _, e := range edges {
		k := edgeKey{src: cut(e.GetSourceService(), 253), srcNS: cut(e.GetSourceNamespace(), 63), dstNS: ns, dst: service, mtls: e.GetMtls()}
		ed, named := s.edgeLocked(k, b)
		if named { // past the cap, an edge is counted in "other", not named
			addIDs(&ed.srcIDs, e.GetSourceIdentities())
			addIDs(&ed.dstIDs, []string{id.String()})
		}
		sm := ed.sampleLocked(b)
		for i, v := range e.GetClasses() {
			if i < nClasses {
				sm.classes[i] += v
			}
		}
		for i, v := range e.GetLatencyBuckets() {
			if i < len(sm.lat) {
				sm.lat[i] += v
			}
		}
		sm.sum += e.GetLatencySumSeconds()
	}
	ds := r.GetDenies()
	if len(ds) > 20 {
		ds = ds[len(ds)-20:]
	}
	for _, d := range ds {
		d = proto.CloneOf(d)
		d.DestinationService, d.DestinationNamespace, d.InstanceId = service, ns, instance
		d.Path, d.Method = cut(d.GetPath(), 256), cut(d.GetMethod(), 32)
		d.SourceIdentity, d.Policy = cut(d.GetSourceIdentity(), 2048), cut(d.GetPolicy(), 512)
		s.denies[s.next] = d
		s.next = (s.next + 1) % MaxDenies
		s.nDeny = min(s.nDeny+1, MaxDenies)
	}
	s.reports.WithLabelValues("accepted").Inc()
}

func cut(v string, n int) string {
	if len(v) > n {
		return strings.ToValidUTF8(v[:n], "")
	}
	return v
}

func addIDs(into *[]string, ids []string) {
	for _, id := range ids {
		if len(*into) >= MaxIdentities {
			return
		}
		id = cut(id, 2048)
		if !slices.Contains(*into, id) {
			*into = append(*into, id)
		}
	}
}

// otherKey is the edge past MaxEdges.
var otherKey = edgeKey{src: Other, dstNS: Other, dst: Other}

// edgeLocked returns k's edge, made if there is room, else "other"
// (named false).
func (s *Store) edgeLocked(k edgeKey, b int64) (ed *edge, named bool) {
	if ed, ok := s.edges[k]; ok {
		return ed, k != otherKey
	}
	if len(s.edges) >= MaxEdges {
		s.sweepLocked(b)
	}
	if len(s.edges) >= MaxEdges {
		k = otherKey
		if ed, ok := s.edges[k]; ok {
			return ed, false
		}
		// "other" may take one place past the cap.
	}
	ed = &edge{}
	s.edges[k] = ed
	return ed, k != otherKey
}

// sweepLocked drops the edges with no sample in the retention.
func (s *Store) sweepLocked(b int64) {
	for k, ed := range s.edges {
		if ed.newest <= b-MaxSamples {
			delete(s.edges, k)
		}
	}
}

func (ed *edge) sampleLocked(b int64) *sample {
	ed.newest = max(ed.newest, b)
	i := int(b % MaxSamples)
	if len(ed.samples) < MaxSamples && i >= len(ed.samples) {
		ed.samples = append(ed.samples, make([]sample, i+1-len(ed.samples))...)
	}
	sm := &ed.samples[i]
	if sm.bucket != b {
		*sm = sample{bucket: b}
	}
	return sm
}

// Edges and Denies are how many this replica keeps now (tests, metrics).
func (s *Store) Edges() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.edges)
}

// window checks a query's window.
func window(req *meshv1.StatsRequest) (time.Duration, error) {
	w := DefaultWindow
	if req.GetWindow() != nil {
		if err := req.GetWindow().CheckValid(); err != nil {
			return 0, status.Errorf(codes.InvalidArgument, "window: %v", err)
		}
		w = req.GetWindow().AsDuration()
	}
	if w < Bucket || w > Retention {
		return 0, status.Errorf(codes.InvalidArgument, "window: %s is outside %s to %s (meshd keeps 15 minutes in 10 s samples)", w, Bucket, Retention)
	}
	return w, nil
}

// Local answers req from this replica's data only.
func (s *Store) Local(req *meshv1.StatsRequest) (*meshv1.StatsResponse, error) {
	w, err := window(req)
	if err != nil {
		return nil, err
	}
	if req.GetSteps() && req.GetService() == "" {
		return nil, status.Error(codes.InvalidArgument, "steps: only with service (a chart of one service's edges)")
	}
	now := s.cfg.Clock.Now()
	from := now.Add(-w).UnixNano() / int64(Bucket)
	since := now.Add(-w)
	out := &meshv1.StatsResponse{Window: durationpb.New(w), LatencyBounds: LatencyBounds, ReplicasAsked: 1, ReplicasAnswered: 1, Now: timestamppb.New(now)}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, ed := range s.edges {
		if !wanted(req, k) {
			continue
		}
		e := &meshv1.EdgeStats{SourceService: k.src, SourceNamespace: k.srcNS, DestinationService: k.dst, DestinationNamespace: k.dstNS, Mtls: k.mtls,
			SourceIdentities: slices.Clone(ed.srcIDs), DestinationIdentities: slices.Clone(ed.dstIDs),
			Classes: make([]uint64, nClasses), LatencyBuckets: make([]uint64, len(LatencyBounds)+1)}
		var n uint64
		for _, sm := range ed.samples {
			if sm.bucket < from || sm.bucket == 0 {
				continue
			}
			var sn uint64
			for i, v := range sm.classes {
				e.Classes[i] += v
				sn += v
			}
			n += sn
			for i := range e.LatencyBuckets {
				e.LatencyBuckets[i] += sm.lat[i]
			}
			e.LatencySumSeconds += sm.sum
			if req.GetSteps() && sn > 0 {
				e.Steps = append(e.Steps, &meshv1.EdgeStep{StartUnix: sm.bucket * int64(Bucket/time.Second),
					Classes: slices.Clone(sm.classes[:]), LatencyBuckets: slices.Clone(sm.lat[:]), LatencySumSeconds: sm.sum})
			}
		}
		if n > 0 {
			sortSteps(e.Steps)
			out.Edges = append(out.Edges, e)
		}
	}
	for i := range s.nDeny {
		d := s.denies[(s.next-1-i+MaxDenies)%MaxDenies]
		if d.GetTime().AsTime().Before(since) {
			continue
		}
		if (req.GetService() != "" && d.GetDestinationService() != req.GetService()) || (req.GetNamespace() != "" && d.GetDestinationNamespace() != req.GetNamespace()) ||
			!deniedFrom(req.GetSource(), d) {
			continue
		}
		out.Denies = append(out.Denies, proto.CloneOf(d))
	}
	sortEdges(out.Edges)
	if err := stepsFit(req, out); err != nil {
		return nil, err
	}
	fit(out, MaxAnswerBytes)
	return out, nil
}

// wanted reports whether the edge k is one req asks for.
func wanted(req *meshv1.StatsRequest, k edgeKey) bool {
	if (req.GetService() != "" && k.dst != req.GetService()) || (req.GetNamespace() != "" && k.dstNS != req.GetNamespace()) {
		return false
	}
	src := req.GetSource()
	return src == nil || k.src == src.GetService() && k.srcNS == src.GetNamespace() && k.mtls == src.GetMtls()
}

// deniedFrom reports whether d's caller is src (nil: any): the service
// account and namespace of its verified identity over mTLS, none from
// outside the mesh.
func deniedFrom(src *meshv1.EdgeSource, d *meshv1.DenyEvent) bool {
	if src == nil {
		return true
	}
	if !src.GetMtls() {
		return d.GetSourceIdentity() == "" && src.GetService() == "" && src.GetNamespace() == ""
	}
	id, err := spiffeid.FromString(d.GetSourceIdentity())
	if err != nil {
		return false
	}
	ns, sa, err := certs.ParseWorkloadID(id)
	return err == nil && sa == src.GetService() && ns == src.GetNamespace()
}

// stepsFit refuses an answer that would carry steps for more than
// MaxStepEdges edges: it could outgrow a gRPC message, and no chart
// draws that many. The operator names the source instead.
func stepsFit(req *meshv1.StatsRequest, out *meshv1.StatsResponse) error {
	if !req.GetSteps() || len(out.GetEdges()) <= MaxStepEdges {
		return nil
	}
	return status.Errorf(codes.InvalidArgument, "steps: %d callers of %q had traffic in the window, more than %d edges' samples in one answer: name the caller (source)",
		len(out.GetEdges()), req.GetService(), MaxStepEdges)
}

// sortSteps puts steps oldest first (the ring holds them by bucket modulo
// its size).
func sortSteps(steps []*meshv1.EdgeStep) {
	slices.SortFunc(steps, func(a, b *meshv1.EdgeStep) int { return cmp.Compare(a.GetStartUnix(), b.GetStartUnix()) })
}

// keyOf is e's key among the edges of a Stats answer.
func keyOf(e *meshv1.EdgeStats) edgeKey {
	return edgeKey{e.GetSourceService(), e.GetSourceNamespace(), e.GetDestinationNamespace(), e.GetDestinationService(), e.GetMtls()}
}

func sortEdges(es []*meshv1.EdgeStats) {
	sort.Slice(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.GetDestinationNamespace() != b.GetDestinationNamespace() {
			return a.GetDestinationNamespace() < b.GetDestinationNamespace()
		}
		if a.GetDestinationService() != b.GetDestinationService() {
			return a.GetDestinationService() < b.GetDestinationService()
		}
		if a.GetSourceService() != b.GetSourceService() {
			return a.GetSourceService() < b.GetSourceService()
		}
		if a.GetSourceNamespace() != b.GetSourceNamespace() {
			return a.GetSourceNamespace() < b.GetSourceNamespace()
		}
		return a.GetMtls() && !b.GetMtls()
	})
}

// Stats answers req from this replica and every other live one.
func (s *Store) Stats(ctx context.Context, req *meshv1.StatsRequest) (*meshv1.StatsResponse, error) {
	out, err := s.Local(req)
	if err != nil {
		return nil, err
	}
	if s.cfg.Peers == nil {
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PeerTimeout)
	defer cancel()
	peers, err := s.cfg.Peers(ctx)
	if err != nil {
		out.ReplicaErrors = append(out.ReplicaErrors, fmt.Sprintf("listing the replicas: %v", err))
		return out, nil
	}
	type answer struct {
		p   Peer
		r   *meshv1.StatsResponse
		err error
	}
	ch := make(chan answer, len(peers))
	for _, p := range peers {
		go func() {
			if p.Addr == "" {
				ch <- answer{p, nil, errors.New("it announces no address (an older meshd)")}
				return
			}
			r, err := s.cfg.Ask(ctx, p, req)
			ch <- answer{p, r, err}
		}()
	}
	var all []*meshv1.StatsResponse
	for range peers {
		a := <-ch
		out.ReplicasAsked++
		if a.err != nil {
			out.ReplicaErrors = append(out.ReplicaErrors, fmt.Sprintf("%s (%s): %v", a.p.Name, a.p.Addr, a.err))
			continue
		}
		out.ReplicasAnswered++
		all = append(all, a.r)
	}
	sort.Strings(out.ReplicaErrors)
	merge(out, all)
	if err := stepsFit(req, out); err != nil {
		return nil, err
	}
	fit(out, MaxAnswerBytes)
	return out, nil
}

// fit keeps out within budget bytes. The busiest edges stay as they are;
// the rest are folded into one edge from Other per destination and mTLS
// (without identities, their counts and steps added) while those fit,
// and past that into Other → Other; then the newest denies that fit stay.
// It counts what it folded and left out in out, so that totals stay
// whole and the answer says what it does not name.
func fit(out *meshv1.StatsResponse, budget int) {
	edges, denies := out.Edges, out.Denies
	out.Edges, out.Denies = nil, nil
	used := proto.Size(out)
	// Each element costs its size plus its field's tag and length.
	cost := func(m proto.Message) int { n := proto.Size(m); return n + 1 + protowire.SizeVarint(uint64(n)) }
	all := used
	for _, e := range edges {
		all += cost(e)
	}
	for _, d := range denies {
		all += cost(d)
	}
	if all <= budget {
		out.Edges, out.Denies = edges, denies
		return
	}
	// Room kept for the folded edges: one per destination at most, small.
	reserve := min(budget/8, 256<<10)
	busiest := slices.Clone(edges)
	slices.SortStableFunc(busiest, func(a, b *meshv1.EdgeStats) int { return cmp.Compare(edgeTotal(b), edgeTotal(a)) })
	keep := map[*meshv1.EdgeStats]bool{}
	var rest []*meshv1.EdgeStats
	for _, e := range busiest {
		if n := cost(e); used+n <= budget-reserve {
			keep[e] = true
			used += n
		} else {
			rest = append(rest, e)
		}
	}
	var kept []*meshv1.EdgeStats
	idx := map[edgeKey]*meshv1.EdgeStats{}
	for _, e := range edges {
		if keep[e] {
			kept = append(kept, e)
			idx[keyOf(e)] = e
		}
	}
	// Per destination while the reserve lasts, then Other → Other.
	var folded uint32
	perDest := true
	for _, e := range rest {
		k := edgeKey{src: Other, dstNS: e.GetDestinationNamespace(), dst: e.GetDestinationService(), mtls: e.GetMtls()}
		if !perDest {
			k = edgeKey{src: Other, dstNS: Other, dst: Other, mtls: e.GetMtls()}
		}
		into, ok := idx[k]
		if !ok {
			into = &meshv1.EdgeStats{SourceService: k.src, DestinationNamespace: k.dstNS, DestinationService: k.dst, Mtls: k.mtls,
				Classes: make([]uint64, nClasses), LatencyBuckets: make([]uint64, nBuckets)}
			if n := cost(into) + 256; perDest && used+n > budget-reserve/4 {
				perDest = false
				k = edgeKey{src: Other, dstNS: Other, dst: Other, mtls: e.GetMtls()}
				if into, ok = idx[k]; !ok {
					into = &meshv1.EdgeStats{SourceService: k.src, DestinationNamespace: k.dstNS, DestinationService: k.dst, Mtls: k.mtls,
						Classes: make([]uint64, nClasses), LatencyBuckets: make([]uint64, nBuckets)}
				}
			}
			if !ok {
				idx[k] = into
				kept = append(kept, into)
				used += cost(into) + 256
			}
		}
		addCounts(into.Classes, into.LatencyBuckets, &into.LatencySumSeconds, e.GetClasses(), e.GetLatencyBuckets(), e.GetLatencySumSeconds())
		into.Steps = mergeSteps(into.Steps, e.GetSteps())
		// An edge that is itself a fold (another replica's, merged)
		// brings its count; only an edge folded for the first time is
		// new in out.EdgesFolded.
		if n := e.GetFolded(); n > 0 {
			into.Folded += n
		} else {
			into.Folded++
			folded++
		}
	}
	sortEdges(kept)
	out.Edges = kept
	out.EdgesFolded += folded
	for i, d := range denies {
		n := cost(d)
		if used+n > budget {
			out.DeniesLeftOut += uint32(len(denies) - i)
			break
		}
		out.Denies = append(out.Denies, d)
		used += n
	}
}

func edgeTotal(e *meshv1.EdgeStats) (n uint64) {
	for _, v := range e.GetClasses() {
		n += v
	}
	return n
}

// merge adds the answers of other replicas into out: edges by key, denies
// newest first.
func merge(out *meshv1.StatsResponse, others []*meshv1.StatsResponse) {
	if len(others) == 0 {
		return
	}
	idx := map[edgeKey]*meshv1.EdgeStats{}
	for _, e := range out.Edges {
		idx[keyOf(e)] = e
	}
	for _, o := range others {
		if !slices.Equal(o.GetLatencyBounds(), LatencyBounds) {
			continue
		}
		for _, e := range o.GetEdges() {
			k := keyOf(e)
			into, ok := idx[k]
			if !ok {
				into = &meshv1.EdgeStats{SourceService: k.src, SourceNamespace: k.srcNS, DestinationNamespace: k.dstNS, DestinationService: k.dst, Mtls: k.mtls,
					Classes: make([]uint64, nClasses), LatencyBuckets: make([]uint64, len(LatencyBounds)+1)}
				idx[k] = into
				out.Edges = append(out.Edges, into)
			}
			addIDs(&into.SourceIdentities, e.GetSourceIdentities())
			addIDs(&into.DestinationIdentities, e.GetDestinationIdentities())
			addCounts(into.Classes, into.LatencyBuckets, &into.LatencySumSeconds, e.GetClasses(), e.GetLatencyBuckets(), e.GetLatencySumSeconds())
			into.Steps = mergeSteps(into.Steps, e.GetSteps())
			into.Folded += e.GetFolded()
		}
		out.Denies = append(out.Denies, o.GetDenies()...)
		out.EdgesFolded += o.GetEdgesFolded()
		out.DeniesLeftOut += o.GetDeniesLeftOut()
	}
	sortEdges(out.Edges)
	sort.SliceStable(out.Denies, func(i, j int) bool { return out.Denies[i].GetTime().AsTime().After(out.Denies[j].GetTime().AsTime()) })
	if len(out.Denies) > MaxDenies {
		out.Denies = out.Denies[:MaxDenies]
	}
}

// mergeSteps adds another replica's steps of an edge into into's, sample
// by sample (both oldest first; every replica's samples start at the same
// multiples of Bucket).
func mergeSteps(into, other []*meshv1.EdgeStep) []*meshv1.EdgeStep {
	if len(other) == 0 {
		return into
	}
	at := make(map[int64]*meshv1.EdgeStep, len(into))
	for _, st := range into {
		at[st.GetStartUnix()] = st
	}
	for _, o := range other {
		st, ok := at[o.GetStartUnix()]
		if !ok {
			st = &meshv1.EdgeStep{StartUnix: o.GetStartUnix(), Classes: make([]uint64, nClasses), LatencyBuckets: make([]uint64, nBuckets)}
			at[st.StartUnix] = st
			into = append(into, st)
		}
		addCounts(st.Classes, st.LatencyBuckets, &st.LatencySumSeconds, o.GetClasses(), o.GetLatencyBuckets(), o.GetLatencySumSeconds())
	}
	sortSteps(into)
	return into
}

// addCounts adds another replica's classes, latency buckets and latency
// sum into an edge's or a step's (what does not fit theirs is dropped: a
// replica of another build).
func addCounts(classes, lat []uint64, sum *float64, oClasses, oLat []uint64, oSum float64) {
	for i, v := range oClasses {
		if i < len(classes) {
			classes[i] += v
		}
	}
	for i, v := range oLat {
		if i < len(lat) {
			lat[i] += v
		}
	}
	*sum += oSum
}
