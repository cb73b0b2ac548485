package sidecar

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"minimesh/api"
	"minimesh/dataplane/agent"
	"minimesh/dataplane/logrecord"
	"minimesh/dataplane/logship"
	meshv1 "minimesh/proto/mesh/v1"
)

// SpoolSubdir is the log shipper's spool inside --spool-dir, made 0700.
const SpoolSubdir = "logship"

// addShipping opens the log shipper's spool when Config.SpoolDir is set
// (resuming what it holds) and adds its task and its Part: the
// LogShipping of this proxy's service switches shipping on, off or changes
// it. Without --spool-dir a LogShipping for this service is NACKed.
func (s *Sidecar) addShipping(ag *agent.Agent) error {
	ns := s.cfg.Namespace
	if ns == "" {
		ns = "default"
	}
	part := &shippingPart{namespace: ns, service: s.cfg.Service}
	s.ap.parts = append(s.ap.parts, part)
	if s.cfg.SpoolDir == "" {
		return nil
	}
	pod := s.cfg.Pod
	if pod == "" {
		pod, _ = os.Hostname() // a pod's hostname is its name
	}
	sh, err := logship.New(logship.Config{
		// Inside --spool-dir, which may be a volume's root: in Kubernetes
		// an emptyDir is root's and 0777, and the spool must be ours.
		SpoolDir: filepath.Join(s.cfg.SpoolDir, SpoolSubdir), Service: s.cfg.Service, Pod: pod, Instance: ag.InstanceID,
		Logger: s.cfg.Logger.With("component", "logship"), Registerer: s.cfg.Registry,
	})
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	part.shipper = sh
	s.shipper = sh
	// The shipper outlives the other tasks: it stops only when Run
	// returns (a closer), after the listeners drained, so the access-log
	// lines of the last requests are shipped too.
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var started atomic.Bool
	s.add("logship", func(runCtx context.Context) error {
		started.Store(true)
		go func() { done <- sh.Run(ctx) }()
		<-runCtx.Done()
		return nil
	})
	s.closers = append(s.closers, func() error {
		stop()
		if !started.Load() {
			return nil
		}
		return <-done
	})
	return nil
}

// LogSink is where the proxy's log records go to be shipped (the access
// log's tee, the log adapter's records): nil without --spool-dir. It
// takes records only while a LogShipping applies.
func (s *Sidecar) LogSink() logrecord.Sink {
	if s.shipper == nil {
		return nil
	}
	return s.shipper
}

// shippingPart applies the LogShipping of this proxy's service.
type shippingPart struct {
	namespace, service string
	shipper            *logship.Shipper // nil without --spool-dir
}

// Prepare implements Part.
func (p *shippingPart) Prepare(snap *meshv1.Snapshot) (func(), error) {
	var mine []*api.LogShipping
	for _, r := range snap.GetResources() {
		if r.GetLogShipping() == nil {
			continue
		}
		o, err := api.FromProto(r)
		if err != nil {
			return nil, err
		}
		if ls := o.(*api.LogShipping); ls.Namespace == p.namespace && ls.ServiceName() == p.service {
			mine = append(mine, ls)
		}
	}
	// meshd lets one through per service; should there be several, the
	// first in name order applies.
	slices.SortFunc(mine, func(a, b *api.LogShipping) int { return strings.Compare(a.Name, b.Name) })
	var o *api.LogShipping
	if len(mine) > 0 {
		o = mine[0]
	}
	if p.shipper == nil {
		if o != nil {
			return nil, fmt.Errorf("LogShipping %s/%s: this proxy has no --spool-dir, so its logs cannot be shipped (meshctl inject adds the mesh-spool volume and --spool-dir)", o.Namespace, o.Name)
		}
		return func() {}, nil
	}
	return p.shipper.Prepare(o)
}
