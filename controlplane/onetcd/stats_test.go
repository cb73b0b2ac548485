package onetcd_test

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/certs"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/stats"
	meshv1 "minimesh/proto/mesh/v1"
)

// reportAs registers as svid's proxy of service on m's stream, checks meshd
// announces "stats", and sends one report of n 2xx from web.
func reportAs(t *testing.T, m *controlplanetest.Meshd, svid *x509svid.SVID, service string, n uint64) {
	t.Helper()
	st, reg := register(ctx(t), t, m, svid, service)
	if acc := reg.GetAccepts(); len(acc) != 1 || acc[0] != "stats" {
		t.Fatalf("Registered.accepts %v, want [stats]", acc)
	}
	lat := make([]uint64, len(stats.LatencyBounds)+1)
	lat[2] = n
	rep := &meshv1.StatsReport{Interval: durationpb.New(10 * time.Second), LatencyBounds: stats.LatencyBounds, Edges: []*meshv1.EdgeStats{{
		SourceService: "web", SourceIdentities: []string{"spiffe://" + td + "/ns/default/sa/web"}, Mtls: true,
		Classes: []uint64{0, n, 0, 0, 0, 0, 0}, LatencyBuckets: lat}}}
	if err := st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Stats{Stats: rep}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.CloseSend() })
}

// TestStatsFanOutAcrossReplicas: each replica holds only its own
// proxies' reports; a Stats query to either answers with both, and says
// 2 replicas answered. ReplicaService is meshd's alone.
func TestStatsFanOutAcrossReplicas(t *testing.T) {
	ms := startReplicas(t)
	reportAs(t, ms[0], bootstrap(t, ms[0], "default", "api"), "api", 70)
	reportAs(t, ms[1], bootstrap(t, ms[1], "default", "db"), "db", 30)

	var resp *meshv1.StatsResponse
	eventually(t, "a Stats query answered by both replicas with both edges", func() bool {
		var err error
		resp, err = ms[0].Operator(t).Stats(ctx(t), &meshv1.StatsRequest{Window: durationpb.New(time.Minute)})
		return err == nil && resp.GetReplicasAnswered() == 2 && len(resp.GetEdges()) == 2
	})
	if resp.GetReplicasAsked() != 2 || len(resp.GetReplicaErrors()) != 0 {
		t.Fatalf("asked %d, errors %v", resp.GetReplicasAsked(), resp.GetReplicaErrors())
	}
	for _, e := range resp.GetEdges() {
		want := map[string]uint64{"api": 70, "db": 30}[e.GetDestinationService()]
		if e.GetClasses()[1] != want || e.GetSourceService() != "web" || e.GetDestinationIdentities()[0] != "spiffe://"+td+"/ns/default/sa/"+e.GetDestinationService() {
			t.Errorf("edge %v, want %d 2xx from web", e, want)
		}
	}
	// Each replica alone knows only its own.
	local, err := meshv1.NewReplicaServiceClient(ms[1].DialAs(t, ms[1].ServingSVID())).LocalStats(ctx(t), &meshv1.LocalStatsRequest{Query: &meshv1.StatsRequest{}})
	if err != nil {
		t.Fatalf("LocalStats as meshd: %v", err)
	}
	if es := local.GetAnswer().GetEdges(); len(es) != 1 || es[0].GetDestinationService() != "db" {
		t.Fatalf("replica r1's own edges: %v", es)
	}
	// Only meshd's identity may call it: a workload and the operator are refused.
	op, _, err := certs.LoadSVID(ms[0].OperatorCredentialDir(), ms[0].TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	for who, svid := range map[string]*x509svid.SVID{"workload": bootstrap(t, ms[0], "default", "web"), "operator": op} {
		_, err := meshv1.NewReplicaServiceClient(ms[0].DialAs(t, svid)).LocalStats(ctx(t), &meshv1.LocalStatsRequest{})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("LocalStats as %s: %v, want PermissionDenied", who, err)
		}
	}
}
