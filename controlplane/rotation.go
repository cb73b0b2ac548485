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
// phase without waiting for the proxies.
func (s *Server) RotateCA(force bool) (*meshv1.CAStatusResponse, error) {
	if phaseOf(s.ca.get()) == PhaseIdle {
		if err := s.changeCA("prepare a new root", (*certs.CA).PrepareRootRotation); err != nil {
			return nil, err
		}
	} else if !force {
		st, err := s.CAStatus()
		if err != nil {
			return nil, err
		}
		return nil, status.Errorf(codes.FailedPrecondition, "a root rotation is in progress (phase %s, waiting for %s); --force moves it on now", st.Phase, st.WaitingFor)
	} else if err := s.advanceCA(true); err != nil {
		return nil, err
	}
	return s.CAStatus()
}

// advanceCA moves a rotation on when its condition holds (or force), and
// re-issues the intermediate past half its life.
func (s *Server) advanceCA(force bool) error {
	ca := s.ca.get()
	switch phaseOf(ca) {
	case PhasePrepared:
		waiting, err := s.waitingForBundle(ca)
		if err != nil {
			return err
		}
		if len(waiting) == 0 || force {
			if err := s.changeCA("activate the new root", (*certs.CA).ActivateNextRoot); err != nil {
				return err
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
			return s.changeCA("drop the retired root", (*certs.CA).DropRetiredRoots)
		}
	default:
		if ca.IntermediateNeedsRotation() {
			return s.changeCA("re-issue the intermediate", (*certs.CA).RotateIntermediate)
		}
	}
	return nil
}

// changeCA applies one CA step: stored first, then in force.
func (s *Server) changeCA(what string, step func(*certs.CA) (*certs.CA, error)) error {
	s.rotateMu.Lock()
	defer s.rotateMu.Unlock()
	next, err := step(s.ca.get())
	if err != nil {
		return fmt.Errorf("controlplane: %s: %w", what, err)
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

// waitingForSVIDs lists the instances whose newest SVID is still valid and
// chains to a retired root.
func (s *Server) waitingForSVIDs(ca *certs.CA) ([]string, error) {
	retired := map[string]bool{}
	for _, r := range ca.RetiredRoots() {
		retired[certs.SPKIPin(r)] = true
	}
	newest, err := s.newestSVIDs()
	if err != nil {
		return nil, err
	}
	now := s.cfg.Clock.Now()
	var waiting []string
	for inst, c := range newest {
		if retired[c.RootPin] && now.Before(c.NotAfter) {
			waiting = append(waiting, inst)
		}
	}
	sort.Strings(waiting)
	return waiting, nil
}

// newestSVIDs is the newest workload certificate of each instance.
func (s *Server) newestSVIDs() (map[string]*store.Certificate, error) {
	out := map[string]*store.Certificate{}
	err := s.store.View(func(r *store.Reader) error {
		recs, err := r.List(store.TableCertificates, "id")
		for _, rec := range recs {
			c := rec.(*store.Certificate)
			if c.InstanceID == "" || c.IssuedBy == "internal" {
				continue
			}
			if prev, ok := out[c.InstanceID]; !ok || c.NotBefore.After(prev.NotBefore) {
				out[c.InstanceID] = c
			}
		}
		return err
	})
	return out, err
}

// CAStatus shows the roots, the phase and which proxies hold what.
func (s *Server) CAStatus() (*meshv1.CAStatusResponse, error) {
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
	newest, err := s.newestSVIDs()
	if err != nil {
		return nil, err
	}
	err = s.store.View(func(r *store.Reader) error {
		recs, err := r.List(store.TableProxies, "id")
		for _, rec := range recs {
			p := rec.(*store.Proxy)
			pr := &meshv1.ProxyRoots{InstanceId: p.InstanceID, Service: p.Service, Connected: p.Connected, AckedRoots: p.AckedRoots}
			if c, ok := newest[p.InstanceID]; ok {
				pr.SvidRoot = c.RootPin
				pr.SvidExpiresAt = timestamppb.New(c.NotAfter)
			}
			out.Proxies = append(out.Proxies, pr)
		}
		return err
	})
	return out, err
}
