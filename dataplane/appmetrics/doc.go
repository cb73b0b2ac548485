// Package appmetrics merges the app's own metrics into the proxy's admin
// /metrics: a Merger is the prometheus.Gatherer the admin server serves.
//
// At each scrape of /metrics the app's endpoint (a Service's spec.metrics,
// or mesh-proxy --app-metrics PORT[/path], which inject fills from the
// pod's prometheus.io/port and prometheus.io/path annotations) is fetched
// on 127.0.0.1, bounded: 5 s, 10 MiB of body (after decompression), 10,000
// series; concurrent scrapes share one fetch. The Prometheus text format
// is parsed with prometheus/common/expfmt (legacy metric names). Every app
// series gets the label source="app" (the app's own "source" label is
// kept as exported_source); a family whose name (or one of its _bucket,
// _sum, _count, _total series) is one of the proxy's is renamed with the
// prefix app_, and dropped if that collides too. With format json, each
// mapping of spec.metrics.json turns one field of the app's JSON object
// (dot-separated keys to a number, or a boolean as 0/1) into the gauge or
// counter app_<name>, labelled source="app".
//
// A slow, broken, oversized or unparsable endpoint never breaks /metrics:
// the proxy's families are served, minimesh_proxy_app_metrics_up is 0 and
// minimesh_proxy_app_metrics_scrape_errors_total{reason} counts why
// (connect, timeout, status, too_large, parse, too_many_series; collision
// and json_field count families or fields left out of a good fetch).
//
//	m, _ := appmetrics.New(appmetrics.Config{Ours: reg})
//	m.Set(appmetrics.FromService(svc.Spec.GetMetrics())) // nil: off
//	admin.New(admin.Config{Registry: reg, Gatherer: m, ...})
package appmetrics
