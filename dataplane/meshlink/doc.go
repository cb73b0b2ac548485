// Package meshlink is the link between two proxies: one long-lived
// HTTP/2 mTLS connection per remote proxy that every request shares as a
// stream (Link.H2), a bounded pool of HTTP/1.1 keep-alive mTLS
// connections whose requests are written and answered on the caller's
// goroutine (Link.Pool), an HTTP/1.1 connection for upgrades (Link.H1),
// and the byte pipe that relays a TCP stream over an HTTP/2 CONNECT
// stream (Pipe, StreamConn).
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
//   - Link.Pool keeps at most Config.MaxConns (64) HTTP/1.1 connections,
//     idle and in use, ALPN http/1.1 (a remote that does not agree gets
//     HTTP/2). A connection is reused only after an answer read to its end
//     that did not ask to close, of a request written whole and not
//     cancelled; before reuse a non-blocking MSG_PEEK finds it empty (a
//     connection the remote closed, or with bytes nobody asked for, is
//     dropped). A reused connection that fails before any byte of the
//     answer is replaced, and the request sent again if no byte of it
//     was written, or if it is idempotent (or has an Idempotency-Key) and
//     its body can be had again: net/http's rule. A replayable request
//     without a body is written with the read of its answer
//     (dataplane/internal/turn: the read waits on the poller first, with
//     no read that finds nothing). Idle connections close
//     after Config.Idle; CloseIdleConnections closes the idle ones, and
//     those in use when their request ends. A request finding all
//     MaxConns busy for Config.PoolWait (1s) goes over Link.H2.
//   - Pool.Do sends a request (without a body, or with one of known
//     length) whose head a Head writes (a proxy's head written straight
//     from the request it received; a body of unknown length is refused):
//     1xx answers go to Head.Got1xx, the request's Close does not close
//     the pooled connection, and a request that would overflow to
//     Link.H2 goes as Head.Request. Reuse, replay and bounds are
//     RoundTrip's.
//   - Pipe copies both ways until both directions end, passing each
//     end of input on as a half-close, or until nothing moves for idle;
//     then it closes both sides. Its buffers come from BufferPool, a
//     bounded free list of 32 KiB buffers (also ReverseProxy's).
//
// meshlink imports dataplane/edge (Classify) and none of the other rooms
// (dataplane/applink, dataplane/proxy); and dataplane/internal/cancelhook,
// shared with applink, to end an exchange when its request is cancelled.
package meshlink
