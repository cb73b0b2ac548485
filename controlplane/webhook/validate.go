package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"reflect"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	sigsjson "sigs.k8s.io/json"
)

// ValidatePath is where the validating webhook answers for the
// minimesh.io objects (deploy/k8s/crds/validating-webhook.yaml).
const ValidatePath = "/validate"

// DefaultValidatingConfigurationName is the ValidatingWebhookConfiguration
// whose caBundle meshd keeps current alongside the mutating one.
const DefaultValidatingConfigurationName = "minimesh-resources"

// ValidateFunc checks one minimesh.io object; warnings are shown by
// kubectl, an error refuses the object with its text.
type ValidateFunc func(ctx context.Context, obj *unstructured.Unstructured) (warnings []string, err error)

// validator answers the validating AdmissionReviews.
type validator struct {
	validate ValidateFunc
	log      *slog.Logger
}

func (v *validator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		v.log.Warn("validating webhook request refused", "status", code, "reason", msg)
		http.Error(w, "minimesh webhook: "+msg, code)
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(http.StatusMethodNotAllowed, "method %s: the webhook takes POST", r.Method)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		fail(http.StatusUnsupportedMediaType, "Content-Type %q: want application/json", r.Header.Get("Content-Type"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			fail(http.StatusRequestEntityTooLarge, "body larger than %d bytes", MaxRequestBytes)
			return
		}
		fail(http.StatusBadRequest, "read body: %v", err)
		return
	}
	var review admissionv1.AdmissionReview
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(body, &review); err != nil {
		fail(http.StatusBadRequest, "body is not an AdmissionReview: %v", err)
		return
	}
	gvk := review.GroupVersionKind()
	switch {
	case gvk.Group != admissionv1.GroupName || gvk.Version != "v1" || gvk.Kind != "AdmissionReview":
		fail(http.StatusBadRequest, "apiVersion %q kind %q: want admission.k8s.io/v1 AdmissionReview", review.APIVersion, review.Kind)
		return
	case review.Request == nil || review.Request.UID == "":
		fail(http.StatusBadRequest, "AdmissionReview without a request uid")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 8*time.Second) // the API server waits 10 s
	defer cancel()
	resp := v.admit(ctx, review.Request)
	resp.UID = review.Request.UID
	out, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
	if err != nil {
		fail(http.StatusInternalServerError, "encode the response: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

func (v *validator) admit(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Kind.Group != "minimesh.io" || req.SubResource != "" ||
		(req.Operation != admissionv1.Create && req.Operation != admissionv1.Update) {
		return allow
	}
	var obj unstructured.Unstructured
	if err := obj.UnmarshalJSON(req.Object.Raw); err != nil {
		return deny(http.StatusBadRequest, "minimesh: request.object: "+err.Error())
	}
	if obj.GetDeletionTimestamp() != nil {
		return allow // Terminating: only its finalizers change
	}
	if req.Operation == admissionv1.Update && len(req.OldObject.Raw) > 0 {
		var old unstructured.Unstructured
		if err := old.UnmarshalJSON(req.OldObject.Raw); err == nil && reflect.DeepEqual(old.Object["spec"], obj.Object["spec"]) {
			return allow // metadata only (meshd's finalizer, labels)
		}
	}
	warnings, err := v.validate(ctx, &obj)
	if err != nil {
		v.log.Info("refused a minimesh.io object", "kind", req.Kind.Kind, "namespace", req.Namespace, "name", req.Name, "reason", err)
		r := deny(http.StatusUnprocessableEntity, err.Error())
		r.Result.Reason = "Invalid"
		return r
	}
	allow.Warnings = warnings
	return allow
}
