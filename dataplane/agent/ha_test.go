package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/store"
	"minimesh/controlplane/store/storetest"
	"minimesh/dataplane/agent"
	"minimesh/internal/meshctl"
	meshv1 "minimesh/proto/mesh/v1"
)

// endpointWatch is an Applier that records every snapshot a caller applied
// after the callee first appeared in one that lacked it: the callee must
// stay an endpoint throughout.
type endpointWatch struct {
	callee string // instance ID; set once known
	mu     sync.Mutex
	seen   bool
	lacked []string // versions applied without the callee after it was seen
}

func (w *endpointWatch) Apply(snap *meshv1.Snapshot) ([]*meshv1.FileStatus, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	has := false
	for _, ep := range snap.GetEndpoints() {
		has = has || (w.callee != "" && ep.GetInstanceId() == w.callee)
	}
	if has {
		w.seen = true
	} else if w.seen {
		w.lacked = append(w.lacked, snap.GetVersion())
	}
	return nil, nil
}

func (w *endpointWatch) check(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.seen {
		t.Fatal("the caller never had the callee's endpoint")
	}
	if len(w.lacked) > 0 {
		t.Fatalf("the caller applied snapshots without the callee's endpoint while it ran: %v", w.lacked)
	}
}

func startEtcd(t *testing.T) *storetest.Etcd {
	t.Helper()
	e, err := storetest.StartEmbedded(t.TempDir())
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(e.Stop)
	return e
}

func caKeyFile(t *testing.T) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.key")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// replica starts one meshd replica named name on the etcd prefix.
func replica(t *testing.T, e *storetest.Etcd, prefix, name, keyFile string, age time.Duration) *controlplanetest.Meshd {
	t.Helper()
	return controlplanetest.Start(t, controlplane.Config{
		Etcd:      &store.EtcdConfig{Endpoints: e.Endpoints, Prefix: prefix, Replica: name, SessionTTL: 2},
		CAKeyFile: keyFile, MaxConnectionAge: age,
	})
}

// runAgent bootstraps a proxy of service through m's token and runs it
// against controlPlane until the test ends.
func runAgent(t *testing.T, m *controlplanetest.Meshd, controlPlane, service string, ap agent.Applier) *agent.Agent {
	t.Helper()
	tok := m.Token(t, "default", service, 1)
	a, err := agent.New(agent.Config{ControlPlane: controlPlane, Token: tok.Secret, CAPin: tok.Token.GetCaPin(), Service: service,
		Advertise: "127.0.0.1:1", StateDir: t.TempDir() + "/state", Applier: ap, BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// statusVia is the instance's proxy-status as replica m answers it.
func statusVia(t *testing.T, m *controlplanetest.Meshd, instance string) *meshv1.ProxySync {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := m.Operator(t).ProxyStatus(ctx, &meshv1.ProxyStatusRequest{})
	if err != nil {
		t.Fatalf("ProxyStatus via %s: %v", m.Addr, err)
	}
	for _, p := range resp.GetProxies() {
		if p.GetProxy().GetInstanceId() == instance {
			return p
		}
	}
	return nil
}

// eventually polls cond every 50ms for at most 30s (a generous bound, not
// a measurement); it logs how long it took.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s: %s", what, time.Since(start).Round(time.Millisecond))
}

// TestProxyFailsOverAcrossReplicas: two meshd replicas on one etcd prefix;
// proxies given both addresses. The callee's status is SYNCED asked through
// the replica that does not hold its stream; its replica stops, it
// reconnects to the other and stays an endpoint of its caller throughout;
// meshctl given both addresses answers with the first one down.
func TestProxyFailsOverAcrossReplicas(t *testing.T) {
	e := startEtcd(t)
	keyFile := caKeyFile(t)
	prefix := "/ha-failover/"
	ms := map[string]*controlplanetest.Meshd{}
	for _, n := range []string{"a", "b"} {
		ms[n] = replica(t, e, prefix, n, keyFile, 0)
	}
	both := ms["a"].Addr + "," + ms["b"].Addr
	watch := &endpointWatch{}
	api := runAgent(t, ms["a"], both, "api", nil)
	watch.mu.Lock()
	watch.callee = api.InstanceID()
	watch.mu.Unlock()
	web := runAgent(t, ms["b"], both, "web", watch)

	cli, err := e.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var holder string // the replica holding api's stream
	eventually(t, "api registered (a presence key)", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := cli.Get(ctx, prefix+"presence/"+api.InstanceID())
		if err == nil && len(r.Kvs) == 1 {
			holder = string(r.Kvs[0].Value)
		}
		return holder != ""
	})
	other := map[string]string{"a": "b", "b": "a"}[holder]
	eventually(t, "api SYNCED asked through the replica without its stream", func() bool {
		ps := statusVia(t, ms[other], api.InstanceID())
		return ps != nil && ps.GetState() == meshv1.SyncState_SYNC_STATE_SYNCED && ps.GetProxy().GetConnected()
	})
	eventually(t, "web has api's endpoint", func() bool {
		watch.mu.Lock()
		defer watch.mu.Unlock()
		return watch.seen
	})

	ms[holder].Stop()
	eventually(t, "api reconnected to the surviving replica and SYNCED there", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := cli.Get(ctx, prefix+"presence/"+api.InstanceID())
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != other {
			return false
		}
		ps := statusVia(t, ms[other], api.InstanceID())
		return ps != nil && ps.GetState() == meshv1.SyncState_SYNC_STATE_SYNCED
	})
	if err := api.Ready(); err != nil {
		t.Fatalf("api not ready after the failover: %v", err)
	}
	if web.Applied() == nil {
		t.Fatal("web applied no snapshot")
	}
	watch.check(t)

	// meshctl with the stopped replica first in --server.
	var out, errb bytes.Buffer
	root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: &errb})
	root.SetArgs([]string{"--server", ms[holder].Addr + "," + ms[other].Addr, "--credentials", ms[other].OperatorCredentialDir(), "proxy-status", "-o", "json"})
	if err := root.Execute(); err != nil {
		t.Fatalf("meshctl --server %s,%s proxy-status with the first down: %v (%s)", ms[holder].Addr, ms[other].Addr, err, errb.String())
	}
	var got struct {
		Proxies []struct {
			Proxy struct {
				InstanceID string `json:"instanceId"`
			} `json:"proxy"`
			State string `json:"state"`
		} `json:"proxies"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("meshctl proxy-status -o json: %v\n%s", err, out.String())
	}
	found := ""
	for _, p := range got.Proxies {
		if p.Proxy.InstanceID == api.InstanceID() {
			found = p.State
		}
	}
	if !strings.Contains(found, "SYNCED") {
		t.Fatalf("meshctl through the survivor: api is %q, want SYNCED\n%s", found, out.String())
	}
}

// TestStreamAgesOutWithoutLosingTheEndpoint: a replica with a 2s
// MaxConnectionAge ends the proxy's stream; the proxy reconnects without
// sending a Drain (no drain counted), and its caller never applies a
// snapshot without it.
func TestStreamAgesOutWithoutLosingTheEndpoint(t *testing.T) {
	e := startEtcd(t)
	keyFile := caKeyFile(t)
	prefix := "/ha-age/"
	a := replica(t, e, prefix, "a", keyFile, 2*time.Second)
	b := replica(t, e, prefix, "b", keyFile, 2*time.Second)
	both := a.Addr + "," + b.Addr
	watch := &endpointWatch{}
	api := runAgent(t, a, both, "api", nil)
	watch.mu.Lock()
	watch.callee = api.InstanceID()
	watch.mu.Unlock()
	runAgent(t, a, both, "web", watch)
	cli, err := e.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// Each (re)registration writes a new ConnectedAt; count distinct ones.
	seen := map[string]bool{}
	eventually(t, "api's stream ended by age and re-registered", func() bool {
		for _, m := range []*controlplanetest.Meshd{a, b} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := m.Operator(t).ListProxies(ctx, &meshv1.ListProxiesRequest{})
			cancel()
			if err != nil {
				continue
			}
			for _, p := range resp.GetProxies() {
				if p.GetInstanceId() == api.InstanceID() && p.GetConnected() {
					seen[p.GetConnectedAt().AsTime().String()] = true
				}
			}
		}
		return len(seen) >= 2
	})
	for _, m := range []*controlplanetest.Meshd{a, b} {
		fams, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := -1.0
		for _, f := range fams {
			if f.GetName() == "minimesh_meshd_proxy_drains_total" {
				n = f.GetMetric()[0].GetCounter().GetValue()
			}
		}
		if n != 0 {
			t.Fatalf("minimesh_meshd_proxy_drains_total = %v (-1: not exported): a stream ended by age must not drain", n)
		}
	}
	watch.check(t)
}
