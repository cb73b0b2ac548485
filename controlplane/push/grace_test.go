package push

import (
	"io"
	"testing"
	"time"

	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// TestStreamEndWithoutDrainKeepsEndpoint: losing the stream is not losing
// the endpoint. A proxy whose stream broke stays an endpoint (and says
// DISCONNECTED, the truth); one that sent Drain leaves the endpoints at
// once; a meshd that starts holds the endpoints the last one knew.
func TestStreamEndWithoutDrainKeepsEndpoint(t *testing.T) {
	m := startMeshd(t, nil, nil, time.Hour)
	web := m.open(m.svid("web", "web-1", true), hello("web", ""))
	web.registered(t)
	api1 := m.open(m.svid("api", "api-1", true), hello("api", ""))
	api1.registered(t)
	api2 := m.open(m.svid("api", "api-2", true), hello("api", ""))
	api2.registered(t)
	web.snapshotWith(t, "both api endpoints", func(s *meshv1.Snapshot) bool { return hasEndpoint(s, "api-1") && hasEndpoint(s, "api-2") })

	// api-1's stream breaks (its connection, not a drain).
	api1.cancel()
	m.waitState("api-1", meshv1.SyncState_SYNC_STATE_DISCONNECTED)
	if s := m.groupSnap("web-1"); !hasEndpoint(s, "api-1") {
		t.Fatal("api-1 left the endpoints when its stream broke")
	}
	if p, _ := m.proxy("api-1"); p.Connected || p.GraceUntil.IsZero() {
		t.Fatalf("api-1's record: connected %v, grace until %v; want disconnected in grace", p.Connected, p.GraceUntil)
	}

	// api-2 drains: gone at once.
	if err := api2.st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Drain{Drain: &meshv1.Drain{}}}); err != nil {
		t.Fatal(err)
	}
	if err := api2.ended(t); err != io.EOF {
		t.Fatalf("a drain ended the stream with %v, want a clean end", err)
	}
	m.waitState("api-2", meshv1.SyncState_SYNC_STATE_DISCONNECTED)
	web.snapshotWith(t, "api-2 gone, api-1 kept", func(s *meshv1.Snapshot) bool { return hasEndpoint(s, "api-1") && !hasEndpoint(s, "api-2") })
	if got := m.counter("minimesh_meshd_proxy_drains_total", "", ""); got != 1 {
		t.Errorf("drains counted: %v, want 1", got)
	}

	// meshd restarts: web (connected when it stopped) and api-1 (in its
	// grace) are endpoints of the new one's first snapshots; api-2 is not.
	m.stop()
	m2 := startMeshd(t, m.ca, m.store, time.Hour)
	s := m2.groupSnap("web-1")
	if !hasEndpoint(s, "web-1") || !hasEndpoint(s, "api-1") || hasEndpoint(s, "api-2") {
		t.Fatalf("after a restart the endpoints are %v; want web-1 and api-1", s.GetEndpoints())
	}
	// The caller that reconnects first gets them.
	web2 := m2.open(m.svid("web", "web-1", true), hello("web", ""))
	web2.registered(t)
	web2.snapshotWith(t, "web's snapshot after the restart", func(s *meshv1.Snapshot) bool { return hasEndpoint(s, "api-1") })
	for _, ps := range mustSync(t, m2) {
		if ps.GetProxy().GetInstanceId() == "api-1" && ps.GetState() != meshv1.SyncState_SYNC_STATE_DISCONNECTED {
			t.Errorf("api-1 without a stream shows %v", ps.GetState())
		}
	}
}

// TestEndpointGraceExpires: a proxy that stays away past the grace leaves
// the endpoints (a timer triggers the recompute: nothing else changes), and
// a meshd that starts does not bring it back.
func TestEndpointGraceExpires(t *testing.T) {
	const grace = 300 * time.Millisecond
	m := startMeshd(t, nil, nil, grace)
	web := m.open(m.svid("web", "web-1", true), hello("web", ""))
	web.registered(t)
	api := m.open(m.svid("api", "api-1", true), hello("api", ""))
	api.registered(t)
	web.snapshotWith(t, "api's endpoint", func(s *meshv1.Snapshot) bool { return hasEndpoint(s, "api-1") })

	api.cancel()
	web.snapshotWith(t, "api's endpoint gone after the grace", func(s *meshv1.Snapshot) bool { return !hasEndpoint(s, "api-1") })
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := m.proxy("api-1")
		if err != nil {
			t.Fatal(err)
		}
		if p.GraceUntil.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ended grace is still recorded: %v", p.GraceUntil)
		}
		time.Sleep(10 * time.Millisecond)
	}

	m.stop()
	m2 := startMeshd(t, m.ca, m.store, time.Hour)
	if s := m2.groupSnap("web-1"); hasEndpoint(s, "api-1") || !hasEndpoint(s, "web-1") {
		t.Fatalf("after a restart the endpoints are %v; want web-1 only", s.GetEndpoints())
	}
}

func mustSync(t *testing.T, m *meshd) []*meshv1.ProxySync {
	t.Helper()
	all, err := m.srv.Sync()
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func TestNegativeEndpointGraceIsRefused(t *testing.T) {
	m := startMeshd(t, nil, nil, 0)
	if _, err := New(Config{Store: m.store, EndpointGrace: -time.Second}); err == nil {
		t.Fatal("a negative EndpointGrace was accepted")
	}
}

// TestRestartDoesNotForgetHeldEndpoints: a proxy whose stream lived quietly
// longer than ForgetAfter (its LastSeen is its connect time) is not
// forgotten by the meshd that starts after: it is held in its grace.
func TestRestartDoesNotForgetHeldEndpoints(t *testing.T) {
	m := startMeshd(t, nil, nil, time.Hour)
	m.stop()
	old := time.Now().Add(-100 * time.Hour)
	if err := m.store.Update(func(tx *store.Txn) error {
		return tx.Put(store.TableProxies, &store.Proxy{InstanceID: "api-1", SPIFFEID: "spiffe://minimesh.local/ns/default/sa/api", Service: "api",
			Address: "127.0.0.1:15006", Connected: true, ConnectedAt: old, LastSeen: old})
	}); err != nil {
		t.Fatal(err)
	}
	m2 := startMeshd(t, m.ca, m.store, time.Hour)
	if err := m2.srv.Forget(time.Now().Add(-72 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.proxy("api-1"); err != nil {
		t.Fatalf("the held proxy was forgotten: %v", err)
	}
	if s := m2.groupSnap("api-1"); !hasEndpoint(s, "api-1") {
		t.Fatalf("endpoints %v, want api-1 held", s.GetEndpoints())
	}
}

// TestSnapshotEqualToHelloClaimIsSentLater: a proxy whose Hello claimed
// version X, and which got Y since, gets X when the snapshot comes back to
// X (it was taken for ACKed: the proxy stayed on Y, which listed an
// endpoint gone since).
func TestSnapshotEqualToHelloClaimIsSentLater(t *testing.T) {
	m := startMeshd(t, nil, nil, time.Hour)
	webSVID := m.svid("web", "web-1", true)
	web := m.open(webSVID, hello("web", ""))
	web.registered(t)
	s0 := web.snapshotWith(t, "web alone", func(s *meshv1.Snapshot) bool { return !hasEndpoint(s, "api-1") })
	api := m.open(m.svid("api", "api-1", true), hello("api", ""))
	api.registered(t)
	web.snapshotWith(t, "web and api", func(s *meshv1.Snapshot) bool { return hasEndpoint(s, "api-1") })

	// web reconnects claiming the old version (its state dir's): it is sent
	// the current one.
	h := hello("web", "")
	h.AppliedVersion = s0.GetVersion()
	web2 := m.open(webSVID, h)
	web2.registered(t)
	web2.snapshotWith(t, "the current snapshot", func(s *meshv1.Snapshot) bool { return hasEndpoint(s, "api-1") })
	// api drains: the snapshot is s0's again, and web must get it.
	if err := api.st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Drain{Drain: &meshv1.Drain{}}}); err != nil {
		t.Fatal(err)
	}
	web2.snapshotWith(t, "the snapshot without api", func(s *meshv1.Snapshot) bool { return s.GetVersion() == s0.GetVersion() })
}
