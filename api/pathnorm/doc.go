// Package pathnorm turns an HTTP request path into the one canonical form
// that the inbound proxy both matches against policy and forwards to the
// app, so that no spelling of a protected path ("//admin", "/x/../admin",
// "/%61dmin", "/x/%2e%2e/admin") slips past a rule that names it, and no
// spelling that servers disagree about ("/admin;x", "/x%2F..%2Fadmin",
// "/x\..\admin", overlong UTF-8) is let through at all.
//
// Usage, in an HTTP handler:
//
//	p, err := pathnorm.Normalize(r.URL.EscapedPath())
//	if err != nil {
//		http.Error(w, "bad request path", http.StatusBadRequest)
//		return
//	}
//	decision := engine.Check(authz.Request{Peer: peer, Method: r.Method, Path: p})
//	...
//	r.URL.RawPath = p // forward what was matched
//	r.URL.Path, _ = url.PathUnescape(p)
//
// Normalize is a pure function: it does not allocate when the path is
// already canonical (the common case) and returns sentinel errors without
// allocating, so a flood of bad paths costs little.
//
// It is under api because it is part of what a resource's path means: a
// Route's path match and an AuthorizationPolicy's paths are compared in
// this form, by the proxies and by `meshctl authz explain` alike.
//
// Not handled, on purpose: a second round of decoding. "%2561dmin" is
// forwarded as is and means "/%61dmin"; an app that decodes twice must not
// be put behind path rules.
package pathnorm
