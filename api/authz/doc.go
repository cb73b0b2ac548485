// Package authz decides, on every request into a service, whether its
// AuthorizationPolicies let the caller in: the caller's SPIFFE ID (from its
// verified certificate), the method and the normalized path.
//
// The rules, as resources.proto states them:
//   - a matching DENY rule denies, before any ALLOW rule is looked at;
//   - otherwise, when the service's enforced policies have ALLOW rules, the
//     request is allowed only if one of them matches (default deny);
//   - with no ALLOW rules the request is allowed;
//   - AUDIT rules decide nothing; a match is reported (Decision.Audit) so
//     the proxy logs it;
//   - a dry-run policy is evaluated as if enforced, but only reported: a
//     request it would deny is allowed with Decision.DryRun set.
//
// A rule matches when each condition it sets matches: any of its source
// identity patterns (api.IdentityPattern: "*", "spiffe://td/ns/*/sa/web",
// "spiffe://td/**"), any of its methods (compared exactly: GET does not
// cover HEAD; the proxies refuse lower-case methods before asking), any of
// its paths. Paths are
// exact or prefix (a plain string prefix: "/admin" covers "/administrator",
// write "/admin/" to stop at the segment), compared after both the rule's
// path and the request's have been put in pathnorm's canonical form.
// Case-insensitive paths compare ASCII letters without regard to case, and
// also let a non-ASCII letter of the request whose Unicode case mapping is
// an ASCII letter of the rule match it ("İ" for "i", "ı" for "I", the
// Kelvin sign for "k"), so these spellings cannot slip past a DENY rule.
//
// Usage: compile the policies of a service when they change and swap the
// Engine in atomically; check every request without allocating.
//
//	var current atomic.Pointer[authz.Engine]
//	...
//	e, err := authz.Compile(policies) // []*api.AuthorizationPolicy of one service
//	if err != nil {
//		return err // NACK: the proxy keeps its current engine
//	}
//	current.Store(e)
//	...
//	p, err := pathnorm.Normalize(r.URL.EscapedPath())
//	if err != nil { /* 400 */ }
//	d := current.Load().Check(authz.Request{Peer: peerID, Method: r.Method, Path: p})
//	if !d.Allowed { /* 403 */ }
//
// Explain runs the same code from a raw path and says which rule decided;
// it is what `meshctl authz explain` prints.
//
// The engine lives under api, not in the data plane, because it is what an
// AuthorizationPolicy means: the inbound proxy (dataplane/proxy) enforces
// its decisions and meshctl explains them, and an explanation is only true
// if both run this one code. It depends on api and pathnorm alone.
package authz
