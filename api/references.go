package api

import (
	"errors"
	"fmt"
	"slices"

	meshv1 "minimesh/proto/mesh/v1"
)

// Reference is a field of an object that names another object in the same
// namespace.
type Reference struct {
	// Field is the referring field's path, e.g. "spec.backends[1].service".
	Field string
	// To is the referenced object.
	To Key
	// Subset and Port, when set, must be declared by the referenced Service.
	Subset string
	Port   uint32
}

// References returns the references o makes, in field order.
func References(o Object) []Reference {
	ns := o.Meta().Namespace
	svc := func(field, name string) Reference {
		return Reference{Field: field, To: Key{Kind: KindService, Namespace: ns, Name: name}}
	}
	switch o := o.(type) {
	case *Route:
		refs := []Reference{svc("spec.service", o.Spec.GetService())}
		for i, b := range o.Spec.GetBackends() {
			r := svc(idx("spec.backends", i)+".service", b.GetService())
			r.Subset, r.Port = b.GetSubset(), b.GetPort()
			refs = append(refs, r)
		}
		return refs
	case *RateLimit:
		refs := []Reference{svc("spec.service", o.Spec.GetService())}
		if r := o.Spec.GetRoute(); r != "" {
			refs = append(refs, Reference{Field: "spec.route", To: Key{Kind: KindRoute, Namespace: ns, Name: r}})
		}
		return refs
	case *AccessLog, *AuthorizationPolicy, *ConfigFile, *LogAdapter, *LogShipping:
		return []Reference{svc("spec.service", o.ServiceName())}
	case *ExternalService:
		var refs []Reference
		for i, n := range o.Spec.GetAllowedServices() {
			refs = append(refs, svc(idx("spec.allowedServices", i), n))
		}
		return refs
	}
	return nil
}

// Lookup reads the objects already stored. The store implements it over a
// read transaction.
type Lookup interface {
	// Get returns the stored object with key k.
	Get(k Key) (Object, bool)
	// ByService returns the stored objects of kind in namespace whose
	// ServiceName is service.
	ByService(kind Kind, namespace, service string) []Object
}

// ValidateReferences checks a batch of objects about to be applied together
// against each other and against stored (which may be nil: nothing stored).
// An object in the batch replaces the stored object with its key. It
// reports, as *FieldErrors:
//   - the same key twice in the batch (ErrConflict);
//   - a reference to an object that is neither in the batch nor stored, a
//     subset or port the referenced Service does not declare, a Route for a
//     Service whose ports are all tcp, and a RateLimit whose route belongs to
//     another service (ErrMissingReference);
//   - two ConfigFiles of a service with one path, two AccessLogs or two
//     LogShippings for one service (ErrConflict).
//
// It does not call Validate.
func ValidateReferences(objs []Object, stored Lookup) error {
	batch := make(map[Key]Object, len(objs))
	var errs []error
	add := func(o Object, field string, cause error, format string, args ...any) {
		if len(errs) >= maxErrors {
			return
		}
		k := KeyOf(o)
		errs = append(errs, &FieldError{Kind: k.Kind, Namespace: k.Namespace, Name: k.Name,
			Field: field, Reason: fmt.Sprintf(format, args...), Err: cause})
	}
	for _, o := range objs {
		k := KeyOf(o)
		if _, dup := batch[k]; dup {
			add(o, "metadata.name", ErrConflict, "appears more than once in one apply")
			continue
		}
		batch[k] = o
	}
	resolve := func(k Key) (Object, bool) {
		if o, ok := batch[k]; ok {
			return o, true
		}
		if stored == nil {
			return nil, false
		}
		return stored.Get(k)
	}

	for _, o := range objs {
		for _, ref := range References(o) {
			if ref.To.Name == "" {
				continue // Validate reports the empty name.
			}
			target, ok := resolve(ref.To)
			if !ok {
				add(o, ref.Field, ErrMissingReference, "%s not found", ref.To)
				continue
			}
			switch t := target.(type) {
			case *Service:
				if ref.Subset != "" && !slices.ContainsFunc(t.Spec.GetSubsets(), func(s *meshv1.ServiceSubset) bool { return s.GetName() == ref.Subset }) {
					add(o, ref.Field, ErrMissingReference, "%s declares no subset %q", ref.To, ref.Subset)
				}
				if ref.Port != 0 && !slices.ContainsFunc(t.Spec.GetPorts(), func(p *meshv1.ServicePort) bool { return p.GetPort() == ref.Port }) {
					add(o, ref.Field, ErrMissingReference, "%s declares no port %d", ref.To, ref.Port)
				}
				if _, isRoute := o.(*Route); isRoute && ref.Field == "spec.service" && len(t.Spec.GetPorts()) > 0 &&
					!slices.ContainsFunc(t.Spec.GetPorts(), func(p *meshv1.ServicePort) bool { return p.GetProtocol() != meshv1.Protocol_PROTOCOL_TCP }) {
					add(o, ref.Field, ErrMissingReference, "%s has only tcp ports, which routes do not apply to", ref.To)
				}
			case *Route:
				if want := o.ServiceName(); t.Spec.GetService() != want {
					add(o, ref.Field, ErrMissingReference, "%s routes service %q, not %q", ref.To, t.Spec.GetService(), want)
				}
			}
		}
	}

	// Conflicts among the objects of one service: the batch's objects plus
	// the stored ones it does not replace.
	type group struct {
		kind             Kind
		namespace, owner string
	}
	checked := map[group]bool{}
	for _, o := range objs {
		if o.Kind() != KindConfigFile && o.Kind() != KindAccessLog && o.Kind() != KindLogShipping {
			continue
		}
		g := group{o.Kind(), o.Meta().Namespace, o.ServiceName()}
		if g.owner == "" || checked[g] {
			continue
		}
		checked[g] = true
		var members []Object
		for _, b := range objs {
			if b.Kind() == g.kind && b.Meta().Namespace == g.namespace && b.ServiceName() == g.owner {
				members = append(members, b)
			}
		}
		if stored != nil {
			for _, s := range stored.ByService(g.kind, g.namespace, g.owner) {
				if _, replaced := batch[KeyOf(s)]; !replaced {
					members = append(members, s)
				}
			}
		}
		switch g.kind {
		case KindAccessLog, KindLogShipping:
			// members lists the batch's objects first; only they are blamed.
			for i, m := range members {
				if _, inBatch := batch[KeyOf(m)]; !inBatch || len(members) < 2 {
					continue
				}
				other := members[0]
				if i == 0 {
					other = members[1]
				}
				add(m, "spec.service", ErrConflict, "service %q also has %s; at most one %s per service", g.owner, KeyOf(other), g.kind)
			}
		case KindConfigFile:
			paths := map[string]Object{}
			for _, m := range members {
				p := m.(*ConfigFile).Spec.GetPath()
				if first, dup := paths[p]; dup {
					// Blame whichever of the two is in the batch.
					blame, other := m, first
					if _, inBatch := batch[KeyOf(m)]; !inBatch {
						blame, other = first, m
					}
					add(blame, "spec.path", ErrConflict, "%q is also the path of %s", p, KeyOf(other))
					continue
				}
				paths[p] = m
			}
		}
	}
	return errors.Join(errs...)
}

// Index is a Lookup over objects held in memory: the objects of a snapshot,
// or of a set of files checked without meshd (meshctl apply --dry-run
// --offline). It is not safe for concurrent writes.
type Index struct {
	byKey     map[Key]Object
	byService map[Key][]Object // Key{kind, namespace, service}
}

var _ Lookup = (*Index)(nil)

// NewIndex indexes objs; a later object replaces an earlier one with its
// key.
func NewIndex(objs ...Object) *Index {
	ix := &Index{byKey: map[Key]Object{}, byService: map[Key][]Object{}}
	for _, o := range objs {
		ix.Put(o)
	}
	return ix
}

// Put adds o, replacing the object with its key.
func (ix *Index) Put(o Object) {
	k := KeyOf(o)
	if old, ok := ix.byKey[k]; ok {
		sk := Key{Kind: k.Kind, Namespace: k.Namespace, Name: old.ServiceName()}
		ix.byService[sk] = slices.DeleteFunc(ix.byService[sk], func(x Object) bool { return KeyOf(x) == k })
	}
	ix.byKey[k] = o
	sk := Key{Kind: k.Kind, Namespace: k.Namespace, Name: o.ServiceName()}
	ix.byService[sk] = append(ix.byService[sk], o)
}

// Get implements Lookup.
func (ix *Index) Get(k Key) (Object, bool) {
	o, ok := ix.byKey[k]
	return o, ok
}

// ByService implements Lookup.
func (ix *Index) ByService(kind Kind, namespace, service string) []Object {
	return slices.Clone(ix.byService[Key{Kind: kind, Namespace: namespace, Name: service}])
}
