package push

import (
	"testing"
	"time"

	meshv1 "minimesh/proto/mesh/v1"
)

// gauge is the value of minimesh_meshd_proxies{state}.
func (m *meshd) proxiesIn(state string) float64 {
	m.t.Helper()
	fams, err := m.reg.Gather()
	if err != nil {
		m.t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "minimesh_meshd_proxies" {
			continue
		}
		for _, mt := range f.GetMetric() {
			if mt.GetLabel()[0].GetValue() == state {
				return mt.GetGauge().GetValue()
			}
		}
	}
	m.t.Fatalf("no minimesh_meshd_proxies{state=%q}", state)
	return 0
}

// pushes is the sample count of minimesh_meshd_push_latency_seconds.
func (m *meshd) pushes() uint64 {
	m.t.Helper()
	fams, err := m.reg.Gather()
	if err != nil {
		m.t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "minimesh_meshd_push_latency_seconds" {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	m.t.Fatal("no minimesh_meshd_push_latency_seconds")
	return 0
}

func (m *meshd) waitFor(what string, ok func() bool) {
	m.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ok() {
			return
		}
	}
	m.t.Fatalf("never: %s", what)
}

func ack(t *testing.T, c *client, version string) {
	t.Helper()
	if err := c.st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Ack{Ack: &meshv1.Ack{Version: version}}}); err != nil {
		t.Fatal(err)
	}
}

func nack(t *testing.T, c *client, version string) {
	t.Helper()
	if err := c.st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Nack{Nack: &meshv1.Nack{Version: version, Reason: "test"}}}); err != nil {
		t.Fatal(err)
	}
}

// The proxies gauge follows the sync states of the streams; a change is
// timed to the last ACK of it, and not before: a proxy that NACKed it
// holds the rollout open until it ACKs.
func TestSyncStateGaugeAndPushLatency(t *testing.T) {
	m := startMeshd(t, nil, nil, time.Hour)
	for _, st := range []string{"synced", "stale", "nacked", "untrusted", "untrusted_peers"} {
		if got := m.proxiesIn(st); got != 0 {
			t.Errorf("no proxies yet: %s = %v", st, got)
		}
	}
	web, api := m.open(m.svid("web", "web-1", true), hello("web", "web-1")), m.open(m.svid("api", "api-1", true), hello("api", "api-1"))
	web.registered(t)
	api.registered(t)
	both := func(s *meshv1.Snapshot) bool { return hasEndpoint(s, "web-1") && hasEndpoint(s, "api-1") }
	ws := web.snapshotWith(t, "web's snapshot with both", both)
	as := api.snapshotWith(t, "api's snapshot with both", both)
	m.waitFor("both stale before their ACK", func() bool { return m.proxiesIn("stale") == 2 })
	ack(t, web, ws.GetVersion())
	ack(t, api, as.GetVersion())
	m.waitFor("both synced", func() bool { return m.proxiesIn("synced") == 2 && m.proxiesIn("stale") == 0 })
	m.waitFor("the rollouts so far timed", func() bool {
		m.srv.mu.Lock()
		defer m.srv.mu.Unlock()
		return len(m.srv.metrics.rollouts) == 0
	})
	before := m.pushes()
	if before == 0 {
		t.Fatal("no push timed after both ACKed")
	}

	// A third proxy changes everyone's endpoints: one rollout for all three.
	db := m.open(m.svid("db", "db-1", true), hello("db", "db-1"))
	db.registered(t)
	all := func(s *meshv1.Snapshot) bool { return both(s) && hasEndpoint(s, "db-1") }
	ws = web.snapshotWith(t, "web's snapshot with db", all)
	as = api.snapshotWith(t, "api's snapshot with db", all)
	ds := db.snapshotWith(t, "db's snapshot", all)
	ack(t, web, ws.GetVersion())
	ack(t, db, ds.GetVersion())
	nack(t, api, as.GetVersion())
	m.waitFor("api nacked", func() bool { return m.proxiesIn("nacked") == 1 && m.proxiesIn("synced") == 2 })
	// Flushes (Tick) pass; nothing is timed while api has not ACKed.
	time.Sleep(50 * time.Millisecond)
	if got := m.pushes(); got != before {
		t.Fatalf("push timed while api NACKed it: %d samples, want %d", got, before)
	}
	ack(t, api, as.GetVersion())
	m.waitFor("the rollout timed at api's ACK", func() bool { return m.pushes() == before+1 })
	if got := m.counter("minimesh_meshd_push_rollouts_total", "outcome", "acked"); got != float64(before+1) {
		t.Errorf("rollouts acked = %v, want %d", got, before+1)
	}
	if got := m.proxiesIn("synced"); got != 3 {
		t.Errorf("synced = %v, want 3", got)
	}
}

// A proxy whose stream ends no longer holds a rollout; one that never
// answers holds it for MaxRolloutWait, then it counts as incomplete.
func TestRolloutEndsWithoutTheProxy(t *testing.T) {
	m := startMeshd(t, nil, nil, time.Hour)
	web := m.open(m.svid("web", "web-1", true), hello("web", "web-1"))
	web.registered(t)
	ack(t, web, web.snapshotWith(t, "web's first", func(*meshv1.Snapshot) bool { return true }).GetVersion())
	m.waitFor("web synced", func() bool { return m.proxiesIn("synced") == 1 })
	api := m.open(m.svid("api", "api-1", true), hello("api", "api-1"))
	api.registered(t)
	web.snapshotWith(t, "web's with api", func(s *meshv1.Snapshot) bool { return hasEndpoint(s, "api-1") })
	before := m.pushes()
	web.cancel() // web never ACKs; it goes
	m.waitFor("api's stream holds the rollout alone", func() bool { return m.proxiesIn("synced")+m.proxiesIn("stale") == 1 })
	m.srv.mu.Lock()
	pending := len(m.srv.metrics.rollouts)
	for _, r := range m.srv.metrics.rollouts {
		if _, ok := r.waiting["web-1"]; ok {
			t.Error("web-1 still waited for after its stream ended")
		}
		r.start = r.start.Add(-MaxRolloutWait - time.Second) // api never answers either
	}
	m.srv.mu.Unlock()
	if pending == 0 {
		t.Fatal("no rollout waiting for api")
	}
	m.srv.expireRollouts()
	if got := m.counter("minimesh_meshd_push_rollouts_total", "outcome", "incomplete"); got < 1 {
		t.Errorf("rollouts incomplete = %v, want at least 1", got)
	}
	if got := m.pushes(); got != before {
		t.Errorf("an incomplete rollout was timed: %d samples, want %d", got, before)
	}
}
