package meshctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"sigs.k8s.io/yaml"

	"minimesh/api"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/dataplane/agent"
	"minimesh/internal/meshctl"
	meshv1 "minimesh/proto/mesh/v1"
)

// accept is a proxy's Applier that takes every snapshot.
type accept struct{}

func (accept) Apply(*meshv1.Snapshot) ([]*meshv1.FileStatus, error) { return nil, nil }

// cannedTopz answers topz and procz as a proxy does, in its snake_case.
func cannedTopz(_ context.Context, req *meshv1.Request) ([]byte, error) {
	if req.GetProcz() != nil {
		return []byte(`{"pid":1,"sockets":[],"files":[{"fd":0,"path":"/dev/null"}],"fd_error":"none"}`), nil
	}
	return []byte(`{"time":"2024-01-02T03:04:05Z","cpu_window_seconds":1,"processes":[{"pid":1,"ppid":0,"uid":0,"user":"root","command":"mesh-proxy","args":"","state":"S","cpu_percent":0.5,"rss_bytes":1024,"threads":3,"fds":7,"started":"2024-01-02T03:00:00Z"}]}`), nil
}

// startAgent runs a real proxy agent against m until stop is called and
// returns its instance ID once meshd lists it.
func startAgent(t *testing.T, m *controlplanetest.Meshd, tok *meshv1.CreateJoinTokenResponse, service string) (id string, stop func()) {
	t.Helper()
	ag, err := agent.New(agent.Config{
		ControlPlane: m.Addr, TrustDomain: spiffeid.RequireTrustDomainFromString("minimesh.local"),
		Token: tok.GetSecret(), CAPin: tok.GetCaPin(), Service: service, Advertise: "127.0.0.1:1",
		Version: "v-test", StateDir: t.TempDir(), Applier: accept{}, Querier: cannedTopz, BackoffMax: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ag.Run(ctx) }()
	stop = func() { cancel(); <-done }
	deadline := time.Now().Add(20 * time.Second)
	for !ag.Connected() || ag.Applied() == nil {
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("agent %s did not connect: %v", service, ag.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return ag.InstanceID(), stop
}

func applyString(t *testing.T, m *controlplanetest.Meshd, doc string) {
	t.Helper()
	docs, err := api.Decode("test.yaml", strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	req := &meshv1.ApplyRequest{}
	for _, d := range docs {
		req.Resources = append(req.Resources, api.ToProto(d.Object))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Operator(t).Apply(ctx, req); err != nil {
		t.Fatal(err)
	}
}

var (
	camelKey = regexp.MustCompile(`^[a-z][A-Za-z0-9]*$`)
	nameLine = regexp.MustCompile(`^[a-z]+/[^\s/]+$`)
	formats  = []string{"table", "wide", "name", "json", "yaml", "jsonpath"}
)

// badKeys lists the keys of a JSON document that are not camelCase.
func badKeys(v any, path string) []string {
	var bad []string
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if !camelKey.MatchString(k) {
				bad = append(bad, path+"."+k)
			}
			bad = append(bad, badKeys(e, path+"."+k)...)
		}
	case []any:
		for _, e := range t {
			bad = append(bad, badKeys(e, path+"[]")...)
		}
	}
	return bad
}

type outCase struct {
	args   func(t *testing.T) []string
	stable bool             // the same document twice in a row
	okErr  func(error) bool // an error that still printed the document (check's failures)
	// emptyTable: the table may be empty (diff with no differences).
	emptyTable bool
}

// Every command honours each -o it declares, and refuses the others
// with an error naming what it prints: a table over the whole command
// tree (a command missing here fails the test). json and yaml are the
// same document with camelCase keys; name is kind/name lines; wide has
// more columns than table; jsonpath reads the document.
func TestEveryCommandHonoursOutput(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	if _, err := run(t, m, "apply", "-f", "testdata/mesh.yaml", "-f", "testdata/authz.yaml"); err != nil {
		t.Fatal(err)
	}
	webTok := m.Token(t, "default", "web", 40)
	web, stopWeb := startAgent(t, m, webTok, "web")
	defer stopWeb()
	// Dead instances to forget and revoke, one per run.
	var dead []string
	for range 10 {
		id, stop := startAgent(t, m, webTok, "web")
		stop()
		dead = append(dead, id)
	}
	var n, forgets, revokes atomic.Int32
	next := func() int { return int(n.Add(1)) }

	// A second meshd for what changes meshd for good: operator revoke
	// (credentials issued offline) and ca rotate.
	bDir := filepath.Join(t.TempDir(), "b")
	b := controlplanetest.Start(t, controlplane.Config{DataDir: bDir})
	b.Stop()
	var serials []string
	for i := range 5 {
		iss, err := controlplane.IssueOperator(controlplane.Config{DataDir: bDir}, filepath.Join(t.TempDir(), fmt.Sprint(i)), 0)
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, iss.Serial)
	}
	b = controlplanetest.Start(t, controlplane.Config{DataDir: bDir})
	onB := func(args ...string) []string {
		return append([]string{"--server", b.Addr, "--credentials", b.OperatorCredentialDir()}, args...)
	}

	cases := map[string]outCase{
		"meshctl token create": {args: func(*testing.T) []string { return []string{"token", "create", "--ns", "default", "--sa", "x"} }},
		"meshctl token list":   {args: func(*testing.T) []string { return []string{"token", "list"} }, stable: true},
		"meshctl token revoke": {args: func(t *testing.T) []string {
			return []string{"token", "revoke", m.Token(t, "default", "y", 1).GetToken().GetId()}
		}},
		"meshctl certs":   {args: func(*testing.T) []string { return []string{"certs"} }},
		"meshctl proxies": {args: func(*testing.T) []string { return []string{"proxies"} }},
		"meshctl apply":   {args: func(*testing.T) []string { return []string{"apply", "-f", "testdata/mesh.yaml"} }, stable: true},
		"meshctl get":     {args: func(*testing.T) []string { return []string{"get", "all", "-A"} }, stable: true},
		"meshctl diff":    {args: func(*testing.T) []string { return []string{"diff", "-f", "testdata/mesh.yaml"} }, emptyTable: true},
		"meshctl delete": {args: func(t *testing.T) []string {
			name := fmt.Sprintf("tmp-%d", next())
			applyString(t, m, "apiVersion: minimesh.io/v1alpha1\nkind: Route\nmetadata: {name: "+name+"}\nspec: {service: api, backends: [{service: api}]}\n")
			return []string{"delete", "rt", name}
		}},
		"meshctl proxy-status": {args: func(*testing.T) []string { return []string{"proxy-status"} }},
		"meshctl proxy-config": {args: func(*testing.T) []string { return []string{"proxy-config", web} }},
		"meshctl ca status":    {args: func(*testing.T) []string { return []string{"ca", "status"} }},
		// --force: with no proxies it moves the rotation on, or starts one.
		"meshctl ca rotate":    {args: func(*testing.T) []string { return onB("ca", "rotate", "--force", "--yes") }},
		"meshctl proxy forget": {args: func(*testing.T) []string { return []string{"proxy", "forget", dead[forgets.Add(1)-1]} }},
		"meshctl proxy revoke": {args: func(*testing.T) []string { return []string{"proxy", "revoke", dead[5+revokes.Add(1)-1]} }},
		"meshctl identity deny": {args: func(*testing.T) []string {
			return []string{"identity", "deny", fmt.Sprintf("spiffe://minimesh.local/ns/x/sa/d%d", next())}
		}},
		"meshctl operator list": {args: func(*testing.T) []string { return []string{"operator", "list"} }, stable: true},
		"meshctl operator revoke": {args: func(*testing.T) []string {
			return onB("operator", "revoke", serials[next()%len(serials)])
		}},
		"meshctl backup": {args: func(t *testing.T) []string { return []string{"backup", filepath.Join(t.TempDir(), "b.db")} }},
		"meshctl top":    {args: func(*testing.T) []string { return []string{"top", web} }, stable: true},
		"meshctl procz":  {args: func(*testing.T) []string { return []string{"procz", web, "1"} }, stable: true},
		"meshctl authz explain": {args: func(*testing.T) []string {
			return []string{"authz", "explain", "--from", "spiffe://minimesh.local/ns/default/sa/web", "--to", "api", "--path", "/v1/x"}
		}, stable: true},
		// It serves until interrupted (e2e/dashboard_test.go runs it): here a
		// bad --port ends it before it serves.
		"meshctl dashboard": {args: func(*testing.T) []string { return []string{"dashboard", "--port", "70000", "--no-open"} }, emptyTable: true,
			okErr: func(err error) bool { return strings.Contains(err.Error(), "--port 70000: must be 0 to 65535") }},
		"meshctl check": {args: func(*testing.T) []string { return []string{"check"} },
			okErr: func(err error) bool { return strings.Contains(err.Error(), "some checks failed") }},
		"meshctl stat":                  {args: func(*testing.T) []string { return []string{"stat", "--window", "15m"} }},
		"meshctl edges":                 {args: func(*testing.T) []string { return []string{"edges", "web"} }},
		"meshctl denies":                {args: func(*testing.T) []string { return []string{"denies"} }},
		"meshctl version":               {args: func(*testing.T) []string { return []string{"version"} }, stable: true},
		"meshctl inject":                {args: func(*testing.T) []string { return []string{"inject", "-f", "../inject/testdata/pod.yaml"} }, stable: true},
		"meshctl help":                  {args: func(*testing.T) []string { return []string{"help", "get"} }},
		"meshctl completion bash":       {args: func(*testing.T) []string { return []string{"completion", "bash"} }},
		"meshctl completion zsh":        {args: func(*testing.T) []string { return []string{"completion", "zsh"} }},
		"meshctl completion fish":       {args: func(*testing.T) []string { return []string{"completion", "fish"} }},
		"meshctl completion powershell": {args: func(*testing.T) []string { return []string{"completion", "powershell"} }},
	}

	root := meshctl.NewRoot(meshctl.IO{})
	var leaves []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Runnable() && c.Name() != cobra.ShellCompRequestCmd && c.Name() != cobra.ShellCompNoDescRequestCmd {
			leaves = append(leaves, c)
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	for _, c := range leaves {
		path := c.CommandPath()
		tc, ok := cases[path]
		if !ok {
			t.Errorf("%s: no case in this test: add one", path)
			continue
		}
		t.Run(strings.TrimPrefix(path, "meshctl "), func(t *testing.T) {
			declared := strings.Split(c.Annotations["meshctl.minimesh.io/outputs"], ",")
			if declared[0] == "" {
				declared = []string{"table"}
			}
			got := map[string]string{}
			var last []string
			for _, f := range formats {
				o := f
				if f == "jsonpath" {
					o = "jsonpath={.apiVersion}" // replaced below once the document is known
				}
				if f == "jsonpath" && got["json"] != "" {
					var doc map[string]any
					_ = json.Unmarshal([]byte(got["json"]), &doc)
					o = "jsonpath={." + firstScalarKey(doc) + "}"
				}
				// A refused format fails before any call: the last
				// arguments do (args may use up a resource).
				var args []string
				if last != nil && !slices.Contains(declared, f) {
					args = append(slices.Clip(last), "-o", o)
				} else {
					last = tc.args(t)
					args = append(slices.Clip(last), "-o", o)
				}
				if len(args) > 0 && args[0] == "--server" {
					args = append(args[:4:4], args[4:]...)
				}
				out, err := runArgs(t, m, args...)
				if !slices.Contains(declared, f) {
					if err == nil || !strings.Contains(err.Error(), "--output "+f+": ") || !strings.Contains(err.Error(), "does not print it") {
						t.Errorf("-o %s: not declared, but not refused as such: %v\n%s", f, err, out)
					}
					continue
				}
				if err != nil && (tc.okErr == nil || !tc.okErr(err)) {
					t.Errorf("-o %s: %v\n%s", o, err, out)
					continue
				}
				got[f] = out
				switch f {
				case "table":
					if out == "" && !tc.emptyTable {
						t.Errorf("-o table printed nothing")
					}
				case "name":
					lines := strings.Split(strings.TrimSpace(out), "\n")
					for _, l := range lines {
						if !nameLine.MatchString(l) {
							t.Errorf("-o name: line %q is not kind/name:\n%s", l, out)
						}
					}
				case "wide":
					if w, n := firstLine(out), firstLine(got["table"]); len(strings.Fields(w)) <= len(strings.Fields(n)) {
						t.Errorf("-o wide header %q has no more columns than table's %q", w, n)
					}
				case "json":
					var doc map[string]any
					if err := json.Unmarshal([]byte(out), &doc); err != nil {
						t.Errorf("-o json is not a JSON object: %v\n%s", err, out)
					}
					if bad := badKeys(doc, ""); len(bad) > 0 {
						t.Errorf("-o json: keys not in camelCase: %v", bad)
					}
				case "yaml":
					if path == "meshctl inject" {
						break // manifests, not a document of meshctl's
					}
					j, err := yaml.YAMLToJSON([]byte(out))
					if err != nil {
						t.Errorf("-o yaml does not parse: %v\n%s", err, out)
						break
					}
					var y, js map[string]any
					_ = json.Unmarshal(j, &y)
					_ = json.Unmarshal([]byte(got["json"]), &js)
					if tc.stable && !reflect.DeepEqual(y, js) {
						t.Errorf("-o yaml and -o json print different documents:\nyaml:\n%s\njson:\n%s", out, got["json"])
					}
					if !reflect.DeepEqual(keysOf(y), keysOf(js)) {
						t.Errorf("-o yaml keys %v, -o json keys %v", keysOf(y), keysOf(js))
					}
				case "jsonpath":
					if strings.TrimSpace(out) == "" {
						t.Errorf("-o %s printed nothing", o)
					}
					var doc map[string]any
					_ = json.Unmarshal([]byte(got["json"]), &doc)
					k := firstScalarKey(doc)
					switch v := doc[k].(type) {
					case string, float64, bool:
						if tc.stable && out != fmt.Sprint(v) {
							t.Errorf("-o %s = %q, want %q", o, out, fmt.Sprint(v))
						}
					}
				}
			}
		})
	}
	// --no-headers drops the header line of a table, and only a table.
	out, err := run(t, m, "get", "rt", "--no-headers")
	if err != nil || strings.Contains(out, "NAME") || !strings.HasPrefix(out, "api-v1 ") {
		t.Errorf("get rt --no-headers: %v\n%s", err, out)
	}
	if _, err := run(t, m, "get", "rt", "--no-headers", "-o", "json"); err == nil || !strings.Contains(err.Error(), "--no-headers") {
		t.Errorf("--no-headers -o json: %v", err)
	}
	if _, err := run(t, m, "get", "rt", "-o", "xml"); err == nil || !strings.Contains(err.Error(), `unknown format; one of table, wide, name, json, yaml, jsonpath=TEMPLATE`) {
		t.Errorf("-o xml: %v", err)
	}
	if _, err := run(t, m, "get", "rt", "-o", "jsonpath={.items[}"); err == nil || !strings.Contains(err.Error(), "jsonpath") {
		t.Errorf("a bad jsonpath: %v", err)
	}
	// top's document: the proxy's snake_case answer in camelCase.
	if out, _ := run(t, m, "top", web, "-o", "json"); !strings.Contains(out, `"cpuWindowSeconds": 1`) || !strings.Contains(out, `"rssBytes": 1024`) {
		t.Errorf("top -o json:\n%s", out)
	}
}

// runArgs runs meshctl against m unless args name their own --server.
func runArgs(t *testing.T, m *controlplanetest.Meshd, args ...string) (string, error) {
	if len(args) > 0 && args[0] == "--server" {
		var out, errOut bytes.Buffer
		root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: &errOut})
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), err
	}
	return run(t, m, args...)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func keysOf(m map[string]any) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	slices.Sort(k)
	return k
}

// firstScalarKey is the first key (sorted) of doc with a string, number
// or bool value; else the first key.
func firstScalarKey(doc map[string]any) string {
	keys := keysOf(doc)
	for _, k := range keys {
		switch doc[k].(type) {
		case string, float64, bool:
			return k
		}
	}
	if len(keys) > 0 {
		return keys[0]
	}
	return "missing"
}
