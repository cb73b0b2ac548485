package crd

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"minimesh/api"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// Validator is the validating webhook's check (controlplane/webhook's
// /validate) of a minimesh.io object being created or updated.
type Validator struct {
	Admin Admin
	Store *store.Store
}

// Validate refuses what `meshctl apply` refuses of the object on its own
// (api.Decode: the field and the reason) and an object that would change a
// resource applied by meshctl; it runs a dry-run ApplyFrom, whose
// reference errors (a Route before its Service) are warnings, not
// refusals: the object is admitted, Rejected in its status until the
// reference resolves, so `kubectl apply -f dir/` works in any order.
func (v Validator) Validate(ctx context.Context, u *unstructured.Unstructured) (warnings []string, err error) {
	if _, err := api.ParseKind(u.GetKind()); err != nil {
		return nil, fmt.Errorf("kind: %w", err)
	}
	o, err := Object(u)
	if err != nil {
		return nil, err
	}
	_, err = v.Admin.ApplyFrom(ctx, &meshv1.ApplyRequest{Resources: []*meshv1.Resource{api.ToProto(o)}, DryRun: true}, store.SourceKubernetes)
	switch status.Code(err) {
	case codes.OK:
		return nil, nil
	case codes.InvalidArgument:
		return []string{"minimesh: " + status.Convert(err).Message() + "; admitted: meshd applies it once that resolves (its status says Rejected until then)"}, nil
	case codes.FailedPrecondition:
		return nil, fmt.Errorf("%s", status.Convert(err).Message())
	default:
		// meshd's store cannot answer: the object was validated on its
		// own; the reconciler applies it when the store is back.
		return []string{"minimesh: not checked against meshd's store: " + status.Convert(err).Message()}, nil
	}
}
