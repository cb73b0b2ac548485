// Package external is the proxy's ambassador: it reaches the
// ExternalServices pushed by meshd on the app's behalf, so the app speaks
// plain TCP or HTTP to localhost and needs no TLS code, credentials or
// per-environment addresses (the Cloud SQL Proxy pattern).
//
// A Set is a sidecar Part: Prepare compiles each ExternalService of the
// snapshot (its CA pool, server name, client certificate read from its
// files, hosts, timeouts) and refuses the snapshot when something local to
// the pod fails (a client certificate file missing or unreadable, a pair
// that does not match), naming the resource and the reason; the last good
// config stays. Run re-reads the client certificate files every
// Config.ReloadEvery and swaps a changed pair in; a pair that no longer
// loads is logged and the last good one stays.
//
// Each service originates TLS 1.2+ (1.3 preferred) for protocols tls and
// https, verifying the server against caBundle (or the system roots) and
// its server name (serverName, else the first host); verification is
// never skipped. A connection goes to one of the hosts picked by a
// balancer.Balancer (power of two choices, ejection after consecutive
// connect or handshake failures, as for mesh endpoints), and a failed
// connect is retried (Config.ConnectAttempts, each bounded by
// connectTimeout). HTTP and HTTPS requests share a bounded pool of
// keep-alive connections per service, closed after idleTimeout, and wait
// at most Config.ResponseHeader (60s) for a response head; TLS and
// TCP connections are relayed one for one, at most Config.MaxConns at once
// per service.
//
// Serve runs a --external listener for one name; Route finds the HTTP
// service that a Host names, for the outbound's Host-routed port.
package external
