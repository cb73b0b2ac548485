// Package balancer picks the endpoint of an upstream service for each
// request: the power of two choices over least outstanding requests, with
// outlier detection.
//
// Pick draws two distinct endpoints at random and takes the one with fewer
// requests in flight, which tracks load almost as well as scanning every
// endpoint, at constant cost and without herding onto one "least loaded"
// endpoint. Done ends the request and records whether the endpoint served
// it; ConsecutiveFailures failures in a row eject the endpoint for
// BaseEjection times the number of its ejections, capped at MaxEjection,
// but never more than MaxEjectedPercent (at most half) of the endpoints
// are out at once, so a wide failure cannot empty the pool. An ejected
// endpoint returns by itself when its time is up (checked at the next
// Pick; no goroutine), with its failure count cleared.
//
// Usage:
//
//	b, err := balancer.New(balancer.Config{}) // defaults: 5 failures, 30s, 5m, 50%
//	...
//	b.SetTargets(targets) // whenever discovery changes; state survives by Addr
//	...
//	e, err := b.Pick()
//	if err != nil { /* 503: no endpoints */ }
//	resp, err := send(e.Addr, e.Identity)
//	b.Done(e, err == nil && resp.StatusCode < 500)
//
// Pick and Done are safe for concurrent use and do not allocate.
package balancer
