package k8s_test

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"minimesh/api"
	"minimesh/controlplane"
	"minimesh/controlplane/webhook"
)

// The labels every object (and every pod template) carries.
var recommendedLabels = []string{
	"app.kubernetes.io/name",
	"app.kubernetes.io/component",
	"app.kubernetes.io/version",
	"app.kubernetes.io/part-of",
	"app.kubernetes.io/managed-by",
}

// podTemplates are the pods an object makes (or is).
func podTemplates(o object) map[string]podTemplate {
	switch v := o.obj.(type) {
	case *corev1.Pod:
		return map[string]podTemplate{o.name: {v.ObjectMeta, v.Spec}}
	case *appsv1.Deployment:
		return map[string]podTemplate{o.name: {v.Spec.Template.ObjectMeta, v.Spec.Template.Spec}}
	case *appsv1.StatefulSet:
		return map[string]podTemplate{o.name: {v.Spec.Template.ObjectMeta, v.Spec.Template.Spec}}
	}
	return nil
}

type podTemplate struct {
	meta metav1.ObjectMeta
	spec corev1.PodSpec
}

func TestEveryObjectHasTheRecommendedLabels(t *testing.T) {
	for _, dir := range []string{"base", "ha", "operator", "example"} {
		for _, o := range build(t, filesys.MakeFsOnDisk(), dir) {
			metas := map[string]map[string]string{o.kind + " " + o.name: o.obj.(metav1.Object).GetLabels()}
			for name, p := range podTemplates(o) {
				metas["pod template of "+o.kind+" "+name] = p.meta.Labels
			}
			for what, l := range metas {
				for _, k := range recommendedLabels {
					if l[k] == "" {
						t.Errorf("%s: %s has no label %s", dir, what, k)
					}
				}
			}
		}
	}
}

// The namespaces' Pod Security levels, and the pods there passing them as
// the API server's own evaluator (k8s.io/pod-security-admission) checks:
// minimesh-system enforces restricted, and meshd (single and HA), etcd and
// the meshctl pod pass it; an application namespace with injected pods
// needs privileged (the redirect's init container), which the injected
// example pods show by failing baseline.
func TestPodSecurityLevels(t *testing.T) {
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(level psaapi.Level, p podTemplate) []string {
		var out []string
		for _, r := range eval.EvaluatePod(psaapi.LevelVersion{Level: level, Version: psaapi.LatestVersion()}, &p.meta, &p.spec) {
			if !r.Allowed {
				out = append(out, r.ForbiddenReason+": "+r.ForbiddenDetail)
			}
		}
		return out
	}
	pods := 0
	for _, dir := range []string{"base", "ha", "operator"} {
		objs := build(t, filesys.MakeFsOnDisk(), dir)
		if dir != "operator" {
			ns := find[*corev1.Namespace](t, objs, "Namespace", "minimesh-system")
			if ns.Labels[psaapi.EnforceLevelLabel] != string(psaapi.LevelRestricted) || ns.Labels[psaapi.EnforceVersionLabel] != "latest" {
				t.Errorf("%s: namespace labels %v: want enforce restricted, latest", dir, ns.Labels)
			}
		}
		for _, o := range objs {
			for name, p := range podTemplates(o) {
				pods++
				if bad := check(psaapi.LevelRestricted, p); len(bad) > 0 {
					t.Errorf("%s: %s %s does not pass Pod Security restricted: %v", dir, o.kind, name, bad)
				}
			}
		}
	}
	if pods != 4 { // meshd, meshd (HA), meshd-etcd, meshctl
		t.Errorf("%d pods checked, want 4", pods)
	}
	// The checker is not lenient: meshd with a capability back fails.
	dep := find[*appsv1.Deployment](t, build(t, filesys.MakeFsOnDisk(), "base"), "Deployment", "meshd")
	spec := *dep.Spec.Template.Spec.DeepCopy()
	spec.Containers[0].SecurityContext.Capabilities.Drop = nil
	if len(check(psaapi.LevelRestricted, podTemplate{dep.Spec.Template.ObjectMeta, spec})) == 0 {
		t.Error("a meshd that keeps its capabilities passes restricted")
	}

	objs := build(t, filesys.MakeFsOnDisk(), "example")
	ns := find[*corev1.Namespace](t, objs, "Namespace", "demo")
	if ns.Labels[psaapi.EnforceLevelLabel] != string(psaapi.LevelPrivileged) {
		t.Errorf("demo namespace labels %v: injected pods need enforce privileged", ns.Labels)
	}
	b, err := os.ReadFile("example/namespace.yaml")
	if err != nil || !strings.Contains(string(b), "iptables") {
		t.Errorf("example/namespace.yaml does not say why it is privileged (%v)", err)
	}
	for _, name := range []string{"api", "web"} {
		dep := find[*appsv1.Deployment](t, objs, "Deployment", name)
		if len(check(psaapi.LevelBaseline, podTemplate{dep.Spec.Template.ObjectMeta, dep.Spec.Template.Spec})) == 0 {
			t.Errorf("injected %s passes baseline: then its namespace need not be privileged", name)
		}
	}
}

// peer is who connects to meshd.
type peer struct {
	ns, nsLabels, podLabels map[string]string
}

// admits evaluates the ingress rules of np (in namespace home) for a
// connection from p to port.
func admits(np *networkingv1.NetworkPolicy, home string, p peer, port int) bool {
	for _, r := range np.Spec.Ingress {
		portOK := len(r.Ports) == 0
		for _, rp := range r.Ports {
			if rp.Port == nil || rp.Protocol != nil && *rp.Protocol != corev1.ProtocolTCP {
				continue
			}
			lo, hi := rp.Port.IntValue(), rp.Port.IntValue()
			if rp.EndPort != nil {
				hi = int(*rp.EndPort)
			}
			if lo <= port && port <= hi {
				portOK = true
			}
		}
		if !portOK {
			continue
		}
		if len(r.From) == 0 {
			return true
		}
		for _, f := range r.From {
			nsOK := f.NamespaceSelector == nil && p.ns["name"] == home
			if f.NamespaceSelector != nil {
				sel, err := metav1.LabelSelectorAsSelector(f.NamespaceSelector)
				nsOK = err == nil && sel.Matches(labels.Set(p.nsLabels))
			}
			podOK := true
			if f.PodSelector != nil {
				sel, err := metav1.LabelSelectorAsSelector(f.PodSelector)
				podOK = err == nil && sel.Matches(labels.Set(p.podLabels))
			}
			if f.IPBlock == nil && nsOK && podOK {
				return true
			}
		}
	}
	return false
}

func nsPeer(name string, nsLabels map[string]string, podLabels map[string]string) peer {
	l := map[string]string{"kubernetes.io/metadata.name": name}
	for k, v := range nsLabels {
		l[k] = v
	}
	return peer{ns: map[string]string{"name": name}, nsLabels: l, podLabels: podLabels}
}

// meshd's NetworkPolicy (single and HA): gRPC from meshed namespaces,
// the meshctl pod and the other replicas; metrics from Prometheus in
// monitoring; the webhook from anywhere (the API server); nothing else.
// Its ports are meshd's container ports.
func TestMeshdNetworkPolicy(t *testing.T) {
	for _, dir := range []string{"base", "ha"} {
		objs := build(t, filesys.MakeFsOnDisk(), dir)
		np := find[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", "meshd")
		var pod corev1.PodSpec
		var podLabels map[string]string
		if dir == "base" {
			d := find[*appsv1.Deployment](t, objs, "Deployment", "meshd")
			pod, podLabels = d.Spec.Template.Spec, d.Spec.Template.Labels
		} else {
			s := find[*appsv1.StatefulSet](t, objs, "StatefulSet", "meshd")
			pod, podLabels = s.Spec.Template.Spec, s.Spec.Template.Labels
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(labels.Set(podLabels)) || !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
			t.Errorf("%s: the NetworkPolicy %v does not select meshd's pods for ingress", dir, np.Spec.PodSelector)
		}
		ports := map[string]int{}
		for _, p := range pod.Containers[0].Ports {
			ports[p.Name] = int(p.ContainerPort)
		}
		var listed []int
		for _, r := range np.Spec.Ingress {
			for _, p := range r.Ports {
				listed = append(listed, p.Port.IntValue())
			}
		}
		slices.Sort(listed)
		if want := []int{ports["grpc"], ports["metrics"], ports["webhook"]}; !slices.Equal(listed, want) || want[0] != 15010 {
			t.Errorf("%s: policy ports %v, meshd's ports %v", dir, listed, ports)
		}
		app := map[string]string{"app.kubernetes.io/name": "web"}
		for _, c := range []struct {
			what string
			p    peer
			port int
			want bool
		}{
			{"a proxy in a webhook-injected namespace", nsPeer("shop", map[string]string{"minimesh.io/inject": "enabled"}, app), ports["grpc"], true},
			{"a proxy in a hand-injected namespace", nsPeer("demo", map[string]string{"minimesh.io/inject": "disabled"}, app), ports["grpc"], true},
			{"a pod of an unmeshed namespace", nsPeer("other", nil, app), ports["grpc"], false},
			{"the meshctl pod", nsPeer("minimesh-system", nil, map[string]string{"app.kubernetes.io/name": "meshctl"}), ports["grpc"], true},
			{"another meshd replica", nsPeer("minimesh-system", nil, podLabels), ports["grpc"], true},
			{"etcd", nsPeer("minimesh-system", nil, map[string]string{"app.kubernetes.io/name": "meshd-etcd"}), ports["grpc"], false},
			{"meshctl's label in another namespace", nsPeer("other", nil, map[string]string{"app.kubernetes.io/name": "meshctl"}), ports["grpc"], false},
			{"Prometheus", nsPeer("monitoring", nil, map[string]string{"app.kubernetes.io/name": "prometheus"}), ports["metrics"], true},
			{"another pod in monitoring", nsPeer("monitoring", nil, app), ports["metrics"], false},
			{"a meshed proxy on the metrics port", nsPeer("shop", map[string]string{"minimesh.io/inject": "enabled"}, app), ports["metrics"], false},
			{"Prometheus on the gRPC port", nsPeer("monitoring", nil, map[string]string{"app.kubernetes.io/name": "prometheus"}), ports["grpc"], false},
			{"the API server on the webhook port", nsPeer("", nil, nil), ports["webhook"], true},
			{"anyone on another port", nsPeer("shop", map[string]string{"minimesh.io/inject": "enabled"}, app), 8080, false},
		} {
			if got := admits(np, "minimesh-system", c.p, c.port); got != c.want {
				t.Errorf("%s: %s to port %d: admitted %v, want %v", dir, c.what, c.port, got, c.want)
			}
		}
	}
	// The example's namespace is admitted.
	ns := find[*corev1.Namespace](t, build(t, filesys.MakeFsOnDisk(), "example"), "Namespace", "demo")
	np := find[*networkingv1.NetworkPolicy](t, build(t, filesys.MakeFsOnDisk(), "base"), "NetworkPolicy", "meshd")
	if !admits(np, "minimesh-system", peer{ns: map[string]string{"name": "demo"}, nsLabels: ns.Labels}, 15010) {
		t.Errorf("the example's namespace (labels %v) does not reach meshd", ns.Labels)
	}
}

// The meshed namespace's NetworkPolicy: the sidecars' admin port (15020)
// only to Prometheus in monitoring; every other port, the captured app
// port and the mTLS inbound among them, to anyone (the sidecar decides).
func TestMeshedNamespaceNetworkPolicy(t *testing.T) {
	objs := build(t, filesys.MakeFsOnDisk(), "example")
	np := find[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", "mesh-admin")
	if np.Namespace != "demo" || len(np.Spec.PodSelector.MatchLabels)+len(np.Spec.PodSelector.MatchExpressions) != 0 ||
		!slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Fatalf("the policy must select every pod of demo for ingress: %+v", np)
	}
	dep := find[*appsv1.Deployment](t, objs, "Deployment", "api")
	admin, inbound := 0, 0
	for _, c := range append(dep.Spec.Template.Spec.InitContainers, dep.Spec.Template.Spec.Containers...) {
		for _, p := range c.Ports {
			switch p.Name {
			case "mesh-admin":
				admin = int(p.ContainerPort)
			case "mesh-inbound":
				inbound = int(p.ContainerPort)
			}
		}
	}
	if admin != 15020 || inbound != 15006 {
		t.Fatalf("the injected pod's ports: admin %d, inbound %d", admin, inbound)
	}
	prom := nsPeer("monitoring", nil, map[string]string{"app.kubernetes.io/name": "prometheus"})
	caller := nsPeer("shop", map[string]string{"minimesh.io/inject": "enabled"}, map[string]string{"app.kubernetes.io/name": "web"})
	for _, c := range []struct {
		what string
		p    peer
		port int
		want bool
	}{
		{"Prometheus on the admin port", prom, admin, true},
		{"a caller on the admin port", caller, admin, false},
		{"a pod of the same namespace on the admin port", nsPeer("demo", nil, map[string]string{"app.kubernetes.io/name": "web"}), admin, false},
		{"another pod in monitoring on the admin port", nsPeer("monitoring", nil, map[string]string{"app.kubernetes.io/name": "grafana"}), admin, false},
		{"a caller on the mTLS inbound", caller, inbound, true},
		{"a caller on the app's port (captured)", caller, 8080, true},
		{"a caller on the port below the admin port", caller, admin - 1, true},
		{"a caller on the port above the admin port", caller, admin + 1, true},
	} {
		if got := admits(np, "demo", c.p, c.port); got != c.want {
			t.Errorf("%s (port %d): admitted %v, want %v", c.what, c.port, got, c.want)
		}
	}
}

// meshKinds are the minimesh.io resources by their plural: every kind of
// api/, and (once generated) every CRD in deploy/k8s/crds.
func meshKinds(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, k := range api.Kinds() {
		n := strings.ToLower(string(k))
		if p, ok := strings.CutSuffix(n, "y"); ok {
			n = p + "ies"
		} else {
			n += "s"
		}
		out = append(out, n)
	}
	files, _ := filepath.Glob("crds/*.minimesh.io.yaml")
	if len(files) > 0 {
		var crds []string
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var crd struct {
				Spec struct {
					Group string
					Names struct{ Plural string }
				}
			}
			if err := yaml.Unmarshal(b, &crd); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if crd.Spec.Group != "minimesh.io" {
				t.Errorf("%s: group %q", f, crd.Spec.Group)
			}
			crds = append(crds, crd.Spec.Names.Plural)
		}
		a, b := slices.Sorted(slices.Values(out)), slices.Sorted(slices.Values(crds))
		if !slices.Equal(a, b) {
			t.Errorf("deploy/k8s/crds declares %v, api/ has kinds %v", b, a)
		}
	}
	return out
}

// wantClusterRules are meshd's cluster-wide rules, exactly.
func wantClusterRules(t *testing.T, mutating string) []rbacv1.PolicyRule {
	kinds := meshKinds(t)
	var status []string
	for _, k := range kinds {
		status = append(status, k+"/status")
	}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, ResourceNames: []string{mutating}, Verbs: []string{"get", "patch"}},
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"validatingwebhookconfigurations"}, ResourceNames: []string{validatingWebhookName(t)}, Verbs: []string{"get", "patch"}},
		{APIGroups: []string{"minimesh.io"}, Resources: kinds, Verbs: []string{"get", "list", "watch", "update", "patch"}},
		{APIGroups: []string{"minimesh.io"}, Resources: status, Verbs: []string{"update", "patch"}},
	}
}

// validatingWebhookName is the ValidatingWebhookConfiguration's name in
// deploy/k8s/crds, or minimesh-resource-validator before it exists.
func validatingWebhookName(t *testing.T) string {
	b, err := os.ReadFile("crds/validating-webhook.yaml")
	if err != nil {
		return "minimesh-resource-validator"
	}
	var v struct{ Metadata struct{ Name string } }
	if err := yaml.Unmarshal(b, &v); err != nil || v.Metadata.Name != webhook.DefaultValidatingConfigurationName {
		t.Fatalf("crds/validating-webhook.yaml: name %q, meshd's default %q (%v)", v.Metadata.Name, webhook.DefaultValidatingConfigurationName, err)
	}
	return v.Metadata.Name
}

// The operator credential's Secret: base and ha create it empty (meshd
// writes it), meshd may get, update and patch that one Secret (a Role in
// minimesh-system, nothing else), meshd's --operator-secret default names
// it, and the meshctl pod mounts it, readable by its group only. The copy
// script is gone.
func TestOperatorSecretIsMeshdsToWrite(t *testing.T) {
	for _, dir := range []string{"base", "ha"} {
		objs := build(t, filesys.MakeFsOnDisk(), dir)
		sec := find[*corev1.Secret](t, objs, "Secret", controlplane.DefaultOperatorSecretName)
		if sec.Namespace != controlplane.DefaultOperatorSecretNamespace || len(sec.Data) != 0 || len(sec.StringData) != 0 {
			t.Errorf("%s: Secret %s/%s with %d keys: want it empty in %s (meshd writes it; applying again must not clear it)", dir, sec.Namespace, sec.Name, len(sec.Data)+len(sec.StringData), controlplane.DefaultOperatorSecretNamespace)
		}
		role := find[*rbacv1.Role](t, objs, "Role", "minimesh-meshd-operator-secret")
		want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{sec.Name}, Verbs: []string{"get", "update", "patch"}}}
		if role.Namespace != sec.Namespace || !reflect.DeepEqual(role.Rules, want) {
			t.Errorf("%s: Role %s/%s rules:\n%+v\nwant exactly:\n%+v", dir, role.Namespace, role.Name, role.Rules, want)
		}
		rb := find[*rbacv1.RoleBinding](t, objs, "RoleBinding", role.Name)
		if rb.Namespace != sec.Namespace || rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != role.Name || len(rb.Subjects) != 1 ||
			rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != "meshd" || rb.Subjects[0].Namespace != "minimesh-system" {
			t.Errorf("%s: RoleBinding %+v", dir, rb)
		}
	}
	objs := build(t, filesys.MakeFsOnDisk(), "operator")
	pod := find[*corev1.Pod](t, objs, "Pod", "meshctl")
	v := pod.Spec.Volumes[0]
	if v.Secret == nil || v.Secret.SecretName != controlplane.DefaultOperatorSecretName || *v.Secret.DefaultMode&0o007 != 0 || pod.Namespace != controlplane.DefaultOperatorSecretNamespace {
		t.Errorf("meshctl pod volume %+v: want the Secret, not readable by others", v)
	}
	for _, o := range objs {
		if o.kind == "Secret" {
			t.Errorf("the operator kustomization makes Secret %s: meshd writes it", o.name)
		}
	}
	if _, err := os.Stat("operator/fetch-credential.sh"); err == nil {
		t.Error("operator/fetch-credential.sh is back")
	}
}

// dockerInstr is one Dockerfile instruction, continuation lines joined.
type dockerInstr struct {
	cmd, args string
	stage     int
}

func parseDockerfile(t *testing.T, path string) []dockerInstr {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []dockerInstr
	stage := -1
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(l + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, dockerInstr{cmd: cmd, args: strings.Join(strings.Fields(args), " "), stage: stage})
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: ends inside a continued line", path)
	}
	return out
}

// The image: built from the repository with make build, the version a
// build argument given to its ldflags; the runtime stage has iptables (the
// redirect), git and ca-certificates (mesh-proxy's git sync), and runs as
// a non-root user by default. (The image is not built by make test.)
func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, "Dockerfile")
	stages := 0
	for _, i := range ins {
		stages = max(stages, i.stage+1)
	}
	if stages != 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", stages)
	}
	argAt, buildAt := -1, -1
	for n, i := range ins {
		switch {
		case i.stage == 0 && i.cmd == "ARG" && strings.HasPrefix(i.args, "VERSION"):
			argAt = n
		case i.stage == 0 && i.cmd == "RUN" && strings.Contains(i.args, "make build") && strings.Contains(i.args, `VERSION="${VERSION}"`):
			buildAt = n
		}
	}
	if argAt < 0 || buildAt < argAt {
		t.Errorf("the build stage does not take ARG VERSION and give it to make build (ARG at %d, make build at %d)", argAt, buildAt)
	}
	mk, err := os.ReadFile("../../Makefile")
	if err != nil || !strings.Contains(string(mk), `-ldflags "-X minimesh/internal/version.Version=$(VERSION)"`) {
		t.Errorf("make build does not put VERSION into the ldflags (%v)", err)
	}
	var pkgs []string
	user := ""
	for _, i := range ins {
		if i.stage != 1 {
			continue
		}
		if i.cmd == "RUN" && strings.Contains(i.args, "apt-get install") {
			_, after, _ := strings.Cut(i.args, "apt-get install")
			after, _, _ = strings.Cut(after, "&&")
			for _, f := range strings.Fields(after) {
				if !strings.HasPrefix(f, "-") {
					pkgs = append(pkgs, f)
				}
			}
		}
		if i.cmd == "USER" {
			user = i.args
		}
	}
	for _, p := range []string{"iptables", "git", "ca-certificates"} {
		if !slices.Contains(pkgs, p) {
			t.Errorf("the runtime image installs %v, not %s", pkgs, p)
		}
	}
	if user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
		t.Errorf("runtime USER %q: want a non-root default", user)
	}
}
