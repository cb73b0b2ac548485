package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/api"
	"minimesh/controlplane/store/storetest"
	"minimesh/dataplane/proxy"
	"minimesh/dataplane/sidecar"
	"minimesh/internal/meshctl"
	meshv1 "minimesh/proto/mesh/v1"
)

// Issue 19's faults: three meshd replicas (subprocesses, so a SIGKILL is a
// SIGKILL) on one etcd (Debian's binary, behind a TCP relay the test can
// cut), with --lease-ttl 2s and 20 s SVIDs; web calls api through a
// discovery-only upstream, both proxies listing all three replicas. Every
// test fails if a request fails or if web applied a snapshot without api's
// endpoint while api ran.

const haPrefix = "/ha/"

// haMesh is one etcd and three meshd replicas on it.
type haMesh struct {
	t       *testing.T
	etcd    *storetest.Etcd
	relay   *storetest.Relay
	cli     *clientv3.Client
	bin     string
	keyFile string
	svidTTL time.Duration
	reps    [3]*replicaProc
	all     string // the three addresses, comma-separated
}

type replicaProc struct {
	meshdProc
	m *haMesh
}

func (r *replicaProc) start() {
	r.t.Helper()
	for i := 0; ; i++ {
		l, err := net.Listen("tcp", r.addr)
		if err == nil {
			l.Close()
			break
		}
		if i == 100 {
			r.t.Fatalf("meshd's address: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.cmd = exec.Command(r.bin, "--data-dir", r.dir, "--listen", r.addr, "--store", "etcd://"+r.m.relay.Addr(),
		"--etcd-prefix", haPrefix, "--ca-key-file", r.m.keyFile, "--lease-ttl", "2s", "--svid-ttl", r.m.svidTTL.String(),
		"--log-level", "warn")
	if os.Getenv("MINIMESH_TEST_LOG") != "" {
		r.cmd.Stderr = os.Stderr
	}
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
}

func (r *replicaProc) pid() int {
	if r.cmd == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// buildMeshd builds cmd/meshd into the test's temp dir.
func buildMeshd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meshd")
	build := exec.Command("go", "build", "-o", bin, "minimesh/cmd/meshd")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build meshd: %v", err)
	}
	return bin
}

// startHAMesh starts etcd and the relay, and prepares (does not start)
// three replicas.
func startHAMesh(t *testing.T, svidTTL time.Duration) *haMesh {
	t.Helper()
	if testing.Short() {
		t.Skip("builds meshd and runs etcd")
	}
	etcdBin := storetest.EtcdBinary()
	if etcdBin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no etcd binary (Debian's etcd-server); CI must have it")
		}
		t.Skip("no etcd binary (apt-get install etcd-server)")
	}
	m := &haMesh{t: t, bin: buildMeshd(t), svidTTL: svidTTL}
	e, err := storetest.StartBinary(etcdBin, t.TempDir())
	if err != nil {
		t.Fatalf("etcd: %v", err)
	}
	t.Cleanup(e.Stop)
	m.etcd = e
	m.relay = storetest.NewRelay(t, strings.TrimPrefix(e.Endpoints[0], "http://"))
	if m.cli, err = e.Client(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.cli.Close() })
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	m.keyFile = filepath.Join(t.TempDir(), "ca.key")
	if err := os.WriteFile(m.keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for i := range m.reps {
		r := &replicaProc{meshdProc: meshdProc{t: t, bin: m.bin, dir: filepath.Join(t.TempDir(), fmt.Sprintf("m%d", i)), addr: freeLoopback(t)}, m: m}
		m.reps[i] = r
		addrs = append(addrs, r.addr)
		t.Cleanup(func() { r.kill(syscall.SIGKILL) })
	}
	m.all = strings.Join(addrs, ",")
	return m
}

// admin is an operator client over all three replicas with replica i's
// credential.
func (m *haMesh) admin(i int) meshv1.AdminServiceClient {
	m.t.Helper()
	m.reps[i].admin() // it answers
	conn, err := meshctl.Dial(m.all, filepath.Join(m.reps[i].dir, "operator"))
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { conn.Close() })
	return meshv1.NewAdminServiceClient(conn)
}

// pidOf is the PID in a replica's name (host-PID-random).
func pidOf(name string) string {
	f := strings.Split(name, "-")
	if len(f) < 3 {
		return ""
	}
	return f[len(f)-2]
}

// leader is the index of the replica that leads (the election key with
// the lowest create revision), or -1.
func (m *haMesh) leader() int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := m.cli.Get(ctx, haPrefix+"leader/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil || len(r.Kvs) == 0 {
		return -1
	}
	return m.byPID(pidOf(string(r.Kvs[0].Value)))
}

// holder is the index of the replica holding instance's stream, or -1.
func (m *haMesh) holder(instance string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := m.cli.Get(ctx, haPrefix+"presence/"+instance)
	if err != nil || len(r.Kvs) != 1 {
		return -1
	}
	return m.byPID(pidOf(string(r.Kvs[0].Value)))
}

func (m *haMesh) byPID(pid string) int {
	for i, r := range m.reps {
		if pid != "" && fmt.Sprint(r.pid()) == pid {
			return i
		}
	}
	return -1
}

// haProxy runs a sidecar for svc listing all three replicas; with
// upstream, a discovery-only upstream to api.
func (m *haMesh) haProxy(admin meshv1.AdminServiceClient, svc string, a *app, upstream bool, log *slog.Logger) (*sidecar.Sidecar, string) {
	t := m.t
	t.Helper()
	tok, err := admin.CreateJoinToken(ctxT(t), &meshv1.CreateJoinTokenRequest{Namespace: "default", ServiceAccount: svc, Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	adminL := listen(t)
	cfg := sidecar.Config{
		ControlPlane: m.all, Token: tok.Secret, CAPin: tok.CaPin, Service: svc, App: a.addr,
		StateDir: t.TempDir(), InboundListener: listen(t), AdminListener: adminL,
		Logger: log, AgentBackoffMax: time.Second, Version: "test", Registry: prometheus.NewRegistry(),
	}
	upstreamAddr := ""
	if upstream {
		l := listen(t)
		upstreamAddr = l.Addr().String()
		cfg.Upstreams = []proxy.Upstream{{Name: "api", Listener: l, Listen: upstreamAddr}}
	}
	sc, _, _ := runSidecar(t, svc, cfg)
	waitAdminReady(t, svc, adminL.Addr().String())
	return sc, upstreamAddr
}

// webAndAPI applies the two services, starts their apps and proxies (api
// first, while only the replicas started so far run) and waits until web
// reaches api. The watch is armed from then on.
type haTraffic struct {
	web, api *sidecar.Sidecar
	upstream string
	watch    *snapshotWatch
}

func (m *haMesh) applyServices(admin meshv1.AdminServiceClient, webApp, apiApp *app) {
	port := func(a *app) string { _, p, _ := net.SplitHostPort(a.addr); return p }
	applyVia(m.t, admin, fmt.Sprintf(`
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: %s, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/api"]
---
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: %s, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/web"]
`, port(apiApp), port(webApp)))
}

func (m *haMesh) startWeb(admin meshv1.AdminServiceClient, tr *haTraffic, webApp *app) {
	t := m.t
	tr.watch = &snapshotWatch{next: logger()}
	tr.web, tr.upstream = m.haProxy(admin, "web", webApp, true, slog.New(tr.watch))
	apiInstance := tr.api.Agent.InstanceID()
	eventually(t, 20*time.Second, "web knows api's endpoint", func() error {
		if !hasEndpointOf(tr.web.Agent.Applied(), apiInstance) {
			return fmt.Errorf("web's endpoints: %v", tr.web.Agent.Applied().GetEndpoints())
		}
		_, err := get(&http.Client{Timeout: 10 * time.Second}, "http://"+tr.upstream+"/warm", nil)
		return err
	})
	tr.watch.arm()
}

// checkTraffic stops the load and fails on any failed request or any
// snapshot of web without api's endpoint.
func checkTraffic(t *testing.T, l *load, tr *haTraffic, what string) (int, int) {
	t.Helper()
	n, failed := l.halt()
	if failed != 0 {
		t.Errorf("%s: %d of %d requests failed (first: %v)", what, failed, n, l.first)
	}
	if n < 20 {
		t.Errorf("%s: only %d requests were sent", what, n)
	}
	applied, bad := tr.watch.result()
	if applied == 0 {
		t.Errorf("%s: web applied no snapshot at all", what)
	}
	for _, b := range bad {
		t.Errorf("%s: web applied a snapshot without api's endpoint while api ran: %s", what, b)
	}
	return n, applied
}

// waitAllSynced waits until every connected proxy is SYNCED on the version
// meshd computes now, at a revision at least rev.
func waitAllSynced(t *testing.T, admin meshv1.AdminServiceClient, want int, rev uint64) {
	t.Helper()
	eventually(t, 30*time.Second, "every proxy SYNCED on the newest version", func() error {
		resp, err := admin.ProxyStatus(ctxT(t), &meshv1.ProxyStatusRequest{})
		if err != nil {
			return err
		}
		n := 0
		for _, p := range resp.GetProxies() {
			if !p.GetProxy().GetConnected() {
				continue
			}
			n++
			if p.GetState() != meshv1.SyncState_SYNC_STATE_SYNCED || p.GetAckedVersion() != p.GetCurrentVersion() || p.GetRevision() < rev {
				return fmt.Errorf("%s (%s) is %v, acked %q of %q at revision %d (want >= %d)", p.GetProxy().GetService(), p.GetProxy().GetInstanceId(),
					p.GetState(), p.GetAckedVersion(), p.GetCurrentVersion(), p.GetRevision(), rev)
			}
		}
		if n < want {
			return fmt.Errorf("%d proxies connected, want %d", n, want)
		}
		return nil
	})
}

// TestLeaderKilledLosesNothing: the replica that leads and holds api's
// stream is SIGKILLed while web calls api, an operator applies in a loop
// and new proxies bootstrap with a token of two uses.
func TestLeaderKilledLosesNothing(t *testing.T) {
	m := startHAMesh(t, 20*time.Second)
	// Replica 0 alone first: it leads, and api's proxy can reach only it.
	m.reps[0].start()
	admin0 := m.admin(0)
	eventually(t, 20*time.Second, "replica 0 leads", func() error {
		if l := m.leader(); l != 0 {
			return fmt.Errorf("leader is %d", l)
		}
		return nil
	})
	webApp, apiApp := startApp(t, "web"), startApp(t, "api")
	m.applyServices(admin0, webApp, apiApp)
	tr := &haTraffic{}
	tr.api, _ = m.haProxy(admin0, "api", apiApp, false, logger())
	m.reps[1].start()
	m.reps[2].start()
	admin := m.admin(1) // a survivor's credential
	m.admin(2)
	m.startWeb(admin, tr, webApp)

	// Preconditions: replica 0 leads and holds api's stream.
	if l, h := m.leader(), m.holder(tr.api.Agent.InstanceID()); l != 0 || h != 0 {
		t.Fatalf("precondition: the replica to kill (0) must lead and hold api's stream: leader %d, api's stream on %d", l, h)
	}
	l := startLoad(t, "http://"+tr.upstream+"/kill")

	// The operator: one Service per Apply, each acknowledged one recorded.
	type ack struct {
		name string
		at   time.Time
		rev  uint64
	}
	var (
		acksMu sync.Mutex
		acks   []ack
		tries  int
	)
	stopOp := make(chan struct{})
	opDone := make(chan struct{})
	go func() {
		defer close(opDone)
		for i := 0; ; i++ {
			select {
			case <-stopOp:
				return
			default:
			}
			name := fmt.Sprintf("op-%d", i)
			docs, err := api.Decode("op.yaml", strings.NewReader(fmt.Sprintf(`
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: %s}
spec:
  ports: [{name: http, port: 8080, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/%s"]
`, name, name)))
			if err != nil {
				panic(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := admin.Apply(ctx, &meshv1.ApplyRequest{Resources: []*meshv1.Resource{api.ToProto(docs[0].Object)}})
			cancel()
			acksMu.Lock()
			tries++
			if err == nil {
				acks = append(acks, ack{name, time.Now(), resp.GetRevision()})
			}
			acksMu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	countAcks := func(after time.Time) int {
		acksMu.Lock()
		defer acksMu.Unlock()
		n := 0
		for _, a := range acks {
			if a.at.After(after) {
				n++
			}
		}
		return n
	}
	eventually(t, 20*time.Second, "5 applies acknowledged before the kill", func() error {
		if n := countAcks(time.Time{}); n < 5 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})

	// New proxies bootstrap during the fault: three with one token of two uses.
	tok, err := admin.CreateJoinToken(ctxT(t), &meshv1.CreateJoinTokenRequest{Namespace: "default", ServiceAccount: "worker", Uses: 2})
	if err != nil {
		t.Fatal(err)
	}

	kill := time.Now()
	m.reps[0].kill(syscall.SIGKILL)
	var workers []*sidecar.Sidecar
	for range 3 {
		adminL := listen(t)
		cfg := sidecar.Config{
			ControlPlane: m.all, Token: tok.Secret, CAPin: tok.CaPin, Service: "worker", App: apiApp.addr,
			StateDir: t.TempDir(), InboundListener: listen(t), AdminListener: adminL,
			Logger: logger(), AgentBackoffMax: time.Second, Version: "test", Registry: prometheus.NewRegistry(),
		}
		sc, err := sidecar.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = sc.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		workers = append(workers, sc)
	}

	eventually(t, 30*time.Second, "a new leader among the survivors", func() error {
		if ld := m.leader(); ld != 1 && ld != 2 {
			return fmt.Errorf("leader is %d", ld)
		}
		return nil
	})
	leaderAfter := time.Since(kill)
	eventually(t, 30*time.Second, "api's stream on a survivor", func() error {
		if h := m.holder(tr.api.Agent.InstanceID()); h != 1 && h != 2 {
			return fmt.Errorf("api's stream on %d", h)
		}
		return nil
	})
	apiBackAfter := time.Since(kill)
	eventually(t, 30*time.Second, "5 applies acknowledged after the kill", func() error {
		if n := countAcks(kill); n < 5 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})
	ready := func() int {
		n := 0
		for _, w := range workers {
			if w.Agent.Ready() == nil {
				n++
			}
		}
		return n
	}
	eventually(t, 30*time.Second, "two new proxies bootstrapped on the token of two uses", func() error {
		if n := ready(); n < 2 {
			return fmt.Errorf("%d ready", n)
		}
		return nil
	})
	close(stopOp)
	<-opDone

	n, applied := checkTraffic(t, l, tr, "leader killed")
	acksMu.Lock()
	defer acksMu.Unlock()
	var lastRev uint64
	for _, a := range acks {
		res, err := admin.GetResources(ctxT(t), &meshv1.GetResourcesRequest{Kind: "Service", Namespace: "default", Name: a.name})
		if err != nil || len(res.GetResources()) != 1 {
			t.Errorf("acknowledged Apply of Service %s (revision %d) is not there after the kill: %v %v", a.name, a.rev, res.GetResources(), err)
		}
		lastRev = max(lastRev, a.rev)
	}
	// No token used more often than its uses.
	if n := ready(); n > 2 {
		t.Errorf("%d proxies bootstrapped on a token of 2 uses", n)
	}
	toks, err := admin.ListJoinTokens(ctxT(t), &meshv1.ListJoinTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks.GetTokens() {
		if tk.GetId() == tok.GetToken().GetId() && tk.GetUsesLeft() != 0 {
			t.Errorf("the worker token has %d uses left after two bootstraps", tk.GetUsesLeft())
		}
	}
	proxies, err := admin.ListProxies(ctxT(t), &meshv1.ListProxiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	workerIDs := 0
	for _, p := range proxies.GetProxies() {
		if p.GetService() == "worker" {
			workerIDs++
		}
	}
	if workerIDs > 2 {
		t.Errorf("%d worker proxies registered on a token of 2 uses", workerIDs)
	}
	waitAllSynced(t, admin, 4, lastRev)
	before := 0
	for _, a := range acks {
		if a.at.Before(kill) {
			before++
		}
	}
	t.Logf("leader (replica 0, holding api's stream) SIGKILLed: new leader after %s, api's stream on a survivor after %s; %d requests, 0 failed; %d of %d applies acknowledged (%d before the kill); web applied %d snapshots",
		leaderAfter.Round(time.Millisecond), apiBackAfter.Round(time.Millisecond), n, len(acks), tries, before, applied)
}

// TestRollingRestartOfReplicas: each replica in turn gets SIGTERM and is
// started again, the next only once it answers and both proxies are
// SYNCED: zero failed requests.
func TestRollingRestartOfReplicas(t *testing.T) {
	m := startHAMesh(t, 20*time.Second)
	for _, r := range m.reps {
		r.start()
	}
	admin := m.admin(0)
	m.admin(1)
	m.admin(2)
	webApp, apiApp := startApp(t, "web"), startApp(t, "api")
	m.applyServices(admin, webApp, apiApp)
	tr := &haTraffic{}
	tr.api, _ = m.haProxy(admin, "api", apiApp, false, logger())
	m.startWeb(admin, tr, webApp)
	l := startLoad(t, "http://"+tr.upstream+"/roll")
	start := time.Now()
	var moved []string
	for i, r := range m.reps {
		h := m.holder(tr.api.Agent.InstanceID())
		r.kill(syscall.SIGTERM)
		r.start()
		r.admin()
		waitSynced(t, admin, "web", "api")
		moved = append(moved, fmt.Sprintf("replica %d (api's stream was on %d, leader now %d)", i, h, m.leader()))
	}
	rolled := time.Since(start)
	n, applied := checkTraffic(t, l, tr, "rolling restart")
	t.Logf("rolled all three replicas in %s: %s; %d requests, 0 failed; web applied %d snapshots", rolled.Round(time.Millisecond), strings.Join(moved, ", "), n, applied)
}

// TestRotationSurvivesLeaderKill: a root rotation is started, and while it
// is mid-phase the leader is SIGKILLed; the rotation completes under the
// new leader (idle, the new root active), zero failed requests.
func TestRotationSurvivesLeaderKill(t *testing.T) {
	m := startHAMesh(t, 20*time.Second)
	m.reps[0].start()
	leaderAdmin := m.reps[0].admin() // replica 0 alone
	eventually(t, 20*time.Second, "replica 0 leads", func() error {
		if l := m.leader(); l != 0 {
			return fmt.Errorf("leader is %d", l)
		}
		return nil
	})
	m.reps[1].start()
	m.reps[2].start()
	admin := m.admin(1)
	m.admin(2)
	webApp, apiApp := startApp(t, "web"), startApp(t, "api")
	m.applyServices(admin, webApp, apiApp)
	tr := &haTraffic{}
	tr.api, _ = m.haProxy(admin, "api", apiApp, false, logger())
	m.startWeb(admin, tr, webApp)
	l := startLoad(t, "http://"+tr.upstream+"/rotate")

	st, err := admin.CAStatus(ctxT(t), &meshv1.CAStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	oldPin := st.GetActive().GetPin()
	// Through the leader, which is then killed (any replica takes an
	// operator's step: controlplane/onetcd covers a follower's).
	started, err := leaderAdmin.RotateCA(ctxT(t), &meshv1.RotateCARequest{})
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if l := m.leader(); l != 0 {
		t.Fatalf("precondition: replica 0 must still lead at the kill; leader is %d", l)
	}
	st, err = leaderAdmin.CAStatus(ctxT(t), &meshv1.CAStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	phase := st.GetPhase()
	kill := time.Now()
	m.reps[0].kill(syscall.SIGKILL)
	if phase != "prepared" && phase != "activated" {
		t.Fatalf("precondition: the rotation must be mid-phase at the kill; it was %q (rotate answered %q)", phase, started.GetStatus().GetPhase())
	}
	var phases []string
	eventually(t, 60*time.Second, "the rotation completes after the kill", func() error {
		// A fresh connection each time: the operator credential in the
		// replica's data dir is re-issued from the new root.
		conn, err := meshctl.Dial(m.all, filepath.Join(m.reps[1].dir, "operator"))
		if err != nil {
			return err
		}
		defer conn.Close()
		admin = meshv1.NewAdminServiceClient(conn)
		st, err := admin.CAStatus(ctxT(t), &meshv1.CAStatusRequest{})
		if err != nil {
			return err
		}
		if len(phases) == 0 || phases[len(phases)-1] != st.GetPhase() {
			phases = append(phases, st.GetPhase())
		}
		if st.GetPhase() != "idle" || st.GetActive().GetPin() == oldPin {
			return fmt.Errorf("phase %s, waiting for %s", st.GetPhase(), st.GetWaitingFor())
		}
		return nil
	})
	completed := time.Since(kill)
	waitSynced(t, m.admin(1), "web", "api")
	n, applied := checkTraffic(t, l, tr, "rotation across a leader kill")
	t.Logf("rotation in phase %s at the leader's SIGKILL, completed %s after it (phases seen after: %v); %d requests, 0 failed; web applied %d snapshots",
		phase, completed.Round(time.Millisecond), phases, n, applied)
}

// TestEtcdDownForTwoSVIDLifetimes: etcd is cut off from all three replicas
// for twice the SVID lifetime while web calls api: no request fails (the
// proxies renew on the replicas' caches), writes are refused with
// Unavailable naming etcd, and when etcd returns everything recovers by
// itself (writes succeed, both proxies SYNCED).
func TestEtcdDownForTwoSVIDLifetimes(t *testing.T) {
	svid := 10 * time.Second
	if soak {
		svid = 60 * time.Second
	}
	m := startHAMesh(t, svid)
	for _, r := range m.reps {
		r.start()
	}
	admin := m.admin(0)
	m.admin(1)
	m.admin(2)
	webApp, apiApp := startApp(t, "web"), startApp(t, "api")
	m.applyServices(admin, webApp, apiApp)
	tr := &haTraffic{}
	tr.api, _ = m.haProxy(admin, "api", apiApp, false, logger())
	m.startWeb(admin, tr, webApp)
	l := startLoad(t, "http://"+tr.upstream+"/etcd-down")
	webSerial := tr.web.Agent.SVIDSource().Current().Certificates[0].SerialNumber.Text(16)

	down := time.Now()
	m.relay.Cut(true)
	// Writes are refused, naming etcd.
	var refusal error
	eventually(t, 30*time.Second, "an Apply refused naming etcd", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		docs, err := api.Decode("x.yaml", strings.NewReader(`
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: during}
spec:
  ports: [{name: http, port: 8080, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/during"]
`))
		if err != nil {
			t.Fatal(err)
		}
		_, refusal = admin.Apply(ctx, &meshv1.ApplyRequest{Resources: []*meshv1.Resource{api.ToProto(docs[0].Object)}})
		if refusal == nil {
			t.Fatal("an Apply was acknowledged while etcd was cut off")
		}
		if st, _ := status.FromError(refusal); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "etcd") {
			return fmt.Errorf("Apply: %v, want Unavailable naming etcd", refusal)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	_, tokErr := admin.CreateJoinToken(ctx, &meshv1.CreateJoinTokenRequest{Namespace: "default", ServiceAccount: "x", Uses: 1})
	cancel()
	if st, _ := status.FromError(tokErr); tokErr == nil || st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "etcd") {
		t.Errorf("CreateJoinToken with etcd down: %v, want Unavailable naming etcd", tokErr)
	}
	time.Sleep(time.Until(down.Add(2 * svid)))
	m.relay.Cut(false)
	outage := time.Since(down)
	cur := tr.web.Agent.SVIDSource().Current().Certificates[0]
	if cur.SerialNumber.Text(16) == webSerial || time.Now().After(cur.NotAfter) {
		t.Errorf("web's SVID was not renewed while etcd was down (serial %s, expires %s)", cur.SerialNumber.Text(16), cur.NotAfter)
	}

	eventually(t, 30*time.Second, "writes succeed again", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := admin.CreateJoinToken(ctx, &meshv1.CreateJoinTokenRequest{Namespace: "default", ServiceAccount: "x", Uses: 1})
		return err
	})
	writesBack := time.Since(down) - outage
	waitAllSynced(t, admin, 2, 0)
	synced := time.Since(down) - outage
	n, applied := checkTraffic(t, l, tr, "etcd down")
	t.Logf("etcd cut off for %s (SVIDs of %s); refusal meanwhile: %v; writes back %s and both proxies SYNCED %s after etcd returned; %d requests, 0 failed; web applied %d snapshots",
		outage.Round(time.Millisecond), svid, refusal, writesBack.Round(time.Millisecond), synced.Round(time.Millisecond), n, applied)
}
