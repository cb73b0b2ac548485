package store

import (
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// TableResources holds the mesh's resources (api objects).
const TableResources = "resources"

// Resource is a stored api object: its key fields for the indexes and the
// object itself as a serialized meshv1.Resource.
type Resource struct {
	ID        string `json:"id"` // kind/namespace/name
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Service   string `json:"service"`
	Revision  uint64 `json:"revision"`
	Proto     []byte `json:"proto"`
	// Source is who applied the object: SourceMeshctl ("", meshctl apply
	// and every record written before sources were kept) or
	// SourceKubernetes (meshd's reconciler of the minimesh.io CRDs). Each
	// refuses to overwrite or delete the other's objects.
	Source string `json:"source,omitempty"`
}

// The sources of a stored object (Resource.Source).
const (
	SourceMeshctl    = ""
	SourceKubernetes = "kubernetes"
)

// Key implements Record.
func (r *Resource) Key() string { return r.ID }

// ResourceID is the primary key of an object.
func ResourceID(k api.Key) string { return string(k.Kind) + "/" + k.Namespace + "/" + k.Name }

// Object decodes the stored object.
func (r *Resource) Object() (api.Object, error) {
	var m meshv1.Resource
	if err := proto.Unmarshal(r.Proto, &m); err != nil {
		return nil, fmt.Errorf("%w: resource %s: %v", ErrCorrupt, r.ID, err)
	}
	o, err := api.FromProto(&m)
	if err != nil {
		return nil, fmt.Errorf("%w: resource %s: %v", ErrCorrupt, r.ID, err)
	}
	return o, nil
}

func newResource(o api.Object) (*Resource, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(api.ToProto(o))
	if err != nil {
		return nil, fmt.Errorf("store: encode %s: %w", api.KeyOf(o), err)
	}
	k := api.KeyOf(o)
	return &Resource{
		ID:        ResourceID(k),
		Kind:      string(k.Kind),
		Namespace: k.Namespace,
		Name:      k.Name,
		Service:   o.ServiceName(),
		Revision:  o.Meta().Revision,
		Proto:     b,
	}, nil
}

// PutObject stores o with the given revision and update time, applied by
// meshctl (SourceMeshctl).
func (t *Txn) PutObject(o api.Object, rev uint64, now time.Time) error {
	return t.PutObjectFrom(o, rev, now, SourceMeshctl)
}

// PutObjectFrom stores o with the given revision, update time and source.
func (t *Txn) PutObjectFrom(o api.Object, rev uint64, now time.Time, source string) error {
	m := o.Meta()
	m.Revision, m.UpdateTime = rev, now
	rec, err := newResource(o)
	if err != nil {
		return err
	}
	rec.Source = source
	return t.Put(TableResources, rec)
}

// ObjectSource returns the source of the stored object with key k.
func (r *Reader) ObjectSource(k api.Key) (source string, ok bool, err error) {
	rec, err := r.Get(TableResources, ResourceID(k))
	if err != nil {
		if isNotFound(err) {
			return "", false, nil
		}
		return "", false, err
	}
	return rec.(*Resource).Source, true, nil
}

// DeleteObject removes the object with key k.
func (t *Txn) DeleteObject(k api.Key) error { return t.Delete(TableResources, ResourceID(k)) }

// Object returns the stored object with key k.
func (r *Reader) Object(k api.Key) (api.Object, bool, error) {
	rec, err := r.Get(TableResources, ResourceID(k))
	if err != nil {
		if isNotFound(err) {
			return nil, false, nil
		}
		return nil, false, err
	}
	o, err := rec.(*Resource).Object()
	return o, err == nil, err
}

// Objects returns the stored objects of kind ("" for every kind) in
// namespace ("" for every namespace), sorted by kind, namespace and name.
func (r *Reader) Objects(kind api.Kind, namespace string) ([]api.Object, error) {
	var recs []Record
	var err error
	switch {
	case kind == "":
		recs, err = r.List(TableResources, "id")
	case namespace == "":
		recs, err = r.List(TableResources, "kind", string(kind))
	default:
		recs, err = r.List(TableResources, "namespace", string(kind), namespace)
	}
	if err != nil {
		return nil, err
	}
	out := make([]api.Object, 0, len(recs))
	for _, rec := range recs {
		res := rec.(*Resource)
		if namespace != "" && res.Namespace != namespace {
			continue
		}
		o, err := res.Object()
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := api.KeyOf(out[i]), api.KeyOf(out[j])
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out, nil
}

// Lookup adapts a Reader to api.Lookup, for reference checks.
func (r *Reader) Lookup() api.Lookup { return readerLookup{r} }

type readerLookup struct{ r *Reader }

func (l readerLookup) Get(k api.Key) (api.Object, bool) {
	o, ok, err := l.r.Object(k)
	return o, ok && err == nil
}

func (l readerLookup) ByService(kind api.Kind, namespace, service string) []api.Object {
	recs, err := l.r.List(TableResources, "service", string(kind), namespace, service)
	if err != nil {
		return nil
	}
	var out []api.Object
	for _, rec := range recs {
		if o, err := rec.(*Resource).Object(); err == nil {
			out = append(out, o)
		}
	}
	return out
}
