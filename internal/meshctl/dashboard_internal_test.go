package meshctl

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"minimesh/api"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/internal/dashboard"
	meshv1 "minimesh/proto/mesh/v1"
)

// TestDashboardViews runs the dashboard's views against a real meshd
// through the guarded connection: explain decides as authz explain does,
// resources come back as YAML, and bad requests name the field.
func TestDashboardViews(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	docs, err := api.Decode("t.yaml", strings.NewReader(`
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: 8080, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/api"]
---
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin}
spec:
  service: api
  rules:
  - action: deny
    paths: [{prefix: /admin}]
`))
	if err != nil {
		t.Fatal(err)
	}
	req := &meshv1.ApplyRequest{}
	for _, d := range docs {
		req.Resources = append(req.Resources, api.ToProto(d.Object))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := m.Operator(t).Apply(ctx, req); err != nil {
		t.Fatal(err)
	}
	conn, err := Dial(m.Addr, m.OperatorCredentialDir())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := meshv1.NewAdminServiceClient(dashboard.Guard(conn))
	views := dashboardViews()
	call := func(name, body string) (map[string]any, error) {
		t.Helper()
		doc, err := views[name](ctx, c, []byte(body))
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return out, nil
	}

	x, err := call("Explain", `{"from":"spiffe://minimesh.local/ns/default/sa/web","to":"api","path":"/admin/x"}`)
	if err != nil {
		t.Fatal(err)
	}
	ex := x["explanation"].(map[string]any)
	if ex["allowed"] != false || ex["decidedBy"].(map[string]any)["policy"] != "default/no-admin" || !strings.Contains(x["text"].(string), "DENY GET /admin/x") {
		t.Errorf("explain: %v", x)
	}
	if x, err := call("Explain", `{"from":"spiffe://minimesh.local/ns/default/sa/web","to":"api","path":"/orders"}`); err != nil || x["explanation"].(map[string]any)["allowed"] != true {
		t.Errorf("explain /orders: %v %v", x, err)
	}
	r, err := call("Resources", `{}`)
	if err != nil {
		t.Fatal(err)
	}
	kinds := r["kinds"].([]any)
	if len(kinds) != 2 || kinds[0].(map[string]any)["kind"] != "AuthorizationPolicy" || !strings.Contains(kinds[1].(map[string]any)["yaml"].(string), "kind: Service\n") {
		t.Errorf("resources: %v", r)
	}
	if e, err := call("Edges", `{"windowSeconds": 60}`); err != nil || e["windowSeconds"] != 60.0 || len(e["edges"].([]any)) != 0 {
		t.Errorf("edges: %v %v", e, err)
	}
	if s, err := call("EdgeSeries", `{"source":"web","sourceService":"web","sourceNamespace":"default","mtls":true,"destinationService":"api","namespace":"default","windowSeconds":60}`); err != nil || len(s["points"].([]any)) != 6 {
		t.Errorf("edge series: %v %v", s, err)
	}
	for _, tc := range []struct{ view, body, want string }{
		{"Explain", `{"from":"web","to":"api"}`, "from: "},
		{"Explain", `{"from":"spiffe://minimesh.local/ns/default/sa/web"}`, "to: required"},
		{"Explain", `{"form":"x"}`, `unknown field "form"`},
		{"Edges", `{"windowSeconds": 5}`, "windowSeconds 5: must be 10 to 900"},
		{"Edges", `{"windowSeconds": 3600}`, "windowSeconds 3600: must be 10 to 900"},
		{"EdgeSeries", `{"source":"web"}`, "destinationService: required"},
		{"EdgeSeries", `{"destinationService":"api","windowSeconds":60}`, "mtls: required"},
		{"EdgeSeries", `{"destinationService":"api","mtls":false,"windowSeconds":1e300}`, "must be 10 to 900"},
		{"EdgeSeries", `{"destinationService":"api","mtls":false,"windowSeconds":-20}`, "must be 10 to 900"},
	} {
		if _, err := call(tc.view, tc.body); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: %v, want %q", tc.view, tc.body, err, tc.want)
		}
	}
}
