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

// computed is what one pass over the store yields: every group's snapshot,
// the group of each instance, and what decides whether an open stream may
// go on.
type computed struct {
	snaps   map[group]*meshv1.Snapshot
	members map[string]group
	// Revoked instances and serials (unexpired certificates of revoked
	// instances and the revocations table), denied identities.
	revokedInstances, revokedSerials, denied map[string]bool
	// graceNext is the earliest end of an endpoint grace still running
	// (zero: none); inGrace counts the endpoints held by one.
	graceNext time.Time
	inGrace   int
	// expired are instances whose grace ended but whose record still
	// holds it (recompute clears them, so that a meshd that starts can
	// tell the endpoints it last knew from those that left long ago).
	expired []string
}

// liveness says which proxies have a stream now: on this replica (local),
// or on any replica by its presence key (etcd: leased to the replica that
// holds the stream, so it goes with a dead replica; bbolt: this process's
// streams). A nil present is unknown (etcd unreachable): the records'
// Connected is trusted then.
type liveness struct {
	local   map[string]bool
	present map[string]string
}

// connected is whether p's stream is open on some replica: the one rule
// for snapshots, proxy-status and the proxy list.
func (l liveness) connected(p *store.Proxy) bool {
	if l.local[p.InstanceID] {
		return true
	}
	if l.present == nil {
		return p.Connected
	}
	return l.present[p.InstanceID] != ""
}

// snapshots computes the snapshot of every group that has a registered
// proxy. The part every proxy shares (Services, Routes, endpoints, trust
// bundle) is built once; each group adds its own service's inbound
// resources. Proxies of one group share one immutable snapshot value.
//
// A proxy is an endpoint while its stream is open (live) and, after a
// stream that ended without a Drain, until its GraceUntil: losing the
// control plane is not losing an endpoint. A record still marked connected
// without a live stream is a stream that ended with no disconnect written
// (its replica died): an endpoint in its grace, which the leader writes
// when it notices (noticeEnded).
func snapshots(r *store.Reader, bundle [][]byte, now time.Time, live liveness) (*computed, error) {
	services, err := r.Objects(api.KindService, "")
	if err != nil {
		return nil, err
	}
	routes, err := r.Objects(api.KindRoute, "")
	if err != nil {
		return nil, err
	}
	recs, err := r.List(store.TableProxies, "id")
	if err != nil {
		return nil, err
	}
	denied := map[string]bool{}
	drecs, err := r.List(store.TableDenials, "id")
	if err != nil {
		return nil, err
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
	c := &computed{members: map[string]group{}, denied: denied}
	var endpoints []*meshv1.Endpoint
	groups := map[group]map[string]bool{} // the services of its scope; nil: all
	for _, rec := range recs {
		p := rec.(*store.Proxy)
		if !p.GraceUntil.IsZero() && !now.Before(p.GraceUntil) {
			c.expired = append(c.expired, p.InstanceID)
		}
		id, err := spiffeid.FromString(p.SPIFFEID)
		if err != nil {
			continue
		}
		ns, _, err := certs.ParseWorkloadID(id)
		if err != nil {
			continue
		}
		g := group{ns, p.Service, scopeKey(p.Scope, p.Scoped)}
		c.members[p.InstanceID] = g
		if _, ok := groups[g]; !ok {
			groups[g] = scopeSet(p.Scope, p.Scoped, backends)
		}
		connected := live.connected(p)
		inGrace := !connected && (p.Connected || now.Before(p.GraceUntil))
		if !connected && !inGrace || p.Revoked || denied[p.SPIFFEID] || !allowed(byKey[ns+"/"+p.Service], id, p.Service) {
			continue
		}
		if inGrace {
			c.inGrace++
			if !p.GraceUntil.IsZero() && (c.graceNext.IsZero() || p.GraceUntil.Before(c.graceNext)) {
				c.graceNext = p.GraceUntil
			}
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

	revokedInstances, revokedSerials, err := revocations(r, recs, now)
	if err != nil {
		return nil, err
	}
	c.revokedInstances, c.revokedSerials = setOf(revokedInstances), setOf(revokedSerials)
	externals := map[string][]api.Object{}
	{
		objs, err := r.Objects(api.KindExternalService, "")
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			externals[o.Meta().Namespace] = append(externals[o.Meta().Namespace], o)
		}
	}
	c.snaps = make(map[group]*meshv1.Snapshot, len(groups))
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
		snap := &meshv1.Snapshot{Endpoints: eps, TrustBundle: bundle, DeniedIdentities: deniedIDs,
			RevokedSerials: revokedSerials, RevokedInstances: revokedInstances}
		snap.Resources = append(snap.Resources, shared...)
		for _, kind := range []api.Kind{api.KindRateLimit, api.KindAccessLog, api.KindAuthorizationPolicy, api.KindConfigFile,
			api.KindLogAdapter, api.KindLogShipping} {
			objs := lookup.ByService(kind, g.namespace, g.service)
			sort.Slice(objs, func(i, j int) bool { return objs[i].Meta().Name < objs[j].Meta().Name })
			for _, o := range objs {
				snap.Resources = append(snap.Resources, api.ToProto(o))
			}
		}
		// The namespace's ExternalServices that allow this service (sorted
		// by name).
		for _, o := range externals[g.namespace] {
			if api.ExternalAllows(o.(*api.ExternalService).Spec, g.service) {
				snap.Resources = append(snap.Resources, api.ToProto(o))
			}
		}
		snap.Version = Version(snap)
		c.snaps[g] = snap
	}
	return c, nil
}

func setOf(ss []string) map[string]bool {
	m := make(map[string]bool, len(ss))
	for _, s := range ss {
		m[s] = true
	}
	return m
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

// revocations lists the revoked instances, and the serials of revoked
// certificates that have not expired yet (the others fail verification
// anyway): those issued to revoked instances (by meshd's certificate
// records) and those revoked by serial (the revocations table). Both sorted.
func revocations(r *store.Reader, proxies []store.Record, now time.Time) (instances, serials []string, err error) {
	revoked := map[string]bool{}
	for _, rec := range proxies {
		if p := rec.(*store.Proxy); p.Revoked {
			revoked[p.InstanceID] = true
			instances = append(instances, p.InstanceID)
		}
	}
	sort.Strings(instances)
	seen := map[string]bool{}
	if len(revoked) > 0 {
		recs, err := r.List(store.TableCertificates, "id")
		if err != nil {
			return nil, nil, err
		}
		for _, rec := range recs {
			c := rec.(*store.Certificate)
			if revoked[c.InstanceID] && now.Before(c.NotAfter) && !seen[c.Serial] {
				seen[c.Serial] = true
				serials = append(serials, c.Serial)
			}
		}
	}
	recs, err := r.List(store.TableRevocations, "id")
	if err != nil {
		return nil, nil, err
	}
	for _, rec := range recs {
		rv := rec.(*store.Revocation)
		if now.Before(rv.NotAfter) && !seen[rv.Serial] {
			seen[rv.Serial] = true
			serials = append(serials, rv.Serial)
		}
	}
	sort.Strings(serials)
	return instances, serials, nil
}
