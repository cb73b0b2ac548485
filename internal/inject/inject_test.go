package inject

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"minimesh/api"
	"minimesh/dataplane/admin"
)

const testImage = "minimesh/minimesh:test"

// testPins are two roots' pins, as during a root rotation.
var testPins = []string{
	"sha256:" + strings.Repeat("ab", 32),
	"sha256:" + strings.Repeat("cd", 32),
}

// injectCases are the inputs in testdata with the flags each is
// injected with; the output is testdata/<name>.golden.yaml
// (UPDATE_GOLDEN=1 rewrites it).
var injectCases = map[string]Options{
	"deployment.yaml": {Image: testImage, CAPins: testPins, Upstreams: []string{"api=127.0.0.1:18081=api.demo.svc:15006=spiffe://minimesh.local/ns/demo/sa/api"}},
	"pod.yaml":        {Image: testImage, CAPins: testPins},
	"statefulset.yaml": {Image: testImage, AppPort: 5432, JoinTokenSecret: "db-join",
		ControlPlane: "meshd.mesh.svc.cluster.local:15010", TrustDomain: "prod.example"},
	"daemonset.yaml": {Image: testImage, CAPins: testPins, Service: "agent"},
	"job.yaml":       {Image: testImage, CAPins: testPins},
}

func TestInjectGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	inputs = slices.DeleteFunc(inputs, func(p string) bool { return strings.HasSuffix(p, ".golden.yaml") })
	if len(inputs) != len(injectCases) {
		t.Fatalf("testdata has %d inputs, the test knows %d", len(inputs), len(injectCases))
	}
	for _, in := range inputs {
		name := filepath.Base(in)
		t.Run(name, func(t *testing.T) {
			opts, ok := injectCases[name]
			if !ok {
				t.Fatalf("no options for %s", name)
			}
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Inject(src, opts)
			if err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(in, ".yaml") + ".golden.yaml"
			if os.Getenv("UPDATE_GOLDEN") == "1" {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (UPDATE_GOLDEN=1 to accept):\n%s", golden, got)
			}

			// Idempotent: injecting the output again changes nothing.
			again, err := Inject(got, opts)
			if err != nil {
				t.Fatalf("injecting the output again: %v", err)
			}
			if !bytes.Equal(again, got) {
				t.Errorf("injecting twice changed the output:\n%s", again)
			}

			// Every output document decodes strictly into its type and
			// has what the pod needs.
			for i, pod := range decodePods(t, got) {
				t.Run(strconv.Itoa(i), func(t *testing.T) { checkInjectedPod(t, pod, src) })
			}
		})
	}
}

// injectedPod is one pod template of inject's output.
type injectedPod struct {
	name string
	meta metav1.ObjectMeta
	spec corev1.PodSpec
}

// decodePods decodes every document strictly, as the API server would.
func decodePods(t *testing.T, out []byte) []injectedPod {
	t.Helper()
	var pods []injectedPod
	for _, doc := range strings.Split(string(out), "\n---\n") {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatal(err)
		}
		var p injectedPod
		var err error
		switch tm.Kind {
		case "Pod":
			var o corev1.Pod
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			p = injectedPod{o.Name, o.ObjectMeta, o.Spec}
		case "Deployment":
			var o appsv1.Deployment
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			p = injectedPod{o.Name, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec}
		case "StatefulSet":
			var o appsv1.StatefulSet
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			p = injectedPod{o.Name, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec}
		case "DaemonSet":
			var o appsv1.DaemonSet
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			p = injectedPod{o.Name, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec}
		case "Job":
			var o batchv1.Job
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			p = injectedPod{o.Name, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec}
		default:
			t.Fatalf("unexpected kind %q in the output", tm.Kind)
		}
		if err != nil {
			t.Fatalf("output %s does not decode strictly: %v\n%s", tm.Kind, err, doc)
		}
		pods = append(pods, p)
	}
	return pods
}

func checkInjectedPod(t *testing.T, p injectedPod, src []byte) {
	t.Helper()
	spec := p.spec
	if len(spec.InitContainers) < 2 || spec.InitContainers[0].Name != RedirectContainer || spec.InitContainers[1].Name != ProxyContainer {
		t.Fatalf("%s: init containers %v: want the redirect, then the proxy, first", p.name, names(spec.InitContainers))
	}
	rd, px := spec.InitContainers[0], spec.InitContainers[1]

	// The redirect: root with NET_ADMIN and NET_RAW only, mesh-proxy redirect.
	if rd.Args[0] != "redirect" || rd.RestartPolicy != nil {
		t.Errorf("redirect container: args %v restartPolicy %v", rd.Args, rd.RestartPolicy)
	}
	if sc := rd.SecurityContext; sc == nil || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || *sc.RunAsUser != 0 || *sc.AllowPrivilegeEscalation {
		t.Errorf("redirect container security context %+v", rd.SecurityContext)
	}
	if !slices.Contains(rd.Args, "--exclude-inbound-ports=15020") || !slices.Contains(rd.Args, "--proxy-uid=1337") {
		t.Errorf("redirect args %v: the admin port must stay uncaptured and the proxy's user pass", rd.Args)
	}

	// The proxy: a native sidecar gated by a startup probe on /ready.
	if px.RestartPolicy == nil || *px.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("proxy is not a native sidecar: restartPolicy %v", px.RestartPolicy)
	}
	if sp := px.StartupProbe; sp == nil || sp.HTTPGet == nil || sp.HTTPGet.Path != "/ready" || sp.HTTPGet.Port.IntValue() != ProxyAdminPort {
		t.Errorf("proxy startup probe %+v", px.StartupProbe)
	}
	if sc := px.SecurityContext; sc == nil || *sc.RunAsUser != ProxyUID || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("proxy security context %+v", px.SecurityContext)
	}
	for _, want := range []string{"--advertise=$(POD_IP):15006", "--admin=0.0.0.0:15020", "--inbound=0.0.0.0:15006"} {
		if !slices.Contains(px.Args, want) {
			t.Errorf("proxy args %v lack %s", px.Args, want)
		}
	}
	// The state dir is the proxy's own directory inside the state volume
	// (an emptyDir, root's 0777), on a path with no symbolic link in the
	// image: mesh-proxy refuses one, and there /var/run links to /run.
	var stateMount string
	for _, m := range px.VolumeMounts {
		if m.Name == StateVolume {
			stateMount = m.MountPath
		}
	}
	if stateMount == "" || !slices.Contains(px.Args, "--state-dir="+stateMount+"/proxy") || strings.HasPrefix(stateMount, "/var/run/") {
		t.Errorf("proxy state dir: mount %q, args %v; want --state-dir=<mount>/proxy, the mount not under /var/run", stateMount, px.Args)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range px.Env {
		env[e.Name] = e
	}
	if e := env["POD_IP"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "status.podIP" {
		t.Errorf("POD_IP not from the downward API: %+v", e)
	}
	var token corev1.Volume
	for _, v := range spec.Volumes {
		if v.Name == TokenVolume {
			token = v
		}
	}
	switch {
	case token.Projected != nil:
		// The pod's own service-account token for meshd's audience, and
		// the pins of every root: no Secret is referenced at all.
		src := token.Projected.Sources
		if len(src) != 1 || src[0].ServiceAccountToken == nil || src[0].ServiceAccountToken.Audience != "minimesh" ||
			src[0].ServiceAccountToken.ExpirationSeconds == nil || *src[0].ServiceAccountToken.ExpirationSeconds != 600 || src[0].ServiceAccountToken.Path != "token" {
			t.Errorf("projected token volume %+v: want one serviceAccountToken, audience minimesh, 600 s, path token", token.Projected)
		}
		for _, want := range []string{"--sa-token-file=/var/run/minimesh/token/token", "--ca-pin=" + strings.Join(testPins, ",")} {
			if !slices.Contains(px.Args, want) {
				t.Errorf("proxy args %v lack %s", px.Args, want)
			}
		}
		if _, ok := env["MESH_PROXY_CA_PIN"]; ok || slices.ContainsFunc(px.Args, func(a string) bool { return strings.HasPrefix(a, "--token-file") }) {
			t.Errorf("service-account form with a join token's pin or file: %v %v", px.Env, px.Args)
		}
		var pod corev1.PodSpec = spec
		if b, _ := yaml.Marshal(pod); strings.Contains(string(b), "secret") {
			t.Errorf("the service-account form references a Secret:\n%s", b)
		}
	case token.Secret != nil:
		if e := env["MESH_PROXY_CA_PIN"]; e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Key != "ca-pin" || e.ValueFrom.SecretKeyRef.Name != token.Secret.SecretName {
			t.Errorf("ca pin not from the token's Secret %q: %+v", token.Secret.SecretName, e)
		}
		if !slices.Contains(px.Args, "--token-file=/var/run/minimesh/token/token") || slices.ContainsFunc(px.Args, func(a string) bool {
			return strings.HasPrefix(a, "--sa-token-file") || strings.HasPrefix(a, "--ca-pin")
		}) {
			t.Errorf("join-token form: proxy args %v", px.Args)
		}
	default:
		t.Errorf("token volume %+v: neither projected nor a Secret", token)
	}
	if spec.ShareProcessNamespace == nil || !*spec.ShareProcessNamespace {
		t.Error("shareProcessNamespace not set")
	}

	// Every rewritten app probe points at the admin port and has its
	// original in MESH_APP_PROBES; nothing else refers to the app's port.
	probes, err := api.ParseAppProbes(env["MESH_APP_PROBES"].Value)
	if err != nil {
		t.Fatal(err)
	}
	rewritten := 0
	for _, c := range spec.Containers {
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == SharedVolume && m.ReadOnly }) {
			t.Errorf("container %s lacks the shared volume", c.Name)
		}
		for _, kp := range probesOf(&c) {
			pr := kp.probe
			if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Port.IntValue() != ProxyAdminPort {
				if pr != nil && pr.TCPSocket != nil {
					t.Errorf("container %s %s: TCP probe left on the app's port", c.Name, kp.kind)
				}
				continue
			}
			rewritten++
			if _, ok := probes[pr.HTTPGet.Path]; !ok || pr.HTTPGet.Path != api.AppProbePath(c.Name, kp.kind) {
				t.Errorf("container %s %s probe %s has no original", c.Name, kp.kind, pr.HTTPGet.Path)
			}
		}
	}
	if rewritten != len(probes) {
		t.Errorf("%d probes rewritten, %d in MESH_APP_PROBES", rewritten, len(probes))
	}
	if p.meta.Annotations[InjectedAnnotation] == "" {
		t.Error("no injected annotation")
	}
	_ = src
}

func names(cs []corev1.Container) []string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return n
}

func TestInjectRefusals(t *testing.T) {
	pod := func(spec string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n" + spec
	}
	const app = "  serviceAccountName: p\n  containers:\n  - name: app\n    image: x\n"
	tests := []struct {
		name string
		in   string
		opts Options
		want string
	}{
		{"pod refused among others", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n---\n" + pod(app), Options{CAPins: testPins}, "document 2: Pod p: the app declares no TCP containerPort"},
		{"replicaset", "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: r\n", Options{CAPins: testPins}, `ReplicaSet "apps/v1" cannot be injected`},
		{"no pins", pod(app + "    ports:\n    - containerPort: 80\n"), Options{}, "--ca-pin: the pins of meshd's roots are required"},
		{"bad pin", pod(app + "    ports:\n    - containerPort: 80\n"), Options{CAPins: []string{testPins[0], "sha1:abc"}}, `--ca-pin "sha1:abc"`},
		{"bad join-token secret", pod(app + "    ports:\n    - containerPort: 80\n"), Options{JoinTokenSecret: "Mesh_Token"}, `--join-token-secret "Mesh_Token"`},
		{"cronjob", "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: c\n", Options{CAPins: testPins}, "CronJob"},
		{"old api version", "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: d\n", Options{CAPins: testPins}, `Deployment "extensions/v1beta1" cannot be injected`},
		{"list", "apiVersion: v1\nkind: List\nitems: []\n", Options{CAPins: testPins}, "List"},
		{"no kind", "foo: bar\n", Options{CAPins: testPins}, "no kind"},
		{"empty", "# nothing\n---\n", Options{CAPins: testPins}, "no Kubernetes object"},
		{"not yaml", "apiVersion: v1\nkind: Pod\n  bad: [\n", Options{CAPins: testPins}, "document 1"},
		{"unknown field", pod(app + "    ports:\n    - containerPort: 80\n    livenessProbe:\n      httpGet:\n        port: 80\n        pth: /x\n"), Options{CAPins: testPins}, `unknown field "spec.containers[0].livenessProbe.httpGet.pth"`},
		{"duplicate field", pod(app + "    ports:\n    - containerPort: 80\n    image: y\n"), Options{CAPins: testPins}, `key "image" already set`},
		{"host network", pod("  hostNetwork: true\n" + app), Options{CAPins: testPins}, "hostNetwork"},
		{"no service account", pod("  containers:\n  - name: app\n    image: x\n    ports:\n    - containerPort: 80\n"), Options{CAPins: testPins}, "no serviceAccountName"},
		{"no containers", pod("  serviceAccountName: p\n"), Options{CAPins: testPins}, "no containers"},
		{"no port", pod(app), Options{CAPins: testPins}, "declares no TCP containerPort"},
		{"two ports", pod(app + "    ports:\n    - containerPort: 80\n    - containerPort: 81\n"), Options{CAPins: testPins}, "ports [80 81]"},
		{"UDP only", pod(app + "    ports:\n    - containerPort: 53\n      protocol: UDP\n"), Options{CAPins: testPins}, "declares no TCP containerPort"},
		{"proxy's port", pod(app + "    ports:\n    - containerPort: 15020\n"), Options{CAPins: testPins}, "mesh-proxy's own"},
		{"app port is proxy's", pod(app), Options{CAPins: testPins, AppPort: 15006}, "app port 15006 is mesh-proxy's own"},
		{"bad port flag", pod(app), Options{CAPins: testPins, AppPort: 70000}, "not a TCP port"},
		{"container named mesh-proxy", pod("  serviceAccountName: p\n  containers:\n  - name: mesh-proxy\n    image: x\n    ports:\n    - containerPort: 80\n"), Options{CAPins: testPins}, `"mesh-proxy" is mesh-proxy's own`},
		{"volume named mesh-state", pod(app + "    ports:\n    - containerPort: 80\n  volumes:\n  - name: mesh-state\n    emptyDir: {}\n"), Options{CAPins: testPins}, `volume name "mesh-state"`},
		{"app as proxy user", pod("  securityContext:\n    runAsUser: 1337\n" + app + "    ports:\n    - containerPort: 80\n"), Options{CAPins: testPins}, "UID 1337"},
		{"container as proxy user", pod(app + "    ports:\n    - containerPort: 80\n    securityContext:\n      runAsUser: 1337\n"), Options{CAPins: testPins}, "container app runs as UID 1337"},
		{"grpc probe on app port", pod(app + "    ports:\n    - containerPort: 80\n    readinessProbe:\n      grpc:\n        port: 80\n"), Options{CAPins: testPins}, "gRPC probe"},
		{"unknown port name", pod(app + "    ports:\n    - containerPort: 80\n    livenessProbe:\n      httpGet:\n        port: web\n"), Options{CAPins: testPins}, `port name "web"`},
		{"probe header injection", pod(app + "    ports:\n    - containerPort: 80\n    livenessProbe:\n      httpGet:\n        port: 80\n        httpHeaders:\n        - name: \"X\\nY\"\n          value: v\n"), Options{CAPins: testPins}, "not a valid header"},
		{"bad upstream", pod(app + "    ports:\n    - containerPort: 80\n"), Options{CAPins: testPins, Upstreams: []string{"api=a=b"}}, `--upstream "api=a=b"`},
		{"upstream without identity", pod(app + "    ports:\n    - containerPort: 80\n"), Options{CAPins: testPins, Upstreams: []string{"api=127.0.0.1:1=10.0.0.1:15006=api"}}, "spiffe://"},
		{"half an injection", pod(app + "    ports:\n    - containerPort: 80\n  initContainers:\n  - name: mesh-redirect\n    image: x\n"), Options{CAPins: testPins}, "refusing to guess"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Inject([]byte(tt.in), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Inject = %v, want an error containing %q; output:\n%s", err, tt.want, out)
			}
			if !strings.HasPrefix(err.Error(), "inject: ") {
				t.Errorf("error %q lacks the inject: prefix", err)
			}
			if out != nil {
				t.Errorf("refused, yet wrote output:\n%s", out)
			}
		})
	}
}

// Documents that are not workloads pass through byte for byte (comments
// and all), in their place among the injected ones; a pod annotated
// minimesh.io/inject: "false" is not injected.
func TestInjectPassesOtherObjectsThrough(t *testing.T) {
	svc := "# the api's Service\napiVersion: v1\nkind: Service\nmetadata:\n  name: api   # keep me\nspec:\n  ports: [{port: 80}]\n"
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}"
	pod, err := os.ReadFile(filepath.Join("testdata", "pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	injected, err := Inject(pod, Options{CAPins: testPins, Image: testImage})
	if err != nil {
		t.Fatal(err)
	}
	out, err := Inject([]byte(svc+"---\n"+string(pod)+"---\n"+cm), Options{CAPins: testPins, Image: testImage})
	if err != nil {
		t.Fatal(err)
	}
	if want := svc + "---\n" + string(injected) + "---\n" + cm + "\n"; string(out) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out, want)
	}
	again, err := Inject(out, Options{CAPins: testPins, Image: testImage})
	if err != nil || !bytes.Equal(again, out) {
		t.Errorf("not idempotent (%v):\n%s", err, again)
	}

	optOut := strings.Replace(string(pod), "metadata:\n", "metadata:\n  annotations:\n    minimesh.io/inject: \"false\"\n", 1)
	out, err = Inject([]byte(optOut), Options{CAPins: testPins, Image: testImage})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), ProxyContainer) || !strings.Contains(string(out), `minimesh.io/inject: "false"`) {
		t.Errorf("opted-out pod injected:\n%s", out)
	}
}

// The join-token form (--join-token-secret) mounts that Secret, takes the
// pin from it, and passes no --ca-pin; the default form references no
// Secret. Re-injecting one form with the other's options replaces it.
func TestInjectTokenForms(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sa, err := Inject(src, Options{CAPins: testPins, Image: testImage})
	if err != nil {
		t.Fatal(err)
	}
	jt, err := Inject(src, Options{JoinTokenSecret: "mesh-token-api", Image: testImage})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range decodePods(t, sa) {
		checkInjectedPod(t, p, src)
	}
	for _, p := range decodePods(t, jt) {
		checkInjectedPod(t, p, src)
	}
	if !strings.Contains(string(jt), "secretName: mesh-token-api") || strings.Contains(string(jt), "--ca-pin") {
		t.Errorf("join-token form:\n%s", jt)
	}
	back, err := Inject(jt, Options{CAPins: testPins, Image: testImage})
	if err != nil || !bytes.Equal(back, sa) {
		t.Errorf("re-injecting the join-token form with pins (%v):\n%s", err, back)
	}
}

// PodJSON, the webhook's entry, injects exactly as Inject does: its
// "after" written as Inject writes is Inject's output.
func TestPodJSONIsInject(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{CAPins: testPins, Image: testImage}
	want, err := Inject(src, opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := yaml.YAMLToJSON(src)
	if err != nil {
		t.Fatal(err)
	}
	before, after, err := PodJSON(raw, opts)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(before, after) {
		t.Fatal("nothing injected")
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(after, &pod); err != nil {
		t.Fatal(err)
	}
	got, err := Encode(&pod)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("PodJSON differs from Inject:\n%s\nwant:\n%s", got, want)
	}
	// Refusals are inject's, without the document prefix.
	_, _, err = PodJSON([]byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"x"}]}}`), opts)
	if err == nil || err.Error() != "pod p: pod has no serviceAccountName: its mesh identity (spiffe://TD/ns/NS/sa/SA) would be the namespace's default account; give the workload a service account of its own" {
		t.Errorf("refusal: %v", err)
	}
}

// Probes left alone: exec, another host, gRPC on another port.
func TestInjectLeavesUncapturedProbes(t *testing.T) {
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
    livenessProbe:
      exec:
        command: ["true"]
    readinessProbe:
      httpGet:
        host: 10.0.0.1
        port: 80
    startupProbe:
      grpc:
        port: 9000
`
	out, err := Inject([]byte(in), Options{CAPins: testPins, Image: testImage})
	if err != nil {
		t.Fatal(err)
	}
	c := decodePods(t, out)[0].spec.Containers[0]
	if c.LivenessProbe.Exec == nil || c.ReadinessProbe.HTTPGet.Host != "10.0.0.1" || c.ReadinessProbe.HTTPGet.Port.IntValue() != 80 || c.StartupProbe.GRPC.Port != 9000 {
		t.Errorf("probes changed: %+v %+v %+v", c.LivenessProbe, c.ReadinessProbe, c.StartupProbe)
	}
	if strings.Contains(string(out), "MESH_APP_PROBES") {
		t.Errorf("MESH_APP_PROBES set with nothing rewritten:\n%s", out)
	}
}

// Re-injecting with other flags replaces the earlier injection rather
// than adding to it, and keeps the app port chosen before.
func TestInjectAgainWithOtherFlags(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	first, err := Inject(src, Options{CAPins: testPins, Image: testImage, AppPort: 5432})
	if err != nil {
		t.Fatal(err)
	}
	second, err := Inject(first, Options{CAPins: testPins, Image: "minimesh/minimesh:v2"}) // no --port: the one used before
	if err != nil {
		t.Fatal(err)
	}
	p := decodePods(t, second)[0]
	if n := len(p.spec.InitContainers); n != 3 { // redirect, proxy, migrate
		t.Fatalf("init containers %v", names(p.spec.InitContainers))
	}
	if p.spec.InitContainers[1].Image != "minimesh/minimesh:v2" || !slices.Contains(p.spec.InitContainers[1].Args, "--app=127.0.0.1:5432") {
		t.Errorf("proxy %v %v", p.spec.InitContainers[1].Image, p.spec.InitContainers[1].Args)
	}
	if n := len(p.spec.Volumes); n != 5 { // state, shared, logs, spool, token
		t.Errorf("volumes %d, want 5", n)
	}
	want, err := Inject(src, Options{CAPins: testPins, Image: "minimesh/minimesh:v2", AppPort: 5432})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(second, want) {
		t.Errorf("re-injection differs from injecting the original with the new flags:\n%s", second)
	}
}

// The probe JSON that inject writes is what mesh-proxy's admin server
// runs: kubelet's rewritten probe, sent to the admin port, reaches the app
// on its original path and port and reports its health.
func TestInjectedProbesReachTheApp(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	healthy := true
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || r.Header.Get("X-Probe") != "yes" {
			http.NotFound(w, r)
			return
		}
		if !healthy {
			http.Error(w, "sick", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "fine")
	}))
	defer app.Close()
	_, port, _ := net.SplitHostPort(app.Listener.Addr().String())

	in := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      serviceAccountName: web
      containers:
      - name: web
        image: x
        ports:
        - name: http
          containerPort: %s
        livenessProbe:
          httpGet:
            path: /healthz
            port: http
            httpHeaders: [{name: X-Probe, value: "yes"}]
        readinessProbe:
          tcpSocket: {port: http}
`, port)
	out, err := Inject([]byte(in), Options{CAPins: testPins, Image: testImage})
	if err != nil {
		t.Fatal(err)
	}
	p := decodePods(t, out)[0]
	var probesJSON string
	for _, e := range p.spec.InitContainers[1].Env {
		if e.Name == "MESH_APP_PROBES" {
			probesJSON = e.Value
		}
	}
	probes, err := admin.ParseAppProbes(probesJSON)
	if err != nil {
		t.Fatal(err)
	}
	h, err := admin.NewProbeHandler(admin.ProbeConfig{Probes: probes})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := admin.New(admin.Config{Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle("GET "+admin.AppHealthPrefix, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	// Kubelet probes what the rewritten probe says, on the admin port.
	kubelet := func(pr *corev1.Probe) int {
		t.Helper()
		if pr.HTTPGet == nil || pr.HTTPGet.Port.IntValue() != ProxyAdminPort {
			t.Fatalf("probe not rewritten: %+v", pr)
		}
		resp, err := client.Get("http://" + ln.Addr().String() + pr.HTTPGet.Path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	c := p.spec.Containers[0]
	if code := kubelet(c.LivenessProbe); code != http.StatusOK {
		t.Errorf("liveness: %d, want 200", code)
	}
	if code := kubelet(c.ReadinessProbe); code != http.StatusOK {
		t.Errorf("readiness (TCP): %d, want 200", code)
	}
	healthy = false
	if code := kubelet(c.LivenessProbe); code != http.StatusInternalServerError {
		t.Errorf("liveness of a sick app: %d, want 500", code)
	}
	app.Close()
	if code := kubelet(c.ReadinessProbe); code != http.StatusServiceUnavailable {
		t.Errorf("readiness of a stopped app: %d, want 503", code)
	}
}

func FuzzInject(f *testing.F) {
	for name := range injectCases {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {serviceAccountName: p, containers: [{name: a, image: x, ports: [{containerPort: 80}]}]}\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Inject(in, Options{CAPins: testPins, Image: testImage})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "inject: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		// Whatever is accepted is idempotent.
		again, err := Inject(out, Options{CAPins: testPins, Image: testImage})
		if err != nil {
			t.Fatalf("output refused: %v\n%s", err, out)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("not idempotent:\n%s\n---- again:\n%s", out, again)
		}
	})
}

// --capture-outbound sends the app's outbound TCP to the proxy's
// transparent listener: the redirect gets --outbound-port, the proxy
// listens there (--transparent) and hands HTTP to its Host-routed port.
func TestInjectCaptureOutbound(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := Inject(src, Options{CAPins: testPins, Image: testImage})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(plain, []byte("--outbound-port")) || bytes.Contains(plain, []byte("--outbound-http")) {
		t.Fatal("outbound is captured without --capture-outbound")
	}
	out, err := Inject(src, Options{CAPins: testPins, Image: testImage, CaptureOutbound: true})
	if err != nil {
		t.Fatal(err)
	}
	p := decodePods(t, out)[0]
	redirect, proxy := p.spec.InitContainers[0].Args, p.spec.InitContainers[1].Args
	if !slices.Contains(redirect, "--outbound-port=15001") {
		t.Errorf("redirect args %v", redirect)
	}
	if !slices.Contains(proxy, "--transparent=127.0.0.1:15001") || !slices.Contains(proxy, "--outbound-http=127.0.0.1:15080") {
		t.Errorf("proxy args %v", proxy)
	}
	again, err := Inject(out, Options{CAPins: testPins, Image: testImage, CaptureOutbound: true})
	if err != nil || !bytes.Equal(again, out) {
		t.Errorf("injecting twice changed the output (%v)", err)
	}
}
