// Package k8s_test checks the Kubernetes manifests offline: every YAML file
// and every kustomize build (run in-process) is decoded strictly into the
// k8s.io/api types, as the API server would, so a typo or a misplaced field
// fails `make test` without a cluster or schemas from the internet.
package k8s_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"minimesh/controlplane/webhook"
	"minimesh/internal/inject"
)

// object is one decoded manifest.
type object struct {
	file string
	kind string
	name string
	ns   string
	obj  any
}

// kinds are the types the manifests may hold.
var kinds = map[string]func() any{
	"v1 Namespace":                             func() any { return &corev1.Namespace{} },
	"v1 ServiceAccount":                        func() any { return &corev1.ServiceAccount{} },
	"v1 Service":                               func() any { return &corev1.Service{} },
	"v1 PersistentVolumeClaim":                 func() any { return &corev1.PersistentVolumeClaim{} },
	"v1 Secret":                                func() any { return &corev1.Secret{} },
	"v1 ConfigMap":                             func() any { return &corev1.ConfigMap{} },
	"v1 Pod":                                   func() any { return &corev1.Pod{} },
	"apps/v1 Deployment":                       func() any { return &appsv1.Deployment{} },
	"apps/v1 StatefulSet":                      func() any { return &appsv1.StatefulSet{} },
	"apps/v1 DaemonSet":                        func() any { return &appsv1.DaemonSet{} },
	"batch/v1 Job":                             func() any { return &batchv1.Job{} },
	"policy/v1 PodDisruptionBudget":            func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1 NetworkPolicy":       func() any { return &networkingv1.NetworkPolicy{} },
	"rbac.authorization.k8s.io/v1 ClusterRole": func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1 ClusterRoleBinding": func() any { return &rbacv1.ClusterRoleBinding{} },
	"rbac.authorization.k8s.io/v1 Role":               func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1 RoleBinding":        func() any { return &rbacv1.RoleBinding{} },
	"admissionregistration.k8s.io/v1 MutatingWebhookConfiguration": func() any {
		return &admissionregistrationv1.MutatingWebhookConfiguration{}
	},
	"admissionregistration.k8s.io/v1 ValidatingWebhookConfiguration": func() any {
		return &admissionregistrationv1.ValidatingWebhookConfiguration{}
	},
	// deploy/k8s/crds: only their metadata here; test/kube decodes them
	// strictly (k8s.io/apiextensions-apiserver stays out of go.mod).
	"apiextensions.k8s.io/v1 CustomResourceDefinition": func() any { return &metav1.PartialObjectMetadata{} },
}

// lenient kinds are decoded for their metadata only.
var lenient = map[string]bool{"CustomResourceDefinition": true}

// clusterScoped kinds have no namespace.
var clusterScoped = map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true, "MutatingWebhookConfiguration": true,
	"ValidatingWebhookConfiguration": true, "CustomResourceDefinition": true}

// decodeStrict decodes a YAML stream strictly: unknown, duplicate or
// mis-cased fields are errors naming their path.
func decodeStrict(file string, data []byte) ([]object, error) {
	var out []object
	for i, doc := range splitDocs(data) {
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i+1, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(j, &tm); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i+1, err)
		}
		if tm.Kind == "Kustomization" {
			var k kusttypes.Kustomization
			if err := strictInto(j, &k); err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			continue
		}
		newObj, ok := kinds[tm.APIVersion+" "+tm.Kind]
		if !ok {
			return nil, fmt.Errorf("%s: document %d: unexpected %s %s", file, i+1, tm.APIVersion, tm.Kind)
		}
		o := newObj()
		if lenient[tm.Kind] {
			if err := yaml.Unmarshal(j, o); err != nil {
				return nil, fmt.Errorf("%s: document %d (%s): %w", file, i+1, tm.Kind, err)
			}
		} else if err := strictInto(j, o); err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", file, i+1, tm.Kind, err)
		}
		meta := o.(metav1.Object)
		out = append(out, object{file: file, kind: tm.Kind, name: meta.GetName(), ns: meta.GetNamespace(), obj: o})
	}
	return out, nil
}

func strictInto(j []byte, o any) error {
	strict, err := sigsjson.UnmarshalStrict(j, o)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), data...), []byte("\n---")) {
		var v any
		if yaml.Unmarshal(d, &v) == nil && v != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

// Every YAML file under deploy/k8s decodes strictly.
func TestEveryManifestDecodesStrictly(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if _, err := decodeStrict(path, b); err != nil {
			t.Error(err)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d manifests found", n)
	}
}

// The decoder is strict: the checks above would catch a typo.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	for _, bad := range []string{
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 1\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  Replicas: 1\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports:\n  - port: 80\n    port: 81\n",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n  - name: a\n    image: b\n    securityContext:\n      runAsNonRoot: \"yes\"\n",
		"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresource:\n- a.yaml\n",
		"apiVersion: v1\nkind: Frobnicator\nmetadata: {name: x}\n",
	} {
		if _, err := decodeStrict("bad.yaml", []byte(bad)); err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
}

// builds caches build's output by directory: under -race one kustomize
// build takes a second or two, and the tests ask for the same few.
var builds sync.Map // dir -> []object

// build runs kustomize in-process on dir and decodes its output strictly
// (once per dir; callers must not change what it returns).
func build(t *testing.T, fsys filesys.FileSystem, dir string) []object {
	t.Helper()
	if objs, ok := builds.Load(dir); ok {
		return objs.([]object)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(fsys, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	y, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeStrict("kustomize build "+dir, y)
	if err != nil {
		t.Fatal(err)
	}
	builds.Store(dir, objs)
	return objs
}

func find[T any](t *testing.T, objs []object, kind, name string) T {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			return o.obj.(T)
		}
	}
	t.Fatalf("no %s %s in %v", kind, name, objs)
	var zero T
	return zero
}

func TestBaseBuildsMeshd(t *testing.T) {
	objs := build(t, filesys.MakeFsOnDisk(), "base")
	for _, o := range objs {
		if !clusterScoped[o.kind] && o.ns != "minimesh-system" {
			t.Errorf("%s %s in namespace %q", o.kind, o.name, o.ns)
		}
	}
	find[*corev1.Namespace](t, objs, "Namespace", "minimesh-system")
	sa := find[*corev1.ServiceAccount](t, objs, "ServiceAccount", "meshd")
	pvc := find[*corev1.PersistentVolumeClaim](t, objs, "PersistentVolumeClaim", "meshd-data")
	svc := find[*corev1.Service](t, objs, "Service", "meshd")
	dep := find[*appsv1.Deployment](t, objs, "Deployment", "meshd")

	if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("PVC access modes %v", pvc.Spec.AccessModes)
	}
	// ReadWriteOnce and bbolt's lock: never two meshd pods at once.
	if dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 {
		t.Errorf("meshd strategy %v replicas %v: want Recreate and 1", dep.Spec.Strategy.Type, dep.Spec.Replicas)
	}
	pod := dep.Spec.Template.Spec
	// meshd's pod, and only it, mounts the token it calls the API with.
	if pod.ServiceAccountName != sa.Name || pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken ||
		sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("service account %q, automount %v (pod) %v (account)", pod.ServiceAccountName, pod.AutomountServiceAccountToken, sa.AutomountServiceAccountToken)
	}
	if len(pod.Volumes) != 1 || pod.Volumes[0].PersistentVolumeClaim == nil || pod.Volumes[0].PersistentVolumeClaim.ClaimName != pvc.Name {
		t.Fatalf("volumes %+v: want the PVC", pod.Volumes)
	}
	c := pod.Containers[0]
	var mount string
	for _, m := range c.VolumeMounts {
		if m.Name == pod.Volumes[0].Name {
			mount = m.MountPath
		}
	}
	var dataDir string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--data-dir="); ok {
			dataDir = v
		}
	}
	if mount == "" || !strings.HasPrefix(dataDir, mount+"/") {
		t.Errorf("data dir %q is not a directory inside the volume mounted at %q", dataDir, mount)
	}
	if !slices.Contains(c.Args, "--listen=0.0.0.0:15010") {
		t.Errorf("meshd args %v: it must listen on the pod's address", c.Args)
	}
	if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[0].Port != 15010 || svc.Spec.Selector["app.kubernetes.io/name"] != dep.Spec.Template.Labels["app.kubernetes.io/name"] {
		t.Errorf("service %+v does not select meshd on 15010", svc.Spec)
	}
	checkInjector(t, objs, svc, c)
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.FSGroup == nil {
		t.Errorf("pod security context %+v", pod.SecurityContext)
	}
	// With fsGroup, kubelet would otherwise add group permissions to every
	// file of the volume at each mount, and meshd refuses a data dir or
	// file others can read.
	if sc := pod.SecurityContext; sc == nil || sc.FSGroupChangePolicy == nil || *sc.FSGroupChangePolicy != corev1.FSGroupChangeOnRootMismatch {
		t.Errorf("fsGroupChangePolicy %v, want OnRootMismatch", pod.SecurityContext.FSGroupChangePolicy)
	}
	if sc := c.SecurityContext; sc == nil || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation {
		t.Errorf("container security context %+v", c.SecurityContext)
	}
}

// exampleInjections are how the example's workloads are injected; the
// outputs are committed (UPDATE_GOLDEN=1 rewrites them).
var exampleInjections = map[string]inject.Options{
	"api": {Image: "minimesh/minimesh:dev", JoinTokenSecret: "mesh-token-api"},
	"web": {Image: "minimesh/minimesh:dev", JoinTokenSecret: "mesh-token-web", Upstreams: []string{"api=127.0.0.1:18081=api.demo.svc:15006=spiffe://minimesh.local/ns/demo/sa/api"}},
}

func TestExampleIsInjectedAndBuilds(t *testing.T) {
	for name, opts := range exampleInjections {
		src, err := os.ReadFile(filepath.Join("example", "app", name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := inject.Inject(src, opts)
		if err != nil {
			t.Fatal(err)
		}
		golden := filepath.Join("example", name+".injected.yaml")
		header := []byte("# Generated by meshctl inject from app/" + name + ".yaml (make test checks it; UPDATE_GOLDEN=1 go test ./deploy/k8s rewrites it).\n")
		got = append(header, got...)
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
			t.Errorf("%s is stale: run UPDATE_GOLDEN=1 go test ./deploy/k8s", golden)
		}
	}

	objs := build(t, filesys.MakeFsOnDisk(), "example")
	for _, o := range objs {
		if o.kind != "Namespace" && o.ns != "demo" {
			t.Errorf("%s %s in namespace %q", o.kind, o.name, o.ns)
		}
	}
	svc := find[*corev1.Service](t, objs, "Service", "api")
	for _, name := range []string{"api", "web"} {
		dep := find[*appsv1.Deployment](t, objs, "Deployment", name)
		pod := dep.Spec.Template.Spec
		if len(pod.InitContainers) < 2 || pod.InitContainers[1].Name != inject.ProxyContainer {
			t.Fatalf("%s is not injected", name)
		}
		find[*corev1.ServiceAccount](t, objs, "ServiceAccount", pod.ServiceAccountName)
		if name == "api" {
			for k, v := range svc.Spec.Selector {
				if dep.Spec.Template.Labels[k] != v {
					t.Errorf("service api does not select the api pods (%s=%s)", k, v)
				}
			}
			if svc.Spec.Ports[0].TargetPort.StrVal != pod.InitContainers[1].Ports[0].Name {
				t.Errorf("service api targets %v, the proxy's inbound port is %q", svc.Spec.Ports[0].TargetPort, pod.InitContainers[1].Ports[0].Name)
			}
		}
	}
}

// The HA kustomization: meshd and etcd as StatefulSets of three with a
// PodDisruptionBudget (at most one down) and anti-affinity on the node,
// meshd on etcd with client certificates, its CA key file copied out of
// the Secret (whose files are symlinks meshd refuses), and only meshd
// admitted to etcd's client port.
func TestHABuildsThreeReplicasOnEtcd(t *testing.T) {
	objs := build(t, filesys.MakeFsOnDisk(), "ha")
	for _, o := range objs {
		if !clusterScoped[o.kind] && o.ns != "minimesh-system" {
			t.Errorf("%s %s in namespace %q", o.kind, o.name, o.ns)
		}
	}
	for _, name := range []string{"meshd", "meshd-etcd"} {
		ss := find[*appsv1.StatefulSet](t, objs, "StatefulSet", name)
		if ss.Spec.Replicas == nil || *ss.Spec.Replicas != 3 {
			t.Errorf("%s replicas %v, want 3", name, ss.Spec.Replicas)
		}
		pdb := find[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", name)
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != ss.Spec.Template.Labels["app.kubernetes.io/name"] {
			t.Errorf("%s PDB %+v: want maxUnavailable 1 over its pods", name, pdb.Spec)
		}
		aff := ss.Spec.Template.Spec.Affinity
		if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 ||
			aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].TopologyKey != "kubernetes.io/hostname" ||
			aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].LabelSelector.MatchLabels["app.kubernetes.io/name"] != name {
			t.Errorf("%s: no pod anti-affinity on the node over its own pods", name)
		}
		headless := find[*corev1.Service](t, objs, "Service", ss.Spec.ServiceName)
		if headless.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("%s's service %s is not headless", name, headless.Name)
		}
	}
	meshdSvc := find[*corev1.Service](t, objs, "Service", "meshd")

	meshd := find[*appsv1.StatefulSet](t, objs, "StatefulSet", "meshd").Spec.Template.Spec
	args := map[string]string{}
	for _, a := range meshd.Containers[0].Args {
		k, v, _ := strings.Cut(a, "=")
		args[k] = v
	}
	if !strings.HasPrefix(args["--store"], "etcd://") || strings.Count(args["--store"], ",") != 2 {
		t.Errorf("--store %q: want etcd's three members", args["--store"])
	}
	for _, f := range []string{"--etcd-cert", "--etcd-key", "--etcd-ca", "--ca-key-file"} {
		if args[f] == "" {
			t.Errorf("meshd without %s", f)
		}
	}
	// The key file meshd reads is on the emptyDir the init container
	// filled, not on a Secret volume.
	mounts := map[string]string{}
	for _, m := range meshd.Containers[0].VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	vols := map[string]corev1.Volume{}
	for _, v := range meshd.Volumes {
		vols[v.Name] = v
	}
	keyVol := vols[mounts[filepath.Dir(args["--ca-key-file"])]]
	if keyVol.EmptyDir == nil || keyVol.EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Errorf("--ca-key-file %s is on volume %+v: want a memory emptyDir (a Secret's files are symlinks)", args["--ca-key-file"], keyVol)
	}
	checkInjector(t, objs, meshdSvc, meshd.Containers[0])
	if len(meshd.InitContainers) != 1 || !strings.Contains(strings.Join(meshd.InitContainers[0].Command, " "), args["--ca-key-file"]) {
		t.Errorf("no init container copies the CA key to %s", args["--ca-key-file"])
	}

	etcd := find[*appsv1.StatefulSet](t, objs, "StatefulSet", "meshd-etcd").Spec.Template.Spec
	eargs := strings.Join(etcd.Containers[0].Args, " ")
	for _, want := range []string{"--client-cert-auth=true", "--peer-client-cert-auth=true", "--listen-client-urls=https://", "--trusted-ca-file="} {
		if !strings.Contains(eargs, want) {
			t.Errorf("etcd args lack %s", want)
		}
	}
	np := find[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", "meshd-etcd")
	if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "meshd-etcd" {
		t.Errorf("the NetworkPolicy selects %v, not etcd", np.Spec.PodSelector)
	}
	for _, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			if p.Port.IntValue() == 2379 && (len(r.From) != 1 || r.From[0].PodSelector == nil || r.From[0].PodSelector.MatchLabels["app.kubernetes.io/name"] != "meshd" || len(r.From[0].PodSelector.MatchLabels) != 1) {
				t.Errorf("etcd's client port admits %+v: want meshd only", r.From)
			}
		}
	}
}

// checkInjector: the webhook configuration calls meshd's Service, whose
// port reaches meshd's --webhook-listen, with what the API server needs
// (issue 24); the RBAC is exactly TokenReview create and get/patch of that
// one configuration, bound to meshd's ServiceAccount.
func checkInjector(t *testing.T, objs []object, svc *corev1.Service, meshd corev1.Container) {
	t.Helper()
	mwc := find[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "MutatingWebhookConfiguration", webhook.DefaultConfigurationName)
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(mwc.Webhooks))
	}
	w := mwc.Webhooks[0]
	if w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNone || !slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) ||
		w.TimeoutSeconds == nil || *w.TimeoutSeconds != 10 || w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Fail ||
		w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
		t.Errorf("webhook %s: sideEffects %v versions %v timeout %v failurePolicy %v reinvocation %v", w.Name, w.SideEffects, w.AdmissionReviewVersions, w.TimeoutSeconds, w.FailurePolicy, w.ReinvocationPolicy)
	}
	if len(w.ClientConfig.CABundle) != 0 {
		t.Error("caBundle in the manifest: meshd writes it")
	}
	if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Resources, []string{"pods"}) || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) {
		t.Errorf("rules %+v: want pods, CREATE", w.Rules)
	}
	sel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector)
	if err != nil {
		t.Fatal(err)
	}
	for ns, want := range map[string]bool{"demo": true, "kube-system": false, "minimesh-system": false} {
		if got := sel.Matches(labels.Set{"minimesh.io/inject": "enabled", "kubernetes.io/metadata.name": ns}); got != want {
			t.Errorf("namespaceSelector on %s labelled enabled: %v, want %v", ns, got, want)
		}
	}
	if sel.Matches(labels.Set{"kubernetes.io/metadata.name": "demo"}) || sel.Matches(labels.Set{"minimesh.io/inject": "disabled", "kubernetes.io/metadata.name": "demo"}) {
		t.Error("namespaceSelector matches a namespace not labelled minimesh.io/inject=enabled")
	}
	ref := w.ClientConfig.Service
	if ref == nil || ref.Name != svc.Name || ref.Namespace != "minimesh-system" || ref.Path == nil || *ref.Path != webhook.Path || ref.Port == nil {
		t.Fatalf("clientConfig.service %+v: want meshd's Service, path %s", ref, webhook.Path)
	}
	var target string
	for _, p := range svc.Spec.Ports {
		if p.Port == *ref.Port {
			target = p.TargetPort.StrVal
		}
	}
	var cport int32
	for _, p := range meshd.Ports {
		if p.Name == target {
			cport = p.ContainerPort
		}
	}
	if cport == 0 || !slices.Contains(meshd.Args, fmt.Sprintf("--webhook-listen=0.0.0.0:%d", cport)) {
		t.Errorf("Service port %d -> %q -> container port %d; meshd args %v: the webhook is not reached", *ref.Port, target, cport, meshd.Args)
	}
	// The uninstall order is written beside it.
	if b, err := os.ReadFile("injector/kustomization.yaml"); err != nil || !strings.Contains(string(b), "delete the\n# webhook configuration FIRST") {
		t.Errorf("injector/kustomization.yaml does not document the uninstall order (%v)", err)
	}

	role := find[*rbacv1.ClusterRole](t, objs, "ClusterRole", "minimesh-meshd")
	want := wantClusterRules(t, mwc.Name)
	if !reflect.DeepEqual(role.Rules, want) {
		t.Errorf("meshd's ClusterRole rules:\n%+v\nwant exactly:\n%+v", role.Rules, want)
	}
	binding := find[*rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", "minimesh-meshd")
	if binding.RoleRef.Name != role.Name || binding.RoleRef.Kind != "ClusterRole" || len(binding.Subjects) != 1 ||
		binding.Subjects[0].Kind != "ServiceAccount" || binding.Subjects[0].Name != "meshd" || binding.Subjects[0].Namespace != "minimesh-system" {
		t.Errorf("binding %+v", binding)
	}
	for _, o := range objs {
		if (o.kind == "Role" && o.name != "minimesh-meshd-operator-secret") || (o.kind == "ClusterRole" && o.name != role.Name) {
			t.Errorf("another role: %s %s", o.kind, o.name)
		}
	}
}
