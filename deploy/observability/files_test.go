package observability

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	monv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"
)

// tool is the path of a binary of Debian's prometheus package: a test
// without it skips, or fails under CI=true (.ci/run installs it).
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (apt-get install -y prometheus): %v", name, err)
		}
		t.Skipf("%s not found (apt-get install -y prometheus)", name)
	}
	return p
}

// documents splits a multi-document YAML file.
func documents(t *testing.T, file string) [][]byte {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, d := range bytes.Split(raw, []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			out = append(out, d)
		}
	}
	return out
}

func podMonitors(t *testing.T) []monv1.PodMonitor {
	t.Helper()
	var out []monv1.PodMonitor
	for i, d := range documents(t, "podmonitor.yaml") {
		var pm monv1.PodMonitor
		if err := yaml.UnmarshalStrict(d, &pm); err != nil {
			t.Fatalf("podmonitor.yaml document %d: %v", i, err)
		}
		out = append(out, pm)
	}
	return out
}

func prometheusRule(t *testing.T) monv1.PrometheusRule {
	t.Helper()
	docs := documents(t, "prometheusrule.yaml")
	if len(docs) != 1 {
		t.Fatalf("prometheusrule.yaml: %d documents, want 1", len(docs))
	}
	var pr monv1.PrometheusRule
	if err := yaml.UnmarshalStrict(docs[0], &pr); err != nil {
		t.Fatalf("prometheusrule.yaml: %v", err)
	}
	if pr.Kind != monv1.PrometheusRuleKind || pr.APIVersion != "monitoring.coreos.com/v1" {
		t.Fatalf("prometheusrule.yaml: %s %s", pr.APIVersion, pr.Kind)
	}
	return pr
}

// The PodMonitors decode strictly (an unknown or misspelt field fails)
// and name the ports the manifests give meshd and the sidecar, with the
// job names the alerts and the dashboard use.
func TestPodMonitorsDecodeStrictly(t *testing.T) {
	want := map[string]string{"meshd": "metrics", "mesh-proxy": "mesh-admin"}
	pms := podMonitors(t)
	if len(pms) != len(want) {
		t.Fatalf("%d PodMonitors, want %d", len(pms), len(want))
	}
	for _, pm := range pms {
		if pm.Kind != "PodMonitor" || pm.APIVersion != "monitoring.coreos.com/v1" {
			t.Errorf("%s: kind %q", pm.Name, pm.Kind)
		}
		port, ok := want[pm.Name]
		if !ok || len(pm.Spec.PodMetricsEndpoints) != 1 {
			t.Fatalf("PodMonitor %q: unexpected, or not one endpoint", pm.Name)
		}
		ep := pm.Spec.PodMetricsEndpoints[0]
		if ep.Port == nil || *ep.Port != port || ep.Path != "/metrics" {
			t.Errorf("%s: port %v path %q, want %s /metrics", pm.Name, ep.Port, ep.Path, port)
		}
		job := ""
		for _, r := range ep.RelabelConfigs {
			if r.TargetLabel == "job" && r.Replacement != nil {
				job = *r.Replacement
			}
		}
		if job != pm.Name {
			t.Errorf("%s: job relabelled to %q, want %q", pm.Name, job, pm.Name)
		}
	}
	// The ports exist in the manifests under those names.
	for file, port := range map[string]string{"../k8s/base/deployment.yaml": "name: metrics", "../k8s/example/api.injected.yaml": "name: mesh-admin"} {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), port) {
			t.Errorf("%s has no port %q", file, port)
		}
	}
}

// A misspelt field is refused: the strict decoding above means something.
func TestPodMonitorStrictDecodingRefusesUnknownFields(t *testing.T) {
	bad := []byte("apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: x}\nspec:\n  selector: {}\n  podMetricsEndpoint:\n  - port: metrics\n")
	var pm monv1.PodMonitor
	if err := yaml.UnmarshalStrict(bad, &pm); err == nil || !strings.Contains(err.Error(), "podMetricsEndpoint") {
		t.Fatalf("misspelt field: %v, want an error naming it", err)
	}
}

// rulesFile writes the PrometheusRule's spec as a Prometheus rule file in
// dir, and returns its path.
func rulesFile(t *testing.T, dir string) string {
	t.Helper()
	pr := prometheusRule(t)
	raw, err := yaml.Marshal(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every alert passes promtool check rules and its unit tests; each has a
// test where it fires and one where it does not.
func TestAlertRulesPromtool(t *testing.T) {
	promtool := tool(t, "promtool")
	dir := t.TempDir()
	rules := rulesFile(t, dir)
	tests, err := os.ReadFile("rules_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", rules}, {"test", "rules", "rules_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	var suite struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `json:"alertname"`
				ExpAlerts []map[string]any `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(tests, &suite); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range suite.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	n := 0
	for _, g := range prometheusRule(t).Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("alert %s: a test where it fires %v, where it does not %v; want both", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
	if n < 10 {
		t.Errorf("%d alerts, want the 9 of issue 26 and log shipping's", n)
	}
}

// dashboard is dashboard.json's panels and their queries.
type dashboard struct {
	Title  string `json:"title"`
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile("dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	if len(d.Panels) == 0 {
		t.Fatal("dashboard.json: no panels")
	}
	return d
}
