// Package meshlink is the link between two proxies: one long-lived
// HTTP/2 mTLS connection per remote proxy that every request shares as a
// stream (Link.H2), an HTTP/1.1 connection for upgrades (Link.H1), and the
// byte pipe that relays a TCP stream over an HTTP/2 CONNECT stream (Pipe,
// StreamConn).
//
// Contract:
//   - A Link dials only Config.Addr, whatever a request's URL says, and
//     does the TLS handshake itself within Config.Handshake: a failure is
//     told to Config.OnHandshakeFail with its edge.Classify reason, and
//     every failure to reach the remote wraps ErrConnect (retries and
//     outlier detection tell it from a reset). Config.Admit may refuse a
//     finished handshake (revocation) or wrap the connection (tracking).
//   - Link.H2 dials once per address however many requests wait; a silent
//     connection is pinged after Config.KeepAlive and dropped without an
//     answer within Config.Handshake.
//   - Pipe copies both ways until both directions end, passing each
//     end of input on as a half-close, or until nothing moves for idle;
//     then it closes both sides. Its buffers come from BufferPool, a
//     bounded free list of 32 KiB buffers (also ReverseProxy's).
//
// meshlink imports dataplane/edge (Classify) and none of the other rooms
// (dataplane/applink, dataplane/proxy).
package meshlink
