package meshctl

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/certs/certstest"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/stats"
	"minimesh/internal/dashboard"
	meshv1 "minimesh/proto/mesh/v1"
)

// TestEdgeSeriesFromMeshdsSamples: the dashboard's chart of an edge is
// meshd's own 10 s samples, from one reading at meshd's clock: a sample
// shows what its proxy reported in it, a quiet one shows nothing, and the
// sample in progress is left out rather than drawn as a drop.
func TestEdgeSeriesFromMeshdsSamples(t *testing.T) {
	t0 := time.Now().Truncate(stats.Bucket)
	clock := certstest.NewClock(t0)
	m := controlplanetest.Start(t, controlplane.Config{Clock: clock})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st := m.Register(t, ctx, "default", "api")
	admin := m.Operator(t)
	var sent uint64 // every request reported so far
	report := func(ok, failed uint64) {
		t.Helper()
		lat := make([]uint64, len(stats.LatencyBounds)+1)
		lat[3] = ok + failed
		if err := st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Stats{Stats: &meshv1.StatsReport{
			Interval: durationpb.New(10 * time.Second), LatencyBounds: stats.LatencyBounds,
			Edges: []*meshv1.EdgeStats{{SourceService: "web", SourceNamespace: "default", Mtls: true,
				SourceIdentities: []string{"spiffe://minimesh.local/ns/default/sa/web"},
				Classes:          []uint64{0, ok, 0, 0, failed, 0, 0}, LatencyBuckets: lat}}}}}); err != nil {
			t.Fatal(err)
		}
		// Taken once the totals show it, before the test moves meshd's clock.
		sent += ok + failed
		want := sent
		deadline := time.Now().Add(10 * time.Second)
		for {
			r, err := admin.Stats(ctx, &meshv1.StatsRequest{Window: durationpb.New(time.Minute), Service: "api"})
			var n uint64
			for _, e := range r.GetEdges() {
				n += e.GetClasses()[1] + e.GetClasses()[4]
			}
			if err == nil && n >= want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("meshd did not take the report: %v %v", r, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	report(5, 1) // the sample at t0
	clock.Set(t0.Add(25 * time.Second))
	report(3, 0) // the sample at t0+20s (t0+10s has none), 6+3 in all
	clock.Set(t0.Add(32 * time.Second))
	report(4, 0) // the sample in progress, t0+30s

	conn, err := Dial(m.Addr, m.OperatorCredentialDir())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	doc, err := dashboardViews()["EdgeSeries"](ctx, meshv1.NewAdminServiceClient(dashboard.Guard(conn)),
		[]byte(`{"source":"web.default","sourceService":"web","sourceNamespace":"default","mtls":true,"destinationService":"api","namespace":"default","windowSeconds":60}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(doc)
	var got struct {
		Points []struct {
			End         time.Time `json:"end"`
			RPS         float64   `json:"rps"`
			SuccessRate *float64  `json:"successRate"`
			P99         *float64  `json:"p99Seconds"`
		} `json:"points"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Points) != 6 || !got.Points[5].End.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("points %s: want 6 ending at the sample in progress (%s)", b, t0.Add(30*time.Second).UTC())
	}
	want := []float64{0, 0, 0, 0.6, 0, 0.3} // samples t0-30s ... t0+20s
	for i, p := range got.Points {
		if p.RPS != want[i] {
			t.Errorf("point %d (ending %s): %v rps, want %v", i, p.End, p.RPS, want[i])
		}
	}
	if p := got.Points[3]; p.SuccessRate == nil || *p.SuccessRate != 5.0/6 || p.P99 == nil {
		t.Errorf("the sample at t0: success %v p99 %v, want 5/6 and a p99", p.SuccessRate, p.P99)
	}
	if got.Points[4].SuccessRate != nil {
		t.Errorf("a quiet sample has a success rate: %v", *got.Points[4].SuccessRate)
	}
}

// An edge whose totals hold more than its steps (a replica of an older
// meshd answered) is refused rather than charted short.
func TestStepsCover(t *testing.T) {
	e := &meshv1.EdgeStats{Classes: []uint64{0, 7, 0, 0, 1, 0, 0}, Steps: []*meshv1.EdgeStep{
		{StartUnix: 10, Classes: []uint64{0, 5, 0, 0, 1, 0, 0}}, {StartUnix: 20, Classes: []uint64{0, 2, 0, 0, 0, 0, 0}}}}
	if err := stepsCover(e); err != nil {
		t.Fatalf("steps that hold every request: %v", err)
	}
	e.Classes[1] = 10
	if err := stepsCover(e); err == nil || !strings.Contains(err.Error(), "3 of the edge's 11 requests") {
		t.Fatalf("steps short of the totals: %v", err)
	}
}
