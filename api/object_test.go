package api_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

func TestParseKind(t *testing.T) {
	tests := []struct {
		in   string
		want api.Kind
	}{
		{"Route", api.KindRoute},
		{"route", api.KindRoute},
		{"routes", api.KindRoute},
		{"SERVICES", api.KindService},
		{"ratelimit", api.KindRateLimit},
		{"accesslogs", api.KindAccessLog},
		{"AuthorizationPolicy", api.KindAuthorizationPolicy},
		{"authorizationpolicies", api.KindAuthorizationPolicy},
		{"configfiles", api.KindConfigFile},
	}
	for _, tc := range tests {
		got, err := api.ParseKind(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "svc", "all", "routess", "authorizationpolicys"} {
		if _, err := api.ParseKind(bad); !errors.Is(err, api.ErrUnknownKind) {
			t.Errorf("ParseKind(%q) = %v, want ErrUnknownKind", bad, err)
		}
	}
}

func TestNew(t *testing.T) {
	for _, k := range api.Kinds() {
		o, err := api.New(k)
		if err != nil {
			t.Fatal(err)
		}
		if o.Kind() != k || o.Meta().Namespace != api.DefaultNamespace || o.SpecMessage() == nil {
			t.Errorf("New(%s) = %#v", k, o)
		}
	}
	if _, err := api.New("Pod"); !errors.Is(err, api.ErrUnknownKind) {
		t.Errorf("New(Pod) = %v", err)
	}
}

func TestClone(t *testing.T) {
	for _, k := range api.Kinds() {
		o := base(t, k)
		o.Meta().Revision = 7
		o.Meta().UpdateTime = time.Unix(1700000000, 0).UTC()
		c := api.Clone(o)
		sameObject(t, c, o)
		// A deep copy: changing the clone leaves the original alone.
		c.Meta().Name = "changed"
		proto.Reset(c.SpecMessage())
		if o.Meta().Name == "changed" || proto.Size(o.SpecMessage()) == 0 {
			t.Errorf("%s: Clone shares state with the original", k)
		}
	}
}

func TestProtoEnvelope(t *testing.T) {
	for _, k := range api.Kinds() {
		o := base(t, k)
		o.Meta().Revision = 12
		o.Meta().UpdateTime = time.Date(2026, 5, 6, 7, 8, 9, 10, time.UTC)
		r := api.ToProto(o)
		if r.GetApiVersion() != api.APIVersion || r.GetKind() != string(k) || r.GetName() != o.Meta().Name ||
			r.GetNamespace() != "prod" || r.GetRevision() != 12 || !r.GetUpdateTime().AsTime().Equal(o.Meta().UpdateTime) {
			t.Errorf("ToProto(%s) envelope = %v", k, r)
		}
		sameObject(t, wire(t, o), o)
	}
}

func TestFromProtoErrors(t *testing.T) {
	good := func() *meshv1.Resource { return api.ToProto(base(t, api.KindRoute)) }
	tests := []struct {
		name   string
		mutate func(r *meshv1.Resource)
		want   string
	}{
		{"api version", func(r *meshv1.Resource) { r.ApiVersion = "v1" }, `apiVersion: must be "minimesh.io/v1alpha1", not "v1"`},
		{"unknown kind", func(r *meshv1.Resource) { r.Kind = "Pod" }, `kind: unknown kind "Pod"`},
		{"kind in lower case", func(r *meshv1.Resource) { r.Kind = "route" }, `kind: unknown kind "route"`},
		{"kind and spec disagree", func(r *meshv1.Resource) { r.Kind = "Service" }, "kind: is Service but the spec is a Route spec"},
		{"no spec", func(r *meshv1.Resource) { r.Spec = nil }, "spec: required"},
		{"bad timestamp", func(r *meshv1.Resource) { r.UpdateTime.Nanos = -1 }, "metadata.updateTime"},
	}
	for _, tc := range tests {
		r := good()
		r.UpdateTime = nil
		if tc.name == "bad timestamp" {
			r.UpdateTime = api.ToProto(&api.Route{Metadata: api.Metadata{UpdateTime: time.Unix(1, 0)}}).UpdateTime
		}
		tc.mutate(r)
		_, err := api.FromProto(r)
		if err == nil || !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: FromProto = %v, want …%s…", tc.name, err, tc.want)
		}
	}
	// A oneof member that is set but nil still yields a usable object.
	o, err := api.FromProto(&meshv1.Resource{ApiVersion: api.APIVersion, Kind: "Service", Spec: &meshv1.Resource_Service{}})
	if err != nil || o.(*api.Service).Spec == nil {
		t.Errorf("FromProto with a nil spec = %v, %v", o, err)
	}
}

func TestServiceName(t *testing.T) {
	for _, k := range api.Kinds() {
		if k == api.KindExternalService {
			// It belongs to its namespace: spec.allowedServices picks services.
			if got := base(t, k).ServiceName(); got != "" {
				t.Errorf("%s.ServiceName() = %q, want \"\"", k, got)
			}
			continue
		}
		if got := base(t, k).ServiceName(); got != "web" {
			t.Errorf("%s.ServiceName() = %q, want web", k, got)
		}
	}
}
