package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"google.golang.org/protobuf/proto"

	"minimesh/certs"
	"minimesh/internal/fsguard"
	meshv1 "minimesh/proto/mesh/v1"
)

const snapshotFile = "snapshot.pb"

// maxSnapshotFile bounds what is read back from the state dir.
const maxSnapshotFile = 64 << 20

// Applier applies a snapshot to the proxy, all or nothing: on error nothing
// changed and the previous snapshot stays in force. It returns the files it
// wrote into the shared directory, for meshd's proxy-status.
type Applier interface {
	Apply(snap *meshv1.Snapshot) ([]*meshv1.FileStatus, error)
}

// Querier answers an operator request (topz, procz) with JSON.
type Querier func(ctx context.Context, req *meshv1.Request) ([]byte, error)

// Applied is the snapshot in force (nil before the first).
func (a *Agent) Applied() *meshv1.Snapshot { return a.applied.Load() }

// apply validates and applies snap; the trust bundle moves only when the
// rest applied. An already applied version is not applied again.
func (a *Agent) apply(snap *meshv1.Snapshot, persist bool) ([]*meshv1.FileStatus, error) {
	if cur := a.applied.Load(); cur != nil && cur.GetVersion() == snap.GetVersion() {
		return a.files, nil
	}
	var bundle *x509bundle.Bundle
	if len(snap.GetTrustBundle()) > 0 {
		roots, err := certs.ParseCertsDER(snap.GetTrustBundle())
		if err != nil {
			return nil, fmt.Errorf("trust_bundle: %w", err)
		}
		bundle = x509bundle.FromX509Authorities(a.cfg.TrustDomain, roots)
	}
	var files []*meshv1.FileStatus
	if a.cfg.Applier != nil {
		var err error
		if files, err = a.cfg.Applier.Apply(snap); err != nil {
			return nil, err
		}
	}
	if bundle != nil {
		a.setSnapshotBundle(bundle)
	}
	a.applied.Store(snap)
	a.files = files
	if persist {
		b, err := proto.Marshal(snap)
		if err == nil {
			err = certs.WriteFileAtomic(filepath.Join(a.cfg.StateDir, snapshotFile), b, 0o600)
		}
		if err != nil {
			a.cfg.Logger.Warn("could not keep the snapshot in the state dir; it is in force but a restart without meshd will not have it", "error", err)
		}
	}
	a.cfg.Logger.Info("snapshot applied", "version", snap.GetVersion(), "resources", len(snap.GetResources()), "endpoints", len(snap.GetEndpoints()))
	return files, nil
}

// loadLastGood applies the snapshot kept in the state dir, so a proxy that
// starts while meshd is unreachable serves its last good config.
func (a *Agent) loadLastGood() {
	p := filepath.Join(a.cfg.StateDir, snapshotFile)
	// Only a snapshot this proxy wrote (ours, 0600, not a link) is used.
	d, err := openStateDir(a.cfg.StateDir, false)
	if err != nil {
		a.cfg.Logger.Warn("ignoring the kept snapshot", "path", p, "error", err)
		return
	}
	b, err := d.ReadFile(snapshotFile, true, maxSnapshotFile)
	_ = d.Close()
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		if errors.Is(err, fsguard.ErrUntrusted) {
			a.refused.WithLabelValues(snapshotFile).Inc()
		}
		a.cfg.Logger.Warn("ignoring the kept snapshot", "path", p, "error", err)
		return
	}
	var snap meshv1.Snapshot
	if err := proto.Unmarshal(b, &snap); err != nil {
		a.cfg.Logger.Warn("ignoring the kept snapshot", "path", p, "error", err)
		return
	}
	if _, err := a.apply(&snap, false); err != nil {
		a.cfg.Logger.Warn("the kept snapshot does not apply", "version", snap.GetVersion(), "error", err)
		return
	}
	a.cfg.Logger.Info("serving the last good snapshot from the state dir", "version", snap.GetVersion())
}
