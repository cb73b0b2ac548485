package stats_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"minimesh/controlplane/stats"
	meshv1 "minimesh/proto/mesh/v1"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var apiID = spiffeid.RequireFromString("spiffe://minimesh.local/ns/default/sa/api")

func edge(src string, ok2xx, err5xx uint64) *meshv1.EdgeStats {
	lat := make([]uint64, len(stats.LatencyBounds)+1)
	lat[3] = ok2xx + err5xx
	return &meshv1.EdgeStats{SourceService: src, SourceIdentities: []string{"spiffe://minimesh.local/ns/default/sa/" + src}, Mtls: true,
		Classes: []uint64{0, ok2xx, 0, 0, err5xx, 0, 0}, LatencyBuckets: lat, LatencySumSeconds: 0.004 * float64(ok2xx+err5xx)}
}

func report(edges ...*meshv1.EdgeStats) *meshv1.StatsReport {
	return &meshv1.StatsReport{Interval: durationpb.New(10 * time.Second), Edges: edges, LatencyBounds: stats.LatencyBounds}
}

func newStore(t *testing.T, c *clock) *stats.Store {
	t.Helper()
	s, err := stats.New(stats.Config{Clock: c})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// twoReplicas is a replica s whose one peer, asked in process, is peer.
func twoReplicas(t *testing.T, c *clock) (s, peer *stats.Store) {
	t.Helper()
	peer = newStore(t, c)
	s, err := stats.New(stats.Config{Clock: c,
		Peers: func(context.Context) ([]stats.Peer, error) { return []stats.Peer{{Name: "b", Addr: "b:1"}}, nil },
		Ask: func(_ context.Context, _ stats.Peer, req *meshv1.StatsRequest) (*meshv1.StatsResponse, error) {
			return peer.Local(req)
		}})
	if err != nil {
		t.Fatal(err)
	}
	return s, peer
}

func total(e *meshv1.EdgeStats) (n uint64) {
	for _, v := range e.GetClasses() {
		n += v
	}
	return n
}

// TestWindowSumsSamples: a query's window takes the samples in it and
// not older ones; the destination is the reporter's, whatever the edge says.
func TestWindowSumsSamples(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := newStore(t, c)
	e := edge("web", 90, 10)
	e.DestinationService = "forged"
	s.Record("api-1", apiID, "api", report(e))
	c.add(5 * time.Minute)
	s.Record("api-1", apiID, "api", report(edge("web", 30, 0)))
	r, err := s.Local(&meshv1.StatsRequest{Window: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Edges) != 1 || total(r.Edges[0]) != 30 {
		t.Fatalf("1m window: %v, want one edge of 30", r.Edges)
	}
	r, _ = s.Local(&meshv1.StatsRequest{Window: durationpb.New(10 * time.Minute)})
	got := r.Edges[0]
	if total(got) != 130 || got.Classes[4] != 10 || got.DestinationService != "api" || got.DestinationNamespace != "default" ||
		got.DestinationIdentities[0] != apiID.String() || got.SourceIdentities[0] != "spiffe://minimesh.local/ns/default/sa/web" {
		t.Fatalf("10m window: %v", got)
	}
	if r, _ := s.Local(&meshv1.StatsRequest{Service: "other-svc", Window: durationpb.New(10 * time.Minute)}); len(r.Edges) != 0 {
		t.Fatalf("filter by service: %v", r.Edges)
	}
	// Past the retention, nothing.
	c.add(16 * time.Minute)
	if r, _ := s.Local(&meshv1.StatsRequest{Window: durationpb.New(15 * time.Minute)}); len(r.Edges) != 0 {
		t.Fatalf("after 16 min: %v", r.Edges)
	}
	for _, w := range []time.Duration{time.Second, 16 * time.Minute} {
		if _, err := s.Local(&meshv1.StatsRequest{Window: durationpb.New(w)}); err == nil || !strings.Contains(err.Error(), "window") {
			t.Errorf("window %s: %v, want refused naming window", w, err)
		}
	}
}

// TestEdgeCapFoldsIntoOther: past MaxEdges, new edges count in "other"
// and nothing is lost.
func TestEdgeCapFoldsIntoOther(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := newStore(t, c)
	const extra = 30
	var sent uint64
	for i := 0; i < stats.MaxEdges+extra; i += stats.MaxReportEdges {
		var es []*meshv1.EdgeStats
		for j := i; j < min(i+stats.MaxReportEdges, stats.MaxEdges+extra); j++ {
			es = append(es, edge(fmt.Sprintf("src%d", j), 1, 0))
			sent++
		}
		s.Record("api-1", apiID, "api", report(es...))
	}
	if n := s.Edges(); n != stats.MaxEdges+1 {
		t.Fatalf("%d edges kept, want %d (the cap and other)", n, stats.MaxEdges+1)
	}
	r, _ := s.Local(&meshv1.StatsRequest{})
	var got, other uint64
	for _, e := range r.Edges {
		got += total(e)
		if e.SourceService == stats.Other {
			other = total(e)
			if len(e.SourceIdentities) != 0 {
				t.Errorf("other names identities: %v", e.SourceIdentities)
			}
		}
	}
	if got != sent || other != extra {
		t.Fatalf("counted %d (other %d), want %d (other %d)", got, other, sent, extra)
	}
}

// TestDenyRing keeps the last MaxDenies, newest first, each cut, with the
// reporter's service and instance.
func TestDenyRing(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := newStore(t, c)
	for i := range stats.MaxDenies/20 + 5 {
		r := report()
		for j := range 20 {
			r.Denies = append(r.Denies, &meshv1.DenyEvent{Time: timestamppb.New(c.Now()), Method: "GET", Path: fmt.Sprintf("/d/%d/%s", i*20+j, strings.Repeat("x", 300)),
				SourceIdentity: "spiffe://minimesh.local/ns/default/sa/web", Policy: "default/p", InstanceId: "forged"})
		}
		r.Denies = append(r.Denies, r.Denies...) // 40: only the last 20 taken
		s.Record("api-1", apiID, "api", r)
	}
	r, _ := s.Local(&meshv1.StatsRequest{})
	if len(r.Denies) != stats.MaxDenies {
		t.Fatalf("%d denies, want %d", len(r.Denies), stats.MaxDenies)
	}
	last := fmt.Sprintf("/d/%d/", (stats.MaxDenies/20+5)*20-1)
	if d := r.Denies[0]; !strings.HasPrefix(d.Path, last) || len(d.Path) != 256 || d.InstanceId != "api-1" || d.DestinationService != "api" {
		t.Fatalf("newest deny: %v, want path %s… cut to 256, instance api-1", d, last)
	}
}

// TestBadBoundsRefused: a report with other buckets is not mixed in.
func TestBadBoundsRefused(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := newStore(t, c)
	r := report(edge("web", 1, 0))
	r.LatencyBounds = []float64{1, 2}
	s.Record("api-1", apiID, "api", r)
	if s.Edges() != 0 {
		t.Fatal("a report with other latency bounds was kept")
	}
}

// TestFanOutMerges: peers' answers are merged by edge and counted;
// one that fails is named.
func TestFanOutMerges(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	peer := newStore(t, c)
	peer.Record("api-2", apiID, "api", report(edge("web", 7, 0)))
	s, err := stats.New(stats.Config{Clock: c,
		Peers: func(context.Context) ([]stats.Peer, error) {
			return []stats.Peer{{Name: "b", Addr: "b:1"}, {Name: "c", Addr: "c:1"}, {Name: "d"}}, nil
		},
		Ask: func(_ context.Context, p stats.Peer, req *meshv1.StatsRequest) (*meshv1.StatsResponse, error) {
			if p.Name == "c" {
				return nil, errors.New("unreachable")
			}
			return peer.Local(req)
		}})
	if err != nil {
		t.Fatal(err)
	}
	s.Record("api-1", apiID, "api", report(edge("web", 3, 0)))
	r, err := s.Stats(context.Background(), &meshv1.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r.ReplicasAsked != 4 || r.ReplicasAnswered != 2 || len(r.ReplicaErrors) != 2 {
		t.Fatalf("asked %d answered %d errors %v", r.ReplicasAsked, r.ReplicasAnswered, r.ReplicaErrors)
	}
	if len(r.Edges) != 1 || total(r.Edges[0]) != 10 {
		t.Fatalf("merged edges: %v, want one of 10", r.Edges)
	}
}

// TestSourcesKeptApartByNamespace: callers of one service-account name in
// two namespaces stay two edges, in one replica's store and when replicas'
// answers merge.
func TestSourcesKeptApartByNamespace(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	from := func(ns string, n uint64) *meshv1.EdgeStats {
		e := edge("web", n, 0)
		e.SourceNamespace = ns
		e.SourceIdentities = []string{"spiffe://minimesh.local/ns/" + ns + "/sa/web"}
		return e
	}
	s, peer := twoReplicas(t, c)
	peer.Record("api-2", apiID, "api", report(from("prod", 5)))
	s.Record("api-1", apiID, "api", report(from("default", 2), from("prod", 3)))
	r, err := s.Stats(context.Background(), &meshv1.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, e := range r.Edges {
		got[e.GetSourceNamespace()+"/"+e.GetSourceService()] += total(e)
		if e.GetSourceNamespace() != "" && e.GetSourceIdentities()[0] != "spiffe://minimesh.local/ns/"+e.GetSourceNamespace()+"/sa/web" {
			t.Errorf("edge from %s carries %v", e.GetSourceNamespace(), e.GetSourceIdentities())
		}
	}
	if len(r.Edges) != 2 || got["default/web"] != 2 || got["prod/web"] != 8 {
		t.Fatalf("edges by source: %v (%d edges), want default/web 2 and prod/web 8", got, len(r.Edges))
	}
}

// TestStepsPerSample: asked for steps, an edge carries its counts per 10 s
// sample, oldest first, samples without requests left out, summing to the
// edge's totals; replicas' steps merge sample by sample; steps need a
// service.
func TestStepsPerSample(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)} // a multiple of 10 s
	s, peer := twoReplicas(t, c)
	s.Record("api-1", apiID, "api", report(edge("web", 5, 1)))    // sample 1_700_000_000
	peer.Record("api-2", apiID, "api", report(edge("web", 2, 0))) // the same sample, the other replica
	c.add(25 * time.Second)
	s.Record("api-1", apiID, "api", report(edge("web", 4, 0))) // sample +20 s; +10 s has none
	if _, err := s.Stats(context.Background(), &meshv1.StatsRequest{Steps: true}); err == nil || !strings.Contains(err.Error(), "steps: only with service") {
		t.Fatalf("steps without a service: %v", err)
	}
	r, err := s.Stats(context.Background(), &meshv1.StatsRequest{Service: "api", Steps: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Edges) != 1 || !r.GetNow().AsTime().Equal(c.Now()) {
		t.Fatalf("edges %v now %v", r.Edges, r.GetNow())
	}
	steps := r.Edges[0].GetSteps()
	if len(steps) != 2 || steps[0].GetStartUnix() != 1_700_000_000 || steps[1].GetStartUnix() != 1_700_000_020 {
		t.Fatalf("steps %v, want the samples at +0 s and +20 s", steps)
	}
	if steps[0].GetClasses()[1] != 7 || steps[0].GetClasses()[4] != 1 || steps[0].GetLatencyBuckets()[3] != 8 || steps[1].GetClasses()[1] != 4 {
		t.Errorf("steps %v, want 7 2xx and 1 5xx (both replicas), then 4 2xx", steps)
	}
	if n := total(&meshv1.EdgeStats{Classes: steps[0].GetClasses()}) + total(&meshv1.EdgeStats{Classes: steps[1].GetClasses()}); n != total(r.Edges[0]) {
		t.Errorf("steps sum to %d, the edge to %d", n, total(r.Edges[0]))
	}
	if r, _ := s.Local(&meshv1.StatsRequest{Service: "api"}); len(r.Edges[0].GetSteps()) != 0 {
		t.Error("steps sent unasked")
	}
}

// TestSourceAndStepsCap: a query naming a caller gets that caller's edge
// and denies only, from every replica; steps for more than MaxStepEdges
// edges are refused (the answer could outgrow a gRPC message), and the
// same query naming one caller is answered.
func TestSourceAndStepsCap(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s, peer := twoReplicas(t, c)
	inDefault := func(e *meshv1.EdgeStats) *meshv1.EdgeStats { e.SourceNamespace = "default"; return e }
	outside := &meshv1.EdgeStats{Classes: []uint64{0, 9, 0, 0, 0, 0, 0}, LatencyBuckets: make([]uint64, len(stats.LatencyBounds)+1)}
	r := report(inDefault(edge("web", 5, 1)), inDefault(edge("batch", 2, 0)), outside)
	r.Denies = []*meshv1.DenyEvent{
		{Time: timestamppb.New(c.Now()), Method: "GET", Path: "/w", SourceIdentity: "spiffe://minimesh.local/ns/default/sa/web"},
		{Time: timestamppb.New(c.Now()), Method: "GET", Path: "/b", SourceIdentity: "spiffe://minimesh.local/ns/default/sa/batch"},
		{Time: timestamppb.New(c.Now()), Method: "GET", Path: "/o"},
	}
	s.Record("api-1", apiID, "api", r)
	peer.Record("api-2", apiID, "api", report(inDefault(edge("web", 3, 0)), inDefault(edge("batch", 1, 0))))

	for _, tc := range []struct {
		src        *meshv1.EdgeSource
		wantN      uint64
		wantDenies string
	}{
		{&meshv1.EdgeSource{Service: "web", Namespace: "default", Mtls: true}, 9, "/w"}, // 6 here, 3 on the peer
		{&meshv1.EdgeSource{Service: "batch", Namespace: "default", Mtls: true}, 3, "/b"},
		{&meshv1.EdgeSource{}, 9, "/o"},                                            // from outside the mesh
		{&meshv1.EdgeSource{Service: "web", Namespace: "prod", Mtls: true}, 0, ""}, // another namespace's web
		{&meshv1.EdgeSource{Service: "web", Namespace: "default"}, 0, ""},          // web, but not over mTLS
	} {
		got, err := s.Stats(context.Background(), &meshv1.StatsRequest{Service: "api", Steps: true, Source: tc.src})
		if err != nil {
			t.Fatalf("%v: %v", tc.src, err)
		}
		var n uint64
		for _, e := range got.GetEdges() {
			if e.GetSourceService() != tc.src.GetService() || e.GetMtls() != tc.src.GetMtls() {
				t.Errorf("%v: answered edge from %q (mtls %v)", tc.src, e.GetSourceService(), e.GetMtls())
			}
			n += total(e)
		}
		var paths []string
		for _, d := range got.GetDenies() {
			paths = append(paths, d.GetPath())
		}
		if n != tc.wantN || strings.Join(paths, ",") != tc.wantDenies {
			t.Errorf("%v: %d requests, denies %v; want %d, [%s]", tc.src, n, paths, tc.wantN, tc.wantDenies)
		}
	}

	// MaxStepEdges callers on this replica and one more on the peer: the
	// merged answer is one edge too many.
	var many []*meshv1.EdgeStats
	for i := range stats.MaxStepEdges - 3 {
		many = append(many, edge(fmt.Sprintf("caller-%d", i), 1, 0))
	}
	s.Record("api-1", apiID, "api", report(many...))
	if _, err := s.Stats(context.Background(), &meshv1.StatsRequest{Service: "api", Steps: true}); err != nil {
		t.Fatalf("steps for %d edges: %v", stats.MaxStepEdges, err)
	}
	peer.Record("api-2", apiID, "api", report(edge("one-more", 1, 0)))
	_, err := s.Stats(context.Background(), &meshv1.StatsRequest{Service: "api", Steps: true})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d callers of \"api\"", stats.MaxStepEdges+1)) || !strings.Contains(err.Error(), "name the caller (source)") {
		t.Fatalf("steps for %d edges: %v, want refused", stats.MaxStepEdges+1, err)
	}
	if _, err := s.Local(&meshv1.StatsRequest{Service: "api", Steps: true}); err != nil {
		t.Errorf("this replica's own %d edges: %v", stats.MaxStepEdges, err)
	}
	if got, err := s.Stats(context.Background(), &meshv1.StatsRequest{Service: "api", Steps: true, Source: &meshv1.EdgeSource{Service: "one-more", Mtls: true}}); err != nil || len(got.GetEdges()) != 1 || len(got.GetEdges()[0].GetSteps()) != 1 {
		t.Errorf("one caller named: %v %v", got, err)
	}
	if got, err := s.Stats(context.Background(), &meshv1.StatsRequest{Service: "api"}); err != nil || len(got.GetEdges()) != stats.MaxStepEdges+1 {
		t.Errorf("totals without steps: %d edges, %v", len(got.GetEdges()), err)
	}
}

// TestAnswerFitsItsBound: edges with the largest identities a report may
// carry, from more callers than one answer can name, on two replicas:
// the answer stays under MaxAnswerBytes (a gRPC message stops at 4 MiB),
// the busiest edges keep their names and identities, the rest are folded
// into "other" per destination so every service's totals stay whole, and
// the answer says how many edges it folded and how many denies it left
// out.
func TestAnswerFitsItsBound(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s, peer := twoReplicas(t, c)
	s.Record("api-1", apiID, "api", report(edge("web", 3, 0)))
	if r, err := s.Stats(context.Background(), &meshv1.StatsRequest{}); err != nil || r.GetEdgesFolded() != 0 || len(r.GetEdges()) != 1 {
		t.Fatalf("a small answer: %v %v", r, err)
	}

	dbID := spiffeid.RequireFromString("spiffe://minimesh.local/ns/default/sa/db")
	long := strings.Repeat("x", 2100) // cut to 2048
	big := func(src string, n uint64) *meshv1.EdgeStats {
		e := edge(src, n, 0)
		e.SourceIdentities = []string{"1" + long, "2" + long, "3" + long, "4" + long}
		return e
	}
	want := map[string]uint64{"api": 3}
	var busiest string
	record := func(st *stats.Store, id spiffeid.ID, svc, prefix string, callers int) {
		for i := 0; i < callers; i += stats.MaxReportEdges {
			var es []*meshv1.EdgeStats
			for j := i; j < min(i+stats.MaxReportEdges, callers); j++ {
				n := uint64(j + 1)
				es = append(es, big(fmt.Sprintf("%s-%d", prefix, j), n))
				want[svc] += n
			}
			r := report(es...)
			for range 20 {
				r.Denies = append(r.Denies, &meshv1.DenyEvent{Time: timestamppb.New(c.Now()), Method: "GET", Path: "/" + long, SourceIdentity: "spiffe://minimesh.local/ns/default/sa/web", Policy: long})
			}
			st.Record(svc+"-1", id, svc, r)
		}
	}
	record(s, apiID, "api", "here", 400)
	busiest = "here-399"
	for range stats.MaxDenies / 20 { // a full ring of the largest denies
		r := report()
		for range 20 {
			r.Denies = append(r.Denies, &meshv1.DenyEvent{Time: timestamppb.New(c.Now()), Method: "GET", Path: "/" + long, SourceIdentity: "spiffe://minimesh.local/ns/default/sa/" + long, Policy: long})
		}
		s.Record("api-1", apiID, "api", r)
	}
	record(peer, apiID, "api", "there", 300)
	record(peer, dbID, "db", "there", 100)

	for _, tc := range []struct {
		name string
		ask  func() (*meshv1.StatsResponse, error)
		want map[string]uint64
	}{
		{"this replica", func() (*meshv1.StatsResponse, error) { return s.Local(&meshv1.StatsRequest{}) }, map[string]uint64{"api": want["api"] - 300*301/2}},
		{"merged", func() (*meshv1.StatsResponse, error) { return s.Stats(context.Background(), &meshv1.StatsRequest{}) }, want},
	} {
		r, err := tc.ask()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if n := proto.Size(r); n > stats.MaxAnswerBytes {
			t.Errorf("%s: %d bytes, over %d", tc.name, n, stats.MaxAnswerBytes)
		}
		got := map[string]uint64{}
		var named, other bool
		for _, e := range r.GetEdges() {
			got[e.GetDestinationService()] += total(e)
			if e.GetSourceService() == busiest && len(e.GetSourceIdentities()) == 4 {
				named = true
			}
			if e.GetSourceService() == stats.Other && e.GetDestinationService() == "api" && len(e.GetSourceIdentities()) == 0 {
				other = true
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: requests per service %v, want %v (folding must keep totals)", tc.name, got, tc.want)
		}
		if !named || !other || r.GetEdgesFolded() == 0 {
			t.Errorf("%s: busiest edge named %v, other → api %v, %d folded", tc.name, named, other, r.GetEdgesFolded())
		}
		if len(r.GetDenies()) == 0 || r.GetDeniesLeftOut() == 0 {
			t.Errorf("%s: %d denies kept, %d left out: want some of each", tc.name, len(r.GetDenies()), r.GetDeniesLeftOut())
		}
	}
}

// TestFoldedEdgesCountedOnce: two replicas' answers, each folded, merged
// into one that folds again: every edge of the mesh is either named in
// the answer or counted in edges_folded, never both and never twice, and
// the folded edges' own counts add up to it (TestFitCountsAFoldOnce
// forces a fold to be folded again).
func TestFoldedEdgesCountedOnce(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s, peer := twoReplicas(t, c)
	dbID := spiffeid.RequireFromString("spiffe://minimesh.local/ns/default/sa/db")
	long := strings.Repeat("x", 2048)
	record := func(st *stats.Store, id spiffeid.ID, svc string, n uint64) {
		for i := 0; i < 400; i += stats.MaxReportEdges {
			var es []*meshv1.EdgeStats
			for j := i; j < min(i+stats.MaxReportEdges, 400); j++ {
				e := edge(fmt.Sprintf("%s-caller-%d", svc, j), n, 0)
				e.SourceIdentities = []string{"1" + long, "2" + long, "3" + long, "4" + long}
				es = append(es, e)
			}
			st.Record(svc+"-1", id, svc, report(es...))
		}
	}
	record(s, apiID, "api", 1000) // busy: this replica's answer alone is full
	record(peer, dbID, "db", 1)   // quiet: the peer folds some, then the merge folds its fold

	peerAlone, err := peer.Local(&meshv1.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Stats(context.Background(), &meshv1.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for name, a := range map[string]*meshv1.StatsResponse{"the peer alone": peerAlone, "merged": r} {
		var named, held uint32
		for _, e := range a.GetEdges() {
			if e.GetFolded() == 0 {
				named++
			}
			held += e.GetFolded()
		}
		edges := uint32(800)
		if a == peerAlone {
			edges = 400
		}
		if a.GetEdgesFolded() == 0 || named+a.GetEdgesFolded() != edges || held != a.GetEdgesFolded() {
			t.Errorf("%s: %d edges named, %d folded (edges say %d): want %d in all, each once", name, named, a.GetEdgesFolded(), held, edges)
		}
	}
	var toDB uint64
	for _, e := range r.GetEdges() {
		if e.GetDestinationService() == "db" {
			toDB += total(e)
		}
	}
	if toDB != 400 {
		t.Errorf("merged: %d requests to db, want 400 (folding keeps totals)", toDB)
	}
}
