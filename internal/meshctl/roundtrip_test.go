package meshctl_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"minimesh/api"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/internal/meshctl"
	"minimesh/internal/version"
)

// For every kind, with every field set: get -o yaml and get -o json print
// the same document (short enum names), apply -f takes it back
// unchanged, and get prints it again, equal. A List (get KIND, get all)
// goes round the same way.
func TestGetApplyRoundTripEveryKind(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	if _, err := run(t, m, "apply", "-f", "testdata/allkinds.yaml"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, k := range api.Kinds() {
		out, err := run(t, m, "get", string(k), "-n", "prod", "-o", "name")
		if err != nil || strings.Count(out, "\n") != 1 {
			t.Fatalf("get %s -o name: %v\n%s", k, err, out)
		}
		name := strings.TrimSpace(out[strings.Index(out, "/")+1:])
		for _, format := range []string{"yaml", "json"} {
			before, err := run(t, m, "get", shortNameOf(k), name, "-n", "prod", "-o", format)
			if err != nil {
				t.Fatalf("get %s %s -o %s: %v", k, name, format, err)
			}
			f := filepath.Join(dir, fmt.Sprintf("%s.%s", name, format))
			edited := before
			if format == "yaml" {
				// The server's fields, as kubectl's users find them: ignored.
				edited = strings.Replace(before, "  revision: ", "  revision: 99", 1) + "status: {observedRevision: 3}\n"
			}
			if err := os.WriteFile(f, []byte(edited), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := run(t, m, "apply", "-f", f)
			if err != nil || !strings.Contains(out, " unchanged") {
				t.Errorf("%s: apply -f of get -o %s: %v\n%s\n%s", k, format, err, out, before)
			}
			// What diff sees: nothing.
			if out, err := run(t, m, "diff", "-f", f); err != nil || out != "" {
				t.Errorf("%s: diff -f of get -o %s: %v\n%s", k, format, err, out)
			}
			after, _ := run(t, m, "get", strings.ToLower(string(k)), name, "-n", "prod", "-o", format)
			if after != before {
				t.Errorf("%s: get -o %s changed across apply:\nbefore:\n%s\nafter:\n%s", k, format, before, after)
			}
		}
		y, _ := run(t, m, "get", string(k), name, "-n", "prod", "-o", "yaml")
		j, _ := run(t, m, "get", string(k), name, "-n", "prod", "-o", "json")
		if !sameDocument(t, y, j) {
			t.Errorf("%s: -o yaml and -o json differ:\n%s\n%s", k, y, j)
		}
		if !strings.HasPrefix(j, "{\n  \"apiVersion\": \"minimesh.io/v1alpha1\",\n  \"kind\": \""+string(k)+"\",\n  \"metadata\": {") {
			t.Errorf("%s: -o json is not the object's document:\n%s", k, j)
		}
	}
	// Short enum names, in both.
	for _, want := range []string{`"protocol": "http"`, `"action": "deny"`, `"retryOn": [`, `"5xx"`} {
		out, _ := run(t, m, "get", "all", "-n", "prod", "-o", "json")
		if !strings.Contains(out, want) {
			t.Errorf("get all -o json lacks %s", want)
		}
	}
	// The whole namespace as a List: apply takes it back, unchanged.
	for _, format := range []string{"yaml", "json"} {
		list, err := run(t, m, "get", "all", "-n", "prod", "-o", format)
		if err != nil || !strings.Contains(list, "List") {
			t.Fatalf("get all -o %s: %v\n%s", format, err, list)
		}
		f := filepath.Join(dir, "list."+format)
		if err := os.WriteFile(f, []byte(list), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, m, "apply", "-f", f)
		if err != nil || strings.Count(out, " unchanged") != len(api.Kinds()) {
			t.Errorf("apply -f of get all -o %s: %v\n%s", format, err, out)
		}
	}
	// An empty namespace: no resources, said on stderr; an empty List.
	var out, errOut bytes.Buffer
	root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: &errOut})
	root.SetArgs([]string{"--server", m.Addr, "--credentials", m.OperatorCredentialDir(), "get", "routes"})
	if err := root.Execute(); err != nil || out.Len() != 0 || errOut.String() != "No resources found in namespace default.\n" {
		t.Errorf("get routes in an empty namespace: %v %q %q", err, out.String(), errOut.String())
	}
	if l, _ := run(t, m, "get", "rt", "-o", "json"); !sameDocument(t, l, `{"apiVersion":"minimesh.io/v1alpha1","kind":"List","metadata":{"revision":1},"items":[]}`) {
		t.Errorf("empty List:\n%s", l)
	}
}

// The per-kind columns of get, -o wide and -A.
func TestGetColumns(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	if _, err := run(t, m, "apply", "-f", "testdata/allkinds.yaml"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"get", "svc", "-n", "prod"}, []string{"PORTS", "http:8080/http,grpc:9090/grpc,5432/tcp", "canary"}},
		{[]string{"get", "rt", "-n", "prod"}, []string{"BACKENDS", "TIMEOUT", "web:8080=90,web/canary=10,web/canary:9090=0", "2.5s", "3 x 500ms"}},
		{[]string{"get", "rt", "-n", "prod", "-o", "wide"}, []string{"MATCHES", "prefix:/api/ GET|HEAD 2 headers; exact:/healthz; regex:", "REVISION"}},
		{[]string{"get", "rl", "-n", "prod"}, []string{"RATE", "100.5/s burst 200", "10-api", "true"}},
		{[]string{"get", "rl", "-n", "prod", "-o", "wide"}, []string{"spiffe://minimesh.local/ns/prod/sa/batch=10/s burst 10"}},
		{[]string{"get", "al", "-n", "prod"}, []string{"STATE", "TTL", "enabled", "1h30m0s (89m left)", "25%"}},
		{[]string{"get", "ap", "-n", "prod"}, []string{"RULES", "1 deny,1 allow,1 audit", "true"}},
		{[]string{"get", "cf", "-n", "prod"}, []string{"PATH", "conf.d/features.json", "0640", "42"}},
		{[]string{"get", "all", "-A"}, []string{"NAMESPACE", "prod", "service/web", "route/10-api", "accesslog/web-debug", "configfile/web-features"}},
	} {
		out, err := run(t, m, c.args...)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v lacks %q:\n%s", c.args, w, out)
			}
		}
	}
	if _, err := run(t, m, "get", "routez"); err == nil || !strings.Contains(err.Error(), "Route (rt)") {
		t.Errorf("an unknown kind: %v", err)
	}
	if _, err := run(t, m, "get", "rt", "-A", "-n", "prod"); err == nil {
		t.Error("-A with -n accepted")
	}
}

// diff: exit 0 with nothing to say, 1 with the differences field by
// field, 2 on an error; delete -f deletes what a file declares,
// dependents first.
func TestDiffAndDeleteFromFile(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	if _, err := run(t, m, "apply", "-f", "testdata/mesh.yaml"); err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(strings.Replace(mustRead(t, "testdata/mesh.yaml"), "timeout: 1.5s", "timeout: 2s", 1), "burst: 20", "burst: 20\n  perSourceIdentity: true", 1) +
		"---\napiVersion: minimesh.io/v1alpha1\nkind: AccessLog\nmetadata: {name: api-log}\nspec: {service: api, enabled: true}\n"
	f := filepath.Join(t.TempDir(), "changed.yaml")
	if err := os.WriteFile(f, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, m, "diff", "-f", f)
	if code, show := meshctl.ExitCode(err); code != 1 || show {
		t.Fatalf("diff with differences: exit %d (shown %v): %v\n%s", code, show, err, out)
	}
	for _, want := range []string{
		"--- meshd route/default/api-v1 (revision 1)\n+++ " + f + ": document 2 (line 9) route/default/api-v1\n-spec.timeout: \"1.5s\"\n+spec.timeout: \"2s\"\n",
		"+spec.perSourceIdentity: true\n",
		"--- meshd accesslog/default/api-log (none)\n",
		"+spec.enabled: true\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("diff lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "service/default/api") || strings.Contains(out, "revision:") || strings.Contains(out, "updateTime") {
		t.Errorf("diff shows an unchanged object or the server's fields:\n%s", out)
	}
	if _, err := run(t, m, "diff", "-f", "testdata/third-invalid.yaml"); func() int { c, _ := meshctl.ExitCode(err); return c }() != 2 {
		t.Errorf("diff of an invalid file: %v, want exit 2", err)
	}
	if _, err := run(t, m, "apply", "-f", f); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, m, "diff", "-f", f); err != nil || out != "" {
		t.Errorf("diff after apply: %v\n%s", err, out)
	}

	// delete -f: the Route, RateLimit and AccessLog before the Service
	// they refer to; a second time, every one is missing.
	out, err = run(t, m, "delete", "-f", f, "-o", "name")
	if err != nil || out != "accesslog/api-log\nratelimit/api\nroute/api-v1\nservice/api\n" {
		t.Errorf("delete -f: %v\n%s", err, out)
	}
	if _, err := run(t, m, "delete", "-f", f); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("delete -f again: %v", err)
	}
	if out, err := run(t, m, "delete", "-f", f, "--ignore-not-found"); err != nil || out != "" {
		t.Errorf("delete -f --ignore-not-found: %v\n%s", err, out)
	}
}

// --server HOST means HOST:15010; an address where nothing answers gets
// a hint naming it.
func TestServerAddress(t *testing.T) {
	for in, want := range map[string]string{
		"meshd.example":             "meshd.example:15010",
		"10.0.0.1":                  "10.0.0.1:15010",
		"::1":                       "[::1]:15010",
		"[::1]":                     "[::1]:15010",
		"a:1,b":                     "a:1,b:15010",
		"meshd.example:443":         "meshd.example:443",
		"[fe80::1]:9":               "[fe80::1]:9",
		"meshd.minimesh-system.svc": "meshd.minimesh-system.svc:15010",
	} {
		if got := meshctl.WithDefaultPort(in); got != want {
			t.Errorf("WithDefaultPort(%q) = %q, want %q", in, got, want)
		}
	}
	m := controlplanetest.Start(t, controlplane.Config{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	_, err = runWith(t, dead, m.OperatorCredentialDir(), "--timeout", "1s", "proxies")
	if err == nil || !strings.Contains(err.Error(), "is meshd running at "+dead+"? set --server or MESHCTL_SERVER") {
		t.Errorf("nothing at %s: %v", dead, err)
	}
	// A host without a port dials 15010: whatever answers there (or
	// nothing), the error names 127.0.0.1:15010, never :443.
	if l, err := net.Listen("tcp", "127.0.0.1:"+meshctl.DefaultPort); err == nil {
		accepted := make(chan struct{}, 1)
		go func() {
			if c, err := l.Accept(); err == nil {
				accepted <- struct{}{}
				c.Close()
			}
		}()
		_, _ = runWith(t, "127.0.0.1", m.OperatorCredentialDir(), "--timeout", "1s", "proxies")
		l.Close()
		select {
		case <-accepted:
		default:
			t.Error("--server 127.0.0.1 did not connect to port 15010")
		}
	} else if _, err := runWith(t, "127.0.0.1", m.OperatorCredentialDir(), "--timeout", "1s", "proxies"); err == nil || !strings.Contains(err.Error(), "127.0.0.1:15010") {
		t.Errorf("--server 127.0.0.1: %v", err)
	}
}

// version: the client's from internal/version, the server's through the
// Version call; --client alone needs no meshd.
func TestVersion(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	out, err := run(t, m, "version")
	if err != nil || !strings.Contains(out, "Client Version: "+version.Version+" (") || !strings.Contains(out, "Server Version: "+version.Version+" (store bbolt, trust domain minimesh.local)") {
		t.Errorf("version: %v\n%s", err, out)
	}
	out, err = run(t, m, "version", "-o", "json")
	var doc struct {
		ClientVersion struct{ Version, GoVersion, Platform string } `json:"clientVersion"`
		ServerVersion struct{ Version, Store, TrustDomain string }  `json:"serverVersion"`
	}
	if err != nil || json.Unmarshal([]byte(out), &doc) != nil || doc.ClientVersion.Version != version.Version || doc.ServerVersion.Store != "bbolt" || doc.ServerVersion.TrustDomain != "minimesh.local" {
		t.Errorf("version -o json: %v %+v\n%s", err, doc, out)
	}
	out, err = runWith(t, "127.0.0.1:1", "", "version", "--client")
	if err != nil || !strings.Contains(out, "Client Version: ") || strings.Contains(out, "Server") {
		t.Errorf("version --client without meshd: %v\n%s", err, out)
	}
}

func sameDocument(t *testing.T, yamlOrJSON, jsonDoc string) bool {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(yamlOrJSON))
	if err != nil {
		t.Fatalf("%v\n%s", err, yamlOrJSON)
	}
	var a, b any
	if err := json.Unmarshal(j, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(jsonDoc), &b); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(a, b)
}

func shortNameOf(k api.Kind) string {
	return map[api.Kind]string{api.KindService: "svc", api.KindRoute: "rt", api.KindRateLimit: "rl", api.KindAccessLog: "al", api.KindAuthorizationPolicy: "ap", api.KindConfigFile: "cf",
		api.KindExternalService: "ext", api.KindLogAdapter: "la", api.KindLogShipping: "ls"}[k]
}
