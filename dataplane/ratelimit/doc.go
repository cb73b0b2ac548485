// Package ratelimit applies a service's RateLimit resources at the inbound
// proxy: token buckets (golang.org/x/time/rate) per RateLimit, one shared
// by every source or one per source identity, with per-identity overrides,
// and the 429 answer with Retry-After and RateLimit-* headers.
//
// Which buckets a request meets: the RateLimits naming the Route it
// matched, then those of the service without a route, in name order; the
// first without room refuses it. Within a RateLimit, a source identity
// that matches an override (exact SPIFFE ID or api.IdentityPattern; the
// first that matches wins) gets its own bucket at the override's rate;
// otherwise it shares the RateLimit's bucket, or gets its own when
// per_source_identity is set. Per-identity buckets live in a bounded,
// sharded LRU (Config.MaxIdentities, default 10000): a flood of distinct
// identities cannot grow memory, it only makes the oldest buckets be
// forgotten (and start full when their identity returns).
//
// Usage:
//
//	l, err := ratelimit.Compile(ratelimit.Config{}, limits) // []*api.RateLimit of one service
//	if err != nil {
//		return err // NACK; keep the current Limiter
//	}
//	current.Store(l) // an atomic.Pointer[ratelimit.Limiter]
//	...
//	res := current.Load().Allow(routeName, peerID)
//	if !res.Allowed {
//		ratelimit.WriteTooManyRequests(w, res) // 429, Retry-After, RateLimit-*
//		return
//	}
//	res.SetHeaders(w.Header()) // optional on allowed answers
//
// A new Limiter starts with full buckets. Allow does not allocate once an
// identity's bucket exists.
package ratelimit
