package inject

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

const metricsPod = `apiVersion: v1
kind: Pod
metadata:
  name: api
  namespace: demo
  annotations: {ANN}
spec:
  serviceAccountName: api
  containers:
  - name: api
    image: example/api:1.0
    ports: [{containerPort: 8080}]
`

func injectOne(t *testing.T, ann string) (injectedPod, []byte, error) {
	t.Helper()
	out, err := Inject([]byte(strings.Replace(metricsPod, "{ANN}", ann, 1)), Options{CAPins: testPins, Image: testImage})
	if err != nil {
		return injectedPod{}, nil, err
	}
	return decodePods(t, out)[0], out, nil
}

func mount(c corev1.Container, name string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == name {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// The app writes its logs in <shared>/logs (its own emptyDir, mounted
// over the read-only shared dir); the proxy reads them read-only and
// spools on a bounded disk emptyDir passed as --spool-dir.
func TestInjectLogsAndSpool(t *testing.T) {
	p, _, err := injectOne(t, "{}")
	if err != nil {
		t.Fatal(err)
	}
	app := p.spec.Containers[0]
	if m := mount(app, SharedVolume); m == nil || !m.ReadOnly {
		t.Errorf("app's shared mount %+v, want read-only", m)
	}
	if m := mount(app, LogsVolume); m == nil || m.ReadOnly || m.MountPath != SharedDir+"/logs" {
		t.Errorf("app's logs mount %+v, want read-write at %s/logs", m, SharedDir)
	}
	if i, j := slices.IndexFunc(app.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == SharedVolume }),
		slices.IndexFunc(app.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == LogsVolume }); i > j {
		t.Errorf("logs mounted before the shared dir it sits in")
	}
	proxy := p.spec.InitContainers[1]
	if m := mount(proxy, LogsVolume); m == nil || !m.ReadOnly || m.MountPath != SharedDir+"/logs" {
		t.Errorf("proxy's logs mount %+v, want read-only", m)
	}
	if m := mount(proxy, SpoolVolume); m == nil || m.MountPath != SpoolDir || !slices.Contains(proxy.Args, "--spool-dir="+SpoolDir) {
		t.Errorf("proxy's spool mount %+v, args %v", m, proxy.Args)
	}
	for _, v := range p.spec.Volumes {
		switch v.Name {
		case SpoolVolume:
			if v.EmptyDir == nil || v.EmptyDir.Medium == corev1.StorageMediumMemory || v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.String() != SpoolSize {
				t.Errorf("spool volume %+v, want a disk emptyDir with sizeLimit %s", v.EmptyDir, SpoolSize)
			}
		case LogsVolume:
			if v.EmptyDir == nil || v.EmptyDir.Medium == corev1.StorageMediumMemory || v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.String() != LogsSize {
				t.Errorf("logs volume %+v, want a disk emptyDir with sizeLimit %s", v.EmptyDir, LogsSize)
			}
		}
	}
}

// The pod's prometheus.io annotations name the app's endpoint: the proxy
// gets it as --app-metrics and Prometheus scrapes the proxy, which merges
// it; injecting again keeps it; scrape "false" is left alone.
func TestInjectAppMetricsAnnotations(t *testing.T) {
	for _, tc := range []struct {
		ann, flag, port string
	}{
		{`{prometheus.io/scrape: "true", prometheus.io/port: "9090", prometheus.io/path: /stats/prom}`, "--app-metrics=9090/stats/prom", "15020"},
		{`{prometheus.io/scrape: "true", prometheus.io/port: "9090"}`, "--app-metrics=9090", "15020"},
		{`{prometheus.io/port: "8080", prometheus.io/path: /metrics}`, "--app-metrics=8080", "15020"},
		{`{}`, "", "15020"},
		{`{prometheus.io/scrape: "false", prometheus.io/port: "9090"}`, "", "9090"},
	} {
		p, out, err := injectOne(t, tc.ann)
		if err != nil {
			t.Fatalf("%s: %v", tc.ann, err)
		}
		args := p.spec.InitContainers[1].Args
		got := ""
		for _, a := range args {
			if strings.HasPrefix(a, "--app-metrics=") {
				got = a
			}
		}
		if got != tc.flag {
			t.Errorf("%s: flag %q, want %q", tc.ann, got, tc.flag)
		}
		if p.meta.Annotations["prometheus.io/port"] != tc.port {
			t.Errorf("%s: scrape port %q, want %q", tc.ann, p.meta.Annotations["prometheus.io/port"], tc.port)
		}
		again, err := Inject(out, Options{CAPins: testPins, Image: testImage})
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != string(out) {
			t.Errorf("%s: injecting again changed the pod:\n%s\nvs\n%s", tc.ann, out, again)
		}
	}
	for _, bad := range []string{`{prometheus.io/port: "http"}`, `{prometheus.io/port: "70000"}`, `{prometheus.io/port: "9090", prometheus.io/path: "stats"}`,
		`{prometheus.io/port: "9090", prometheus.io/path: "/a b"}`} {
		if _, _, err := injectOne(t, bad); err == nil || !strings.Contains(err.Error(), "prometheus.io/") {
			t.Errorf("%s: %v, want an error naming the annotation", bad, err)
		}
	}
}

// The pod's minimesh.io/external annotation gives the app a local port per
// ExternalService (the ambassador): mesh-proxy --external on 127.0.0.1
// only; injecting again keeps it; a bad entry is refused naming the
// annotation, the entry and why, and a port anyone else in the pod uses
// is refused.
func TestInjectExternalAnnotation(t *testing.T) {
	externals := func(p injectedPod) []string {
		var got []string
		for _, a := range p.spec.InitContainers[1].Args {
			if strings.HasPrefix(a, "--external=") {
				got = append(got, a)
			}
		}
		return got
	}
	for _, tc := range []struct {
		ann  string
		want []string
	}{
		{`{minimesh.io/external: "partner=9000"}`, []string{"--external=partner=127.0.0.1:9000"}},
		{`{minimesh.io/external: "partner=9000, payments-eu=9001"}`, []string{"--external=partner=127.0.0.1:9000", "--external=payments-eu=127.0.0.1:9001"}},
		{`{minimesh.io/external: ""}`, nil},
		{`{}`, nil},
	} {
		p, out, err := injectOne(t, tc.ann)
		if err != nil {
			t.Fatalf("%s: %v", tc.ann, err)
		}
		if got := externals(p); !slices.Equal(got, tc.want) {
			t.Errorf("%s: flags %q, want %q", tc.ann, got, tc.want)
		}
		again, err := Inject(out, Options{CAPins: testPins, Image: testImage})
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != string(out) {
			t.Errorf("%s: injecting again changed the pod:\n%s\nvs\n%s", tc.ann, out, again)
		}
	}
	for _, tc := range []struct{ ann, why string }{
		{`{minimesh.io/external: "partner"}`, "want NAME=PORT"},
		{`{minimesh.io/external: "Partner=9000"}`, "not an ExternalService name"},
		{`{minimesh.io/external: "partner=127.0.0.1:9000"}`, "not a port"},
		{`{minimesh.io/external: "partner=0"}`, "not a port"},
		{`{minimesh.io/external: "partner=9000,"}`, "want NAME=PORT"},
		{`{minimesh.io/external: "partner=9000,partner=9001"}`, "named twice"},
		{`{minimesh.io/external: "partner=9000,other=9000"}`, "ExternalService partner"},
		{`{minimesh.io/external: "partner=8080"}`, "the app's port"},
		{`{minimesh.io/external: "partner=15020"}`, "mesh-proxy's own"},
		{`{minimesh.io/external: "partner=15001"}`, "mesh-proxy's own"},
		{`{minimesh.io/external: "partner=9000 --admin=0.0.0.0:1"}`, "not a port"},
		{`{minimesh.io/external: "` + strings.Repeat("a=1,", 64) + `a=1"}`, "65 entries, at most 64"},
	} {
		_, _, err := injectOne(t, tc.ann)
		if err == nil || !strings.Contains(err.Error(), ExternalAnnotation) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%s: %v, want an error naming %s and %q", tc.ann, err, ExternalAnnotation, tc.why)
		}
	}
}

// A port another container of the pod declares is not the ambassador's.
func TestInjectExternalPortDeclaredByAContainer(t *testing.T) {
	pod := strings.Replace(metricsPod, "{ANN}", `{minimesh.io/external: "partner=9100"}`, 1) + `  - name: exporter
    image: example/exporter:1.0
    ports: [{containerPort: 9100}]
`
	_, err := Inject([]byte(pod), Options{CAPins: testPins, Image: testImage, AppPort: 8080})
	if err == nil || !strings.Contains(err.Error(), "declared by container exporter") {
		t.Fatalf("%v, want the port refused as the exporter's", err)
	}
}
