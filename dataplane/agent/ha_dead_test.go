package agent_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/store"
	"minimesh/controlplane/store/storetest"
	"minimesh/dataplane/agent"
	meshv1 "minimesh/proto/mesh/v1"
)

// endpointLog records, for each snapshot a caller applied, when and
// whether it held the callee's endpoint.
type endpointLog struct {
	callee string
	mu     sync.Mutex
	log    []appliedAt
}

type appliedAt struct {
	at  time.Time
	has bool
}

func (l *endpointLog) Apply(snap *meshv1.Snapshot) ([]*meshv1.FileStatus, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	has := false
	for _, ep := range snap.GetEndpoints() {
		has = has || (l.callee != "" && ep.GetInstanceId() == l.callee)
	}
	l.log = append(l.log, appliedAt{time.Now(), has})
	return nil, nil
}

func (l *endpointLog) last() (appliedAt, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.log) == 0 {
		return appliedAt{}, false
	}
	return l.log[len(l.log)-1], true
}

func listedConnected(t *testing.T, m *controlplanetest.Meshd, instance string) (connected, found bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := m.Operator(t).ListProxies(ctx, &meshv1.ListProxiesRequest{})
	if err != nil {
		t.Fatalf("ListProxies via %s: %v", m.Addr, err)
	}
	for _, p := range resp.GetProxies() {
		if p.GetInstanceId() == instance {
			return p.GetConnected(), true
		}
	}
	return false, false
}

// TestDeadReplicasProxiesLeaveAfterTheGrace: replica a, behind a relay to
// etcd, holds api's stream; web's stream is on b. a is cut off from etcd
// (as a killed replica: no disconnect written, its lease lapses). Asked
// through b, api then says DISCONNECTED in proxy-status and in the proxy
// list; web keeps api's endpoint until the grace the leader wrote
// (measured from after the cut) has passed, then loses it; api started
// again against b is SYNCED and web's endpoint again.
func TestDeadReplicasProxiesLeaveAfterTheGrace(t *testing.T) {
	e := startEtcd(t)
	keyFile := caKeyFile(t)
	prefix := "/ha-dead/"
	const grace = 4 * time.Second
	relay := storetest.NewRelay(t, e.Endpoints[0])
	cfg := func(ep, name string) controlplane.Config {
		return controlplane.Config{Etcd: &store.EtcdConfig{Endpoints: []string{ep}, Prefix: prefix, Replica: name, SessionTTL: 2, RequestTimeout: 2 * time.Second},
			CAKeyFile: keyFile, EndpointGrace: grace}
	}
	b := controlplanetest.Start(t, cfg(e.Endpoints[0], "b"))
	a := controlplanetest.Start(t, cfg(relay.Addr(), "a"))
	t.Cleanup(func() { relay.Cut(false) }) // before a stops: it stops quickly with etcd

	// api on a only; its state dir is kept for its restart against b.
	tok := a.Token(t, "default", "api", 1)
	stateDir := t.TempDir() + "/api"
	newAPI := func(controlPlane string) (*agent.Agent, func()) {
		ag, err := agent.New(agent.Config{ControlPlane: controlPlane, Token: tok.Secret, CAPin: tok.Token.GetCaPin(), Service: "api",
			Advertise: "127.0.0.1:1", StateDir: stateDir, BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = ag.Run(ctx) }()
		var once sync.Once
		stop := func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(stop)
		return ag, stop
	}
	api, stopAPI := newAPI(a.Addr)
	webLog := &endpointLog{callee: api.InstanceID()}
	runAgent(t, b, b.Addr, "web", webLog)

	cli, err := e.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	eventually(t, "api SYNCED on a, asked through b, and web has its endpoint", func() bool {
		ps := statusVia(t, b, api.InstanceID())
		l, ok := webLog.last()
		return ps != nil && ps.GetState() == meshv1.SyncState_SYNC_STATE_SYNCED && ok && l.has
	})
	if c, _ := listedConnected(t, b, api.InstanceID()); !c {
		t.Fatal("api listed disconnected through b while its stream is on a")
	}

	cut := time.Now()
	relay.Cut(true)
	eventually(t, "api DISCONNECTED through b once a's lease expired", func() bool {
		ps := statusVia(t, b, api.InstanceID())
		return ps != nil && ps.GetState() == meshv1.SyncState_SYNC_STATE_DISCONNECTED && !ps.GetProxy().GetConnected()
	})
	if c, found := listedConnected(t, b, api.InstanceID()); !found || c {
		t.Fatalf("meshctl proxies through b: api found=%v connected=%v, want listed and disconnected", found, c)
	}
	// The leader (b, once a's lease is gone) writes the grace.
	var graceUntil time.Time
	eventually(t, "the leader wrote api's endpoint grace", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := cli.Get(ctx, prefix+"t/"+store.TableProxies+"/"+api.InstanceID())
		if err != nil || len(r.Kvs) != 1 {
			return false
		}
		var p store.Proxy
		if err := json.Unmarshal(r.Kvs[0].Value, &p); err != nil {
			t.Fatalf("api's record: %v", err)
		}
		graceUntil = p.GraceUntil
		return !p.Connected && !p.GraceUntil.IsZero()
	})
	if graceUntil.Before(cut.Add(grace)) {
		t.Fatalf("api's grace ends at %s, before the cut (%s) plus the grace %s: it must run from when its presence vanished", graceUntil, cut, grace)
	}
	eventually(t, "web lost api's endpoint after the grace", func() bool {
		l, ok := webLog.last()
		return ok && !l.has
	})
	webLog.mu.Lock()
	for _, l := range webLog.log {
		if !l.has && l.at.Before(graceUntil) {
			webLog.mu.Unlock()
			t.Fatalf("web applied a snapshot without api at %s, before its grace ended (%s)", l.at, graceUntil)
		}
	}
	webLog.mu.Unlock()

	// api comes back, against b: SYNCED again, an endpoint again.
	stopAPI()
	newAPI(b.Addr)
	eventually(t, "api SYNCED again through b and web has its endpoint again", func() bool {
		ps := statusVia(t, b, api.InstanceID())
		l, ok := webLog.last()
		return ps != nil && ps.GetState() == meshv1.SyncState_SYNC_STATE_SYNCED && ps.GetProxy().GetConnected() && ok && l.has
	})
	if c, _ := listedConnected(t, b, api.InstanceID()); !c {
		t.Fatal("api listed disconnected through b after it reconnected there")
	}
}
