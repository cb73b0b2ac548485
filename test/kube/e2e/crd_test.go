package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"minimesh/api"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/crd"
	"minimesh/controlplane/kube"
	"minimesh/controlplane/webhook"
	"minimesh/dataplane/sidecar"
	meshv1 "minimesh/proto/mesh/v1"
	"minimesh/test/kube/kubetest"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// readDocs reads the YAML documents of a file as unstructured objects.
func readDocs(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*unstructured.Unstructured
	for _, d := range bytes.Split(append([]byte("\n"), b...), []byte("\n---")) {
		var m map[string]any
		if err := yaml.Unmarshal(d, &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if m != nil {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
	return out
}

// The generated CRDs are installed in a real API server (which refuses a
// non-structural schema in apiextensions.k8s.io/v1), after decoding
// strictly into the API's own types; meshd (with the Kubernetes API as
// --kubeconfig gives it) reconciles them: examples/mesh.yaml, server-side
// applied in a shuffled order as `kubectl apply -f examples/` would, reaches
// a real proxy's applied snapshot, every object Accepted and ACKed; an
// invalid object is refused at create by the validating webhook with its
// field and reason; a Service still referred to by a Route stays
// Terminating with DeleteBlocked naming the Route, and goes once the Route
// is deleted.
func TestCRDsReconciledAgainstARealAPIServer(t *testing.T) {
	s := kubetest.Start(t)
	rc, _, err := kube.RESTConfig(kube.Settings{Kubeconfig: s.Kubeconfig})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	watchRC := *rc
	watchRC.Timeout = 0
	dyn, err := dynamic.NewForConfig(&watchRC)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The CRDs, strictly decoded, then created.
	const crds = "../../../deploy/k8s/crds"
	var kz struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	raw, err := os.ReadFile(filepath.Join(crds, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &kz); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range kz.Resources {
		if f == "validating-webhook.yaml" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(crds, f))
		if err != nil {
			t.Fatal(err)
		}
		var c apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(b, &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, d := range readDocs(t, filepath.Join(crds, f)) {
			if _, err := dyn.Resource(crdGVR).Create(ctx, d, metav1.CreateOptions{}); err != nil {
				t.Fatalf("%s: the API server refuses it: %v", f, err)
			}
		}
		names = append(names, c.Name)
	}
	if len(names) < len(api.Kinds()) {
		t.Fatalf("%d CRDs for %d kinds", len(names), len(api.Kinds()))
	}
	poll(t, "the CRDs are established and structural", time.Minute, func() bool {
		for _, n := range names {
			u, err := dyn.Resource(crdGVR).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false
			}
			var c apiextensionsv1.CustomResourceDefinition
			if err := runtimeFrom(u, &c); err != nil {
				t.Fatal(err)
			}
			established := false
			for _, cond := range c.Status.Conditions {
				if cond.Type == apiextensionsv1.NonStructuralSchema && cond.Status == apiextensionsv1.ConditionTrue {
					t.Fatalf("%s is not structural: %s", n, cond.Message)
				}
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					established = true
				}
			}
			if !established {
				return false
			}
		}
		return true
	})

	// The webhook configurations as shipped, with url: clientConfigs.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "https://localhost:" + itoa(ln.Addr().(*net.TCPAddr).Port)
	var mwc admissionregv1.MutatingWebhookConfiguration
	raw, _ = os.ReadFile("../../../deploy/k8s/injector/webhook.yaml")
	if err := yaml.UnmarshalStrict(raw, &mwc); err != nil {
		t.Fatal(err)
	}
	for i := range mwc.Webhooks {
		u := base + *mwc.Webhooks[i].ClientConfig.Service.Path
		mwc.Webhooks[i].ClientConfig = admissionregv1.WebhookClientConfig{URL: &u}
	}
	var vwc admissionregv1.ValidatingWebhookConfiguration
	raw, _ = os.ReadFile(filepath.Join(crds, "validating-webhook.yaml"))
	if err := yaml.UnmarshalStrict(raw, &vwc); err != nil {
		t.Fatal(err)
	}
	if vwc.Name != webhook.DefaultValidatingConfigurationName {
		t.Fatalf("validating-webhook.yaml names %q, meshd keeps %q", vwc.Name, webhook.DefaultValidatingConfigurationName)
	}
	for i := range vwc.Webhooks {
		svc := vwc.Webhooks[i].ClientConfig.Service
		if svc == nil || svc.Path == nil || *svc.Path != webhook.ValidatePath {
			t.Fatalf("validating-webhook.yaml: webhooks[%d].clientConfig.service.path: want meshd's %s", i, webhook.ValidatePath)
		}
		u := base + *svc.Path
		vwc.Webhooks[i].ClientConfig = admissionregv1.WebhookClientConfig{URL: &u}
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &vwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	m := controlplanetest.Start(t, controlplane.Config{
		Webhook: controlplane.WebhookConfig{Listener: ln, Kube: cs, ConfigurationName: mwc.Name,
			DNSNames: []string{"localhost"}, Check: 50 * time.Millisecond, Resync: time.Hour},
		CRD: controlplane.CRDConfig{Dynamic: dyn, Resync: 500 * time.Millisecond, StatusEvery: time.Second},
	})
	poll(t, "meshd writes the validating configuration's caBundle", 30*time.Second, func() bool {
		got, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, vwc.Name, metav1.GetOptions{})
		return err == nil && len(got.Webhooks[0].ClientConfig.CABundle) > 0
	})

	// A real proxy of api, so that snapshots are ACKed.
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer app.Close()
	tok := m.Token(t, "default", "api", 1)
	listen := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	sc, err := sidecar.New(sidecar.Config{ControlPlane: m.Addr, Token: tok.Secret, CAPin: tok.CaPin, Service: "api", Namespace: "default",
		App: app.Listener.Addr().String(), StateDir: filepath.Join(t.TempDir(), "state"), SharedDir: t.TempDir(),
		InboundListener: listen(), AdminListener: listen(), AgentBackoffMax: time.Second, Version: "test", Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	scCtx, stopSC := context.WithCancel(context.Background())
	scDone := make(chan struct{})
	go func() { defer close(scDone); _ = sc.Run(scCtx) }()
	defer func() { stopSC(); <-scDone }()

	// kubectl apply -f examples/, in a shuffled order, server-side.
	objs := readDocs(t, "../../../examples/mesh.yaml")
	toWeb := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": api.APIVersion, "kind": "Route", "metadata": map[string]any{"name": "to-web"},
		"spec": map[string]any{"service": "web", "backends": []any{map[string]any{"service": "web"}}},
	}}
	objs = append(objs, toWeb)
	rand.Shuffle(len(objs), func(i, j int) { objs[i], objs[j] = objs[j], objs[i] })
	res := func(u *unstructured.Unstructured) dynamic.ResourceInterface {
		return dyn.Resource(crd.Resource(api.Kind(u.GetKind()))).Namespace("default")
	}
	for _, o := range objs {
		o.SetNamespace("default")
		// The API server reads webhook configurations through an
		// informer: retry while it has not seen the caBundle yet.
		var err error
		poll(t, "server-side apply of "+o.GetKind()+" "+o.GetName(), 30*time.Second, func() bool {
			_, err = res(o).Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: "kubectl", Force: true})
			if err != nil {
				t.Logf("apply %s %s: %v", o.GetKind(), o.GetName(), err)
			}
			return err == nil
		})
	}
	t.Logf("applied in the order %v", kindsOf(objs))

	// Every object Accepted, ACKed by the proxy, in its applied snapshot.
	poll(t, "every object Accepted and ACKed", time.Minute, func() bool {
		for _, o := range objs {
			u, err := res(o).Get(ctx, o.GetName(), metav1.GetOptions{})
			if err != nil || !slices.Contains(u.GetFinalizers(), crd.Finalizer) {
				return false
			}
			acked, _, _ := unstructured.NestedInt64(u.Object, "status", "ackedProxies")
			if cond(u, crd.ConditionAccepted) != "True" || acked < 1 {
				return false
			}
		}
		return true
	})
	op := m.Operator(t)
	st, err := op.ProxyStatus(ctx, &meshv1.ProxyStatusRequest{})
	if err != nil || len(st.GetProxies()) != 1 {
		t.Fatalf("proxies %v %v", st, err)
	}
	pc, err := op.ProxyConfig(ctx, &meshv1.ProxyConfigRequest{InstanceId: st.GetProxies()[0].GetProxy().GetInstanceId()})
	if err != nil {
		t.Fatal(err)
	}
	snap := pc.GetApplied().String()
	for _, want := range []string{"api-config", "spiffe://minimesh.local/ns/default/sa/api"} {
		if !strings.Contains(snap, want) {
			t.Fatalf("the proxy's applied snapshot lacks %q: %s", want, snap)
		}
	}
	// meshctl does not change what Kubernetes applied.
	if _, err := op.DeleteResource(ctx, &meshv1.DeleteResourceRequest{Kind: "Route", Namespace: "default", Name: "to-web"}); err == nil || !strings.Contains(err.Error(), "applied from Kubernetes") {
		t.Fatalf("meshctl delete of a CRD's Route: %v", err)
	}

	// An invalid object is refused at create with its field and reason.
	bad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": api.APIVersion, "kind": "Route", "metadata": map[string]any{"name": "bad", "namespace": "default"},
		"spec": map[string]any{"service": "api", "backends": []any{map[string]any{"service": "api"}}, "timeout": "-1s"},
	}}
	_, err = res(bad).Create(ctx, bad, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "spec.timeout") || !strings.Contains(err.Error(), "must be positive") {
		t.Fatalf("create of an invalid Route: %v", err)
	}
	t.Logf("refused: %v", err)

	// A Service still referred to: Terminating, DeleteBlocked naming the
	// Route; the Route deleted, the Service goes.
	web := &unstructured.Unstructured{Object: map[string]any{"kind": "Service"}}
	if err := res(web).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "Service web DeleteBlocked by Route to-web", 30*time.Second, func() bool {
		u, err := res(web).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Service web went while Route to-web refers to it: %v", err)
		}
		return u.GetDeletionTimestamp() != nil && cond(u, crd.ConditionDeleteBlocked) == "True" &&
			strings.Contains(condMessage(u, crd.ConditionDeleteBlocked), `Route "default/to-web"`)
	})
	if err := res(toWeb).Delete(ctx, "to-web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "Service web goes once Route to-web is gone", 30*time.Second, func() bool {
		_, err := res(web).Get(ctx, "web", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	if _, err := op.GetResources(ctx, &meshv1.GetResourcesRequest{Kind: "Service", Namespace: "default", Name: "web"}); err == nil {
		t.Fatal("Service web is still in meshd's store")
	}
}

func kindsOf(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	return out
}

func conditions(u *unstructured.Unstructured) []map[string]any {
	list, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	var out []map[string]any
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func cond(u *unstructured.Unstructured, typ string) string {
	for _, c := range conditions(u) {
		if c["type"] == typ {
			return fmt.Sprint(c["status"])
		}
	}
	return ""
}

func condMessage(u *unstructured.Unstructured, typ string) string {
	for _, c := range conditions(u) {
		if c["type"] == typ {
			return fmt.Sprint(c["message"])
		}
	}
	return ""
}

func runtimeFrom(u *unstructured.Unstructured, into any) error {
	b, err := u.MarshalJSON()
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		return errors.New("decode: " + err.Error())
	}
	return nil
}
