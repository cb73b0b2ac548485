package inject

import (
	"slices"
	"strings"
	"testing"
)

// TestInjectControlPlaneList: --control-plane given a comma-separated list
// of meshd replicas reaches mesh-proxy's --control-plane as one argument,
// unchanged (mesh-proxy parses and checks the list: internal/replicas).
func TestInjectControlPlaneList(t *testing.T) {
	in := `apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  serviceAccountName: p
  containers:
  - name: app
    image: x
    ports:
    - containerPort: 80
`
	const list = "meshd-0.meshd.minimesh-system.svc:15010,meshd-1.meshd.minimesh-system.svc:15010,meshd-2.meshd.minimesh-system.svc:15010"
	out, err := Inject([]byte(in), Options{CAPins: testPins, Image: testImage, ControlPlane: list})
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, c := range decodePods(t, out)[0].spec.InitContainers {
		args = append(args, c.Args...)
		args = append(args, c.Command...)
	}
	if !slices.Contains(args, "--control-plane="+list) {
		t.Fatalf("no --control-plane=%s in the injected containers' arguments: %v", list, args)
	}
	if n := strings.Count(string(out), "--control-plane="); n != 1 {
		t.Fatalf("--control-plane appears %d times, want once:\n%s", n, out)
	}
}
