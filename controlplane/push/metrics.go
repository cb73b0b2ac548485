package push

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// Metrics an on-call engineer reads (issue 26):
//
//	minimesh_meshd_proxies{state}                  gauge: this replica's streams by sync state
//	minimesh_meshd_push_latency_seconds            histogram: a change → the last ACK of it
//	minimesh_meshd_push_rollouts_total{outcome}    counter: acked, incomplete, superseded
//
// The sync states are those of `meshctl proxy-status` (syncLocked), for
// the proxies whose stream this replica holds: summed over the replicas,
// every connected proxy once. A disconnected or revoked proxy has no
// stream, so no replica counts it here (minimesh_meshd_connected_proxies
// and `meshctl proxies` show those).
//
// A rollout is one recompute that changed some group's snapshot: it starts
// at the first Trigger since the previous recompute (an Apply, a proxy
// joining or leaving, a CA step; else the recompute itself) and waits for
// every proxy connected then whose snapshot changed. An ACK of that
// version, or of a later one (which holds the change too), takes a proxy
// off; so does its stream ending. When none is left, the time since the
// start is observed. A rollout still waiting after MaxRolloutWait (a
// proxy NACKed it, or never answered) ends as "incomplete", and past
// maxRollouts pending the oldest as "superseded": memory stays bounded.

// MaxRolloutWait is how long a rollout waits for its last ACK.
const MaxRolloutWait = 5 * time.Minute

// maxRollouts bounds the rollouts waiting at once.
const maxRollouts = 64

// syncStates are the states minimesh_meshd_proxies reports, each always
// present (0 when none), lower case without the enum's prefix.
var syncStates = []meshv1.SyncState{
	meshv1.SyncState_SYNC_STATE_SYNCED, meshv1.SyncState_SYNC_STATE_STALE, meshv1.SyncState_SYNC_STATE_NACKED,
	meshv1.SyncState_SYNC_STATE_UNTRUSTED, meshv1.SyncState_SYNC_STATE_UNTRUSTED_PEERS,
}

// stateLabel is a state's label value: "synced", "untrusted_peers".
func stateLabel(st meshv1.SyncState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "SYNC_STATE_"))
}

type rollout struct {
	start   time.Time
	waiting map[string]string // instance → the version it must ACK (or a later one)
}

// pushMetrics are the collectors above and the rollouts they time;
// rollouts is guarded by Server.mu.
type pushMetrics struct {
	changedAt atomic.Int64 // UnixNano of the first Trigger since the last recompute; 0: none
	rollouts  []*rollout
	latency   prometheus.Histogram
	outcomes  *prometheus.CounterVec
	proxies   *prometheus.Desc
}

func newPushMetrics() *pushMetrics {
	m := &pushMetrics{
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "minimesh_meshd_push_latency_seconds",
			Help: "Time from a configuration change (an Apply, a proxy joining or leaving, a CA step) to the ACK of the last connected proxy whose snapshot it changed.",
			// From a debounced recompute (100 ms) on a quiet mesh to
			// thousands of proxies on a loaded one.
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimesh_meshd_push_rollouts_total",
			Help: "Configuration changes pushed, by outcome: acked (every proxy ACKed it), incomplete (some proxy had not after 5 minutes: NACKed or silent), superseded (dropped unfinished past 64 waiting).",
		}, []string{"outcome"}),
		proxies: prometheus.NewDesc("minimesh_meshd_proxies",
			"Proxies whose registration stream this replica holds, by sync state (as meshctl proxy-status says it); summed over the replicas, every connected proxy once.",
			[]string{"state"}, nil),
	}
	for _, o := range []string{"acked", "incomplete", "superseded"} {
		m.outcomes.WithLabelValues(o)
	}
	return m
}

// register registers the collectors on reg, the sync states read from s
// at every scrape.
func (m *pushMetrics) register(reg prometheus.Registerer, s *Server) {
	if reg == nil {
		return
	}
	reg.MustRegister(m.latency, m.outcomes, syncCollector{s})
}

// changed notes the time of a change (the first since the last recompute).
func (m *pushMetrics) changed() {
	m.changedAt.CompareAndSwap(0, time.Now().UnixNano())
}

// beginLocked starts a rollout after a recompute that changed some
// snapshot: the connected proxies not yet on their group's new version.
func (s *Server) beginRolloutLocked(changed bool) {
	m := s.metrics
	start := time.Now()
	if at := m.changedAt.Swap(0); at != 0 {
		start = time.Unix(0, at)
	}
	if !changed {
		return
	}
	r := &rollout{start: start, waiting: map[string]string{}}
	for id, sess := range s.active {
		gs := s.current[s.members[id]]
		if gs == nil || sess.ended {
			continue
		}
		if st := s.status[id]; st != nil && st.acked == gs.snap.Version {
			continue // already has it (its Hello claimed it)
		}
		r.waiting[id] = gs.snap.Version
	}
	if len(r.waiting) == 0 {
		return // no proxy had to take it: nothing was pushed
	}
	if len(m.rollouts) >= maxRollouts {
		m.outcomes.WithLabelValues("superseded").Inc()
		m.rollouts = m.rollouts[1:]
	}
	m.rollouts = append(m.rollouts, r)
}

// ackedLocked takes instance id, which ACKed version, off the rollouts it
// settles: the version they wait for, or the group's current one.
func (s *Server) rolloutAckedLocked(id, version string) {
	current := ""
	if gs := s.current[s.members[id]]; gs != nil {
		current = gs.snap.Version
	}
	s.settleLocked(id, func(want string) bool { return version == want || version == current })
}

// rolloutGoneLocked takes instance id off every rollout: its stream ended.
func (s *Server) rolloutGoneLocked(id string) {
	s.settleLocked(id, func(string) bool { return true })
}

func (s *Server) settleLocked(id string, done func(want string) bool) {
	m := s.metrics
	kept := m.rollouts[:0]
	for _, r := range m.rollouts {
		if want, ok := r.waiting[id]; ok && done(want) {
			delete(r.waiting, id)
		}
		if len(r.waiting) == 0 {
			m.latency.Observe(time.Since(r.start).Seconds())
			m.outcomes.WithLabelValues("acked").Inc()
			continue
		}
		kept = append(kept, r)
	}
	clear(m.rollouts[len(kept):])
	m.rollouts = kept
}

// expireRollouts ends the rollouts waiting longer than MaxRolloutWait.
func (s *Server) expireRollouts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.metrics
	kept := m.rollouts[:0]
	for _, r := range m.rollouts {
		if time.Since(r.start) > MaxRolloutWait {
			m.outcomes.WithLabelValues("incomplete").Inc()
			continue
		}
		kept = append(kept, r)
	}
	clear(m.rollouts[len(kept):])
	m.rollouts = kept
}

// syncCollector reports minimesh_meshd_proxies at scrape time, from this
// replica's streams and the store's cache (no network call).
type syncCollector struct{ s *Server }

func (c syncCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.s.metrics.proxies }

func (c syncCollector) Collect(ch chan<- prometheus.Metric) {
	counts, err := c.s.localSyncStates()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.s.metrics.proxies, err)
		return
	}
	for _, st := range syncStates {
		ch <- prometheus.MustNewConstMetric(c.s.metrics.proxies, prometheus.GaugeValue, float64(counts[st]), stateLabel(st))
	}
}

// localSyncStates counts the sync states of the proxies whose stream this
// replica holds.
func (s *Server) localSyncStates() (map[meshv1.SyncState]int, error) {
	s.mu.Lock()
	ids := make([]string, 0, len(s.active))
	for id := range s.active {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	var recs []*store.Proxy
	var newest map[string]*store.Certificate
	err := s.cfg.Store.View(func(r *store.Reader) error {
		var err error
		if newest, err = NewestSVIDs(r); err != nil {
			return err
		}
		for _, id := range ids {
			if rec, err := r.Get(store.TableProxies, id); err == nil {
				recs = append(recs, rec.(*store.Proxy))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := map[meshv1.SyncState]int{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range recs {
		if _, ok := s.active[p.InstanceID]; !ok {
			continue // gone since
		}
		out[s.syncLocked(p, newest, nil).GetState()]++
	}
	return out, nil
}
