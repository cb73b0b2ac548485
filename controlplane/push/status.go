package push

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// Status that never lies: a proxy that ACKed the snapshot meshd computes
// for it is not SYNCED when its own SVID chains to a root that is not in
// the bundle it ACKed (its peers and meshd refuse it: UNTRUSTED), nor when
// it cannot verify some of its endpoints (UNTRUSTED_PEERS). meshd knows
// both without asking the proxy: the root each SVID chains to is recorded
// at issuance (store.Certificate.RootPin), and the roots of the bundle
// each proxy ACKed last are kept with its record (store.Proxy.AckedRoots).

// NewestSVIDs is the newest workload certificate meshd issued to each
// instance (by NotBefore), from the certificate records. Operator
// credentials and records without an instance are not in it.
func NewestSVIDs(r *store.Reader) (map[string]*store.Certificate, error) {
	out := map[string]*store.Certificate{}
	recs, err := r.List(store.TableCertificates, "id")
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		c := rec.(*store.Certificate)
		if c.InstanceID == "" || c.IssuedBy == "internal" {
			continue
		}
		if prev, ok := out[c.InstanceID]; !ok || c.NotBefore.After(prev.NotBefore) {
			out[c.InstanceID] = c
		}
	}
	return out, nil
}

// trust fills the SVID root, the ACKed roots and the endpoints the proxy
// cannot verify. The ACKed roots are the in-memory ones (newer) when meshd
// saw an ACK since it started, else the stored ones.
func trust(ps *meshv1.ProxySync, p *store.Proxy, st *instance, gs *groupSnapshot, newest map[string]*store.Certificate) {
	if c := newest[p.InstanceID]; c != nil {
		ps.SvidRoot = c.RootPin
	}
	ps.AckedRoots = p.AckedRoots
	if st.ackedRoots != nil {
		ps.AckedRoots = st.ackedRoots
	}
	ps.AckedRoots = slices.Clone(ps.AckedRoots)
	if len(ps.AckedRoots) == 0 || gs == nil {
		return // it never ACKed a bundle: nothing to say yet
	}
	for _, ep := range gs.snap.GetEndpoints() {
		if ep.GetInstanceId() == p.InstanceID {
			continue
		}
		if c := newest[ep.GetInstanceId()]; c != nil && c.RootPin != "" && !slices.Contains(ps.AckedRoots, c.RootPin) {
			ps.UntrustedPeers = append(ps.UntrustedPeers, ep.GetInstanceId())
		}
	}
	sort.Strings(ps.UntrustedPeers)
}

// ErrConnected refuses forgetting a proxy whose stream is open.
var ErrConnected = errors.New("push: the proxy is connected")

// ErrRevokedRecord refuses forgetting a revoked proxy: its revocation is
// on its record.
var ErrRevokedRecord = errors.New("push: the proxy is revoked")

// ForgetInstance drops one proxy's record now: it is no longer listed,
// waited for by a root rotation, or an endpoint (its grace ends too). A
// connected proxy is refused (ErrConnected) unless force, which also ends
// its stream (a live proxy registers again, as a new record). A revoked
// one is always refused (ErrRevokedRecord). It returns whether the proxy
// was connected; store.ErrNotFound when there is no such instance.
func (s *Server) ForgetInstance(id string, force bool) (wasConnected bool, err error) {
	// A stream on another replica (its presence key) is as open as one here.
	present, err := s.presence()
	if err != nil {
		return false, err
	}
	err = s.cfg.Store.Update(func(tx *store.Txn) error {
		rec, err := tx.Get(store.TableProxies, id)
		if err != nil {
			return err
		}
		if rec.(*store.Proxy).Revoked {
			return fmt.Errorf("%w: instance %s: its revocation is kept on its record, which is therefore never forgotten", ErrRevokedRecord, id)
		}
		s.mu.Lock()
		wasConnected = s.connectedLocked(rec.(*store.Proxy), present)
		s.mu.Unlock()
		if wasConnected && !force {
			return fmt.Errorf("%w: instance %s has an open stream; --force forgets it anyway and ends the stream (a live proxy registers again)", ErrConnected, id)
		}
		return tx.Delete(store.TableProxies, id)
	})
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	if sess, ok := s.active[id]; ok {
		// A plain end, no grace: unregister finds no record to update.
		sess.drained = true
		sess.cancel()
	}
	delete(s.status, id)
	delete(s.dirty, id)
	s.mu.Unlock()
	s.cfg.Logger.Warn("proxy instance forgotten by the operator", "instance_id", id, "was_connected", wasConnected)
	s.Trigger()
	return wasConnected, nil
}
