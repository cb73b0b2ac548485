package api

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	meshv1 "minimesh/proto/mesh/v1"
)

// APIVersion is the only apiVersion this package reads and writes.
const APIVersion = "minimesh.io/v1alpha1"

// DefaultNamespace is the namespace of an object whose YAML names none.
const DefaultNamespace = "default"

// Kind names a resource type.
type Kind string

// The kinds.
const (
	KindService             Kind = "Service"
	KindRoute               Kind = "Route"
	KindRateLimit           Kind = "RateLimit"
	KindAccessLog           Kind = "AccessLog"
	KindAuthorizationPolicy Kind = "AuthorizationPolicy"
	KindConfigFile          Kind = "ConfigFile"
	KindExternalService     Kind = "ExternalService"
	KindLogAdapter          Kind = "LogAdapter"
	KindLogShipping         Kind = "LogShipping"
)

var kinds = []Kind{KindService, KindRoute, KindRateLimit, KindAccessLog, KindAuthorizationPolicy, KindConfigFile,
	KindExternalService, KindLogAdapter, KindLogShipping}

// Kinds returns every kind, Service first (the order in which an apply
// should write them so that references resolve).
func Kinds() []Kind { return append([]Kind(nil), kinds...) }

// ParseKind resolves a kind as people type it on the command line: the
// kind's name or its plural, in any case ("Route", "route", "routes",
// "authorizationpolicies").
func ParseKind(s string) (Kind, error) {
	l := strings.ToLower(s)
	for _, k := range kinds {
		n := strings.ToLower(string(k))
		if l == n || l == plural(n) {
			return k, nil
		}
	}
	return "", fmt.Errorf("%w %q; one of %s", ErrUnknownKind, s, kindList())
}

func plural(n string) string {
	if strings.HasSuffix(n, "y") {
		return n[:len(n)-1] + "ies"
	}
	return n + "s"
}

func kindList() string {
	s := make([]string, len(kinds))
	for i, k := range kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

// Metadata is what every object carries besides its spec.
type Metadata struct {
	// Name is a DNS label, unique per kind and namespace.
	Name string
	// Namespace is a DNS label.
	Namespace string
	// Revision is set by meshd: the store revision that last wrote the
	// object. Zero in objects people write.
	Revision uint64
	// UpdateTime is set by meshd: when the object was last written.
	UpdateTime time.Time
}

// Key identifies an object.
type Key struct {
	Kind      Kind
	Namespace string
	Name      string
}

// String returns, for example, `Route "prod/r1"`.
func (k Key) String() string { return fmt.Sprintf("%s %q", k.Kind, k.Namespace+"/"+k.Name) }

// KeyOf returns o's key.
func KeyOf(o Object) Key {
	m := o.Meta()
	return Key{Kind: o.Kind(), Namespace: m.Namespace, Name: m.Name}
}

// Object is one resource: *Service, *Route, *RateLimit, *AccessLog,
// *AuthorizationPolicy or *ConfigFile. The set is closed; switch on the
// concrete type to read a spec.
type Object interface {
	// Kind returns the object's kind.
	Kind() Kind
	// Meta returns the object's metadata, which the caller may change.
	Meta() *Metadata
	// SpecMessage returns the spec as a proto message (never nil).
	SpecMessage() proto.Message
	// ServiceName returns the service the object belongs to: its own name
	// for a Service, spec.service for the others.
	ServiceName() string
	// Validate checks the object on its own (not its references; see
	// ValidateReferences). The error joins a *FieldError per problem.
	Validate() error

	isObject()
}

// Service declares a service: its ports and who may serve it.
type Service struct {
	Metadata
	Spec *meshv1.ServiceSpec
}

// Route shapes the requests sent to a service.
type Route struct {
	Metadata
	Spec *meshv1.RouteSpec
}

// RateLimit limits the requests a service accepts.
type RateLimit struct {
	Metadata
	Spec *meshv1.RateLimitSpec
}

// AccessLog switches a service's access log.
type AccessLog struct {
	Metadata
	Spec *meshv1.AccessLogSpec
}

// AuthorizationPolicy decides which requests a service accepts.
type AuthorizationPolicy struct {
	Metadata
	Spec *meshv1.AuthorizationPolicySpec
}

// ConfigFile is a file written into the shared directory of a service's pods.
type ConfigFile struct {
	Metadata
	Spec *meshv1.ConfigFileSpec
}

// ExternalService is a service outside the mesh that proxies reach for
// their app (the ambassador pattern).
type ExternalService struct {
	Metadata
	Spec *meshv1.ExternalServiceSpec
}

// LogAdapter turns an app's own log files into JSON records.
type LogAdapter struct {
	Metadata
	Spec *meshv1.LogAdapterSpec
}

// LogShipping sends a service's logs to an S3-compatible object store.
type LogShipping struct {
	Metadata
	Spec *meshv1.LogShippingSpec
}

var (
	_ Object = (*Service)(nil)
	_ Object = (*Route)(nil)
	_ Object = (*RateLimit)(nil)
	_ Object = (*AccessLog)(nil)
	_ Object = (*AuthorizationPolicy)(nil)
	_ Object = (*ConfigFile)(nil)
	_ Object = (*ExternalService)(nil)
	_ Object = (*LogAdapter)(nil)
	_ Object = (*LogShipping)(nil)
)

// Kind implements Object.
func (*Service) Kind() Kind { return KindService }

// Kind implements Object.
func (*Route) Kind() Kind { return KindRoute }

// Kind implements Object.
func (*RateLimit) Kind() Kind { return KindRateLimit }

// Kind implements Object.
func (*AccessLog) Kind() Kind { return KindAccessLog }

// Kind implements Object.
func (*AuthorizationPolicy) Kind() Kind { return KindAuthorizationPolicy }

// Kind implements Object.
func (*ConfigFile) Kind() Kind { return KindConfigFile }

// Kind implements Object.
func (*ExternalService) Kind() Kind { return KindExternalService }

// Kind implements Object.
func (*LogAdapter) Kind() Kind { return KindLogAdapter }

// Kind implements Object.
func (*LogShipping) Kind() Kind { return KindLogShipping }

// Meta implements Object.
func (o *Service) Meta() *Metadata { return &o.Metadata }

// Meta implements Object.
func (o *Route) Meta() *Metadata { return &o.Metadata }

// Meta implements Object.
func (o *RateLimit) Meta() *Metadata { return &o.Metadata }

// Meta implements Object.
func (o *AccessLog) Meta() *Metadata { return &o.Metadata }

// Meta implements Object.
func (o *AuthorizationPolicy) Meta() *Metadata { return &o.Metadata }

// Meta implements Object.
func (o *ConfigFile) Meta() *Metadata { return &o.Metadata }

// Meta implements Object.
func (o *ExternalService) Meta() *Metadata { return &o.Metadata }

// Meta implements Object.
func (o *LogAdapter) Meta() *Metadata { return &o.Metadata }

// Meta implements Object.
func (o *LogShipping) Meta() *Metadata { return &o.Metadata }

// SpecMessage implements Object; it sets a nil Spec to an empty one.
func (o *Service) SpecMessage() proto.Message {
	if o.Spec == nil {
		o.Spec = &meshv1.ServiceSpec{}
	}
	return o.Spec
}

// SpecMessage implements Object; it sets a nil Spec to an empty one.
func (o *Route) SpecMessage() proto.Message {
	if o.Spec == nil {
		o.Spec = &meshv1.RouteSpec{}
	}
	return o.Spec
}

// SpecMessage implements Object; it sets a nil Spec to an empty one.
func (o *RateLimit) SpecMessage() proto.Message {
	if o.Spec == nil {
		o.Spec = &meshv1.RateLimitSpec{}
	}
	return o.Spec
}

// SpecMessage implements Object; it sets a nil Spec to an empty one.
func (o *AccessLog) SpecMessage() proto.Message {
	if o.Spec == nil {
		o.Spec = &meshv1.AccessLogSpec{}
	}
	return o.Spec
}

// SpecMessage implements Object; it sets a nil Spec to an empty one.
func (o *AuthorizationPolicy) SpecMessage() proto.Message {
	if o.Spec == nil {
		o.Spec = &meshv1.AuthorizationPolicySpec{}
	}
	return o.Spec
}

// SpecMessage implements Object; it sets a nil Spec to an empty one.
func (o *ConfigFile) SpecMessage() proto.Message {
	if o.Spec == nil {
		o.Spec = &meshv1.ConfigFileSpec{}
	}
	return o.Spec
}

// SpecMessage implements Object; it sets a nil Spec to an empty one.
func (o *ExternalService) SpecMessage() proto.Message {
	if o.Spec == nil {
		o.Spec = &meshv1.ExternalServiceSpec{}
	}
	return o.Spec
}

// SpecMessage implements Object; it sets a nil Spec to an empty one.
func (o *LogAdapter) SpecMessage() proto.Message {
	if o.Spec == nil {
		o.Spec = &meshv1.LogAdapterSpec{}
	}
	return o.Spec
}

// SpecMessage implements Object; it sets a nil Spec to an empty one.
func (o *LogShipping) SpecMessage() proto.Message {
	if o.Spec == nil {
		o.Spec = &meshv1.LogShippingSpec{}
	}
	return o.Spec
}

// ServiceName implements Object.
func (o *Service) ServiceName() string { return o.Name }

// ServiceName implements Object.
func (o *Route) ServiceName() string { return o.Spec.GetService() }

// ServiceName implements Object.
func (o *RateLimit) ServiceName() string { return o.Spec.GetService() }

// ServiceName implements Object.
func (o *AccessLog) ServiceName() string { return o.Spec.GetService() }

// ServiceName implements Object.
func (o *AuthorizationPolicy) ServiceName() string { return o.Spec.GetService() }

// ServiceName implements Object.
func (o *ConfigFile) ServiceName() string { return o.Spec.GetService() }

// ServiceName implements Object: "", since an ExternalService belongs to
// its namespace, not to one service (spec.allowedServices chooses which
// services' proxies get it).
func (o *ExternalService) ServiceName() string { return "" }

// ServiceName implements Object.
func (o *LogAdapter) ServiceName() string { return o.Spec.GetService() }

// ServiceName implements Object.
func (o *LogShipping) ServiceName() string { return o.Spec.GetService() }

func (*Service) isObject()             {}
func (*Route) isObject()               {}
func (*RateLimit) isObject()           {}
func (*AccessLog) isObject()           {}
func (*AuthorizationPolicy) isObject() {}
func (*ConfigFile) isObject()          {}
func (*ExternalService) isObject()     {}
func (*LogAdapter) isObject()          {}
func (*LogShipping) isObject()         {}

// New returns an empty object of kind in DefaultNamespace, with a non-nil
// Spec.
func New(kind Kind) (Object, error) {
	meta := Metadata{Namespace: DefaultNamespace}
	var o Object
	switch kind {
	case KindService:
		o = &Service{Metadata: meta}
	case KindRoute:
		o = &Route{Metadata: meta}
	case KindRateLimit:
		o = &RateLimit{Metadata: meta}
	case KindAccessLog:
		o = &AccessLog{Metadata: meta}
	case KindAuthorizationPolicy:
		o = &AuthorizationPolicy{Metadata: meta}
	case KindConfigFile:
		o = &ConfigFile{Metadata: meta}
	case KindExternalService:
		o = &ExternalService{Metadata: meta}
	case KindLogAdapter:
		o = &LogAdapter{Metadata: meta}
	case KindLogShipping:
		o = &LogShipping{Metadata: meta}
	default:
		return nil, fmt.Errorf("%w %q; one of %s", ErrUnknownKind, kind, kindList())
	}
	o.SpecMessage()
	return o, nil
}

// Clone returns a deep copy of o.
func Clone(o Object) Object {
	c, err := New(o.Kind())
	if err != nil {
		panic(err) // unreachable: Object is a closed set.
	}
	*c.Meta() = *o.Meta()
	proto.Merge(c.SpecMessage(), o.SpecMessage())
	return c
}

// ToProto returns the wire envelope of o. The spec is shared, not copied.
func ToProto(o Object) *meshv1.Resource {
	m := o.Meta()
	r := &meshv1.Resource{
		ApiVersion: APIVersion,
		Kind:       string(o.Kind()),
		Name:       m.Name,
		Namespace:  m.Namespace,
		Revision:   m.Revision,
	}
	if !m.UpdateTime.IsZero() {
		r.UpdateTime = timestamppb.New(m.UpdateTime)
	}
	switch o := o.(type) {
	case *Service:
		r.Spec = &meshv1.Resource_Service{Service: o.Spec}
	case *Route:
		r.Spec = &meshv1.Resource_Route{Route: o.Spec}
	case *RateLimit:
		r.Spec = &meshv1.Resource_RateLimit{RateLimit: o.Spec}
	case *AccessLog:
		r.Spec = &meshv1.Resource_AccessLog{AccessLog: o.Spec}
	case *AuthorizationPolicy:
		r.Spec = &meshv1.Resource_AuthorizationPolicy{AuthorizationPolicy: o.Spec}
	case *ConfigFile:
		r.Spec = &meshv1.Resource_ConfigFile{ConfigFile: o.Spec}
	case *ExternalService:
		r.Spec = &meshv1.Resource_ExternalService{ExternalService: o.Spec}
	case *LogAdapter:
		r.Spec = &meshv1.Resource_LogAdapter{LogAdapter: o.Spec}
	case *LogShipping:
		r.Spec = &meshv1.Resource_LogShipping{LogShipping: o.Spec}
	}
	return r
}

// FromProto returns the object in a wire envelope, checking that its
// apiVersion is APIVersion and that its kind agrees with the spec that is
// set. The spec is shared, not copied. It does not call Validate.
func FromProto(r *meshv1.Resource) (Object, error) {
	fe := func(field, format string, args ...any) error {
		return &FieldError{Kind: Kind(r.GetKind()), Namespace: r.GetNamespace(), Name: r.GetName(),
			Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if r.GetApiVersion() != APIVersion {
		return nil, fe("apiVersion", "must be %q, not %q", APIVersion, r.GetApiVersion())
	}
	kind, err := ParseKind(r.GetKind())
	if err != nil || string(kind) != r.GetKind() {
		return nil, fe("kind", "unknown kind %q; one of %s", r.GetKind(), kindList())
	}
	meta := Metadata{Name: r.GetName(), Namespace: r.GetNamespace(), Revision: r.GetRevision()}
	if ts := r.GetUpdateTime(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, fe("metadata.updateTime", "%v", err)
		}
		meta.UpdateTime = ts.AsTime()
	}
	var o Object
	switch s := r.GetSpec().(type) {
	case *meshv1.Resource_Service:
		o = &Service{Metadata: meta, Spec: s.Service}
	case *meshv1.Resource_Route:
		o = &Route{Metadata: meta, Spec: s.Route}
	case *meshv1.Resource_RateLimit:
		o = &RateLimit{Metadata: meta, Spec: s.RateLimit}
	case *meshv1.Resource_AccessLog:
		o = &AccessLog{Metadata: meta, Spec: s.AccessLog}
	case *meshv1.Resource_AuthorizationPolicy:
		o = &AuthorizationPolicy{Metadata: meta, Spec: s.AuthorizationPolicy}
	case *meshv1.Resource_ConfigFile:
		o = &ConfigFile{Metadata: meta, Spec: s.ConfigFile}
	case *meshv1.Resource_ExternalService:
		o = &ExternalService{Metadata: meta, Spec: s.ExternalService}
	case *meshv1.Resource_LogAdapter:
		o = &LogAdapter{Metadata: meta, Spec: s.LogAdapter}
	case *meshv1.Resource_LogShipping:
		o = &LogShipping{Metadata: meta, Spec: s.LogShipping}
	default:
		return nil, fe("spec", "required")
	}
	if o.Kind() != kind {
		return nil, fe("kind", "is %s but the spec is a %s spec", kind, o.Kind())
	}
	o.SpecMessage()
	return o, nil
}
