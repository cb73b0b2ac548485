package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"minimesh/controlplane"
	meshv1 "minimesh/proto/mesh/v1"
)

// soak is true under `make soak`: the long versions of these tests.
var soak = os.Getenv("MINIMESH_SOAK") != ""

// load sends requests web -> api until stopped and counts failures.
type load struct {
	stop  chan struct{}
	once  sync.Once
	done  chan [2]int
	res   [2]int
	first error
}

func startLoad(t *testing.T, url string) *load {
	l := &load{stop: make(chan struct{}), done: make(chan [2]int, 1)}
	client := &http.Client{Timeout: 10 * time.Second}
	go func() {
		var n, failed int
		for {
			select {
			case <-l.stop:
				l.done <- [2]int{n, failed}
				return
			default:
			}
			if _, err := get(client, url, nil); err != nil {
				if failed == 0 {
					l.first = err
				}
				failed++
			}
			n++
			time.Sleep(5 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { l.halt() })
	return l
}

func (l *load) halt() (requests, failed int) {
	l.once.Do(func() { close(l.stop); l.res = <-l.done })
	return l.res[0], l.res[1]
}

// TestMeshdOutageUnderTraffic stops meshd while requests flow: proxies keep
// serving on their SVIDs and last good config, and all are SYNCED again
// soon after meshd returns.
func TestMeshdOutageUnderTraffic(t *testing.T) {
	outage := 2 * time.Second
	if soak {
		outage = 10 * time.Minute
	}
	m := startMesh(t, controlplane.Config{}, 1)
	applyYAML(t, m.meshd, resourcesFor(m))
	waitStates(t, m.meshd, map[string]meshv1.SyncState{"web": meshv1.SyncState_SYNC_STATE_SYNCED, "api": meshv1.SyncState_SYNC_STATE_SYNCED})
	l := startLoad(t, m.viaWebToAPI+"/outage")

	m.meshd.Stop()
	eventually(t, 10*time.Second, "both proxies see meshd gone", func() error {
		if m.web.Agent.Connected() || m.api.Agent.Connected() {
			return errors.New("still connected")
		}
		return nil
	})
	time.Sleep(outage)
	m.meshd = m.meshd.Restart(t)
	waitStates(t, m.meshd, map[string]meshv1.SyncState{"web": meshv1.SyncState_SYNC_STATE_SYNCED, "api": meshv1.SyncState_SYNC_STATE_SYNCED})
	n, failed := l.halt()
	if failed != 0 {
		t.Fatalf("%d of %d requests failed across a %s meshd outage (first: %v)", failed, n, outage, l.first)
	}
	if n < 20 {
		t.Fatalf("only %d requests were sent", n)
	}
	t.Logf("meshd down %s: %d requests, 0 failed, both proxies SYNCED after it returned", outage, n)
}

// TestRevokeAndDeny: a revoked instance or a denied identity gets no
// renewal, its stream ends, it is no endpoint, and its serials and identity
// reach every proxy's snapshot.
func TestRevokeAndDeny(t *testing.T) {
	m := startMesh(t, controlplane.Config{}, 1)
	admin := m.meshd.Operator(t)
	st := waitStates(t, m.meshd, map[string]meshv1.SyncState{"web": meshv1.SyncState_SYNC_STATE_SYNCED, "api": meshv1.SyncState_SYNC_STATE_SYNCED})
	webInstance := st["web"].Proxy.InstanceId
	webSerial := m.web.serial()

	if _, err := admin.RevokeProxy(context.Background(), &meshv1.RevokeProxyRequest{InstanceId: webInstance}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "api's snapshot lists web's serial as revoked", func() error {
		snap := m.api.Agent.Applied()
		if !slices.Contains(snap.GetRevokedSerials(), webSerial) {
			return fmt.Errorf("revoked serials %v", snap.GetRevokedSerials())
		}
		for _, e := range snap.GetEndpoints() {
			if e.InstanceId == webInstance {
				return errors.New("web is still an endpoint")
			}
		}
		return nil
	})
	// Its stream ends, and proxy-status says why: REVOKED comes before
	// DISCONNECTED (issue 20).
	eventually(t, 10*time.Second, "the revoked proxy's stream ends", func() error {
		if st := proxyStatus(t, m.meshd)["web"]; st.State != meshv1.SyncState_SYNC_STATE_REVOKED || st.Proxy.GetConnected() {
			return fmt.Errorf("web is %v, connected %v", st.State, st.Proxy.GetConnected())
		}
		return nil
	})
	// And it gets no new certificate.
	_, csr := csrOf(t, idOf("web").String())
	conn := m.meshd.DialAs(t, m.web.Agent.SVIDSource().Current())
	if _, err := meshv1.NewIdentityServiceClient(conn).Renew(context.Background(), &meshv1.RenewRequest{Csr: csr, InstanceId: webInstance}); err == nil {
		t.Fatal("a revoked instance renewed its SVID")
	}

	// Deny api's identity: listed in web's... every snapshot, and api's stream ends.
	if _, err := admin.DenyIdentity(context.Background(), &meshv1.DenyIdentityRequest{SpiffeId: idOf("api").String()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "api denied and disconnected", func() error {
		if st := proxyStatus(t, m.meshd)["api"]; st.State != meshv1.SyncState_SYNC_STATE_DISCONNECTED {
			return fmt.Errorf("api is %v", st.State)
		}
		return nil
	})
	conn = m.meshd.DialAs(t, m.api.Agent.SVIDSource().Current())
	_, csr = csrOf(t, idOf("api").String())
	if _, err := meshv1.NewIdentityServiceClient(conn).Renew(context.Background(), &meshv1.RenewRequest{Csr: csr}); err == nil {
		t.Fatal("a denied identity renewed its SVID")
	}
}

// TestStaleProxiesAreForgotten: a proxy disconnected longer than
// ForgetAfter leaves the registry.
func TestStaleProxiesAreForgotten(t *testing.T) {
	m := startMesh(t, controlplane.Config{ForgetAfter: 500 * time.Millisecond, RotationCheck: 100 * time.Millisecond}, 1)
	waitStates(t, m.meshd, map[string]meshv1.SyncState{"web": meshv1.SyncState_SYNC_STATE_SYNCED})
	m.web.stop()
	eventually(t, 10*time.Second, "web forgotten", func() error {
		if _, ok := proxyStatus(t, m.meshd)["web"]; ok {
			return errors.New("still listed")
		}
		return nil
	})
	if _, ok := proxyStatus(t, m.meshd)["api"]; !ok {
		t.Fatal("the connected api proxy was forgotten too")
	}
}

// resourcesFor declares the mesh's two services on the ports their apps
// really listen on.
func resourcesFor(m *mesh) string {
	port := func(a *app) string { _, p, _ := net.SplitHostPort(a.addr); return p }
	return fmt.Sprintf(`
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
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: api}
spec:
  service: api
  backends: [{service: api}]
  timeout: 2s
`, port(m.apiApp), port(m.webApp))
}
