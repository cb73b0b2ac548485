package controlplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"minimesh/certs"
	"minimesh/controlplane/push"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// Root rotation phases. The phase is not stored on its own: it is read off
// the CA state kept in bbolt (a prepared next root, or retired roots), so a
// restarted meshd resumes where it was.
const (
	PhaseIdle      = "idle"
	PhasePrepared  = "prepared"  // 1: the next root is in every bundle
	PhaseActivated = "activated" // 2: the next root signs; the old one is retired
)

func phaseOf(ca *certs.CA) string {
	switch {
	case ca.NextRoot() != nil:
		return PhasePrepared
	case len(ca.RetiredRoots()) > 0:
		return PhaseActivated
	default:
		return PhaseIdle
	}
}

// RotateCA starts a root rotation; during one, force moves it to its next
// phase without waiting for the proxies. Any replica does it: the step is
// computed from the stored CA and committed only if the store still holds
// that CA (a compare-and-swap in one etcd transaction), so an operator
// needs no leader, and a step that raced another replica's is refused
// rather than applied twice.
func (s *Server) RotateCA(force bool) (*meshv1.CAStatusResponse, error) {
	if err := s.refreshCA(); err != nil {
		return nil, err
	}
	switch phase := phaseOf(s.storedCA()); {
	case phase == PhaseIdle:
		if err := s.changeCA("prepare a new root", phase, true, (*certs.CA).PrepareRootRotation); err != nil {
			return nil, err
		}
	case !force:
		st, err := s.CAStatus()
		if err != nil {
			return nil, err
		}
		return nil, status.Errorf(codes.FailedPrecondition, "a root rotation is in progress (phase %s, waiting for %s); --force moves it on now", st.Phase, st.WaitingFor)
	default:
		if err := s.advanceCA(true); err != nil {
			return nil, err
		}
	}
	return s.CAStatus()
}

// storedCA is caBase read under rotateMu.
func (s *Server) storedCA() *certs.CA {
	s.rotateMu.Lock()
	defer s.rotateMu.Unlock()
	return s.caBase()
}

// advanceCA moves a rotation on when its condition holds (or force), and
// re-issues the intermediate past half its life.
func (s *Server) advanceCA(force bool) error {
	ca := s.storedCA()
	switch phase := phaseOf(ca); phase {
	case PhasePrepared:
		waiting, err := s.waitingForBundle(ca)
		if err != nil {
			return err
		}
		if len(waiting) == 0 || force {
			if err := s.changeCA("activate the new root", phase, force, (*certs.CA).ActivateNextRoot); err != nil {
				return err
			}
			if s.perReplicaCA() { // adoptLocked re-issued both from the new intermediate
				return nil
			}
			// meshd's own certificate and the operator's move to the new root.
			if err := s.rotateServing(); err != nil {
				return err
			}
			return s.writeOperatorCredential()
		}
	case PhaseActivated:
		waiting, err := s.waitingForSVIDs(ca)
		if err != nil {
			return err
		}
		if len(waiting) == 0 || force {
			return s.changeCA("drop the retired root", phase, force, (*certs.CA).DropRetiredRoots)
		}
	default:
		if ca.IntermediateNeedsRotation() {
			return s.changeCA("re-issue the intermediate", phase, false, (*certs.CA).RotateIntermediate)
		}
	}
	return nil
}

// changeCA applies one CA step to the stored CA, which must still be in
// phase from (what the caller decided on): stored first, then in force.
// byOperator is an operator's step (RotateCA), which any replica takes; the
// automatic steps (a rotation moving on once the proxies have caught up)
// are the leader's, fenced on its election key, since they are decided on
// the leader's reading of the proxies' state.
// On etcd the write is a compare-and-swap on the stored CA this replica
// holds, after taking any newer one (another replica's step): a step that
// lost a race is refused with FailedPrecondition naming the new phase,
// never applied on top of the other.
func (s *Server) changeCA(what, from string, byOperator bool, step func(*certs.CA) (*certs.CA, error)) error {
	s.rotateMu.Lock()
	defer s.rotateMu.Unlock()
	if s.perReplicaCA() {
		if err := s.reloadStoredLocked(); err != nil {
			return err
		}
	}
	base := s.caBase()
	if now := phaseOf(base); now != from {
		return status.Errorf(codes.FailedPrecondition, "the root rotation moved on meanwhile (phase %s, was %s): see `meshctl ca status`", now, from)
	}
	next, err := step(base)
	if err != nil {
		return fmt.Errorf("controlplane: %s: %w", what, err)
	}
	if s.perReplicaCA() {
		raw, err := swapCA(s.store, s.caKey, s.rep.raw, next, !byOperator)
		if errors.Is(err, errCAMoved) {
			return status.Errorf(codes.FailedPrecondition, "the root rotation moved on meanwhile (another replica changed the certificate authority while this one would %s): see `meshctl ca status` and try again", what)
		}
		if err != nil {
			return err
		}
		// This replica takes it now, the others at their next check.
		s.rep = replicaState{stored: next, raw: raw}
		if err := s.adoptLocked(next, true); err != nil {
			return err
		}
		s.cfg.Logger.Info("certificate authority changed", "step", what, "phase", phaseOf(next), "active_root", next.RootPin())
		return nil
	}
	if err := saveCA(s.store, s.caKey, next); err != nil {
		return err
	}
	s.ca.set(next)
	s.bundle.Set(next.Bundle())
	// meshctl's bundle file follows, so it trusts meshd's next certificate.
	dir := filepath.Join(s.cfg.DataDir, OperatorDir)
	if err := certs.WriteFileAtomic(filepath.Join(dir, certs.BundleFile), certs.EncodeCertsPEM(next.Bundle().X509Authorities()), 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.cfg.Logger.Warn("could not update the operator's bundle", "error", err)
	}
	s.push.Trigger()
	s.cfg.Logger.Info("certificate authority changed", "step", what, "phase", phaseOf(next), "active_root", next.RootPin())
	return nil
}

// writeOperatorCredential re-issues the operator credential: the current
// one chains to the retired root.
func (s *Server) writeOperatorCredential() error { return s.operatorCredential(true) }

// waitingForBundle lists the registered proxies (connected or not, not
// revoked) whose last ACKed bundle lacks the next root.
func (s *Server) waitingForBundle(ca *certs.CA) ([]string, error) {
	pin := certs.SPKIPin(ca.NextRoot())
	var waiting []string
	err := s.store.View(func(r *store.Reader) error {
		recs, err := r.List(store.TableProxies, "id")
		for _, rec := range recs {
			p := rec.(*store.Proxy)
			if !p.Revoked && !slices.Contains(p.AckedRoots, pin) {
				waiting = append(waiting, p.InstanceID)
			}
		}
		return err
	})
	sort.Strings(waiting)
	return waiting, err
}

// waitingForSVIDs lists the registered instances (not revoked) whose
// newest SVID is still valid and chains to a retired root. An instance
// without a proxy record (forgotten: meshctl proxy forget, or
// --forget-after) no longer holds the rotation.
func (s *Server) waitingForSVIDs(ca *certs.CA) ([]string, error) {
	retired := map[string]bool{}
	for _, r := range ca.RetiredRoots() {
		retired[certs.SPKIPin(r)] = true
	}
	now := s.cfg.Clock.Now()
	var waiting []string
	err := s.store.View(func(r *store.Reader) error {
		newest, err := push.NewestSVIDs(r)
		if err != nil {
			return err
		}
		for inst, c := range newest {
			if !retired[c.RootPin] || !now.Before(c.NotAfter) {
				continue
			}
			rec, err := r.Get(store.TableProxies, inst)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if !rec.(*store.Proxy).Revoked {
				waiting = append(waiting, inst)
			}
		}
		return nil
	})
	sort.Strings(waiting)
	return waiting, err
}

// CAStatus shows the roots, the phase and which proxies hold what. On
// etcd it first takes a stored CA another replica changed, so every
// replica answers with the phase in the store, not the one it saw at its
// last periodic check.
func (s *Server) CAStatus() (*meshv1.CAStatusResponse, error) {
	if err := s.refreshCA(); err != nil {
		return nil, err
	}
	ca := s.ca.get()
	out := &meshv1.CAStatusResponse{
		Phase:                phaseOf(ca),
		Active:               &meshv1.CARoot{Pin: ca.RootPin(), NotAfter: timestamppb.New(ca.Root().NotAfter)},
		IntermediateNotAfter: timestamppb.New(ca.Intermediate().NotAfter),
	}
	if n := ca.NextRoot(); n != nil {
		out.Next = &meshv1.CARoot{Pin: certs.SPKIPin(n), NotAfter: timestamppb.New(n.NotAfter)}
	}
	for _, r := range ca.RetiredRoots() {
		out.Retired = append(out.Retired, &meshv1.CARoot{Pin: certs.SPKIPin(r), NotAfter: timestamppb.New(r.NotAfter)})
	}
	out.RefusedByClients, out.RefusedByClientAddrs = s.refusals.recent()
	var waiting []string
	var err error
	switch out.Phase {
	case PhasePrepared:
		waiting, err = s.waitingForBundle(ca)
		out.WaitingFor = fmt.Sprintf("%d proxies to ACK a bundle with the new root %v", len(waiting), waiting)
	case PhaseActivated:
		waiting, err = s.waitingForSVIDs(ca)
		out.WaitingFor = fmt.Sprintf("%d proxies to renew onto the new root %v", len(waiting), waiting)
	}
	if err != nil {
		return nil, err
	}
	// Forcing the next phase now breaks exactly those it waits for: in
	// phase prepared their bundle lacks the root that is about to sign,
	// in phase activated their SVID chains to the root about to leave.
	out.Waiting, out.WouldBreak = waiting, waiting
	waited := map[string]bool{}
	for _, w := range waiting {
		waited[w] = true
	}
	inBundle := map[string]bool{}
	for _, r := range ca.Bundle().X509Authorities() {
		inBundle[certs.SPKIPin(r)] = true
	}
	now := s.cfg.Clock.Now()
	err = s.store.View(func(r *store.Reader) error {
		newest, err := push.NewestSVIDs(r)
		if err != nil {
			return err
		}
		recs, err := r.List(store.TableProxies, "id")
		for _, rec := range recs {
			p := rec.(*store.Proxy)
			pr := &meshv1.ProxyRoots{InstanceId: p.InstanceID, Service: p.Service, Connected: p.Connected, AckedRoots: p.AckedRoots, Revoked: p.Revoked}
			if c, ok := newest[p.InstanceID]; ok {
				pr.SvidRoot = c.RootPin
				pr.SvidExpiresAt = timestamppb.New(c.NotAfter)
				pr.SvidNotBefore = timestamppb.New(c.NotBefore)
				// Broken now: its SVID, still valid, chains to a root that
				// is not in the bundle it ACKed, or not in meshd's (which
				// refuses it at Renew and at the stream).
				notAcked := len(p.AckedRoots) > 0 && !slices.Contains(p.AckedRoots, c.RootPin)
				pr.Untrusted = !p.Revoked && c.RootPin != "" && now.Before(c.NotAfter) && (notAcked || !inBundle[c.RootPin])
			}
			if pr.Untrusted {
				out.Untrusted = append(out.Untrusted, p.InstanceID)
			}
			if waited[p.InstanceID] && !p.Connected {
				out.WaitingDisconnected = append(out.WaitingDisconnected, p.InstanceID)
			}
			out.Proxies = append(out.Proxies, pr)
		}
		return err
	})
	return out, err
}
