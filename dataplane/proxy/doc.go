// Package proxy is mesh-proxy's data path: the listeners and the forwarding
// between the app, other proxies and clients outside the mesh.
//
//   - Outbound is the app's way out: a local plain port per upstream
//     service, and one HTTP port that routes by Host ("api", "api.ns",
//     "api.ns.svc", optional ":port"). Each request is matched against the
//     service's Routes (path, headers, method), split over the route's
//     weighted backends, balanced over the backend's endpoints (power of
//     two choices over least outstanding requests, outlier ejection),
//     timed out and retried as the route says, and carried over one
//     long-lived HTTP/2 mTLS connection per remote proxy. A remote must
//     present the SPIFFE ID its endpoint was announced with, which must be
//     allowed to serve the service. A destination outside the mesh gets
//     502 and nothing is sent. Ports declared "tcp" are relayed as byte
//     streams (an HTTP/2 CONNECT stream each); gRPC and WebSocket upgrades
//     pass through.
//   - Inbound terminates mTLS from proxies of our trust domain and forwards
//     to the app on localhost, to the port and in the protocol HeaderTarget
//     names (HTTP/1.1, h2c for http2 and grpc, TCP), setting
//     X-Mesh-Peer-Id to the caller's verified SPIFFE ID (after removing
//     any X-Mesh-* and X-Forwarded-Client-Cert header the caller sent).
//   - Public serves HTTPS without client certificates, with a certificate
//     from files that is reloaded in place, in front of the same app.
//
// What the Outbound and the Inbound route by is a Table compiled from a
// config snapshot (CompileTable) and swapped in whole (Outbound.Install,
// Inbound.SetTable): the next request, also on a connection already open,
// uses it. Every request carries an X-Request-Id (kept if valid, made if
// not); traceparent and other end-to-end headers pass through.
//
// What the Inbound enforces is a Policy compiled from the same snapshot
// (CompilePolicy) and swapped in whole (Inbound.SetPolicy): every request
// has its raw path normalized (pathnorm; 400 when refused; the app gets
// the normalized form), is authorized with the peer's SPIFFE ID, method
// and path (authz; 403), rate-limited per route and source identity
// (ratelimit; 429), logged (accesslog, when an AccessLog enables it) and
// counted by source and destination service. HTTP/1.1 connections are
// checked for ambiguous framing (request smuggling; 400) before net/http
// reads them. Denied identities and revoked serials are refused at the
// handshake and their open connections closed, at the Inbound and, through
// Outbound.SetRevocations, the Outbound; a trust bundle that drops a root
// closes the connections that root alone verified.
//
//	pol, err := proxy.CompilePolicy(proxy.PolicyConfig{Namespace: "default", Service: "api"}, snap, prev)
//	if err != nil { /* NACK */ }
//	in.SetPolicy(pol)
//	out.SetRevocations(pol.Revocations())
//
// The package takes sources (x509svid.Source, x509bundle.Source), not the
// agent that fills them: certificates are read at every handshake, so a
// rotation never rebuilds a listener nor cuts a live connection, and an
// expired SVID refuses new handshakes. Every part is Run(ctx) error and
// drains gracefully, within Limits.Drain, when ctx is cancelled.
//
// Usage, in a main that runs the parts under an errgroup:
//
//	reg := prometheus.NewRegistry()
//	metrics, err := proxy.NewMetrics(reg)
//	...
//	in, err := proxy.NewInbound(proxy.InboundConfig{
//		Addr: "0.0.0.0:15006", App: "127.0.0.1:8080",
//		SVID: svids, Bundle: bundles, Metrics: metrics, Logger: log,
//	})
//	...
//	up, err := proxy.ParseUpstream("api=127.0.0.1:15001")
//	out, err := proxy.NewOutbound(proxy.OutboundConfig{
//		Upstreams: []proxy.Upstream{up}, HTTPAddr: "127.0.0.1:15080",
//		SVID: svids, Bundle: bundles, Metrics: metrics,
//	})
//	...
//	// For each config snapshot:
//	table, err := proxy.CompileTable(proxy.TableConfig{Namespace: "default", Service: "web"}, snap)
//	if err != nil { /* NACK: the previous table stays */ }
//	in.SetTable(table)
//	out.Install(table)
//	...
//	g, ctx := errgroup.WithContext(ctx)
//	g.Go(func() error { return in.Run(ctx) })
//	g.Go(func() error { return out.Run(ctx) })
//	return g.Wait()
//
// Metrics (see NewMetrics) carry only bounded labels: the listener, the
// response class, the handshake failure reason, the decision, and at the
// inbound the source service (the caller's service account, at most
// MaxSourceServices values) and the destination service; never paths,
// Host names or identities.
package proxy
