package meshctl_test

import (
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// meshctl reads and writes the mesh's contracts (api, proto, certs) and
// runs none of the data plane: every contract it shares with mesh-proxy
// (app probes, the capture's defaults, the policy engine, the topz and
// procz answers) lives under api. This walks the non-test imports of
// minimesh/internal/meshctl, as `go list -deps` would, and fails if one
// of them, directly or through another, is a data-plane or control-plane
// package. Tests may still start the real data plane against meshctl.
func TestNoDataplaneImports(t *testing.T) {
	root := moduleRoot(t)
	const module = "minimesh/"
	deps := map[string][]string{} // package -> the path that brought it in
	var walk func(pkg string, via []string)
	walk = func(pkg string, via []string) {
		if _, seen := deps[pkg]; seen {
			return
		}
		deps[pkg] = via
		p, err := build.Default.ImportDir(filepath.Join(root, strings.TrimPrefix(pkg, module)), 0)
		if err != nil {
			t.Fatalf("%s: %v", pkg, err)
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module) {
				walk(imp, append(slices.Clip(via), pkg))
			}
		}
	}
	walk(module+"internal/meshctl", nil)

	if _, ok := deps[module+"api"]; !ok || len(deps) < 3 {
		t.Fatalf("the walk found %d packages, not api: %v", len(deps), deps)
	}
	for pkg, via := range deps {
		for _, banned := range []string{module + "dataplane", module + "controlplane"} {
			if pkg == banned || strings.HasPrefix(pkg, banned+"/") {
				t.Errorf("meshctl imports %s (via %s): move the shared contract to api", pkg, strings.Join(via, " -> "))
			}
		}
	}
}

// moduleRoot is the directory of go.mod above the test's directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
