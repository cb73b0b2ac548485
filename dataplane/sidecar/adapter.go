package sidecar

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"minimesh/api"
	"minimesh/dataplane/accesslog"
	"minimesh/dataplane/agent"
	"minimesh/dataplane/appmetrics"
	"minimesh/dataplane/logadapter"
	"minimesh/dataplane/logrecord"
	meshv1 "minimesh/proto/mesh/v1"
)

// addAdapter adds the adapter role: the log adapter (the LogAdapters of
// this proxy's service follow the app's log files in SharedDir; their
// records go to the output — stdout or the access-log file — and to
// LogSink, the shipper, when there is one) and the merge of the app's
// metrics into /metrics (the Service's spec.metrics, else
// Config.AppMetrics). It returns the Gatherer the admin server serves.
// Both are applied from snapshots by adapterPart.
func (s *Sidecar) addAdapter(ag *agent.Agent) (*appmetrics.Merger, error) {
	cfg := s.cfg
	flagTarget, err := appmetrics.ParseFlag(cfg.AppMetrics)
	if err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	merger, err := appmetrics.New(appmetrics.Config{Ours: cfg.Registry, Logger: cfg.Logger.With("component", "appmetrics")})
	if err != nil {
		return nil, err
	}
	merger.Set(flagTarget)
	ns := cfg.Namespace
	if ns == "" {
		ns = "default"
	}
	part := &adapterPart{namespace: ns, service: cfg.Service, merger: merger, flagTarget: flagTarget}
	s.ap.parts = append(s.ap.parts, part)
	if cfg.SharedDir == "" {
		return merger, nil
	}
	w, closeW, err := s.logOutput()
	if err != nil {
		return nil, err
	}
	out, err := logadapter.NewOutput(logadapter.OutputConfig{Writer: w, Registerer: cfg.Registry})
	if err != nil {
		return nil, err
	}
	sinks := logrecord.Sinks{out}
	progress := []func() (uint64, uint64){out.Progress}
	if s.shipper != nil {
		// Offsets are persisted only past what the output wrote and the
		// shipper spooled: a killed proxy loses no record of either.
		sinks = append(sinks, s.shipper)
		progress = append(progress, s.shipper.Progress)
	}
	pod := cfg.Pod
	if pod == "" {
		pod, _ = os.Hostname()
	}
	svid := ag.SVIDSource()
	a, err := logadapter.New(logadapter.Config{
		SharedDir: cfg.SharedDir, StateDir: cfg.StateDir, Sink: sinks, Progress: progress, Service: cfg.Service, Pod: pod,
		Identity: func() string {
			if sv, err := svid.GetX509SVID(); err == nil {
				return sv.ID.String()
			}
			return ""
		},
		Clock: cfg.Clock, Logger: cfg.Logger.With("component", "logadapter"), Registerer: cfg.Registry,
	})
	if err != nil {
		return nil, err
	}
	part.adapter = a
	s.add("logadapter", func(ctx context.Context) error {
		defer closeW()
		outCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan error, 1)
		go func() { done <- out.Run(outCtx) }()
		err := a.Run(ctx)
		// The adapter's last records (emitted at shutdown) are written
		// before the output stops.
		stop()
		<-done
		return err
	})
	return merger, nil
}

// logOutput is where the adapted records are written: the access log's
// destination (Config.AccessLog, or AccessLogFile opened again in append
// mode: each record is one write), else stdout.
func (s *Sidecar) logOutput() (io.Writer, func(), error) {
	if f := s.cfg.AccessLogFile; f != "" && f != "-" {
		fh, err := accesslog.OpenFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("sidecar: log adapter output: %w", err)
		}
		return fh, func() { _ = fh.Close() }, nil
	}
	if s.cfg.AccessLog != nil {
		return s.cfg.AccessLog, func() {}, nil
	}
	return os.Stdout, func() {}, nil
}

// adapterPart applies the LogAdapters of this proxy's service and its
// Service's spec.metrics.
type adapterPart struct {
	namespace, service string
	adapter            *logadapter.Adapter // nil without --shared-dir
	merger             *appmetrics.Merger
	flagTarget         *appmetrics.Target // --app-metrics
}

// Prepare implements Part.
func (p *adapterPart) Prepare(snap *meshv1.Snapshot) (func(), error) {
	var specs []*logadapter.Spec
	var las []*api.LogAdapter
	target := p.flagTarget
	for _, r := range snap.GetResources() {
		if r.GetLogAdapter() == nil && r.GetService() == nil {
			continue
		}
		o, err := api.FromProto(r)
		if err != nil {
			return nil, err
		}
		switch o := o.(type) {
		case *api.LogAdapter:
			if o.Namespace == p.namespace && o.ServiceName() == p.service {
				las = append(las, o)
			}
		case *api.Service:
			if o.Namespace == p.namespace && o.Name == p.service && o.Spec.GetMetrics() != nil {
				target = appmetrics.FromService(o.Spec.GetMetrics())
			}
		}
	}
	slices.SortFunc(las, func(a, b *api.LogAdapter) int { return strings.Compare(a.Name, b.Name) })
	for _, o := range las {
		if p.adapter == nil {
			return nil, fmt.Errorf("LogAdapter %s/%s: this proxy has no --shared-dir, where the app's log files are (meshctl inject adds it)", o.Namespace, o.Name)
		}
		sp, err := logadapter.Compile(o)
		if err != nil {
			return nil, err
		}
		specs = append(specs, sp)
	}
	return func() {
		if p.adapter != nil {
			p.adapter.Set(specs)
		}
		p.merger.Set(target)
	}, nil
}
