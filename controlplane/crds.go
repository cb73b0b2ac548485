package controlplane

import (
	"context"
	"time"

	"k8s.io/client-go/dynamic"

	"minimesh/controlplane/crd"
	"minimesh/controlplane/webhook"
)

// CRDConfig turns on the reconciler of the minimesh.io objects
// (controlplane/crd): off unless Dynamic is set (meshd --kube-api with
// access, and --watch-crds).
type CRDConfig struct {
	// Dynamic is the Kubernetes API client the informers and status
	// writes use.
	Dynamic dynamic.Interface
	// Resync and StatusEvery: see crd.Config (default 10s each).
	Resync, StatusEvery time.Duration
}

// validateFunc is the validating webhook's check when the reconciler is on.
func (s *Server) validateFunc() webhook.ValidateFunc {
	if s.cfg.CRD.Dynamic == nil {
		return nil
	}
	return crd.Validator{Admin: s.admin, Store: s.store}.Validate
}

// runCRDs reconciles the minimesh.io objects until ctx ends (the leader
// acts; the others only watch).
func (s *Server) runCRDs(ctx context.Context) {
	c := s.cfg.CRD
	if c.Dynamic == nil {
		return
	}
	r, err := crd.New(crd.Config{
		Dynamic:     c.Dynamic,
		Admin:       s.admin,
		Store:       s.store,
		Sync:        s.push.Sync,
		IsLeader:    s.store.IsLeader,
		Resync:      c.Resync,
		StatusEvery: c.StatusEvery,
		Clock:       s.cfg.Clock,
		Logger:      s.cfg.Logger.With("component", "crd"),
	})
	if err != nil {
		s.cfg.Logger.Error("could not start the minimesh.io reconciler", "error", err)
		return
	}
	_ = r.Run(ctx)
}
