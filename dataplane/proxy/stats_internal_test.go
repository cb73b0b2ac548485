package proxy

import (
	"fmt"
	"strings"
	"testing"

	"minimesh/api/authz"
)

// TestDenyRingKeepsTheLast20: the ring keeps the most recent
// MaxReportDenies, oldest first, counts the rest as dropped, and cuts what
// the caller sent.
func TestDenyRingKeepsTheLast20(t *testing.T) {
	r := &denyRing{}
	for i := range MaxReportDenies + 5 {
		r.record(authz.Request{Peer: "spiffe://td/ns/default/sa/web", Method: strings.Repeat("M", 40), Path: fmt.Sprintf("/p/%d/%s", i, strings.Repeat("x", 300))},
			authz.Decision{Policy: "default/no", Rule: 1})
	}
	got, dropped := r.take()
	if len(got) != MaxReportDenies || dropped != 5 {
		t.Fatalf("%d kept, %d dropped; want %d and 5", len(got), dropped, MaxReportDenies)
	}
	if !strings.HasPrefix(got[0].Path, "/p/5/") || !strings.HasPrefix(got[len(got)-1].Path, fmt.Sprintf("/p/%d/", MaxReportDenies+4)) {
		t.Fatalf("order: first %q last %q", got[0].Path[:6], got[len(got)-1].Path[:6])
	}
	if len(got[0].Path) != maxDenyPath || len(got[0].Method) != maxDenyMethod || got[0].Policy != "default/no" || got[0].Rule != 1 {
		t.Fatalf("not cut: %d %d %v", len(got[0].Path), len(got[0].Method), got[0])
	}
	if again, d := r.take(); len(again) != 0 || d != 0 {
		t.Fatalf("take did not empty the ring: %d, %d", len(again), d)
	}
}

// TestReportIsDeltasOfTheCounters: a report holds what the inbound's
// series counted since the previous one, with the bucket counts per
// bucket; nothing new, no edge.
func TestReportIsDeltasOfTheCounters(t *testing.T) {
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	in := &Inbound{metrics: m, sources: newSourceSet(m, "api", "default")}
	r := NewStatsReporter(in, nil)
	sm := in.sources.getFor("default/web", "spiffe://td/ns/default/sa/web")
	for range 3 {
		sm.observe(200, 0.003)
	}
	sm.observe(503, 2)
	rep := r.Report()
	if len(rep.Edges) != 1 {
		t.Fatalf("edges %v", rep.Edges)
	}
	e := rep.Edges[0]
	if e.Classes[1] != 3 || e.Classes[4] != 1 || e.SourceService != "web" || e.SourceNamespace != "default" || e.SourceIdentities[0] != "spiffe://td/ns/default/sa/web" || !e.Mtls {
		t.Fatalf("edge %v", e)
	}
	// 3 in (0.0025, 0.005], 1 in (1, 2.5].
	if e.LatencyBuckets[3] != 3 || e.LatencyBuckets[11] != 1 {
		t.Fatalf("buckets %v", e.LatencyBuckets)
	}
	sm.observe(200, 0.003)
	if e := r.Report().Edges; len(e) != 1 || e[0].Classes[1] != 1 || e[0].Classes[4] != 0 || e[0].LatencyBuckets[3] != 1 {
		t.Fatalf("second report: %v", e)
	}
	if e := r.Report().Edges; len(e) != 0 {
		t.Fatalf("nothing new, but %v", e)
	}
}
