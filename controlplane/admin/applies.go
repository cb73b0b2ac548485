package admin

import (
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshv1 "minimesh/proto/mesh/v1"
)

// Outcomes of minimesh_meshd_applies_total.
var applyOutcomes = []string{"applied", "unchanged", "dry_run", "invalid", "conflict", "unavailable", "error"}

func newApplies() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minimesh_meshd_applies_total",
		Help: "Apply requests by outcome: applied (a new revision), unchanged (nothing to write), dry_run, invalid (refused: InvalidArgument), conflict (FailedPrecondition, Aborted), unavailable (the store), error (anything else).",
	}, []string{"outcome"})
	for _, o := range applyOutcomes {
		c.WithLabelValues(o)
	}
	return c
}

// countApply counts one Apply's outcome (deferred by Apply).
func (s *Server) countApply(req *meshv1.ApplyRequest, resp *meshv1.ApplyResponse, err error) {
	s.applies.WithLabelValues(applyOutcome(req, resp, err)).Inc()
}

func applyOutcome(req *meshv1.ApplyRequest, resp *meshv1.ApplyResponse, err error) string {
	if err != nil {
		switch status.Code(err) {
		case codes.InvalidArgument:
			return "invalid"
		case codes.FailedPrecondition, codes.Aborted:
			return "conflict"
		case codes.Unavailable:
			return "unavailable"
		}
		return "error"
	}
	if req.GetDryRun() {
		return "dry_run"
	}
	for _, r := range resp.GetResults() {
		if r.GetAction() != "unchanged" {
			return "applied"
		}
	}
	return "unchanged"
}
