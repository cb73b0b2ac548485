package sidecar

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"minimesh/api"
	"minimesh/dataplane/agent"
	"minimesh/dataplane/filesync"
	meshv1 "minimesh/proto/mesh/v1"
)

// Part is one piece of the proxy that takes its config from snapshots
// (routing, policy, logging). Prepare validates and compiles everything
// and returns a commit that swaps the compiled config in (an atomic
// pointer store, which cannot fail); it must change nothing itself.
type Part interface {
	Prepare(snap *meshv1.Snapshot) (commit func(), err error)
}

// applier applies snapshots all or nothing: every part prepares before
// anything changes, and a failure leaves the previous snapshot in force
// (the agent NACKs it with the error).
type applier struct {
	service string
	files   *filesync.Syncer // nil without --shared-dir
	parts   []Part
	// onApplied is called after each snapshot applied (the sidecar opens
	// its listeners after the first).
	onApplied func()

	mu      sync.Mutex
	applied bool
	lastErr error // why the last snapshot was refused, if it was
}

var _ agent.Applier = (*applier)(nil)

// Apply implements agent.Applier.
func (ap *applier) Apply(snap *meshv1.Snapshot) ([]*meshv1.FileStatus, error) {
	files, err := ap.apply(snap)
	ap.mu.Lock()
	ap.lastErr = err
	if err == nil {
		ap.applied = true
	}
	ap.mu.Unlock()
	if err == nil && ap.onApplied != nil {
		ap.onApplied()
	}
	return files, err
}

// errNotConfigured is /ready's reason before the first snapshot.
var errNotConfigured = errors.New("no config applied yet: waiting for the first snapshot from meshd; the listeners of app traffic are not open")

// ready returns nil once a snapshot has been applied, else why not.
func (ap *applier) ready() error {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	switch {
	case ap.applied:
		return nil
	case ap.lastErr != nil:
		return fmt.Errorf("%w (the last snapshot was refused: %v)", errNotConfigured, ap.lastErr)
	}
	return errNotConfigured
}

func (ap *applier) apply(snap *meshv1.Snapshot) ([]*meshv1.FileStatus, error) {
	if snap.GetVersion() == "" {
		return nil, errors.New("snapshot: version: empty")
	}
	var want []filesync.File
	var errs []error
	for i, r := range snap.GetResources() {
		o, err := api.FromProto(r)
		if err == nil {
			err = o.Validate()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("resources[%d]: %w", i, err))
			continue
		}
		if cf, ok := o.(*api.ConfigFile); ok && cf.Spec.GetService() == ap.service {
			want = append(want, filesync.File{Path: cf.Spec.GetPath(), Mode: fs.FileMode(cf.Spec.GetMode()), Content: []byte(cf.Spec.GetContent())})
		}
	}
	for i, e := range snap.GetEndpoints() {
		if _, _, err := net.SplitHostPort(e.GetAddress()); err != nil {
			errs = append(errs, fmt.Errorf("endpoints[%d]: address: %w", i, err))
		}
		if _, err := spiffeid.FromString(e.GetSpiffeId()); err != nil {
			errs = append(errs, fmt.Errorf("endpoints[%d]: spiffe_id: %w", i, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if ap.files == nil && len(want) > 0 {
		return nil, fmt.Errorf("%d ConfigFile resources for service %q, but this proxy has no --shared-dir", len(want), ap.service)
	}
	commits := make([]func(), 0, len(ap.parts))
	for _, p := range ap.parts {
		commit, err := p.Prepare(snap)
		if err != nil {
			return nil, err
		}
		commits = append(commits, commit)
	}
	// Files last among the fallible steps: filesync checks every path
	// before it writes any.
	if ap.files != nil {
		if _, err := ap.files.Sync(want); err != nil {
			return nil, err
		}
	}
	for _, c := range commits {
		c()
	}
	if ap.files == nil {
		return nil, nil
	}
	var out []*meshv1.FileStatus
	for _, f := range ap.files.Status().Files {
		out = append(out, &meshv1.FileStatus{Path: f.Path, Sha256: f.SHA256, WrittenAt: ts(f.Written)})
	}
	return out, nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
