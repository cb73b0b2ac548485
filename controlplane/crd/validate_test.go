package crd_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"minimesh/api"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/webhook"
	meshv1 "minimesh/proto/mesh/v1"
)

// meshd's webhook server answers /validate over TLS as the API server
// calls it: an invalid object is refused with the field and reason, an
// unresolved reference admitted with a warning, a meshctl-owned resource
// refused, a valid object admitted, a Terminating one always admitted.
func TestValidatingWebhook(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := controlplanetest.Start(t, controlplane.Config{
		Webhook: controlplane.WebhookConfig{Listener: ln, DNSNames: []string{"localhost"}},
		CRD:     controlplane.CRDConfig{Dynamic: fakeAPI(), Resync: time.Hour},
	})
	roots := x509.NewCertPool()
	for _, r := range m.CA().Bundle().X509Authorities() {
		roots.AddCert(r)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13}}}
	url := "https://" + ln.Addr().String() + webhook.ValidatePath

	review := func(op admissionv1.Operation, o, old map[string]any) *admissionv1.AdmissionResponse {
		t.Helper()
		raw, _ := json.Marshal(o)
		req := &admissionv1.AdmissionRequest{UID: types.UID("u1"), Operation: op, Namespace: "default", Name: "x",
			Kind:   metav1.GroupVersionKind{Group: "minimesh.io", Version: "v1alpha1", Kind: o["kind"].(string)},
			Object: runtime.RawExtension{Raw: raw}}
		if old != nil {
			req.OldObject.Raw, _ = json.Marshal(old)
		}
		body, _ := json.Marshal(admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: req})
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Response == nil || out.Response.UID != "u1" {
			t.Fatalf("response %d %+v %v", resp.StatusCode, out, err)
		}
		return out.Response
	}

	bad := route("bad", "api").Object
	bad["spec"].(map[string]any)["timeout"] = "-1s"
	if r := review(admissionv1.Create, bad, nil); r.Allowed || !strings.Contains(r.Result.Message, "spec.timeout: must be positive") {
		t.Fatalf("invalid Route: %+v", r)
	}
	typo := route("typo", "api").Object
	typo["spec"].(map[string]any)["timeOut"] = "1s"
	if r := review(admissionv1.Create, typo, nil); r.Allowed || !strings.Contains(r.Result.Message, "spec.timeOut: unknown field") {
		t.Fatalf("unknown field: %+v", r)
	}
	// A Route before its Service: admitted, with a warning.
	r := review(admissionv1.Create, route("api", "api").Object, nil)
	if !r.Allowed || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], `Service "default/api" not found`) {
		t.Fatalf("Route before its Service: %+v", r)
	}
	if r := review(admissionv1.Create, service("api").Object, nil); !r.Allowed || len(r.Warnings) != 0 {
		t.Fatalf("valid Service: %+v", r)
	}
	// Terminating or metadata only: admitted as it is, even when invalid.
	term := bad
	term["metadata"].(map[string]any)["deletionTimestamp"] = "2026-01-01T00:00:00Z"
	if r := review(admissionv1.Update, term, bad); !r.Allowed {
		t.Fatalf("Terminating: %+v", r)
	}

	// What meshctl applied is not Kubernetes' to change.
	byMeshctl := &meshv1.Resource{ApiVersion: api.APIVersion, Kind: "Service", Namespace: "default", Name: "web", Spec: &meshv1.Resource_Service{Service: &meshv1.ServiceSpec{
		Ports: []*meshv1.ServicePort{{Port: 80, Protocol: meshv1.Protocol_PROTOCOL_HTTP}}, ServingIdentities: []string{"spiffe://minimesh.local/ns/default/sa/web"}}}}
	if _, err := m.Operator(t).Apply(t.Context(), &meshv1.ApplyRequest{Resources: []*meshv1.Resource{byMeshctl}}); err != nil {
		t.Fatal(err)
	}
	if r := review(admissionv1.Create, service("web").Object, nil); r.Allowed || !strings.Contains(r.Result.Message, "OwnedByMeshctl") {
		t.Fatalf("over meshctl's Service: %+v", r)
	}
}
