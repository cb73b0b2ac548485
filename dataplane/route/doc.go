// Package route compiles a service's Route resources into a Table that the
// outbound proxy consults on every request: which Route the request
// matches, which backend gets it (weighted), its timeout and its retry
// policy with a retry budget.
//
// Order: Routes are tried in order of their names and the first that
// matches wins (resources.proto's rule; name them "10-api", "90-default").
// Declaration order inside one Route does not matter: a Route matches when
// any of its matches does, and a match needs every condition it sets —
// path (exact, prefix as a plain string prefix, or an RE2 regex over the
// whole path), headers (exact, prefix, regex over the whole value, present
// or absent; a header with several values matches when one does; "Host"
// reads the request's Host) and methods. A request that matches no Route
// goes to the service itself, with no timeout and no retries.
//
// Paths are compared in pathnorm's canonical form: the caller passes a
// normalized path, and Compile normalizes the exact and prefix paths of
// the Routes the same way.
//
// Usage:
//
//	tbl, err := route.Compile(route.Config{}, routes) // []*api.Route of one service
//	if err != nil {
//		return err // NACK; keep the current table
//	}
//	current.Store(tbl) // an atomic.Pointer[route.Table]
//	...
//	r := current.Load().Match(route.Request{Method: req.Method, Path: p, Host: req.Host, Header: req.Header})
//	if r == nil { /* the service itself */ }
//	b := r.PickBackend()
//	r.Retry.Budget.Request()
//	for try := 0; ; try++ {
//		status, failure := send(b, r.Retry.PerTryTimeout)
//		if !r.Retry.Retry(route.Attempt{Method: req.Method, Retries: try, Failure: failure, Status: status, BodyBytes: n}) {
//			break
//		}
//	}
//
// Match, PickBackend, Retryable and the Budget do not allocate. A Table
// is immutable and safe for concurrent use; a new Table starts with fresh
// retry budgets.
package route
