package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/stats"
	"minimesh/dataplane/proxy"
	"minimesh/dataplane/sidecar"
)

const denyAdminPolicy = `
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin}
spec:
  service: api
  rules:
  - action: deny
    paths: [{prefix: /admin}]
`

// sendThrough sends n GETs of path from web's app side (its upstream port
// for api) and returns how many got want.
func sendThrough(t *testing.T, pm *policyMesh, path string, n, want int) {
	t.Helper()
	client := plainHTTP(t)
	for i := range n {
		resp, err := client.Get(fmt.Sprintf("http://%s%s/%d?secret=x", pm.web.up["api"], path, i))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s/%d: %d, want %d", path, i, resp.StatusCode, want)
		}
	}
}

func within20(got, want float64) error {
	if got < 0.8*want || got > 1.2*want {
		return fmt.Errorf("%v, want %v ±20%%", got, want)
	}
	return nil
}

// TestStatEdgesDeniesShowTraffic: web calls api through both proxies; api's
// proxy reports over its stream; meshctl stat, edges and denies show what
// was sent (within 20 %), with the verified identities of both sides.
func TestStatEdgesDeniesShowTraffic(t *testing.T) {
	pm := startPolicyMeshWith(t, denyAdminPolicy, func(c *sidecar.Config) { c.StatsInterval = 300 * time.Millisecond })
	const ok, denied = 120, 15
	sendThrough(t, pm, "/orders", ok, http.StatusOK)
	sendThrough(t, pm, "/admin/users", denied, http.StatusForbidden)

	var st struct {
		ReplicasAnswered int
		Services         []struct {
			Namespace, Service string
			Requests, Failures float64
			SuccessRate        float64
			MtlsShare          float64
			P99Seconds         *float64
			ResponsesByClass   []float64
		}
	}
	eventually(t, 15*time.Second, "meshctl stat shows api's traffic", func() error {
		if err := json.Unmarshal([]byte(meshctlRun(t, pm.meshd, "stat", "api", "-o", "json")), &st); err != nil {
			return err
		}
		if len(st.Services) != 1 {
			return fmt.Errorf("services %+v", st.Services)
		}
		return within20(st.Services[0].Requests, ok+denied)
	})
	s := st.Services[0]
	if s.Service != "api" || s.Namespace != "default" || st.ReplicasAnswered != 1 {
		t.Fatalf("stat: %+v", st)
	}
	if err := within20(s.ResponsesByClass[3], denied); err != nil {
		t.Errorf("4xx: %v", err)
	}
	if err := within20(s.SuccessRate, 1); err != nil || s.MtlsShare != 1 || s.P99Seconds == nil {
		t.Errorf("success %v, mTLS share %v, p99 %v", s.SuccessRate, s.MtlsShare, s.P99Seconds)
	}
	var ed struct {
		Edges []struct {
			Source, Destination                     string
			SourceIdentities, DestinationIdentities []string
			Mtls                                    bool
			Requests                                float64
		}
	}
	if err := json.Unmarshal([]byte(meshctlRun(t, pm.meshd, "edges", "-o", "json")), &ed); err != nil {
		t.Fatal(err)
	}
	if len(ed.Edges) != 1 {
		t.Fatalf("edges: %+v", ed.Edges)
	}
	e := ed.Edges[0]
	if e.Source != "web.default" || e.Destination != "api.default" || !e.Mtls || !slices.Equal(e.SourceIdentities, []string{idOf("web").String()}) ||
		!slices.Equal(e.DestinationIdentities, []string{idOf("api").String()}) {
		t.Errorf("edge: %+v", e)
	}
	if err := within20(e.Requests, ok+denied); err != nil {
		t.Errorf("edge requests: %v", err)
	}
	var dn struct {
		Denies []struct{ SourceIdentity, Destination, Method, Path, Policy string }
	}
	eventually(t, 5*time.Second, "meshctl denies", func() error {
		if err := json.Unmarshal([]byte(meshctlRun(t, pm.meshd, "denies", "-o", "json")), &dn); err != nil {
			return err
		}
		return within20(float64(len(dn.Denies)), denied)
	})
	d := dn.Denies[0]
	if d.SourceIdentity != idOf("web").String() || d.Destination != "api" || d.Method != "GET" || d.Path != fmt.Sprintf("/admin/users/%d", denied-1) || d.Policy != "default/no-admin" {
		t.Errorf("newest deny: %+v (the query must be cut)", d)
	}
	// The table names them too.
	if out := meshctlRun(t, pm.meshd, "stat"); !strings.Contains(out, "api") || !strings.Contains(out, "100.00%") {
		t.Errorf("stat table:\n%s", out)
	}
	if !slices.Equal(proxy.LatencyBounds(), stats.LatencyBounds) {
		t.Errorf("the proxy's latency buckets %v differ from meshd's %v", proxy.LatencyBounds(), stats.LatencyBounds)
	}
}

// counterTotal sums every series of the counter name in meshd's registry.
func counterTotal(t *testing.T, m *controlplanetest.Meshd, name string) float64 {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() == name {
			for _, mm := range f.GetMetric() {
				sum += mm.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestNoStatsToMeshdThatDidNotAnnounce: a meshd that does not name
// "stats" in Registered (as one before issue 26) gets no report, however
// much traffic.
func TestNoStatsToMeshdThatDidNotAnnounce(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{NoStats: true})
	pm := &policyMesh{meshd: m, app: startRecorder(t)}
	applyDocs(t, m, serviceYAML("api", httpPortYAML(pm.app.port), idOf("api").String()))
	pm.api = startSidecar(t, m, "api", pm.app.addr, func(c *sidecar.Config) { c.StatsInterval = 50 * time.Millisecond })
	pm.web = startTraffic(t, m, trafficOpts{service: "web", app: startEcho(t, "web").addr, upstreams: []string{"api"}})
	pm.web.waitSnapshot(t, "api's endpoint", endpointsOf("api", 1))
	eventually(t, 10*time.Second, "api reachable", func() error {
		resp, err := plainHTTP(t).Get("http://" + pm.web.up["api"] + "/x")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	sendThrough(t, pm, "/orders", 20, http.StatusOK)
	time.Sleep(500 * time.Millisecond) // ten intervals
	if n := counterTotal(t, m, "minimesh_meshd_stats_reports_dropped_total"); n != 0 {
		t.Fatalf("the proxy sent %v stats reports to a meshd that did not announce them", n)
	}
	if out := meshctlRun(t, m, "stat", "-o", "json"); strings.Contains(out, `"api"`) {
		t.Fatalf("stats without reports:\n%s", out)
	}
}
