package stats

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	meshv1 "minimesh/proto/mesh/v1"
)

// TestFitCountsAFoldOnce: an answer merged from replicas holds another
// replica's fold (five edges, few requests) and is over its bound, so
// fit folds that fold again. edges_folded then grows by the edges folded
// for the first time only, the edge they end in holds them all, and no
// request is lost.
func TestFitCountsAFoldOnce(t *testing.T) {
	mk := func(src, dst string, n uint64, folded uint32) *meshv1.EdgeStats {
		e := &meshv1.EdgeStats{SourceService: src, DestinationNamespace: "default", DestinationService: dst, Mtls: true, Folded: folded,
			Classes: make([]uint64, nClasses), LatencyBuckets: make([]uint64, nBuckets)}
		e.Classes[1], e.LatencyBuckets[0] = n, n
		if folded == 0 {
			e.SourceIdentities = []string{"spiffe://minimesh.local/ns/default/sa/" + src + strings.Repeat("x", 100)}
		}
		return e
	}
	var edges []*meshv1.EdgeStats
	for i := range 10 {
		edges = append(edges, mk(fmt.Sprintf("busy-%d", i), "api", 1000, 0))
	}
	edges = append(edges, mk(Other, "db", 5, 5)) // the peer's fold, merged
	for i := range 3 {
		edges = append(edges, mk(fmt.Sprintf("quiet-%d", i), "db", 1, 0))
	}
	out := &meshv1.StatsResponse{LatencyBounds: LatencyBounds, EdgesFolded: 5, Edges: edges}

	// A budget that keeps eight busy edges and not a byte more.
	head := proto.Size(&meshv1.StatsResponse{LatencyBounds: LatencyBounds, EdgesFolded: 5})
	want := head
	for _, e := range edges[:8] {
		n := proto.Size(e)
		want += n + 1 + protowire.SizeVarint(uint64(n))
	}
	budget := want
	for budget-min(budget/8, 256<<10) < want {
		budget++
	}
	fit(out, budget)

	var named, held uint32
	var requests uint64
	for _, e := range out.GetEdges() {
		if e.GetFolded() == 0 {
			named++
		}
		if e.GetDestinationService() == "db" {
			t.Errorf("db's edge %s → db kept: the merged fold should have been folded again", e.GetSourceService())
		}
		held += e.GetFolded()
		requests += edgeTotal(e)
	}
	if named != 8 || out.GetEdgesFolded() != 10 || held != 10 {
		t.Errorf("%d edges named, edges_folded %d, folded edges hold %d: want 8, 10 (5 merged + 5 folded here), 10", named, out.GetEdgesFolded(), held)
	}
	if requests != 10*1000+5+3 {
		t.Errorf("%d requests in the answer, want %d", requests, 10*1000+5+3)
	}
}
