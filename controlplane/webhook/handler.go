// Package webhook is meshd's mutating admission webhook: the Kubernetes
// API server posts every new pod of a namespace labelled
// minimesh.io/inject=enabled (the MutatingWebhookConfiguration's
// namespaceSelector) as an admission/v1 AdmissionReview over TLS, and gets
// back a JSONPatch that adds mesh-proxy, computed by internal/inject, the
// function `meshctl inject` runs: a pod injected by the command comes out
// of the webhook byte-identical.
//
// The server (server.go) holds its own certificate with DNS SANs, issued
// by certs.CA.IssueDNSServing from meshd's CA and renewed at half its life
// and whenever the intermediate changes (a root rotation); the leader
// keeps the configuration's caBundle equal to meshd's roots (both during a
// rotation) through the Kubernetes API (cabundle.go).
package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"

	"minimesh/internal/inject"
	"minimesh/internal/version"
)

// MaxRequestBytes bounds an AdmissionReview's body: a pod is at most what
// etcd stores (about 1.5 MiB), and the review holds one object on CREATE.
const MaxRequestBytes = 4 << 20

// Path is where the webhook answers (the configuration's clientConfig.service.path).
const Path = "/inject"

// Admission results, the label of minimesh_meshd_webhook_admissions_total.
const (
	ResultInjected    = "injected"     // admitted with the sidecar
	ResultUnchanged   = "unchanged"    // already injected, or opted out: admitted as it is
	ResultHostNetwork = "host_network" // admitted without the sidecar, with a warning
	ResultOther       = "other"        // not a pod CREATE: admitted as it is
	ResultDenied      = "denied"       // inject refused the pod
	ResultBadRequest  = "bad_request"  // not an AdmissionReview we can answer
)

// HostNetworkWarning is the warning a hostNetwork pod is admitted with.
const HostNetworkWarning = "minimesh: hostNetwork pod admitted without the mesh-proxy sidecar: it shares the node's network namespace, where the redirect would capture the node's traffic"

// handler answers AdmissionReviews.
type handler struct {
	options func() inject.Options
	log     *slog.Logger
	results *prometheus.CounterVec
}

func newHandler(options func() inject.Options, log *slog.Logger, reg prometheus.Registerer) (*handler, error) {
	h := &handler{options: options, log: log, results: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minimesh_meshd_webhook_admissions_total",
		Help: "AdmissionReviews answered by the injection webhook, by result.",
	}, []string{"result"})}
	for _, r := range []string{ResultInjected, ResultUnchanged, ResultHostNetwork, ResultOther, ResultDenied, ResultBadRequest} {
		h.results.WithLabelValues(r)
	}
	if reg != nil {
		if err := reg.Register(h.results); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.badRequest(w, http.StatusMethodNotAllowed, "method %s: the webhook takes POST", r.Method)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		h.badRequest(w, http.StatusUnsupportedMediaType, "Content-Type %q: want application/json", r.Header.Get("Content-Type"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.badRequest(w, http.StatusRequestEntityTooLarge, "body larger than %d bytes", MaxRequestBytes)
			return
		}
		h.badRequest(w, http.StatusBadRequest, "read body: %v", err)
		return
	}
	var review admissionv1.AdmissionReview
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(body, &review); err != nil {
		h.badRequest(w, http.StatusBadRequest, "body is not an AdmissionReview: %v", err)
		return
	}
	gvk := review.GroupVersionKind()
	switch {
	case gvk.Group != admissionv1.GroupName || gvk.Version != "v1" || gvk.Kind != "AdmissionReview":
		h.badRequest(w, http.StatusBadRequest, "apiVersion %q kind %q: want admission.k8s.io/v1 AdmissionReview", review.APIVersion, review.Kind)
		return
	case review.Request == nil:
		h.badRequest(w, http.StatusBadRequest, "AdmissionReview without a request")
		return
	case review.Request.UID == "":
		h.badRequest(w, http.StatusBadRequest, "request.uid is empty")
		return
	}
	resp, result := h.admit(review.Request)
	resp.UID = review.Request.UID
	h.results.WithLabelValues(result).Inc()
	out, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
	if err != nil {
		h.badRequest(w, http.StatusInternalServerError, "encode the response: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// admit decides on one request.
func (h *handler) admit(req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, string) {
	podKind := metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
	if req.Kind != podKind || req.Operation != admissionv1.Create || req.SubResource != "" {
		return &admissionv1.AdmissionResponse{Allowed: true}, ResultOther
	}
	log := h.log.With("namespace", req.Namespace, "name", req.Name, "uid", string(req.UID))
	var pod corev1.Pod
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, &pod); err != nil {
		return deny(http.StatusBadRequest, fmt.Sprintf("minimesh: request.object is not a Pod: %v", err)), ResultBadRequest
	}
	if pod.Spec.HostNetwork {
		log.Info("admitted a hostNetwork pod without the sidecar")
		return &admissionv1.AdmissionResponse{Allowed: true, Warnings: []string{HostNetworkWarning}}, ResultHostNetwork
	}
	if pod.Annotations[inject.InjectedAnnotation] == version.Version && hasInitContainer(&pod, inject.ProxyContainer) {
		// A reinvocation (reinvocationPolicy: IfNeeded) of a pod this
		// meshd injected: left as it is. Injecting again would rebuild
		// the sidecar and drop what later admission steps added to it
		// (the ServiceAccount plugin's token mount, another webhook's env).
		return &admissionv1.AdmissionResponse{Allowed: true}, ResultUnchanged
	}
	before, after, err := inject.PodJSON(req.Object.Raw, h.options())
	if err != nil {
		log.Info("refused a pod inject cannot inject", "reason", err)
		return deny(http.StatusForbidden, "minimesh: the pod cannot be injected with mesh-proxy: "+err.Error()+` (annotate it minimesh.io/inject: "false" to admit it without the sidecar)`), ResultDenied
	}
	ops, err := jsonpatch.CreatePatch(before, after)
	if err != nil {
		return deny(http.StatusInternalServerError, "minimesh: patch: "+err.Error()), ResultBadRequest
	}
	if len(ops) == 0 {
		return &admissionv1.AdmissionResponse{Allowed: true}, ResultUnchanged
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return deny(http.StatusInternalServerError, "minimesh: patch: "+err.Error()), ResultBadRequest
	}
	pt := admissionv1.PatchTypeJSONPatch
	log.Info("injected mesh-proxy", "service_account", pod.Spec.ServiceAccountName)
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: patch, PatchType: &pt}, ResultInjected
}

var reasons = map[int32]metav1.StatusReason{
	http.StatusBadRequest: metav1.StatusReasonBadRequest, http.StatusForbidden: metav1.StatusReasonForbidden,
	http.StatusInternalServerError: metav1.StatusReasonInternalError,
}

func deny(code int32, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Reason: reasons[code], Message: msg,
	}}
}

// badRequest answers what is not an AdmissionReview with an HTTP error.
func (h *handler) badRequest(w http.ResponseWriter, code int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.results.WithLabelValues(ResultBadRequest).Inc()
	h.log.Warn("webhook request refused", "status", code, "reason", msg)
	http.Error(w, "minimesh webhook: "+msg, code)
}

func hasInitContainer(pod *corev1.Pod, name string) bool {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return true
		}
	}
	return false
}
