package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
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

	"minimesh/api"
	"minimesh/dataplane/proxy"
	"minimesh/dataplane/sidecar"
	"minimesh/internal/meshctl"
	meshv1 "minimesh/proto/mesh/v1"
)

// TestMeshdRestartsCostNoRequest restarts meshd (a subprocess: SIGTERM and
// SIGKILL, some in quick succession, before every proxy is back) while web
// calls api through a discovery-only upstream (no static remote: the
// endpoint comes from meshd or from nowhere). No request may fail, and no
// snapshot web applies may lack api's endpoint while api runs. Then api
// drains, and its endpoint leaves web's snapshot well before the grace.
func TestMeshdRestartsCostNoRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds meshd and restarts it")
	}
	restarts := 5
	if soak {
		restarts = 40
	}
	bin := filepath.Join(t.TempDir(), "meshd")
	build := exec.Command("go", "build", "-o", bin, "minimesh/cmd/meshd")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build meshd: %v", err)
	}
	md := &meshdProc{t: t, bin: bin, dir: filepath.Join(t.TempDir(), "data"), addr: freeLoopback(t)}
	md.start()
	t.Cleanup(func() { md.kill(syscall.SIGKILL) })
	admin := md.admin()

	webApp, apiApp := startApp(t, "web"), startApp(t, "api")
	port := func(a *app) string { _, p, _ := net.SplitHostPort(a.addr); return p }
	applyVia(t, admin, fmt.Sprintf(`
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

	// web's applied snapshots, every one, through its agent's log.
	watch := &snapshotWatch{next: logger()}
	runProxy := func(svc string, a *app, upstream bool, log *slog.Logger) (*sidecar.Sidecar, context.CancelFunc, chan error, string) {
		tok, err := admin.CreateJoinToken(ctxT(t), &meshv1.CreateJoinTokenRequest{Namespace: "default", ServiceAccount: svc, Uses: 1})
		if err != nil {
			t.Fatal(err)
		}
		adminL := listen(t)
		cfg := sidecar.Config{
			ControlPlane: md.addr, Token: tok.Secret, CAPin: tok.CaPin, Service: svc, App: a.addr,
			StateDir: t.TempDir(), InboundListener: listen(t), AdminListener: adminL,
			Logger: log, AgentBackoffMax: time.Second, Version: "test", Registry: prometheus.NewRegistry(),
		}
		upstreamAddr := ""
		if upstream {
			l := listen(t)
			upstreamAddr = l.Addr().String()
			// Discovery only: no Remote, no ID.
			cfg.Upstreams = []proxy.Upstream{{Name: "api", Listener: l, Listen: upstreamAddr}}
		}
		sc, cancel, done := runSidecar(t, svc, cfg)
		waitAdminReady(t, svc, adminL.Addr().String())
		return sc, cancel, done, upstreamAddr
	}
	apiProxy, stopAPI, apiDone, _ := runProxy("api", apiApp, false, logger())
	web, _, _, upstream := runProxy("web", webApp, true, slog.New(watch))
	apiInstance := apiProxy.Agent.InstanceID()
	eventually(t, 15*time.Second, "web knows api's endpoint", func() error {
		if !hasEndpointOf(web.Agent.Applied(), apiInstance) {
			return fmt.Errorf("web's endpoints: %v", web.Agent.Applied().GetEndpoints())
		}
		_, err := get(&http.Client{Timeout: 10 * time.Second}, "http://"+upstream+"/warm", nil)
		return err
	})
	watch.arm()
	l := startLoad(t, "http://"+upstream+"/restart")

	start := time.Now()
	for i := range restarts {
		sig := syscall.SIGTERM
		if i%2 == 1 {
			sig = syscall.SIGKILL
		}
		md.kill(sig)
		md.start()
		if i%3 == 2 {
			// Straight into the next restart: some proxies are not back yet.
			time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
			continue
		}
		admin = md.admin()
		waitSynced(t, admin, "web", "api")
	}
	admin = md.admin()
	waitSynced(t, admin, "web", "api")
	n, failed := l.halt()
	if failed != 0 {
		t.Errorf("%d of %d requests failed across %d meshd restarts (first: %v)", failed, n, restarts, l.first)
	}
	if n < 20 {
		t.Errorf("only %d requests were sent", n)
	}
	applied, bad := watch.result()
	if applied == 0 {
		t.Error("web applied no snapshot at all: the watch sees nothing (did the agent's log change?)")
	}
	for _, b := range bad {
		t.Errorf("web applied a snapshot without api's endpoint while api ran: %s", b)
	}
	t.Logf("%d meshd restarts in %s: %d requests, %d failed; web applied %d snapshots, %d without api", restarts, time.Since(start).Round(time.Millisecond), n, failed, applied, len(bad))

	// api leaves (SIGTERM's path: its context ends) and says so: its
	// endpoint goes at once, not after the grace (45s).
	if !hasEndpointOf(web.Agent.Applied(), apiInstance) {
		t.Fatalf("web's endpoints before api leaves: %v", web.Agent.Applied().GetEndpoints())
	}
	watch.disarm()
	stopAPI()
	apiDone <- <-apiDone
	eventually(t, 15*time.Second, "api's endpoint leaves web's snapshot after api drained", func() error {
		if hasEndpointOf(web.Agent.Applied(), apiInstance) {
			return fmt.Errorf("web's endpoints: %v", web.Agent.Applied().GetEndpoints())
		}
		return nil
	})
}

// meshdProc is meshd as a subprocess on a fixed data dir and address.
type meshdProc struct {
	t         *testing.T
	bin, dir  string
	addr      string
	cmd       *exec.Cmd
	conns     []func()
	connsLock sync.Mutex
}

func (m *meshdProc) start() {
	m.t.Helper()
	// The address was ours a moment ago; the OS may be slow to free it.
	for i := 0; ; i++ {
		l, err := net.Listen("tcp", m.addr)
		if err == nil {
			l.Close()
			break
		}
		if i == 100 {
			m.t.Fatalf("meshd's address: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.cmd = exec.Command(m.bin, "--data-dir", m.dir, "--listen", m.addr, "--log-level", "warn")
	if os.Getenv("MINIMESH_TEST_LOG") != "" {
		m.cmd.Stderr = os.Stderr
	}
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
}

func (m *meshdProc) kill(sig syscall.Signal) {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = m.cmd.Process.Kill()
		<-done
		m.t.Errorf("meshd did not stop on %v within 15s", sig)
	}
	m.cmd = nil
	m.connsLock.Lock()
	for _, c := range m.conns {
		c()
	}
	m.conns = nil
	m.connsLock.Unlock()
}

// admin waits until meshd answers and returns an operator client.
func (m *meshdProc) admin() meshv1.AdminServiceClient {
	m.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		conn, err := meshctl.Dial(m.addr, filepath.Join(m.dir, "operator"))
		if err == nil {
			c := meshv1.NewAdminServiceClient(conn)
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = c.ListProxies(cctx, &meshv1.ListProxiesRequest{})
			cancel()
			if err == nil {
				m.connsLock.Lock()
				m.conns = append(m.conns, func() { conn.Close() })
				m.connsLock.Unlock()
				return c
			}
			conn.Close()
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	m.t.Fatalf("meshd on %s did not answer: %v", m.addr, lastErr)
	return nil
}

// waitSynced waits until each service's proxy is SYNCED.
func waitSynced(t *testing.T, admin meshv1.AdminServiceClient, services ...string) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprint(services, " SYNCED"), func() error {
		resp, err := admin.ProxyStatus(ctxT(t), &meshv1.ProxyStatusRequest{})
		if err != nil {
			return err
		}
		st := map[string]meshv1.SyncState{}
		for _, p := range resp.GetProxies() {
			st[p.GetProxy().GetService()] = p.GetState()
		}
		for _, s := range services {
			if st[s] != meshv1.SyncState_SYNC_STATE_SYNCED {
				return fmt.Errorf("%s is %v", s, st[s])
			}
		}
		return nil
	})
}

func applyVia(t *testing.T, admin meshv1.AdminServiceClient, doc string) {
	t.Helper()
	docs, err := api.Decode("test.yaml", strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	req := &meshv1.ApplyRequest{}
	for _, d := range docs {
		req.Resources = append(req.Resources, api.ToProto(d.Object))
	}
	if _, err := admin.Apply(ctxT(t), req); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// freeLoopback is a loopback address no one listens on, for a meshd the
// test restarts on the same address.
func freeLoopback(t *testing.T) string {
	t.Helper()
	if lo := ephemeralLow(); lo > minRestartPort {
		for range 100 {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", minRestartPort+rand.IntN(lo-minRestartPort)))
			if err == nil {
				defer l.Close()
				return l.Addr().String()
			}
		}
	}
	l := listen(t)
	defer l.Close()
	return l.Addr().String()
}

// minRestartPort is the lowest port freeLoopback hands out.
const minRestartPort = 10000

// ephemeralLow is the lowest port the kernel picks for a socket bound to
// port 0, or 0 when it cannot be read. freeLoopback's ports lie below it:
// a port of the ephemeral range, once its listener is closed, can become
// the source port of any outgoing connection, and a meshd restarted on it
// then fails with "address already in use" (seen once in
// TestLeaderKilledLosesNothing).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		return 0
	}
	return lo
}

func hasEndpointOf(s *meshv1.Snapshot, instance string) bool {
	for _, e := range s.GetEndpoints() {
		if e.GetInstanceId() == instance {
			return true
		}
	}
	return false
}

// snapshotWatch is a slog handler on web's sidecar that sees every
// snapshot its agent applies ("snapshot applied", with the count of its
// endpoints: web's scope is api alone, so 0 means api's is missing).
type snapshotWatch struct {
	next *slog.Logger // the test log, when asked for

	mu      sync.Mutex
	armed   bool
	applied int
	bad     []string
}

func (w *snapshotWatch) arm()    { w.mu.Lock(); w.armed = true; w.mu.Unlock() }
func (w *snapshotWatch) disarm() { w.mu.Lock(); w.armed = false; w.mu.Unlock() }

func (w *snapshotWatch) result() (int, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.applied, append([]string(nil), w.bad...)
}

func (w *snapshotWatch) Enabled(context.Context, slog.Level) bool { return true }

func (w *snapshotWatch) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "snapshot applied" {
		var version string
		endpoints := int64(-1)
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "version":
				version = a.Value.String()
			case "endpoints":
				endpoints = a.Value.Int64()
			}
			return true
		})
		w.mu.Lock()
		w.applied++
		if w.armed && endpoints < 1 {
			w.bad = append(w.bad, fmt.Sprintf("version %s with %d endpoints at %s", version, endpoints, r.Time.Format(time.RFC3339Nano)))
		}
		w.mu.Unlock()
	}
	if w.next != nil {
		return w.next.Handler().Handle(ctx, r)
	}
	return nil
}

func (w *snapshotWatch) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &attrsHandler{w: w, attrs: attrs}
}

func (w *snapshotWatch) WithGroup(string) slog.Handler { return w }

// attrsHandler keeps a logger's With attributes on the way to the watch.
type attrsHandler struct {
	w     *snapshotWatch
	attrs []slog.Attr
}

func (h *attrsHandler) Enabled(ctx context.Context, l slog.Level) bool { return true }
func (h *attrsHandler) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	return h.w.Handle(ctx, r)
}
func (h *attrsHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &attrsHandler{w: h.w, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}
func (h *attrsHandler) WithGroup(string) slog.Handler { return h }
