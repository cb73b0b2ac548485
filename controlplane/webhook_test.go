package controlplane_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/webhook"
	"minimesh/internal/inject"
)

// fakeAPI is the Kubernetes API's part meshd uses for its webhook: GET
// and JSON PATCH of one MutatingWebhookConfiguration (the outside world;
// client-go is real).
type fakeAPI struct {
	mu      sync.Mutex
	obj     []byte // JSON
	patches int
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	const path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/" + webhook.DefaultConfigurationName
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path != path {
		http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`, http.StatusNotFound)
		return
	}
	switch {
	case r.Method == http.MethodGet:
	case r.Method == http.MethodPatch && r.Header.Get("Content-Type") == "application/json-patch+json":
		body, _ := io.ReadAll(r.Body)
		p, err := jsonpatch.DecodePatch(body)
		if err == nil {
			var out []byte
			if out, err = p.Apply(f.obj); err == nil {
				f.obj = out
				f.patches++
			}
		}
		if err != nil {
			http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Invalid","code":422}`, http.StatusUnprocessableEntity)
			return
		}
	default:
		http.Error(w, "", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(f.obj)
}

// caBundles are the webhooks' caBundles as the API holds them now.
func (f *fakeAPI) caBundles(t *testing.T) [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var c admissionregistrationv1.MutatingWebhookConfiguration
	if err := json.Unmarshal(f.obj, &c); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, w := range c.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWebhookInjectsOverTLS: a real meshd serves the webhook; an HTTPS
// client that trusts only the caBundle meshd wrote into the (fake) API
// posts real AdmissionReviews. The patch applied to the pod is meshctl
// inject's output byte for byte; opt-out, hostNetwork and a refused pod
// are answered as the API server needs; plain HTTP is refused. Across a
// root rotation the caBundle holds both roots, the certificate moves to
// the new root, and at the end only the new root is trusted.
func TestWebhookInjectsOverTLS(t *testing.T) {
	manifest, err := os.ReadFile("../deploy/k8s/injector/webhook.yaml")
	if err != nil {
		t.Fatal(err)
	}
	api := &fakeAPI{}
	if api.obj, err = yaml.YAMLToJSON(manifest); err != nil {
		t.Fatal(err)
	}
	apiSrv := httptest.NewServer(api)
	defer apiSrv.Close()
	kube, err := kubernetes.NewForConfig(&rest.Config{Host: apiSrv.URL, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const image = "minimesh/minimesh:test"
	m := controlplanetest.Start(t, controlplane.Config{
		RotationCheck: time.Hour, // the rotation moves on when this test says
		Webhook: controlplane.WebhookConfig{Listener: ln, Kube: kube, Image: image,
			Check: 20 * time.Millisecond, Resync: time.Hour},
	})
	addr := ln.Addr().String()

	rootsPEM := func(ca *certs.CA) []byte { return certs.EncodeCertsPEM(ca.Bundle().X509Authorities()) }
	waitFor(t, "the caBundle", func() bool { return bytes.Equal(api.caBundles(t)[0], rootsPEM(m.CA())) })

	// clientTrusting trusts only the roots in caBundle, and checks the
	// name the API server calls (the Service's).
	clientTrusting := func(caBundle []byte) *http.Client {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caBundle) {
			t.Fatal("caBundle holds no certificate")
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "meshd.minimesh-system.svc", MinVersion: tls.VersionTLS12},
		}}
	}
	client := clientTrusting(api.caBundles(t)[0])
	review := func(c *http.Client, podYAML []byte) *admissionv1.AdmissionResponse {
		t.Helper()
		raw, err := yaml.YAMLToJSON(podYAML)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(map[string]any{
			"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
			"request": map[string]any{
				"uid": "0f8e6c1e-1111-4a4a-9a9a-000000000001", "kind": map[string]string{"group": "", "version": "v1", "kind": "Pod"},
				"resource": map[string]string{"group": "", "version": "v1", "resource": "pods"}, "namespace": "demo", "operation": "CREATE",
				"userInfo": map[string]any{"username": "system:serviceaccount:kube-system:replicaset-controller"}, "object": json.RawMessage(raw),
			},
		})
		resp, err := c.Post("https://"+addr+webhook.Path, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %v", resp.StatusCode, err)
		}
		if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil || out.Response.UID != "0f8e6c1e-1111-4a4a-9a9a-000000000001" {
			t.Fatalf("response %+v", out)
		}
		return out.Response
	}

	pod, err := os.ReadFile("../internal/inject/testdata/pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Injected: the patch, applied to the pod, is meshctl inject's output.
	resp := review(client, pod)
	if !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("response %+v: want allowed with a JSONPatch", resp)
	}
	want, err := inject.Inject(pod, inject.Options{Image: image, CAPins: []string{m.RootPin()}})
	if err != nil {
		t.Fatal(err)
	}
	samePod := func(patchJSON []byte, want []byte) {
		t.Helper()
		raw, _ := yaml.YAMLToJSON(pod)
		p, err := jsonpatch.DecodePatch(patchJSON)
		if err != nil {
			t.Fatal(err)
		}
		patched, err := p.Apply(raw)
		if err != nil {
			t.Fatal(err)
		}
		var got corev1.Pod
		if err := yaml.UnmarshalStrict(patched, &got); err != nil {
			t.Fatal(err)
		}
		b, err := inject.Encode(&got)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want) {
			t.Errorf("the webhook's pod differs from meshctl inject's:\n%s\n---- want:\n%s", b, want)
		}
	}
	samePod(resp.Patch, want)

	// Injected already (reinvocation): admitted, nothing to patch.
	if resp := review(client, want); !resp.Allowed || len(resp.Patch) != 0 {
		t.Errorf("injected pod: %+v", resp)
	}
	// Injected, then changed by a later admission step (the
	// ServiceAccount plugin mounts its token in every container): the
	// reinvocation leaves the change alone instead of rebuilding the
	// sidecar without it.
	var injected corev1.Pod
	if err := yaml.UnmarshalStrict(want, &injected); err != nil {
		t.Fatal(err)
	}
	for i := range injected.Spec.InitContainers {
		c := &injected.Spec.InitContainers[i]
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "kube-api-access-x", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true})
	}
	injected.Spec.Volumes = append(injected.Spec.Volumes, corev1.Volume{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	changed, err := yaml.Marshal(&injected)
	if err != nil {
		t.Fatal(err)
	}
	if resp := review(client, changed); !resp.Allowed || len(resp.Patch) != 0 {
		t.Errorf("an injected pod another admission step changed: patched again (%s), which drops the change", resp.Patch)
	}
	// Opted out.
	optOut := bytes.Replace(pod, []byte("metadata:\n"), []byte("metadata:\n  annotations:\n    minimesh.io/inject: \"false\"\n"), 1)
	if resp := review(client, optOut); !resp.Allowed || len(resp.Patch) != 0 {
		t.Errorf("opted-out pod: %+v", resp)
	}
	// hostNetwork: admitted as it is, with a warning.
	hostNet := bytes.Replace(pod, []byte("spec:\n"), []byte("spec:\n  hostNetwork: true\n"), 1)
	if resp := review(client, hostNet); !resp.Allowed || len(resp.Patch) != 0 || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "hostNetwork") {
		t.Errorf("hostNetwork pod: %+v", resp)
	}
	// Refused by inject: denied with its reason.
	asProxy := bytes.Replace(pod, []byte("spec:\n"), []byte("spec:\n  securityContext:\n    runAsUser: 1337\n"), 1)
	if resp := review(client, asProxy); resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusForbidden ||
		!strings.Contains(resp.Result.Message, "pod api: the pod runs as UID 1337, mesh-proxy's: its traffic would pass the redirect") {
		t.Errorf("refused pod: allowed %v, %+v", resp.Allowed, resp.Result)
	}
	// Plain HTTP never reaches the handler.
	if resp, err := (&http.Client{Timeout: 10 * time.Second}).Post("http://"+addr+webhook.Path, "application/json", strings.NewReader("{}")); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "HTTPS") {
			t.Errorf("plain HTTP: %d %s", resp.StatusCode, b)
		}
	}

	// A root rotation. Prepared: the caBundle holds both roots, the
	// certificate still chains to the old one, pods get both pins.
	oldRoot, oldInter := m.CA().Root(), m.CA().Intermediate()
	served := func(c *http.Client) *x509.Certificate {
		t.Helper()
		resp, err := c.Get("https://" + addr + webhook.Path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.VerifiedChains[0][1]
	}
	if _, err := m.RotateCA(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both roots in the caBundle", func() bool { return bytes.Equal(api.caBundles(t)[0], rootsPEM(m.CA())) })
	both := api.caBundles(t)[0]
	if n := bytes.Count(both, []byte("BEGIN CERTIFICATE")); n != 2 {
		t.Fatalf("caBundle during the rotation holds %d roots, want 2", n)
	}
	if !served(clientTrusting(both)).Equal(oldInter) {
		t.Error("the certificate moved before the new root signs")
	}
	resp = review(clientTrusting(both), pod)
	if want, err = inject.Inject(pod, inject.Options{Image: image, CAPins: []string{m.RootPin(), certs.SPKIPin(m.CA().NextRoot())}}); err != nil {
		t.Fatal(err)
	}
	samePod(resp.Patch, want)

	// Activated: the certificate is renewed from the new intermediate,
	// which a client trusting the caBundle still accepts.
	if _, err := m.RotateCA(true); err != nil {
		t.Fatal(err)
	}
	newInter := m.CA().Intermediate()
	if newInter.Equal(oldInter) {
		t.Fatal("no new intermediate")
	}
	waitFor(t, "the certificate from the new root", func() bool { return served(clientTrusting(both)).Equal(newInter) })

	// Dropped: the caBundle is the new root alone, and a client trusting
	// only the old root no longer connects.
	if _, err := m.RotateCA(true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new root alone in the caBundle", func() bool {
		return bytes.Count(api.caBundles(t)[0], []byte("BEGIN CERTIFICATE")) == 1
	})
	if !bytes.Equal(api.caBundles(t)[0], rootsPEM(m.CA())) || m.CA().Root().Equal(oldRoot) {
		t.Error("the caBundle is not the new root")
	}
	served(clientTrusting(api.caBundles(t)[0]))
	if _, err := clientTrusting(certs.EncodeCertsPEM([]*x509.Certificate{oldRoot})).Get("https://" + addr + webhook.Path); err == nil {
		t.Error("a client trusting only the old root still connects")
	}
}
