// Package sidecar assembles mesh-proxy from its parts: the agent (identity
// and registration with meshd), the inbound mTLS listener, the optional
// public HTTPS listener, the outbound upstream listeners and the admin
// server, each a Run(ctx) error task under one errgroup. cmd/mesh-proxy
// parses flags into a Config; tests run the very same Sidecar in-process.
//
// Snapshots are applied all or nothing by Parts (apply.go): policy (the
// inbound's authorization, rate limits and access log, and the revoked
// identities and serials for inbound and outbound; policy.go), then
// traffic (the routing table; traffic.go), then the ExternalServices
// (package external; external.go: their client certificates are loaded at
// Prepare, so a missing file is a NACK). The listeners of app traffic
// (inbound, public, outbound, transparent, --external) start only once the first
// snapshot is applied, from meshd or the state dir, and /ready is 503 until
// then: before it no AuthorizationPolicy is in force (fail closed).
// POST /quitquitquit on the admin port (loopback callers, with the header
// X-Mesh-Admin: 1) shuts the proxy down as SIGTERM does, draining for
// Config.Drain (drain.go). /config and /gitsync are served to loopback
// clients only, their secrets redacted.
//
// The adapter role (adapter.go): the LogAdapters of the proxy's service
// run in logadapter.Adapter over --shared-dir (logs/ there is the app's,
// reserved from ConfigFiles); each record is offered to
// logrecord.Sinks{the output, LogSink()}: the output writes to the access
// log's destination (Config.AccessLog, AccessLogFile, else stdout) from a
// bounded queue that drops and counts rather than wait, and LogSink is the
// log shipper when --spool-dir is set (shipping.go). A consumer of the
// adapter's records is added there: a Sink appended to those Sinks.
// The admin /metrics serves an appmetrics.Merger: the proxy's registry
// plus the app's endpoint (the Service's spec.metrics, else
// Config.AppMetrics from --app-metrics).
//
//	sc, err := sidecar.New(sidecar.Config{ControlPlane: "127.0.0.1:15010", Token: tok, CAPin: pin,
//		Service: "api", App: "127.0.0.1:8080", Inbound: "127.0.0.1:15006",
//		Advertise: "127.0.0.1:15006", Admin: "127.0.0.1:15000", StateDir: dir})
//	err = sc.Run(ctx)
package sidecar
