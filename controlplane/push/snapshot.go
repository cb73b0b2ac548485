package push

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"minimesh/api"
	"minimesh/certs"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// group is the set of proxies that get the same snapshot: those serving
// the same service in the same namespace with the same endpoint scope.
type group struct {
	namespace, service string
	// scope is "" for proxies that get every endpoint, else "=" and their
	// scope's services joined by ",".
	scope string
}

// scopeKey is a group's scope field for a proxy's scope.
func scopeKey(scope []string, scoped bool) string {
	if !scoped {
		return ""
	}
	return "=" + strings.Join(scope, ",")
}

// snapshots computes the snapshot of every group that has a registered
// proxy. The part every proxy shares (Services, Routes, endpoints, trust
// bundle) is built once; each group adds its own service's inbound
// resources. Proxies of one group share one immutable snapshot value.
func snapshots(r *store.Reader, bundle [][]byte, now time.Time) (map[group]*meshv1.Snapshot, map[string]group, error) {
	services, err := r.Objects(api.KindService, "")
	if err != nil {
		return nil, nil, err
	}
	routes, err := r.Objects(api.KindRoute, "")
	if err != nil {
		return nil, nil, err
	}
	recs, err := r.List(store.TableProxies, "id")
	if err != nil {
		return nil, nil, err
	}
	denied := map[string]bool{}
	drecs, err := r.List(store.TableDenials, "id")
	if err != nil {
		return nil, nil, err
	}
	var deniedIDs []string
	for _, rec := range drecs {
		d := rec.(*store.Denial)
		denied[d.SPIFFEID] = true
		deniedIDs = append(deniedIDs, d.SPIFFEID)
	}
	byKey := map[string]*api.Service{}
	for _, o := range services {
		s := o.(*api.Service)
		byKey[s.Namespace+"/"+s.Name] = s
	}
	// The backends each service's Routes may send its callers to.
	backends := map[string][]string{}
	for _, o := range routes {
		rt := o.(*api.Route)
		from := rt.Namespace + "/" + rt.Spec.GetService()
		for _, b := range rt.Spec.GetBackends() {
			backends[from] = append(backends[from], rt.Namespace+"/"+b.GetService())
		}
	}

	var shared []*meshv1.Resource
	for _, o := range services {
		shared = append(shared, api.ToProto(o))
	}
	for _, o := range routes {
		shared = append(shared, api.ToProto(o))
	}
	var endpoints []*meshv1.Endpoint
	members := map[string]group{}
	groups := map[group]map[string]bool{} // the services of its scope; nil: all
	for _, rec := range recs {
		p := rec.(*store.Proxy)
		id, err := spiffeid.FromString(p.SPIFFEID)
		if err != nil {
			continue
		}
		ns, _, err := certs.ParseWorkloadID(id)
		if err != nil {
			continue
		}
		g := group{ns, p.Service, scopeKey(p.Scope, p.Scoped)}
		members[p.InstanceID] = g
		if _, ok := groups[g]; !ok {
			groups[g] = scopeSet(p.Scope, p.Scoped, backends)
		}
		if !p.Connected || p.Revoked || denied[p.SPIFFEID] || !allowed(byKey[ns+"/"+p.Service], id, p.Service) {
			continue
		}
		endpoints = append(endpoints, &meshv1.Endpoint{
			Namespace: ns, Service: p.Service, InstanceId: p.InstanceID, Address: p.Address, SpiffeId: p.SPIFFEID,
		})
	}
	sort.Slice(endpoints, func(i, j int) bool {
		a, b := endpoints[i], endpoints[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		return a.InstanceId < b.InstanceId
	})

	revoked, err := revokedSerials(r, recs, now)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[group]*meshv1.Snapshot, len(groups))
	lookup := r.Lookup()
	for g, in := range groups {
		eps := endpoints
		if in != nil {
			eps = nil
			for _, e := range endpoints {
				if in[e.GetNamespace()+"/"+e.GetService()] {
					eps = append(eps, e)
				}
			}
		}
		snap := &meshv1.Snapshot{Endpoints: eps, TrustBundle: bundle, DeniedIdentities: deniedIDs, RevokedSerials: revoked}
		snap.Resources = append(snap.Resources, shared...)
		for _, kind := range []api.Kind{api.KindRateLimit, api.KindAccessLog, api.KindAuthorizationPolicy, api.KindConfigFile} {
			objs := lookup.ByService(kind, g.namespace, g.service)
			sort.Slice(objs, func(i, j int) bool { return objs[i].Meta().Name < objs[j].Meta().Name })
			for _, o := range objs {
				snap.Resources = append(snap.Resources, api.ToProto(o))
			}
		}
		snap.Version = Version(snap)
		out[g] = snap
	}
	return out, members, nil
}

// scopeSet is the services whose endpoints a proxy of that scope gets: the
// scope and the backends of its services' Routes; nil when unscoped.
func scopeSet(scope []string, scoped bool, backends map[string][]string) map[string]bool {
	if !scoped {
		return nil
	}
	in := make(map[string]bool, len(scope))
	for _, svc := range scope {
		in[svc] = true
		for _, b := range backends[svc] {
			in[b] = true
		}
	}
	return in
}

// allowed reports whether id may serve service: by the Service's serving
// identities when it exists, else by the service-account convention.
func allowed(svc *api.Service, id spiffeid.ID, service string) bool {
	if svc == nil {
		return SameServiceAccount(id, service) == nil
	}
	for _, p := range svc.Spec.GetServingIdentities() {
		if pat, err := api.ParseIdentityPattern(p); err == nil && pat.Match(id.String()) {
			return true
		}
	}
	return false
}

// Version is the hash of a snapshot's content (its version field aside).
// Resources carry their revision, so a re-applied but unchanged resource
// keeps the version too.
func Version(s *meshv1.Snapshot) string {
	c := proto.Clone(s).(*meshv1.Snapshot)
	c.Version = ""
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// revokedSerials lists the serials of the certificates issued to revoked
// instances that have not expired yet (the others fail verification anyway).
func revokedSerials(r *store.Reader, proxies []store.Record, now time.Time) ([]string, error) {
	revoked := map[string]bool{}
	for _, rec := range proxies {
		if p := rec.(*store.Proxy); p.Revoked {
			revoked[p.InstanceID] = true
		}
	}
	if len(revoked) == 0 {
		return nil, nil
	}
	certs, err := r.List(store.TableCertificates, "id")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rec := range certs {
		c := rec.(*store.Certificate)
		if revoked[c.InstanceID] && now.Before(c.NotAfter) {
			out = append(out, c.Serial)
		}
	}
	sort.Strings(out)
	return out, nil
}
