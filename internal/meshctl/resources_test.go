package meshctl_test

import (
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"minimesh/api"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/internal/meshctl"
)

func TestApplyGetDelete(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})

	out, err := run(t, m, "apply", "-f", "testdata/mesh.yaml", "--dry-run")
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if !strings.Contains(out, "service/default/api created (dry run)") {
		t.Errorf("dry run output:\n%s", out)
	}
	if out, _ := run(t, m, "get", "all"); strings.Contains(out, "api-v1") {
		t.Fatalf("a dry run stored resources:\n%s", out)
	}

	out, err = run(t, m, "apply", "-f", "testdata/mesh.yaml")
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if !strings.Contains(out, "route/default/api-v1 created") || !strings.Contains(out, "revision 1") {
		t.Errorf("apply output:\n%s", out)
	}
	out, _ = run(t, m, "apply", "-f", "testdata/mesh.yaml")
	if !strings.Contains(out, "route/default/api-v1 unchanged") || !strings.Contains(out, "revision 1") {
		t.Errorf("re-apply of the same file:\n%s", out)
	}

	// get -o yaml gives back what was applied.
	out, err = run(t, m, "get", "route", "api-v1", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs, err := api.Decode("get-output", strings.NewReader(out))
	if err != nil {
		t.Fatalf("get -o yaml does not decode: %v\n%s", err, out)
	}
	applied, _ := api.Decode("mesh.yaml", strings.NewReader(mustRead(t, "testdata/mesh.yaml")))
	if len(docs) != 1 || !sameObject(docs[0].Object, applied[1].Object) {
		t.Errorf("round trip through meshd changed the route:\n%s", out)
	}

	out, _ = run(t, m, "get", "all")
	for _, want := range []string{"service/api ", "route/api-v1 ", "ratelimit/api ", "PORTS", "BACKENDS", "RATE"} {
		if !strings.Contains(out, want) {
			t.Errorf("get all lacks %q:\n%s", want, out)
		}
	}

	// The service cannot go while a route and a rate limit refer to it.
	if _, err := run(t, m, "delete", "service", "api"); err == nil || !strings.Contains(err.Error(), "referred") {
		t.Errorf("delete of a referenced service: %v", err)
	}
	if _, err := run(t, m, "delete", "route", "api-v1"); err != nil {
		t.Fatal(err)
	}
	if out, _ := run(t, m, "get", "route"); strings.Contains(out, "api-v1") {
		t.Errorf("route still listed after delete:\n%s", out)
	}
}

func TestRejectedApplyChangesNothingAndSaysWhere(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	if _, err := run(t, m, "apply", "-f", "testdata/mesh.yaml"); err != nil {
		t.Fatal(err)
	}
	before, _ := run(t, m, "get", "all", "-o", "yaml")

	// Decoding fails on the client: the error names file, document and field.
	_, err := run(t, m, "apply", "-f", "testdata/third-invalid.yaml")
	if err == nil {
		t.Fatal("an apply with an invalid third document succeeded")
	}
	for _, want := range []string{"third-invalid.yaml", "document 3", "spec.timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	// A reference meshd cannot resolve: refused by meshd, located by meshctl.
	_, err = run(t, m, "apply", "-f", "testdata/missing-ref.yaml")
	if err == nil {
		t.Fatal("an apply with a dangling reference succeeded")
	}
	for _, want := range []string{"missing-ref.yaml", "document 2", "nowhere"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	after, _ := run(t, m, "get", "all", "-o", "yaml")
	if before != after {
		t.Fatalf("a rejected apply changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func sameObject(a, b api.Object) bool {
	return api.KeyOf(a) == api.KeyOf(b) && proto.Equal(a.SpecMessage(), b.SpecMessage())
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAuthzExplain(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	if _, err := run(t, m, "apply", "-f", "testdata/mesh.yaml", "-f", "testdata/authz.yaml"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		from, method, path, want string
	}{
		{"spiffe://minimesh.local/ns/default/sa/web", "GET", "/v1/items", "ALLOW"},
		{"spiffe://minimesh.local/ns/default/sa/web", "GET", "/admin/users", "DENY"},
		{"spiffe://minimesh.local/ns/default/sa/web", "GET", "/v1/../admin", "DENY"},
		{"spiffe://minimesh.local/ns/default/sa/web", "POST", "/v1/items", "DENY"},
		{"spiffe://minimesh.local/ns/default/sa/other", "GET", "/v1/items", "DENY"},
	}
	for _, c := range cases {
		out, err := run(t, m, "authz", "explain", "--from", c.from, "--to", "api", "--method", c.method, "--path", c.path)
		// A deny exits 1 in silence, as kubectl auth can-i; an allow 0.
		if code, show := meshctl.ExitCode(err); code != map[string]int{"ALLOW": 0, "DENY": 1}[c.want] || show {
			t.Fatalf("%+v: exit %d (shown %v): %v", c, code, show, err)
		}
		if !strings.Contains(out, c.want+" ") {
			t.Errorf("%s %s from %s: want %s, got:\n%s", c.method, c.path, c.from, c.want, out)
		}
	}
}
