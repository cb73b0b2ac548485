package proxy

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"minimesh/api"
	"minimesh/api/authz"
	"minimesh/certs"
	"minimesh/dataplane/ratelimit"
	"minimesh/dataplane/route"
	meshv1 "minimesh/proto/mesh/v1"
)

// PolicyConfig is what CompilePolicy needs besides the snapshot.
type PolicyConfig struct {
	// Namespace and Service of this proxy: the AuthorizationPolicies,
	// RateLimits, AccessLogs and Routes of that service apply at its
	// inbound. Namespace default "default".
	Namespace, Service string
	// MaxIdentities bounds each per-identity rate-limit bucket map
	// (ratelimit.Config.MaxIdentities); 0: ratelimit's default.
	MaxIdentities int
	// Clock fills the rate-limit buckets. Default certs.SystemClock.
	Clock certs.Clock
}

// Policy is what the inbound enforces, compiled from one snapshot: the
// service's authorization engine, its rate limiter (with the Routes that
// name the route a request matched), its access-log resource, and the
// identities and certificate serials the mesh has revoked. It is immutable;
// SetPolicy swaps it in, and the next request (also on a connection
// already open) is decided by it.
type Policy struct {
	authz     *authz.Engine
	limiter   *ratelimit.Limiter
	limits    []*api.RateLimit // what limiter was compiled from
	routes    *route.Table
	accessLog *api.AccessLog // nil: off
	revoked   *Revocations
}

// CompilePolicy compiles snap's policy for cfg's service. prev, when not
// nil, is the policy in force: when the RateLimits did not change its
// limiter is kept, and when some did, the others keep their buckets, so
// that a push does not refill buckets it did not change. An error wraps
// ErrInvalidSnapshot and changes nothing.
func CompilePolicy(cfg PolicyConfig, snap *meshv1.Snapshot, prev *Policy) (*Policy, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	var (
		pols   []*api.AuthorizationPolicy
		limits []*api.RateLimit
		routes []*api.Route
		logs   []*api.AccessLog
	)
	for i, r := range snap.GetResources() {
		o, err := api.FromProto(r)
		if err == nil {
			err = o.Validate()
		}
		if err != nil {
			return nil, fmt.Errorf("%w: resources[%d]: %w", ErrInvalidSnapshot, i, err)
		}
		if o.Meta().Namespace != cfg.Namespace || o.ServiceName() != cfg.Service {
			continue
		}
		switch o := o.(type) {
		case *api.AuthorizationPolicy:
			pols = append(pols, o)
		case *api.RateLimit:
			limits = append(limits, o)
		case *api.Route:
			routes = append(routes, o)
		case *api.AccessLog:
			logs = append(logs, o)
		}
	}
	p := &Policy{limits: limits}
	var err error
	if p.authz, err = authz.Compile(pols); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSnapshot, err)
	}
	var prevLimiter *ratelimit.Limiter
	if prev != nil {
		prevLimiter = prev.limiter
	}
	if prev != nil && sameLimits(prev.limits, limits) {
		p.limiter = prev.limiter
	} else if p.limiter, err = ratelimit.Compile(ratelimit.Config{MaxIdentities: cfg.MaxIdentities, Clock: cfg.Clock, Previous: prevLimiter}, limits); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSnapshot, err)
	}
	if p.routes, err = route.Compile(route.Config{Clock: cfg.Clock}, routes); err != nil {
		return nil, fmt.Errorf("%w: routes: %w", ErrInvalidSnapshot, err)
	}
	// One AccessLog per service is what meshd lets through; should there
	// be several, the first enabled one in name order wins.
	slices.SortFunc(logs, func(a, b *api.AccessLog) int { return strings.Compare(a.Name, b.Name) })
	for _, l := range logs {
		if l.Spec.GetEnabled() {
			p.accessLog = l
			break
		}
	}
	p.revoked = NewRevocations(snap.GetDeniedIdentities(), snap.GetRevokedSerials(), snap.GetRevokedInstances())
	return p, nil
}

func sameLimits(a, b []*api.RateLimit) bool {
	return slices.EqualFunc(a, b, func(x, y *api.RateLimit) bool {
		return x.Namespace == y.Namespace && x.Name == y.Name && proto.Equal(x.Spec, y.Spec)
	})
}

// Authz returns the policy's authorization engine (nil allows everything).
func (p *Policy) Authz() *authz.Engine {
	if p == nil {
		return nil
	}
	return p.authz
}

// Revocations returns the identities and serials the policy refuses.
func (p *Policy) Revocations() *Revocations {
	if p == nil {
		return nil
	}
	return p.revoked
}

// Revocations are the SPIFFE IDs (denied identities), certificate
// serials (revoked SVIDs) and proxy instances (every certificate bound to
// one, see certs.InstanceID) the mesh no longer admits, from a snapshot.
// A nil *Revocations refuses nothing.
type Revocations struct {
	ids       map[string]struct{}
	serials   map[string]struct{}
	instances map[string]struct{}
}

// NewRevocations builds Revocations from a snapshot's denied_identities,
// revoked_serials (hex, as big.Int.Text(16) writes them; case and leading
// zeros do not matter) and revoked_instances. All empty: nil.
func NewRevocations(ids, serials, instances []string) *Revocations {
	if len(ids) == 0 && len(serials) == 0 && len(instances) == 0 {
		return nil
	}
	r := &Revocations{
		ids:       make(map[string]struct{}, len(ids)),
		serials:   make(map[string]struct{}, len(serials)),
		instances: make(map[string]struct{}, len(instances)),
	}
	for _, id := range ids {
		r.ids[id] = struct{}{}
	}
	for _, s := range serials {
		r.serials[normSerial(s)] = struct{}{}
	}
	for _, in := range instances {
		if in != "" {
			r.instances[in] = struct{}{}
		}
	}
	return r
}

func normSerial(s string) string {
	s = strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"))
	s = strings.TrimLeft(s, "0")
	if s == "" {
		return "0"
	}
	return s
}

// Refused reports why a peer's verified chain (leaf first) is no longer
// admitted: its SPIFFE ID is denied, its leaf is bound to a revoked
// instance, or the serial of any certificate in it is revoked. nil:
// admitted.
func (r *Revocations) Refused(id string, chain []*x509.Certificate) error {
	if r == nil {
		return nil
	}
	if _, ok := r.ids[id]; ok {
		return fmt.Errorf("%w: identity %s is denied", ErrRevoked, id)
	}
	if len(chain) > 0 && len(r.instances) > 0 {
		if inst := certs.InstanceID(chain[0]); inst != "" {
			if _, ok := r.instances[inst]; ok {
				return fmt.Errorf("%w: instance %s is revoked", ErrRevoked, inst)
			}
		}
	}
	for _, c := range chain {
		if c.SerialNumber == nil {
			continue
		}
		if _, ok := r.serials[c.SerialNumber.Text(16)]; ok {
			return fmt.Errorf("%w: certificate serial %s is revoked", ErrRevoked, c.SerialNumber.Text(16))
		}
	}
	return nil
}

// Len returns how many identities and serials are refused.
func (r *Revocations) Len() int {
	if r == nil {
		return 0
	}
	return len(r.ids) + len(r.serials) + len(r.instances)
}
