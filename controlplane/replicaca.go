package controlplane

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"minimesh/certs"
	"minimesh/controlplane/authn"
	"minimesh/controlplane/store"
	"minimesh/internal/version"
)

// One intermediate per replica (etcd stores).
//
// The store holds the CA state as before: the root (and during a rotation
// the next and retired roots) with its key, sealed with --ca-key-file, and
// the intermediate the state format carries (no replica signs with that
// one on etcd). Each replica signs with an intermediate of its own (path
// length 0, ReplicaIntermediateTTL) that it issues from the active root at
// its start and again past half its life; its key is only ever in this
// process's memory, never stored. When the stored CA changes (a rotation
// step by the leader), every replica sees the new value in its cache at its
// next check (RotationCheck) and takes it: a new active root gets it a new
// intermediate from that root, anything else keeps the one it has.
//
// Every replica intermediate is recorded (TableIntermediates). One stops
// signing when it is re-issued, when its replica stops, or, for a replica
// that died, when the leader finds no live replica of its name (the
// leased replicas/NAME key). It is then retired, and once every workload
// SVID it signed has expired (RetiredAt + SVIDTTL) the leader adds its
// serial to the revocations table until its NotAfter, so it is in every
// snapshot's revoked_serials and proxies refuse any chain through it (a
// key taken from a replica's memory mints nothing usable after that). We
// revoke at that point rather than at retirement because revoking at
// once would refuse the SVIDs it signed for proxies still using them.
//
// On bbolt (one process) nothing changes: meshd signs with the stored
// intermediate, rotated by RotateIntermediate as before.

// ReplicaIntermediateTTL is the lifetime of a replica's own intermediate;
// it is re-issued at half of it.
const ReplicaIntermediateTTL = 48 * time.Hour

// replicaState is the stored CA as this replica last loaded it.
type replicaState struct {
	stored *certs.CA // the CA state in the store (guarded by rotateMu)
	raw    []byte    // its stored value
}

// ReplicaInfo is what a replica announces under replicas/NAME.
type ReplicaInfo struct {
	Version string `json:"version"`
	// Schema is the newest store schema this replica reads and writes.
	Schema int `json:"schema"`
	// CacheLagSeconds and At: how far its cache trailed the store when it
	// last announced itself, and when (re-announced every few seconds).
	CacheLagSeconds float64   `json:"cache_lag_seconds,omitempty"`
	At              time.Time `json:"at,omitzero"`
	// Address is where the other replicas reach its gRPC (stats
	// fan-out); "" when it listens on a wildcard without
	// --advertise-address.
	Address string `json:"address,omitempty"`
}

// Version is meshd's version, announced by every replica: the build's
// (internal/version, set by the linker), so replicas of versions N and N+1
// can be told apart during a rolling upgrade.
var Version = version.Version

func (s *Server) perReplicaCA() bool { return s.cfg.Etcd != nil }

// caBase is the CA every rotation step starts from: the stored one on
// etcd (whose intermediate no replica signs with), the one in force else.
func (s *Server) caBase() *certs.CA {
	if s.perReplicaCA() {
		return s.rep.stored
	}
	return s.ca.get()
}

// ownCA turns the stored CA into the one this replica signs with: on
// etcd, the same roots with an intermediate of its own, recorded; the
// replica announces itself first, so the leader never takes the new
// record for an orphan.
func (s *Server) ownCA(stored *certs.CA) (*certs.CA, error) {
	if !s.perReplicaCA() {
		return stored, nil
	}
	info, err := json.Marshal(s.replicaInfo())
	if err != nil {
		return nil, err
	}
	if err := s.store.SetReplicaInfo(string(info)); err != nil {
		return nil, fmt.Errorf("controlplane: announce this replica: %w", err)
	}
	raw, err := s.store.Meta(caMetaKey)
	if err != nil {
		return nil, err
	}
	s.rep = replicaState{stored: stored, raw: raw}
	own, err := stored.WithOwnIntermediate(ReplicaIntermediateTTL)
	if err != nil {
		return nil, fmt.Errorf("controlplane: this replica's intermediate: %w", err)
	}
	if err := s.recordIntermediate(own); err != nil {
		return nil, err
	}
	s.cfg.Logger.Info("signing with this replica's own intermediate", "replica", s.store.Replica(), "serial", authn.Serial(own.Intermediate()), "not_after", own.Intermediate().NotAfter)
	return own, nil
}

func (s *Server) recordIntermediate(ca *certs.CA) error {
	in := ca.Intermediate()
	rec := &store.Intermediate{Serial: authn.Serial(in), Replica: s.store.Replica(), RootPin: ca.RootPin(), IssuedAt: s.cfg.Clock.Now(), NotAfter: in.NotAfter}
	if err := s.store.Update(func(tx *store.Txn) error { return tx.Put(store.TableIntermediates, rec) }); err != nil {
		return fmt.Errorf("controlplane: record this replica's intermediate: %w", err)
	}
	return nil
}

// retireIntermediate marks one of this replica's intermediates as no
// longer signing.
func (s *Server) retireIntermediate(in *x509.Certificate) error {
	now := s.cfg.Clock.Now()
	serial := authn.Serial(in)
	return s.store.Update(func(tx *store.Txn) error {
		rec := &store.Intermediate{Serial: serial, Replica: s.store.Replica(), NotAfter: in.NotAfter, IssuedAt: in.NotBefore}
		if r, err := tx.Get(store.TableIntermediates, serial); err == nil {
			c := *r.(*store.Intermediate)
			rec = &c
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if !rec.RetiredAt.IsZero() {
			return nil
		}
		rec.RetiredAt, rec.RevokeAt = now, now.Add(s.cfg.SVIDTTL)
		return tx.Put(store.TableIntermediates, rec)
	})
}

// refreshCA is every replica's periodic CA check on etcd: it takes a
// stored CA that changed (another replica's rotation step) and re-issues
// its own intermediate past half its life.
func (s *Server) refreshCA() error {
	if !s.perReplicaCA() {
		return nil
	}
	s.rotateMu.Lock()
	defer s.rotateMu.Unlock()
	changed, err := s.reloadStoredLockedChanged()
	if err != nil {
		return err
	}
	return s.adoptLocked(s.rep.stored, changed)
}

// reloadStoredLocked takes the stored CA into s.rep when it changed.
// rotateMu is held.
func (s *Server) reloadStoredLocked() error {
	changed, err := s.reloadStoredLockedChanged()
	if err != nil || !changed {
		return err
	}
	// A CA that changed under this replica is put in force first, so a
	// step is never computed from (and adopted over) a CA this replica
	// has not adopted.
	return s.adoptLocked(s.rep.stored, true)
}

func (s *Server) reloadStoredLockedChanged() (bool, error) {
	raw, err := s.store.Meta(caMetaKey)
	if err != nil || raw == nil {
		return false, err
	}
	if bytes.Equal(raw, s.rep.raw) {
		return false, nil
	}
	caCfg := certs.CAConfig{TrustDomain: s.td, Clock: s.cfg.Clock, SVIDTTL: s.cfg.SVIDTTL}
	stored, _, err := loadCAValue(raw, s.caKey, caCfg)
	if err != nil {
		return false, fmt.Errorf("controlplane: reload the stored CA: %w", err)
	}
	s.rep = replicaState{stored: stored, raw: raw}
	return true, nil
}

// adoptLocked puts stored in force with this replica's intermediate: the
// one it has while the active root is the same and it is not past half its
// life, a new one otherwise (the old one is retired). rotateMu is held.
func (s *Server) adoptLocked(stored *certs.CA, changed bool) error {
	cur := s.ca.get()
	next, same := stored.WithIntermediateOf(cur)
	reissue := !same || cur.IntermediateNeedsRotation() || s.retiredByOther(cur)
	if !changed && !reissue {
		return nil
	}
	if reissue {
		var err error
		if next, err = stored.WithOwnIntermediate(ReplicaIntermediateTTL); err != nil {
			return fmt.Errorf("controlplane: re-issue this replica's intermediate: %w", err)
		}
		if err := s.recordIntermediate(next); err != nil {
			return err
		}
	}
	rootChanged := !next.Root().Equal(cur.Root())
	s.ca.set(next)
	s.bundle.Set(next.Bundle())
	dir := filepath.Join(s.cfg.DataDir, OperatorDir)
	if err := certs.WriteFileAtomic(filepath.Join(dir, certs.BundleFile), certs.EncodeCertsPEM(next.Bundle().X509Authorities()), 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.cfg.Logger.Warn("could not update the operator's bundle", "error", err)
	}
	if s.push != nil {
		s.push.Trigger()
	}
	if reissue {
		s.cfg.Logger.Info("re-issued this replica's intermediate", "replica", s.store.Replica(), "serial", authn.Serial(next.Intermediate()),
			"retired", authn.Serial(cur.Intermediate()), "active_root", next.RootPin(), "phase", phaseOf(next))
		if err := s.retireIntermediate(cur.Intermediate()); err != nil {
			s.cfg.Logger.Warn("could not record the retired intermediate (the leader retires it when this replica is gone)", "serial", authn.Serial(cur.Intermediate()), "error", err)
		}
	}
	if rootChanged && s.serving != nil {
		// meshd's own certificate and this replica's operator credential
		// move to the new root.
		if err := s.rotateServing(); err != nil {
			return err
		}
		if err := s.writeOperatorCredential(); err != nil {
			return err
		}
	}
	return nil
}

// retiredByOther reports whether ca's intermediate, still this replica's,
// is recorded as retired: the leader retires the intermediates of replicas
// whose replicas/NAME key it does not see, which a live replica that lost
// its etcd session (etcd unreachable longer than the lease) has not
// re-announced yet. Its serial is revoked an SVID lifetime later, so this
// replica must sign with a new one at once.
func (s *Server) retiredByOther(ca *certs.CA) bool {
	serial := authn.Serial(ca.Intermediate())
	retired := false
	_ = s.store.View(func(r *store.Reader) error {
		if rec, err := r.Get(store.TableIntermediates, serial); err == nil {
			retired = !rec.(*store.Intermediate).RetiredAt.IsZero()
		}
		return nil
	})
	if retired {
		s.cfg.Logger.Warn("this replica's intermediate was retired by the leader (this replica was not seen live); signing with a new one", "replica", s.store.Replica(), "serial", serial)
	}
	return retired
}

// retireOwn retires this replica's intermediate at shutdown.
func (s *Server) retireOwn() {
	if !s.perReplicaCA() {
		return
	}
	in := s.ca.get().Intermediate()
	if err := s.retireIntermediate(in); err != nil {
		s.cfg.Logger.Warn("could not retire this replica's intermediate at shutdown (the leader retires it when this replica's lease expires)", "serial", authn.Serial(in), "error", err)
	}
}

// maintainIntermediates is the leader's: it retires the intermediates of
// replicas that are gone, revokes retired ones whose SVIDs have all
// expired, and forgets expired ones.
func (s *Server) maintainIntermediates() error {
	if !s.perReplicaCA() {
		return nil
	}
	var recs []*store.Intermediate
	// Records first, then the live replicas: a replica announces itself
	// before it records an intermediate, so every record read here has its
	// replica in the list read after, unless that replica is gone.
	if err := s.store.View(func(r *store.Reader) error {
		l, err := r.List(store.TableIntermediates, "id")
		for _, x := range l {
			recs = append(recs, x.(*store.Intermediate))
		}
		return err
	}); err != nil || len(recs) == 0 {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	live, err := s.store.Replicas(ctx)
	if err != nil {
		return err
	}
	now := s.cfg.Clock.Now()
	budget := s.store.MaxWrites() / 2
	return s.store.UpdateAsLeader(func(tx *store.Txn) error {
		n := 0
		for _, old := range recs {
			if n >= budget {
				break
			}
			r, err := tx.Get(store.TableIntermediates, old.Serial)
			if errors.Is(err, store.ErrNotFound) {
				continue
			} else if err != nil {
				return err
			}
			rec := *r.(*store.Intermediate)
			switch _, alive := live[rec.Replica]; {
			case !now.Before(rec.NotAfter):
				n++
				if err := tx.Delete(store.TableIntermediates, rec.Serial); err != nil {
					return err
				}
			case rec.RetiredAt.IsZero() && !alive:
				rec.RetiredAt, rec.RevokeAt = now, now.Add(s.cfg.SVIDTTL)
				n++
				if err := tx.Put(store.TableIntermediates, &rec); err != nil {
					return err
				}
			case !rec.RetiredAt.IsZero() && !rec.Revoked && !now.Before(rec.RevokeAt):
				rec.Revoked = true
				n += 2
				if err := tx.Put(store.TableIntermediates, &rec); err != nil {
					return err
				}
				if err := tx.Put(store.TableRevocations, &store.Revocation{Serial: rec.Serial, SPIFFEID: s.td.ID().String(), NotAfter: rec.NotAfter, CreatedAt: now,
					Reason: "intermediate of meshd replica " + rec.Replica + " retired"}); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// sharedCAError explains a stored CA this replica cannot use on an etcd
// prefix: the replicas that share a prefix share one CA, so they need one
// trust domain and one --ca-key-file.
func (s *Server) sharedCAError(err error) error {
	where := "etcd " + s.store.Path()
	switch {
	case errors.Is(err, ErrTrustDomainMismatch):
		return fmt.Errorf("controlplane: %s holds the CA of another trust domain than this replica's --trust-domain %q (the trust domain is recorded, sealed, with the CA when the first replica created it); every meshd replica on one prefix must run with the same trust domain: %w", where, s.td.Name(), err)
	case errors.Is(err, ErrCAKeyMismatch):
		return fmt.Errorf("controlplane: %s holds a CA sealed under another --ca-key-file than this replica's (key id %s); every meshd replica on one prefix must be started with the same key file: %w", where, s.caKeyID(), err)
	}
	return fmt.Errorf("controlplane: stored CA: %w", err)
}

// SchemaUpgradeAllowed is the gate of a schema change on a shared store:
// nil when every live replica (its leased replicas/NAME key) announces
// that it reads schema n, else an error naming those that do not. A
// replica that runs version N+1 writes schema N+1 only past this gate, so
// replicas of version N never meet data they cannot read; a replica that
// starts on a newer schema than it knows refuses (store.ErrSchema).
func SchemaUpgradeAllowed(ctx context.Context, st *store.Store, n int) error {
	live, err := st.Replicas(ctx)
	if err != nil {
		return fmt.Errorf("controlplane: schema %d: live replicas: %w", n, err)
	}
	var behind []string
	for name, v := range live {
		var info ReplicaInfo
		if json.Unmarshal([]byte(v), &info) != nil || info.Schema < n {
			behind = append(behind, fmt.Sprintf("%s (version %q, schema %d)", name, info.Version, info.Schema))
		}
	}
	if len(behind) > 0 {
		sort.Strings(behind)
		return fmt.Errorf("controlplane: schema %d is not written while live replicas read older ones: %s", n, strings.Join(behind, ", "))
	}
	return nil
}
