// Package admin is mesh-proxy's admin HTTP server, on loopback by default:
//
//	GET /healthz  200 "ok" while the process serves
//	GET /ready    200 "ready" when Config.Ready returns nil, else 503 and the reason
//	GET /livez, /readyz  the same as /healthz and /ready, as meshd names them
//	GET /metrics  Prometheus exposition of Config.Registry
//	GET /certs    JSON: the current SVID (SPIFFE ID, serial, validity,
//	              expires_in) and the bundle's roots (subject, validity)
//
// More handlers are added with Handle before Run. Every request, to any
// endpoint, passes a guard first (guard.go): its Host must name the server
// (the IP and port the connection arrived on, as the kubelet's probes
// send; on loopback also localhost and the loopback IPs, any port), else
// 421; a method other than GET and HEAD needs the header X-Mesh-Admin: 1
// (browsers cannot send it cross-site without a preflight, never granted),
// else 403. LoopbackOnly wraps endpoints the pod network must not see.
// Refusals are counted in minimesh_admin_refused_total{reason}.
//
//	srv, err := admin.New(admin.Config{
//		Addr:     "127.0.0.1:15000",
//		Ready:    agent.Ready,
//		SVID:     svids,
//		Bundle:   bundles,
//		Registry: reg,
//	})
//	if err != nil {
//		return err
//	}
//	srv.Handle("GET /config", configHandler)
//	return srv.Run(ctx)
package admin
