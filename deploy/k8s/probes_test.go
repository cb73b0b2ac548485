package k8s_test

import (
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// TestMeshdProbesAreHTTP: meshd's probes (single replica and HA) ask its
// HTTP /readyz and /livez on the metrics port, which --metrics serves on
// the pod's address: the kubelet's gRPC probe cannot do TLS.
func TestMeshdProbesAreHTTP(t *testing.T) {
	base := find[*appsv1.Deployment](t, build(t, filesys.MakeFsOnDisk(), "base"), "Deployment", "meshd").Spec.Template.Spec
	ha := find[*appsv1.StatefulSet](t, build(t, filesys.MakeFsOnDisk(), "ha"), "StatefulSet", "meshd").Spec.Template.Spec
	for name, pod := range map[string]corev1.PodSpec{"base": base, "ha": ha} {
		c := pod.Containers[0]
		var metricsPort int32
		for _, p := range c.Ports {
			if p.Name == "metrics" {
				metricsPort = p.ContainerPort
			}
		}
		var metricsArg string
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--metrics="); ok {
				metricsArg = v
			}
		}
		if metricsPort == 0 || !strings.HasPrefix(metricsArg, "0.0.0.0:") || !strings.HasSuffix(metricsArg, ":"+strconv.Itoa(int(metricsPort))) {
			t.Errorf("%s: --metrics=%q and the metrics port %d: the probes need meshd's HTTP on the pod's address", name, metricsArg, metricsPort)
		}
		for probe, want := range map[string]struct {
			p    *corev1.Probe
			path string
		}{"readiness": {c.ReadinessProbe, "/readyz"}, "liveness": {c.LivenessProbe, "/livez"}, "startup": {c.StartupProbe, "/livez"}} {
			if want.p == nil || want.p.HTTPGet == nil || want.p.HTTPGet.Path != want.path || want.p.HTTPGet.Port.String() != "metrics" {
				t.Errorf("%s: %s probe %+v, want GET %s on the metrics port", name, probe, want.p, want.path)
			}
		}
	}
}
