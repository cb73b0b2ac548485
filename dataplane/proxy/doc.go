// Package proxy is mesh-proxy's data path: the listeners and the forwarding
// between the app, other proxies and clients outside the mesh.
//
//   - Inbound terminates mTLS from proxies of our trust domain and forwards
//     HTTP/1.1 and HTTP/2 to the app on localhost, setting X-Mesh-Peer-Id
//     to the caller's verified SPIFFE ID (after removing any X-Mesh-* and
//     X-Forwarded-Client-Cert header the caller sent).
//   - Public serves HTTPS without client certificates, with a certificate
//     from files that is reloaded in place, in front of the same app.
//   - Outbound gives the app one local plain-HTTP port per upstream and
//     carries its requests over one long-lived HTTP/2 mTLS connection to
//     the remote proxy, checking the remote's SPIFFE ID.
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
//	up, err := proxy.ParseUpstream("api=127.0.0.1:15001=10.0.0.7:15006=spiffe://minimesh.local/ns/default/sa/api")
//	out, err := proxy.NewOutbound(proxy.OutboundConfig{
//		Upstreams: []proxy.Upstream{up}, SVID: svids, Bundle: bundles, Metrics: metrics,
//	})
//	...
//	g, ctx := errgroup.WithContext(ctx)
//	g.Go(func() error { return in.Run(ctx) })
//	g.Go(func() error { return out.Run(ctx) })
//	return g.Wait()
//
// Metrics (see NewMetrics) carry only bounded labels: the listener, the
// response class and the handshake failure reason, never paths or
// identities.
package proxy
