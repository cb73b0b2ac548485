package proxy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/api"
	"minimesh/certs"
	"minimesh/dataplane/balancer"
	"minimesh/dataplane/route"
	meshv1 "minimesh/proto/mesh/v1"
)

// TableConfig is what CompileTable needs besides the snapshot.
type TableConfig struct {
	// Namespace of this proxy: a bare service name in a Host header is
	// looked up there. Default "default".
	Namespace string
	// Service this proxy serves: its Service resource gives the inbound's
	// ports and their protocols.
	Service string
	// TrustDomain of the mesh: without a Service resource, only
	// spiffe://<TrustDomain>/ns/<ns>/sa/<service> may serve a service.
	// Zero: any trust domain with that path.
	TrustDomain spiffeid.TrustDomain
	// Clock paces the routes' retry budgets. Default certs.SystemClock.
	Clock certs.Clock
	// Previous, if set, is the Table this one replaces: routes whose retry
	// budget settings are unchanged keep their budgets across the push
	// (route.Config.Previous). Previous is not modified.
	Previous *Table
}

// Table is the traffic config compiled from one snapshot: every service
// with its ports, its allowed endpoints (and those of its subsets) and its
// routes, and the names a Host header may use for it. It is immutable once
// compiled: what changes at runtime (balancers, counters, metric series)
// is kept by the Outbound that installs it, across tables. The Inbound
// reads its own service's ports from it.
type Table struct {
	namespace string
	services  map[svcKey]*service
	hosts     map[string]*service
	// own is the inbound's port table; nil without a Service resource for
	// this proxy's service.
	own map[uint32]meshv1.Protocol
	// ports is the protocol the Services declare for each port, for the
	// transparent listener; a port two Services declare differently is
	// left out.
	ports map[uint32]meshv1.Protocol
	// Rejected lists endpoints left out because their identity may not
	// serve their service, for logs.
	rejected []string
	nEps     int
}

type svcKey struct{ ns, name string }

type service struct {
	key   svcKey
	label string // "name.ns", for logs and errors
	// declared: a Service resource exists; ports are its ports. Without
	// one, the service has no known ports and requests go to each
	// endpoint's app address (no HeaderTarget).
	declared bool
	ports    []svcPort
	targets  []balancer.Target
	subsets  map[string][]balancer.Target
	routes   *route.Table
}

type svcPort struct {
	port   uint32
	proto  meshv1.Protocol
	header []string // HeaderTarget value, precomputed; never modified
}

// CompileTable compiles snap. Every resource is decoded and validated;
// endpoints whose SPIFFE ID may not serve their service (its Service's
// servingIdentities, or sa == service without one) are left out (see
// Rejected); each service's Routes are compiled. An error wraps
// ErrInvalidSnapshot and changes nothing.
func CompileTable(cfg TableConfig, snap *meshv1.Snapshot) (*Table, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	t := &Table{namespace: cfg.Namespace, services: map[svcKey]*service{}, hosts: map[string]*service{}}
	get := func(ns, name string) *service {
		k := svcKey{ns, name}
		s := t.services[k]
		if s == nil {
			s = &service{key: k, label: name + "." + ns}
			t.services[k] = s
		}
		return s
	}
	type patterns struct {
		serving []api.IdentityPattern
		subsets map[string][]api.IdentityPattern
	}
	pats := map[svcKey]*patterns{}
	routes := map[svcKey][]*api.Route{}
	for i, r := range snap.GetResources() {
		o, err := api.FromProto(r)
		if err == nil {
			err = o.Validate()
		}
		if err != nil {
			return nil, fmt.Errorf("%w: resources[%d]: %w", ErrInvalidSnapshot, i, err)
		}
		switch o := o.(type) {
		case *api.Service:
			s := get(o.Namespace, o.Name)
			s.declared = true
			for _, p := range o.Spec.GetPorts() {
				tg := Target{Protocol: p.GetProtocol(), Port: p.GetPort()}
				s.ports = append(s.ports, svcPort{port: p.GetPort(), proto: p.GetProtocol(), header: []string{tg.String()}})
			}
			p := &patterns{subsets: map[string][]api.IdentityPattern{}}
			if p.serving, err = api.ParseIdentityPatterns(o.Spec.GetServingIdentities()); err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrInvalidSnapshot, api.KeyOf(o), err)
			}
			for _, sub := range o.Spec.GetSubsets() {
				sp, err := api.ParseIdentityPatterns(sub.GetIdentities())
				if err != nil {
					return nil, fmt.Errorf("%w: %s: subset %s: %w", ErrInvalidSnapshot, api.KeyOf(o), sub.GetName(), err)
				}
				p.subsets[sub.GetName()] = sp
			}
			pats[s.key] = p
			if o.Namespace == cfg.Namespace && o.Name == cfg.Service {
				t.own = make(map[uint32]meshv1.Protocol, len(s.ports))
				for _, sp := range s.ports {
					t.own[sp.port] = sp.proto
				}
			}
		case *api.Route:
			k := svcKey{o.Namespace, o.Spec.GetService()}
			routes[k] = append(routes[k], o)
			get(k.ns, k.name)
			for _, b := range o.Spec.GetBackends() {
				get(k.ns, b.GetService())
			}
		}
	}
	for k, rs := range routes {
		var prevRoutes *route.Table
		if cfg.Previous != nil {
			if ps := cfg.Previous.services[k]; ps != nil {
				prevRoutes = ps.routes
			}
		}
		rt, err := route.Compile(route.Config{Clock: cfg.Clock, Previous: prevRoutes}, rs)
		if err != nil {
			return nil, fmt.Errorf("%w: routes of %s.%s: %w", ErrInvalidSnapshot, k.name, k.ns, err)
		}
		t.services[k].routes = rt
	}
	for i, e := range snap.GetEndpoints() {
		id, err := spiffeid.FromString(e.GetSpiffeId())
		if err != nil {
			return nil, fmt.Errorf("%w: endpoints[%d]: spiffe_id: %w", ErrInvalidSnapshot, i, err)
		}
		if err := validateHostPort("address", e.GetAddress()); err != nil {
			return nil, fmt.Errorf("%w: endpoints[%d]: %w", ErrInvalidSnapshot, i, err)
		}
		ns := e.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		s := get(ns, e.GetService())
		p := pats[s.key]
		allowed := false
		if p != nil {
			allowed = api.MatchAny(p.serving, id.String())
		} else {
			allowed = id.Path() == "/ns/"+ns+"/sa/"+e.GetService() &&
				(cfg.TrustDomain.IsZero() || id.TrustDomain() == cfg.TrustDomain)
		}
		if !allowed {
			t.rejected = append(t.rejected, fmt.Sprintf("%s at %s may not serve %s", id, e.GetAddress(), s.label))
			continue
		}
		tg := balancer.Target{Addr: e.GetAddress(), Identity: id.String()}
		if slices.Contains(s.targets, tg) {
			continue
		}
		s.targets = append(s.targets, tg)
		t.nEps++
		if p != nil {
			for name, sp := range p.subsets {
				if api.MatchAny(sp, tg.Identity) {
					if s.subsets == nil {
						s.subsets = map[string][]balancer.Target{}
					}
					s.subsets[name] = append(s.subsets[name], tg)
				}
			}
		}
	}
	for _, s := range t.services {
		// A stable order, so that SetTargets sees the same list for the
		// same endpoints.
		slices.SortFunc(s.targets, cmpTarget)
		for _, sub := range s.subsets {
			slices.SortFunc(sub, cmpTarget)
		}
		for _, h := range hostNames(s.key, cfg.Namespace) {
			t.hosts[h] = s
		}
	}
	t.ports = map[uint32]meshv1.Protocol{}
	conflict := map[uint32]bool{}
	for _, s := range t.services {
		for _, sp := range s.ports {
			if p, ok := t.ports[sp.port]; ok && p != sp.proto {
				conflict[sp.port] = true
			}
			t.ports[sp.port] = sp.proto
		}
	}
	for p := range conflict {
		delete(t.ports, p)
	}
	return t, nil
}

func cmpTarget(a, b balancer.Target) int {
	return cmp.Or(cmp.Compare(a.Addr, b.Addr), cmp.Compare(a.Identity, b.Identity))
}

// hostNames are the Host names that reach a service: "name.ns",
// "name.ns.svc" and "name.ns.svc.cluster.local", and the bare "name" in
// the proxy's own namespace.
func hostNames(k svcKey, ownNS string) []string {
	names := []string{k.name + "." + k.ns, k.name + "." + k.ns + ".svc", k.name + "." + k.ns + ".svc.cluster.local"}
	if k.ns == ownNS {
		names = append(names, k.name)
	}
	for i, n := range names {
		names[i] = strings.ToLower(n)
	}
	return names
}

// Rejected lists the endpoints left out because their identity may not
// serve their service.
func (t *Table) Rejected() []string { return slices.Clone(t.rejected) }

// Endpoints counts the endpoints kept, over every service.
func (t *Table) Endpoints() int { return t.nEps }

// Services returns the services known, as "name.namespace", sorted.
func (t *Table) Services() []string {
	out := make([]string, 0, len(t.services))
	for _, s := range t.services {
		out = append(out, s.label)
	}
	slices.Sort(out)
	return out
}

// lookup finds a service by namespace and name.
func (t *Table) lookup(ns, name string) *service {
	if t == nil {
		return nil
	}
	return t.services[svcKey{ns, name}]
}

// lookupHost finds the service a Host header names, and the port in it.
func (t *Table) lookupHost(host string) (*service, uint32) {
	if t == nil {
		return nil, 0
	}
	name, port := splitHost(host)
	return t.hosts[name], port
}

// port returns the port of s for a request addressed to p: p if s
// declares it, else s's first port (its first non-TCP port for an HTTP
// request, when it has one); nil when s declares no ports.
func (s *service) port(p uint32, httpRequest bool) *svcPort {
	if len(s.ports) == 0 {
		return nil
	}
	if p != 0 {
		for i := range s.ports {
			if s.ports[i].port == p {
				return &s.ports[i]
			}
		}
	}
	if httpRequest {
		for i := range s.ports {
			if s.ports[i].proto != meshv1.Protocol_PROTOCOL_TCP {
				return &s.ports[i]
			}
		}
	}
	return &s.ports[0]
}

// endpoints counts the endpoints of s, or of one of its subsets.
func (s *service) endpoints(subset string) int {
	if subset == "" {
		return len(s.targets)
	}
	return len(s.subsets[subset])
}
