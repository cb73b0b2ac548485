// Package applink is the proxy's link to the local app: the HTTP/1.1
// client that carries a request to the app on the handler's own goroutine
// (Client), and what the app receives of a request (Head), written
// straight from the incoming request on the direct path (Head.Write,
// Client.Do) or applied to ReverseProxy's request (Head.Rewrite).
//
// Contract:
//   - Client.RoundTrip and Client.Do send a request and return the app's
//     response, whose Body must be read to its end or closed. A connection
//     goes back to the pool only when its response was read to the end
//     with nothing after it and its framing was unambiguous (not both
//     Transfer-Encoding and Content-Length, no Transfer-Encoding in
//     HTTP/1.0); a pooled connection is checked before reuse (one
//     non-blocking MSG_PEEK, no allocation), so an app's extra bytes are
//     not read as the next request's answer, except by a replayable
//     request (idempotent, no body) on a connection idle for less than
//     CheckIdleAfter, which skips the check. A replayable request is also
//     written with the read of its answer (dataplane/internal/turn), which
//     waits on the poller without a read that finds nothing; an app that
//     shut its writing side but still reads and never answers is then
//     noticed at the response header timeout, not at once. Response headers are
//     bounded (1 MiB) and timed (Config.ResponseHeader); at most five 1xx
//     answers are taken. A cancelled request's connection is never reused.
//     Upgrades and Expect: 100-continue go through net/http's Transport.
//   - Head decides, for both paths, what the app receives: Addr, the
//     normalized Path the policy matched, X-Mesh-Peer-Id (Peer), and at the
//     public port (Public) this hop's X-Forwarded-For, -Host and -Proto
//     instead of the caller's. Hop-by-hop fields and those Connection
//     names, X-Mesh-* and X-Forwarded-Client-Cert never reach the app.
//     The caller's other headers are the listener's to clean before
//     (dataplane/proxy's sanitizer).
//   - Config bounds the link; zero fields take defaults (WithDefaults).
//
// applink imports no other package of the data path's rooms
// (dataplane/edge, dataplane/meshlink, dataplane/proxy); it imports
// dataplane/route for the idempotent-method rule,
// dataplane/internal/cancelhook (ending an exchange when its request is
// cancelled) and the other dataplane/internal helpers only.
package applink
