// Package h1 is the proxy's own HTTP/1.1 server loop: each connection's
// requests are read and answered on the connection's own goroutine, one at
// a time, with no background reader (but a watch for a client gone while a
// long request runs) and per-connection buffers reused, and
// passed to an ordinary http.Handler with an *http.Request and a
// ResponseWriter of ours (Flusher, Hijacker, and what
// http.ResponseController reaches through Unwrap).
//
// Contract:
//   - A request is accepted only if net/http's server would accept the
//     same bytes and the framing checker (dataplane/edge's Strict) would
//     let them through; then the handler sees what net/http's handler
//     would: method, target (RequestURI, URL), Proto, header fields
//     (canonical keys, values in order, Host moved to r.Host, Expect:
//     100-continue consumed, Transfer-Encoding moved to
//     r.TransferEncoding, Pragma: no-cache implying Cache-Control), Host,
//     Close, ContentLength, body bytes and trailers. FuzzH1VsNetHTTP in
//     dataplane/edge holds this.
//   - Refused: lines not ended by CRLF, obs-fold, a head over
//     MaxHeaderBytes (+4 KiB for the request line, as net/http) or with
//     more than MaxHeaderFields fields (431), more than one Content-Length
//     or Transfer-Encoding, both together, Transfer-Encoding other than
//     "chunked" or on HTTP/1.0, a bad chunk line or trailer, a version
//     other than HTTP/1.0 and 1.1 (505), a missing or bad Host (400).
//     A refused request is answered with its status and "Connection:
//     close", and the connection is closed.
//   - Timeouts: ReadHeaderTimeout from a request's first byte (the first
//     request: from the start) to the end of its head; IdleTimeout for the
//     wait between requests, and for every read of a body and every write
//     of an answer (a peer that stops reading or sending is cut).
//   - A client gone mid-request: once a handler has run for WatchAfter
//     (1s) with its request's body read, a one-byte read watches the
//     connection in the background; EOF or an error cancels the request's
//     context, a byte (a pipelined request) is kept for the next request.
//     The watch ends before the handler's return is followed by any other
//     read. Shorter requests pay a timer reset, nothing allocated.
//   - A Handler that is also a HeadServer is offered each common request's
//     Head (head.go) before an *http.Request is built, and serves it or
//     declines having written nothing; what is offered is what parseHead
//     reads as a request without a body that keeps its connection
//     (FuzzHeadVsParse).
//   - Answers go in order: the next request is read only after the answer
//     to the one before is written, so pipelined requests are safe.
//   - On a dataplane/internal/turn connection (the inbound's, whose peer
//     is a proxy's pool: one request at a time), a kept answer with nothing
//     of the next request buffered is written by the read of the next
//     request, which waits on the poller before reading. A peer that
//     pipelines there can find a request that arrived just before that
//     read unanswered until the idle timeout closes the connection (its
//     own connection only); the public and app-facing ports are plain
//     connections and never hold.
//   - Unread request body after the handler: up to 256 KiB is discarded
//     to keep the connection; more, or a body that a 100-continue was never
//     sent for, closes it after the answer.
//   - Shutdown closes idle connections, lets busy ones finish their answer
//     (with "Connection: close"), and waits; Close cuts everything, and
//     cancels the requests in flight.
package h1
