package identity

import (
	"fmt"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/simplelru"
	"golang.org/x/time/rate"
)

// Defaults of SignLimits.
const (
	// DefaultInstanceEvery and DefaultInstanceBurst: one signature per 10 s
	// per bound instance, burst 5. A proxy renews at half its SVID's life
	// (30 min for 1 h SVIDs) and retries with backoff, so this never
	// touches a healthy proxy.
	DefaultInstanceEvery = 10 * time.Second
	DefaultInstanceBurst = 5
	// DefaultReplicas sizes the per-identity ceiling: this many replicas
	// of one identity (a Deployment) may all start at once (the burst) and
	// then renew at half their SVID's life, with a factor 2 of headroom.
	DefaultReplicas = 10000
	// DefaultMaxLimiters bounds each limiter table (LRU).
	DefaultMaxLimiters = 1 << 16
)

// SignLimits bound how fast SVIDs are signed, per bound instance (the
// identity and the instance ID in its certificate) and per identity.
// A zero field is its default.
type SignLimits struct {
	InstanceRate  rate.Limit // default 1 per DefaultInstanceEvery
	InstanceBurst int        // default DefaultInstanceBurst
	// IdentityRate default: 2·DefaultReplicas per SVID lifetime (twice
	// what 10 000 replicas renewing at half life need: 11/s for 1 h).
	IdentityRate  rate.Limit
	IdentityBurst int // default DefaultReplicas
	// MaxLimiters bounds each table; the least recently used limiter is
	// dropped (it is full again when next needed). Default DefaultMaxLimiters.
	MaxLimiters int
}

func (l SignLimits) withDefaults(svidTTL time.Duration) SignLimits {
	if l.InstanceRate == 0 {
		l.InstanceRate = rate.Every(DefaultInstanceEvery)
	}
	if l.InstanceBurst == 0 {
		l.InstanceBurst = DefaultInstanceBurst
	}
	if l.IdentityRate == 0 {
		l.IdentityRate = rate.Limit(2 * DefaultReplicas / svidTTL.Seconds())
	}
	if l.IdentityBurst == 0 {
		l.IdentityBurst = DefaultReplicas
	}
	if l.MaxLimiters <= 0 {
		l.MaxLimiters = DefaultMaxLimiters
	}
	return l
}

// RateLimitedError is a refusal to sign for now; RetryAfter is when the
// bucket that refused holds a token again. It wraps ErrRateLimited.
type RateLimitedError struct {
	// Scope is "instance" or "identity".
	Scope      string
	Key        string
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("%v: too many certificates signed for %s %s; retry in %s", ErrRateLimited, e.Scope, e.Key, e.RetryAfter.Round(time.Millisecond))
}

func (e *RateLimitedError) Unwrap() error { return ErrRateLimited }

// signLimiter holds the token buckets in two bounded LRU tables.
type signLimiter struct {
	cfg SignLimits

	mu         sync.Mutex
	instances  *lru.LRU // "<spiffe id> <instance>" -> *rate.Limiter
	identities *lru.LRU // spiffe id -> *rate.Limiter
}

func newSignLimiter(cfg SignLimits) *signLimiter {
	inst, _ := lru.NewLRU(cfg.MaxLimiters, nil)
	ids, _ := lru.NewLRU(cfg.MaxLimiters, nil)
	return &signLimiter{cfg: cfg, instances: inst, identities: ids}
}

// take spends one signature of the instance's and the identity's buckets,
// or neither (a *RateLimitedError). The instance's key includes the
// identity, so no identity can spend another's budget by naming its
// instance.
func (l *signLimiter) take(now time.Time, id, instance string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	ik := id + " " + instance
	inst := limiterFor(l.instances, ik, l.cfg.InstanceRate, l.cfg.InstanceBurst)
	idl := limiterFor(l.identities, id, l.cfg.IdentityRate, l.cfg.IdentityBurst)
	r1 := inst.ReserveN(now, 1)
	if d := delay(r1, now); d > 0 {
		return &RateLimitedError{Scope: "instance", Key: instance, RetryAfter: d}
	}
	r2 := idl.ReserveN(now, 1)
	if d := delay(r2, now); d > 0 {
		r1.CancelAt(now)
		return &RateLimitedError{Scope: "identity", Key: id, RetryAfter: d}
	}
	return nil
}

// delay is how long r must wait; a reservation that waits is cancelled.
func delay(r *rate.Reservation, now time.Time) time.Duration {
	if !r.OK() {
		return time.Hour // burst 0: never; say so with a long delay
	}
	d := r.DelayFrom(now)
	if d > 0 {
		r.CancelAt(now)
	}
	return d
}

func limiterFor(t *lru.LRU, key string, r rate.Limit, burst int) *rate.Limiter {
	if v, ok := t.Get(key); ok {
		return v.(*rate.Limiter)
	}
	l := rate.NewLimiter(r, burst)
	t.Add(key, l)
	return l
}
