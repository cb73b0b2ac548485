// Package e2e runs a real meshd against a real kube-apiserver (kubetest):
// the API server calls meshd's mutating webhook over TLS with the caBundle
// meshd keeps, and a mesh-proxy agent joins with a real bound token.
package e2e

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/kube"
	"minimesh/controlplane/webhook"
	"minimesh/dataplane/agent"
	"minimesh/internal/inject"
	"minimesh/test/kube/kubetest"
)

// svidTTL is short so that the agent renews by itself (at half of it)
// twice in the test, and long enough that its SVID is still valid when
// the test looks at it after a refused renewal.
const svidTTL = 20 * time.Second

func poll(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(context.Context) (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("%s: not within %s", what, timeout)
	}
}

// A pod in a labelled namespace is injected by meshd's webhook, called by
// the real API server over TLS trusting only the caBundle meshd wrote;
// the pod's bound token bootstraps a real agent, which renews with fresh
// tokens; once the pod is deleted its renewal is refused.
func TestWebhookAndPodTokenAgainstARealAPIServer(t *testing.T) {
	s := kubetest.Start(t)
	// meshd reaches the API as --kubeconfig does.
	rc, _, err := kube.RESTConfig(kube.Settings{Kubeconfig: s.Kubeconfig})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The shipped configuration, with a url: clientConfig (the API server
	// in this process has no Service to route to) on the Service's path,
	// and no caBundle yet.
	raw, err := os.ReadFile("../../../deploy/k8s/injector/webhook.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var mwc admissionregv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(raw, &mwc); err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	for i := range mwc.Webhooks {
		svc := mwc.Webhooks[i].ClientConfig.Service
		if svc == nil || svc.Path == nil || *svc.Path != webhook.Path {
			t.Fatalf("webhook.yaml: webhooks[%d].clientConfig.service.path: want meshd's %s", i, webhook.Path)
		}
		url := "https://localhost:" + itoa(port) + *svc.Path
		mwc.Webhooks[i].ClientConfig = admissionregv1.WebhookClientConfig{URL: &url}
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	m := controlplanetest.Start(t, controlplane.Config{
		SVIDTTL:       svidTTL,
		TokenReviewer: kube.NewTokenReviewer(cs, kube.ReviewerOptions{Timeout: 10 * time.Second, CacheTTL: -1}),
		Webhook: controlplane.WebhookConfig{Listener: ln, Kube: cs, ConfigurationName: mwc.Name,
			DNSNames: []string{"localhost"}, Check: 50 * time.Millisecond, Resync: time.Hour},
	})
	roots := certs.EncodeCertsPEM(m.CA().Bundle().X509Authorities())
	poll(t, "meshd writes the caBundle", 30*time.Second, func() bool {
		got, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, mwc.Name, metav1.GetOptions{})
		return err == nil && bytes.Equal(got.Webhooks[0].ClientConfig.CABundle, roots)
	})

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"minimesh.io/inject": "enabled"}}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The API server reads webhook configurations through an informer:
	// retry (bounded) until a created pod comes back injected.
	var pod *corev1.Pod
	n := 0
	poll(t, "a pod injected by the webhook", time.Minute, func() bool {
		n++
		p, err := cs.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-" + itoa(n), Labels: map[string]string{"app": "web"}},
			Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "app:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Logf("create pod: %v", err)
			return false
		}
		if proxyContainer(p) == nil {
			return false
		}
		pod = p
		return true
	})
	pc := proxyContainer(pod)
	if n := countProxies(pod); n != 1 {
		t.Fatalf("the pod as admitted has %d %s containers, want 1", n, inject.ProxyContainer)
	}
	pin := flagValue(pc, "--ca-pin")
	if pin != m.RootPin() {
		t.Fatalf("injected --ca-pin %q, want meshd's root pin %q", pin, m.RootPin())
	}
	audOK := false
	for _, v := range pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if st := src.ServiceAccountToken; st != nil && st.Audience == kube.Audience {
				audOK = true
			}
		}
	}
	if !audOK {
		t.Fatalf("injected pod has no projected token with audience %s", kube.Audience)
	}

	// The kubelet's part: a bound token for the pod in the file.
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeToken := func(pod *corev1.Pod) {
		t.Helper()
		exp := int64(600)
		tr, err := cs.CoreV1().ServiceAccounts("shop").CreateToken(ctx, "web", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
			Audiences: []string{kube.Audience}, ExpirationSeconds: &exp,
			BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeToken(pod)
	// mesh-proxy as injected: the pin, the service, and the downward API's
	// values for --namespace=$(POD_NAMESPACE) and
	// --service-account=$(SERVICE_ACCOUNT).
	a, err := agent.New(agent.Config{ControlPlane: m.Addr, SATokenFile: tokenFile, CAPin: pin,
		Namespace: pod.Namespace, ServiceAccount: pod.Spec.ServiceAccountName, Service: flagValue(pc, "--service"),
		StateDir: filepath.Join(dir, "state"), Advertise: "10.244.0.9:15006", // $(POD_IP): meshd refuses loopback from a pod
		CallTimeout: 10 * time.Second, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	poll(t, "the agent bootstraps", 30*time.Second, func() bool { return a.SVIDSource().Current() != nil })
	leaf := a.SVIDSource().Current().Certificates[0]
	wantInstance := pod.Name + "-" + strings.ReplaceAll(string(pod.UID), "-", "")[:8]
	if a.InstanceID() != wantInstance || certs.PodUID(leaf) != string(pod.UID) {
		t.Fatalf("instance %q pod UID %q, want %q and %s", a.InstanceID(), certs.PodUID(leaf), wantInstance, pod.UID)
	}

	// The proxy reads the file at every Renew and meshd reviews what it
	// reads: a valid token of the same service account bound to another
	// pod is refused (the SVID is bound to this pod's UID), and the agent
	// keeps its SVID until the file holds a fresh token of its own pod.
	other, err := cs.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "other", Annotations: map[string]string{inject.OptOutAnnotation: "false"}},
		Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	otherPod := m.Counter(t, "minimesh_meshd_identity_refused_total", "reason", "sa_token_other_pod")
	writeToken(other)
	poll(t, "meshd refuses a renewal with another pod's token", time.Minute, func() bool {
		return m.Counter(t, "minimesh_meshd_identity_refused_total", "reason", "sa_token_other_pod") > otherPod
	})
	if cur := a.SVIDSource().Current().Certificates[0]; cur.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("renewed on another pod's token")
	}

	// Renewal (at half the SVID's life) with a fresh token of its own pod.
	writeToken(pod)
	poll(t, "the agent renews", time.Minute, func() bool {
		cur := a.SVIDSource().Current().Certificates[0]
		return cur.SerialNumber.Cmp(leaf.SerialNumber) != 0
	})
	renewed := a.SVIDSource().Current().Certificates[0]

	// A token meshd has not reviewed yet, then the pod is deleted: the
	// next renewal is refused and the agent keeps its old SVID.
	writeToken(pod)
	refused := m.Counter(t, "minimesh_meshd_identity_refused_total", "reason", "sa_token_unauthenticated")
	if err := cs.CoreV1().Pods("shop").Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "meshd refuses the deleted pod's renewal", 90*time.Second, func() bool {
		return m.Counter(t, "minimesh_meshd_identity_refused_total", "reason", "sa_token_unauthenticated") > refused
	})
	if cur := a.SVIDSource().Current().Certificates[0]; cur.SerialNumber.Cmp(renewed.SerialNumber) != 0 {
		t.Fatalf("a new SVID was issued after the pod was deleted")
	}
}

func proxyContainer(p *corev1.Pod) *corev1.Container {
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range cs {
			if cs[i].Name == inject.ProxyContainer {
				return &cs[i]
			}
		}
	}
	return nil
}

// countProxies is how many mesh-proxy containers p has (init or not).
func countProxies(p *corev1.Pod) int {
	n := 0
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name == inject.ProxyContainer {
			n++
		}
	}
	return n
}

// flagValue is the value of --name=v or --name v in c's command line.
func flagValue(c *corev1.Container, name string) string {
	args := append(append([]string{}, c.Command...), c.Args...)
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func itoa(n int) string { return strconv.Itoa(n) }

// testLogger logs to stderr when MINIMESH_TEST_LOG is set, as
// controlplanetest does for meshd; nil (the agent's default) otherwise.
func testLogger() *slog.Logger {
	if os.Getenv("MINIMESH_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}
