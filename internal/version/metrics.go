package version

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// BuildInfo is the <prefix>_build_info gauge, always 1, whose labels say
// which build is running: version (Version) and goversion. meshd's is
// minimesh_meshd_build_info, mesh-proxy's minimesh_proxy_build_info.
func BuildInfo(prefix string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        prefix + "_build_info",
		Help:        "Always 1; the labels name the running build: version (the commit, as meshctl version says it) and goversion.",
		ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}
