// Package observability holds minimesh's monitoring files and their tests:
// the Grafana dashboard (dashboard.json), the alerts as a PrometheusRule
// (prometheusrule.yaml) with their promtool unit tests (rules_test.yaml),
// and the PodMonitors (podmonitor.yaml). The tests decode the Kubernetes
// objects strictly with the Prometheus Operator's Go types, run promtool,
// and evaluate every alert and panel query in Debian's prometheus while it
// scrapes a running mesh.
package observability
