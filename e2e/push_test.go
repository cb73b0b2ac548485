package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minimesh/api"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	meshv1 "minimesh/proto/mesh/v1"
)

func applyYAML(t *testing.T, m *controlplanetest.Meshd, doc string) uint64 {
	t.Helper()
	docs, err := api.Decode("test.yaml", strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	req := &meshv1.ApplyRequest{}
	for _, d := range docs {
		req.Resources = append(req.Resources, api.ToProto(d.Object))
	}
	resp, err := m.Operator(t).Apply(context.Background(), req)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return resp.Revision
}

func proxyStatus(t *testing.T, m *controlplanetest.Meshd) map[string]*meshv1.ProxySync {
	t.Helper()
	resp, err := m.Operator(t).ProxyStatus(context.Background(), &meshv1.ProxyStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*meshv1.ProxySync{}
	for _, p := range resp.Proxies {
		out[p.Proxy.Service] = p
	}
	return out
}

// waitStates waits until each named service's proxy is in the given state.
func waitStates(t *testing.T, m *controlplanetest.Meshd, want map[string]meshv1.SyncState) map[string]*meshv1.ProxySync {
	t.Helper()
	var st map[string]*meshv1.ProxySync
	eventually(t, 15*time.Second, fmt.Sprint("proxy states ", want), func() error {
		st = proxyStatus(t, m)
		for svc, w := range want {
			if st[svc] == nil || st[svc].State != w {
				return fmt.Errorf("%s is %v", svc, st[svc].GetState())
			}
		}
		return nil
	})
	return st
}

const meshResources = `
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: 8080, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/api"]
---
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 8080, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/web"]
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: api}
spec:
  service: api
  backends: [{service: api}]
  timeout: 2s
`

func TestConfigPushACKNACKAndLastGood(t *testing.T) {
	meshd := controlplanetest.Start(t, controlplane.Config{})
	webTok := meshd.Token(t, "default", "web", 1)
	apiTok := meshd.Token(t, "default", "api", 1)
	webShared, apiShared := t.TempDir(), t.TempDir()
	webDir := t.TempDir()
	api := startProxy(t, meshd, proxyOpts{service: "api", token: apiTok.Secret, pin: apiTok.CaPin, stateDir: t.TempDir(), app: startApp(t, "api"), sharedDir: apiShared})
	webApp := startApp(t, "web")
	web := startProxy(t, meshd, proxyOpts{service: "web", token: webTok.Secret, pin: webTok.CaPin, stateDir: webDir, app: webApp, sharedDir: webShared})
	web.waitReady(t)
	api.waitReady(t)

	// 1. Apply: every proxy ACKs the snapshot meshd computes for it.
	rev := applyYAML(t, meshd, meshResources)
	// Ready means a first snapshot applied (SYNCED already): wait for the
	// one with the resources.
	for name, p := range map[string]*proxyHandle{"web": web, "api": api} {
		eventually(t, 10*time.Second, name+" applies the resources", func() error {
			return hasResource("Service", name, rev)(p.Agent.Applied())
		})
	}
	var st map[string]*meshv1.ProxySync
	eventually(t, 10*time.Second, "meshd has both ACKs", func() error {
		st = waitStates(t, meshd, map[string]meshv1.SyncState{"web": meshv1.SyncState_SYNC_STATE_SYNCED, "api": meshv1.SyncState_SYNC_STATE_SYNCED})
		if st["web"].AckedVersion != web.Agent.Applied().GetVersion() || st["api"].AckedVersion != api.Agent.Applied().GetVersion() {
			return errors.New("not yet")
		}
		return nil
	})
	webGood := st["web"].AckedVersion
	if got := web.Agent.Applied().GetVersion(); got != webGood {
		t.Fatalf("web applied %q, meshd says it ACKed %q", got, webGood)
	}
	// web has no outbound port, so it asked for no endpoint (its Hello's
	// endpoint scope is empty) and got none.
	if n := len(web.Agent.Applied().GetEndpoints()); n != 0 {
		t.Errorf("web's snapshot has %d endpoints, want none", n)
	}

	// 2. An unchanged snapshot is not pushed again: a RateLimit for api
	// changes api's snapshot only.
	webBefore := web.counter(t, "minimesh_proxy_snapshots_total", "result", "ack")
	apiBefore := api.counter(t, "minimesh_proxy_snapshots_total", "result", "ack")
	applyYAML(t, meshd, `
apiVersion: minimesh.io/v1alpha1
kind: RateLimit
metadata: {name: api}
spec: {service: api, requestsPerSecond: 50, burst: 10}
`)
	eventually(t, 10*time.Second, "api ACKs its new snapshot", func() error {
		if api.counter(t, "minimesh_proxy_snapshots_total", "result", "ack") <= apiBefore {
			return errors.New("not yet")
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // past the debounce: a push to web would have come
	if got := web.counter(t, "minimesh_proxy_snapshots_total", "result", "ack"); got != webBefore {
		t.Fatalf("web got %v snapshots after an api-only change, want none", got-webBefore)
	}
	waitStates(t, meshd, map[string]meshv1.SyncState{"web": meshv1.SyncState_SYNC_STATE_SYNCED, "api": meshv1.SyncState_SYNC_STATE_SYNCED})

	// 3. A snapshot web cannot apply (its ConfigFile path is a symlink out
	// of web's shared dir) is NACKed; web stays on its last good version,
	// api moves on to the new Route.
	if err := os.Symlink(t.TempDir(), filepath.Join(webShared, "conf")); err != nil {
		t.Fatal(err)
	}
	applyYAML(t, meshd, `
apiVersion: minimesh.io/v1alpha1
kind: ConfigFile
metadata: {name: web-settings}
spec: {service: web, path: conf/settings.ini, mode: 0644, content: "a=1\n"}
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: api-v2}
spec:
  service: api
  matches: [{path: {prefix: /v2/}}]
  backends: [{service: api}]
`)
	st = waitStates(t, meshd, map[string]meshv1.SyncState{"web": meshv1.SyncState_SYNC_STATE_NACKED, "api": meshv1.SyncState_SYNC_STATE_SYNCED})
	if !strings.Contains(st["web"].NackReason, "conf") {
		t.Errorf("NACK reason %q does not name the path", st["web"].NackReason)
	}
	if got := web.Agent.Applied().GetVersion(); got != webGood {
		t.Fatalf("web moved to %q after a NACK, want it on %q", got, webGood)
	}
	if st["api"].AckedVersion == "" || st["api"].CurrentVersion != st["api"].AckedVersion {
		t.Errorf("api did not move on: %+v", st["api"])
	}
	out := meshctlRun(t, meshd, "proxy-status")
	if !strings.Contains(out, "NACKED (") || !strings.Contains(out, "SYNCED") {
		t.Errorf("proxy-status:\n%s", out)
	}

	// Fixing the shared dir is not enough by itself; a fixed resource is.
	applyYAML(t, meshd, `
apiVersion: minimesh.io/v1alpha1
kind: ConfigFile
metadata: {name: web-settings}
spec: {service: web, path: settings.ini, mode: 0644, content: "a=2\n"}
`)
	st = waitStates(t, meshd, map[string]meshv1.SyncState{"web": meshv1.SyncState_SYNC_STATE_SYNCED})
	if b, err := os.ReadFile(filepath.Join(webShared, "settings.ini")); err != nil || string(b) != "a=2\n" {
		t.Fatalf("settings.ini = %q, %v", b, err)
	}
	if len(st["web"].Files) != 1 || st["web"].Files[0].Path != "settings.ini" || st["web"].Files[0].WrittenAt == nil {
		t.Errorf("proxy-status files = %v", st["web"].Files)
	}
	webGood = st["web"].AckedVersion
	cfg := meshctlRun(t, meshd, "proxy-config", st["web"].Proxy.InstanceId)
	if !strings.Contains(cfg, "kind: ConfigFile") || !strings.Contains(cfg, webGood) {
		t.Errorf("proxy-config:\n%s", cfg)
	}

	// 4. web restarted while meshd is down serves its last good snapshot.
	meshd.Stop()
	web.stop()
	web = startProxy(t, meshd, proxyOpts{service: "web", stateDir: webDir, app: webApp, sharedDir: webShared})
	web.waitReady(t)
	eventually(t, 5*time.Second, "last good snapshot in force", func() error {
		if got := web.Agent.Applied().GetVersion(); got != webGood {
			return fmt.Errorf("applied %q, want %q", got, webGood)
		}
		return nil
	})
	resp, err := httpGet("http://" + web.admin + "/config")
	if err != nil || !strings.Contains(resp, webGood) {
		t.Fatalf("/config after restart without meshd: %v\n%s", err, resp)
	}
}

// TestEndpointScope: a proxy whose outbound has only upstream ports gets
// the endpoints of those services and of their Routes' backends, no
// others; one with a Host-routed port gets every endpoint.
func TestEndpointScope(t *testing.T) {
	meshd := controlplanetest.Start(t, controlplane.Config{})
	apps := map[string]*echoApp{}
	docs := ""
	for _, svc := range []string{"api", "canary", "db"} {
		apps[svc] = startEcho(t, svc)
		docs += serviceYAML(svc, httpPortYAML(apps[svc].port), idOf(svc).String())
	}
	applyDocs(t, meshd, docs+`
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: api-canary}
spec:
  service: api
  backends: [{service: api, weight: 90}, {service: canary, weight: 10}]
`)
	for _, svc := range []string{"api", "canary", "db"} {
		startTraffic(t, meshd, trafficOpts{service: svc, app: apps[svc].addr})
	}
	scoped := startTraffic(t, meshd, trafficOpts{service: "web", app: startEcho(t, "web").addr, upstreams: []string{"api"}})
	all := startTraffic(t, meshd, trafficOpts{service: "gw", app: startEcho(t, "gw").addr, httpPort: true})
	all.waitSnapshot(t, "every endpoint", func(s *meshv1.Snapshot) error {
		for _, svc := range []string{"api", "canary", "db", "web", "gw"} {
			if err := endpointsOf(svc, 1)(s); err != nil {
				return err
			}
		}
		return nil
	})
	// By now meshd knows every proxy; the scoped one's snapshot is final.
	scoped.waitSnapshot(t, "api's and its route's backend's endpoints", func(s *meshv1.Snapshot) error {
		if err := endpointsOf("api", 1)(s); err != nil {
			return err
		}
		if err := endpointsOf("canary", 1)(s); err != nil {
			return err
		}
		if n := len(s.GetEndpoints()); n != 2 {
			return fmt.Errorf("%d endpoints, want api's and canary's only", n)
		}
		return nil
	})
	// meshctl proxies shows what each asked for.
	out := meshctlRun(t, meshd, "proxies")
	for _, want := range []struct{ service, scope string }{{"web", "default/api (+route backends)"}, {"gw", "all"}, {"db", "none"}} {
		found := false
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) > 2 && f[1] == want.service && strings.HasSuffix(line, want.scope) {
				found = true
			}
		}
		if !found {
			t.Errorf("meshctl proxies: no %s line ending in %q:\n%s", want.service, want.scope, out)
		}
	}
	// The route still works through the scoped proxy's upstream port.
	resp, err := plainHTTP(t).Get("http://" + scoped.up["api"] + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("web -> api through its upstream port: %d", resp.StatusCode)
	}
}
