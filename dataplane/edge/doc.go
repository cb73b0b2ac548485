// Package edge is where a connection enters a listener of the proxy:
// TLS handshakes done in our own accept path (TLSListener), the HTTP/1.1
// framing checker that runs ahead of net/http (Strict), and the server
// set-up every listener shares (NewServer, Serve, Listen). The inbound
// (mTLS from proxies) and the public port (TLS from anyone) both use it.
//
// Contract:
//   - TLSListener runs each handshake in its own goroutine with a
//     deadline (TLSOptions.Timeout) and at most TLSOptions.MaxPending at a
//     time; only finished handshakes that TLSOptions.Admit accepts are
//     handed out. Every failure goes to TLSOptions.OnFail, whose reason is
//     Classify's: one of the closed set Reasons. Close aborts handshakes
//     in flight and waits for their goroutines.
//   - Strict refuses, on HTTP/1.1 connections (a *tls.Conn not speaking
//     h2), what two servers could read as different requests: a line not
//     ended by CRLF, a lone CR, obs-fold, two Content-Length fields,
//     Content-Length with Transfer-Encoding, a Transfer-Encoding other than
//     "chunked", a bad chunk size, extension or trailer. The Read that
//     meets one returns ErrFraming, which net/http answers with 400 and a
//     closed connection. After a 101 to a WebSocket upgrade the connection
//     passes unchecked.
//   - Serve runs an http.Server until ctx ends, then drains for at most
//     drain and cuts what is left; it returns nil after a shutdown.
//   - ServeSplit does the same for a TLS listener, with h2 connections
//     served by the http.Server (net/http's HTTP/2) and HTTP/1.1 ones by
//     dataplane/h1's loop with the server's handler, limits, ConnContext
//     and ConnState; MESH_PROXY_HTTP1=nethttp (HTTP1Env) makes it Serve.
//
// edge imports dataplane/h1 and none of the data path's other rooms
// (dataplane/applink, dataplane/meshlink, dataplane/proxy).
package edge
