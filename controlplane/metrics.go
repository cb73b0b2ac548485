package controlplane

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/certs"
	"minimesh/internal/version"
)

// caCollector reports the CA this replica signs with, read at scrape
// time from memory (on etcd, as of its last check of the stored CA):
//
//	minimesh_meshd_ca_root_expiration_timestamp_seconds{role,pin}  role active, next or retired
//	minimesh_meshd_ca_intermediate_expiration_timestamp_seconds
//	minimesh_meshd_ca_rotation_phase{phase}                         1 for the phase the rotation is in
//
// Expiry is a Unix time, as Prometheus's exporters say it: an alert
// compares it with time().
type caCollector struct {
	s                         *Server
	root, intermediate, phase *prometheus.Desc
}

func newCACollector(s *Server) *caCollector {
	return &caCollector{s: s,
		root: prometheus.NewDesc("minimesh_meshd_ca_root_expiration_timestamp_seconds",
			"When each root of the trust bundle expires, in seconds since the Unix epoch, by role (active: signs now; next: prepared by a rotation; retired: still trusted until the rotation ends) and SPKI pin.",
			[]string{"role", "pin"}, nil),
		intermediate: prometheus.NewDesc("minimesh_meshd_ca_intermediate_expiration_timestamp_seconds",
			"When the intermediate this replica signs SVIDs with expires, in seconds since the Unix epoch (re-issued past half its life).",
			nil, nil),
		phase: prometheus.NewDesc("minimesh_meshd_ca_rotation_phase",
			"The root rotation's phase: 1 for the one it is in (idle, prepared: the next root is in every bundle, activated: the next root signs), 0 for the others.",
			[]string{"phase"}, nil),
	}
}

func (c *caCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.root
	ch <- c.intermediate
	ch <- c.phase
}

func (c *caCollector) Collect(ch chan<- prometheus.Metric) {
	ca := c.s.ca.get()
	if ca == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.root, prometheus.GaugeValue, float64(ca.Root().NotAfter.Unix()), "active", ca.RootPin())
	if n := ca.NextRoot(); n != nil {
		ch <- prometheus.MustNewConstMetric(c.root, prometheus.GaugeValue, float64(n.NotAfter.Unix()), "next", certs.SPKIPin(n))
	}
	for _, r := range ca.RetiredRoots() {
		ch <- prometheus.MustNewConstMetric(c.root, prometheus.GaugeValue, float64(r.NotAfter.Unix()), "retired", certs.SPKIPin(r))
	}
	ch <- prometheus.MustNewConstMetric(c.intermediate, prometheus.GaugeValue, float64(ca.Intermediate().NotAfter.Unix()))
	current := phaseOf(ca)
	for _, p := range []string{PhaseIdle, PhasePrepared, PhaseActivated} {
		v := 0.0
		if p == current {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.phase, prometheus.GaugeValue, v, p)
	}
}

// registerMetrics registers meshd's own collectors: the CA's and
// minimesh_meshd_build_info (kept once on a registry two servers share).
func (s *Server) registerMetrics() error {
	if err := s.cfg.Registry.Register(newCACollector(s)); err != nil {
		return err
	}
	if err := s.cfg.Registry.Register(version.BuildInfo("minimesh_meshd")); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		return err
	}
	return nil
}
