package ratelimit

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"minimesh/api"
	"minimesh/certs"
	meshv1 "minimesh/proto/mesh/v1"
)

// DefaultMaxIdentities is the default of Config.MaxIdentities.
const DefaultMaxIdentities = 10000

// Config holds what Compile needs besides the RateLimits.
type Config struct {
	// MaxIdentities bounds the per-identity buckets each RateLimit keeps;
	// beyond it the least recently seen identity's bucket is dropped (and
	// starts full when that identity comes back). Default 10000.
	MaxIdentities int
	// Clock is the time the buckets fill by. Default certs.SystemClock.
	Clock certs.Clock
	// Previous, if set, is the Limiter this one replaces: a RateLimit it
	// also had, with the same spec, keeps its buckets as they are, so a
	// change to another RateLimit does not refill them.
	Previous *Limiter
}

// Validate reports a Config that does not make sense.
func (c Config) Validate() error {
	if c.MaxIdentities < 0 {
		return fmt.Errorf("%w: MaxIdentities %d is negative", ErrInvalidConfig, c.MaxIdentities)
	}
	return nil
}

// Result is the outcome of Allow, and what the RateLimit-* headers say.
type Result struct {
	// Allowed is false when the request must be answered 429.
	Allowed bool
	// Policy is the RateLimit ("namespace/name") reported: the one that
	// refused the request, or the one closest to refusing it. "" when no
	// RateLimit applies; then the other fields are zero.
	Policy string
	// Limit is the size of that bucket: how many requests it takes at once.
	Limit int
	// Remaining is what is left of it after this request.
	Remaining int
	// Reset is the time until the bucket is full again.
	Reset time.Duration
	// RetryAfter is, when the request was refused, the time until the
	// bucket holds a request again.
	RetryAfter time.Duration

	policyHeader string // "10;w=1"
}

// params is a bucket's shape.
type params struct {
	limit        rate.Limit
	burst        int
	policyHeader string
}

func newParams(rps float64, burst uint32) *params {
	b := api.Burst(rps, burst)
	w := max(1, int(math.Ceil(float64(b)/rps)))
	return &params{limit: rate.Limit(rps), burst: b, policyHeader: strconv.Itoa(b) + ";w=" + strconv.Itoa(w)}
}

type bucket struct {
	lim *rate.Limiter
	p   *params
}

type override struct {
	pattern api.IdentityPattern
	p       *params
}

type rule struct {
	name      string                // namespace/name
	spec      *meshv1.RateLimitSpec // what it was built from
	route     string                // "": every request of the service
	perSource bool
	p         *params
	overrides []override
	shared    *bucket  // the bucket of identities without their own
	buckets   *buckets // per identity; nil when every identity shares
}

// Limiter applies the RateLimits of one service. It is safe for concurrent
// use; the rules are fixed at Compile, the buckets fill and drain. A nil
// *Limiter allows everything.
type Limiter struct {
	clock   certs.Clock
	maxIDs  int // Config.MaxIdentities
	service string
	all     []*rule            // RateLimits without a route
	byRoute map[string][]*rule // route name → its RateLimits, then those of all
	rules   []*rule
}

// Compile builds a Limiter from the RateLimits of one service, each
// validated as meshd does at apply time. A RateLimit with a route applies
// only to requests that matched that Route; one without applies to every
// request. One per source identity (or whose overrides match the source)
// keeps a bucket per identity, at most Config.MaxIdentities of them.
func Compile(cfg Config, limits []*api.RateLimit) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxIdentities == 0 {
		cfg.MaxIdentities = DefaultMaxIdentities
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	sorted := slices.Clone(limits)
	for _, rl := range sorted {
		if rl == nil {
			return nil, fmt.Errorf("%w: nil rate limit", ErrInvalidLimit)
		}
	}
	slices.SortFunc(sorted, func(a, b *api.RateLimit) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	l := &Limiter{clock: cfg.Clock, maxIDs: cfg.MaxIdentities, byRoute: map[string][]*rule{}}
	var prev map[string]*rule
	if cfg.Previous != nil && cfg.Previous.maxIDs == cfg.MaxIdentities {
		prev = make(map[string]*rule, len(cfg.Previous.rules))
		for _, r := range cfg.Previous.rules {
			prev[r.name] = r
		}
	}
	for _, rl := range sorted {
		if err := rl.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidLimit, err)
		}
		s := rl.Spec
		if l.service == "" {
			l.service = s.GetService()
		} else if s.GetService() != l.service {
			return nil, fmt.Errorf("%w: %s is for %q, not %q", ErrMixedServices, api.KeyOf(rl), s.GetService(), l.service)
		}
		name := rl.Namespace + "/" + rl.Name
		if r := prev[name]; r != nil && proto.Equal(r.spec, s) {
			// Unchanged: the same rule, buckets and all.
			l.rules = append(l.rules, r)
			if r.route == "" {
				l.all = append(l.all, r)
			}
			continue
		}
		r := &rule{
			name: name, spec: s, route: s.GetRoute(), perSource: s.GetPerSourceIdentity(),
			p: newParams(s.GetRequestsPerSecond(), s.GetBurst()),
		}
		for i, o := range s.GetOverrides() {
			pat, err := api.ParseIdentityPattern(o.GetIdentity())
			if err != nil { // Validate checked it; keep the error anyway
				return nil, fmt.Errorf("%w: %s: spec.overrides[%d]: %w", ErrInvalidLimit, api.KeyOf(rl), i, err)
			}
			r.overrides = append(r.overrides, override{pattern: pat, p: newParams(o.GetRequestsPerSecond(), o.GetBurst())})
		}
		if !r.perSource {
			r.shared = &bucket{lim: rate.NewLimiter(r.p.limit, r.p.burst), p: r.p}
		}
		if r.perSource || len(r.overrides) > 0 {
			r.buckets = newBuckets(cfg.MaxIdentities, r.newBucket)
		}
		l.rules = append(l.rules, r)
		if r.route == "" {
			l.all = append(l.all, r)
		}
	}
	for _, r := range l.rules {
		if r.route != "" {
			l.byRoute[r.route] = append(l.byRoute[r.route], r)
		}
	}
	for route, rs := range l.byRoute {
		l.byRoute[route] = append(rs, l.all...)
	}
	return l, nil
}

// Allow takes one request from the buckets that apply to a request from
// identity that matched route ("" when it matched none): those of the
// RateLimits naming that route, then those of the service's RateLimits
// without a route. The request is allowed only if every one has room; the
// first without room refuses it (tokens already taken from the ones
// before are not given back, as in Envoy). Allow does not allocate,
// except to create a bucket for an identity it has not seen (or has
// forgotten).
func (l *Limiter) Allow(route, identity string) Result {
	if l == nil {
		return Result{Allowed: true}
	}
	rules := l.all
	if route != "" {
		if rs, ok := l.byRoute[route]; ok {
			rules = rs
		}
	}
	if len(rules) == 0 {
		return Result{Allowed: true}
	}
	now := l.clock.Now()
	var res Result
	for i, r := range rules {
		b := r.bucket(identity)
		ok := b.lim.AllowN(now, 1)
		tokens := b.lim.TokensAt(now)
		cur := Result{
			Allowed: ok, Policy: r.name, Limit: b.p.burst,
			Remaining:    max(0, int(math.Floor(tokens))),
			Reset:        seconds((float64(b.p.burst) - tokens) / float64(b.p.limit)),
			policyHeader: b.p.policyHeader,
		}
		if !ok {
			cur.RetryAfter = seconds((1 - tokens) / float64(b.p.limit))
			return cur
		}
		if i == 0 || cur.Remaining < res.Remaining {
			res = cur
		}
	}
	return res
}

func seconds(s float64) time.Duration {
	if !(s > 0) {
		return 0
	}
	return time.Duration(math.Ceil(s * float64(time.Second)))
}

// bucket returns the bucket of identity under r.
func (r *rule) bucket(identity string) *bucket {
	if r.buckets == nil {
		return r.shared
	}
	return r.buckets.get(identity)
}

// newBucket makes the bucket of an identity not seen (or forgotten): that
// of the first override matching it, else the rule's own when each source
// gets one, else the shared bucket (remembered too, so that the overrides
// are matched once per identity rather than on every request).
func (r *rule) newBucket(identity string) *bucket {
	for _, o := range r.overrides {
		if o.pattern.Match(identity) {
			return &bucket{lim: rate.NewLimiter(o.p.limit, o.p.burst), p: o.p}
		}
	}
	if !r.perSource {
		return r.shared
	}
	return &bucket{lim: rate.NewLimiter(r.p.limit, r.p.burst), p: r.p}
}

// Identities returns how many per-identity buckets the Limiter holds, over
// all its RateLimits; each holds at most Config.MaxIdentities.
func (l *Limiter) Identities() int {
	if l == nil {
		return 0
	}
	n := 0
	for _, r := range l.rules {
		if r.buckets != nil {
			n += r.buckets.len()
		}
	}
	return n
}

// Service returns the service the RateLimits are for ("" without any).
func (l *Limiter) Service() string {
	if l == nil {
		return ""
	}
	return l.service
}
