package certs

import (
	"crypto/x509"
	"fmt"
	"slices"
	"time"
)

// Rotation. Every step returns a new *CA and leaves the receiver untouched:
// persist the new CA's MarshalState, then swap it in (and push its Bundle to
// every proxy). Nothing here decides when to rotate; the caller does, e.g.
// meshd at start-up or on an operator's request.
//
// Root rotation has three phases, so that no proxy ever meets a certificate
// its bundle cannot verify:
//
//  1. PrepareRootRotation: a next root is made and added to the bundle;
//     signing is unchanged. Wait until every proxy holds the new bundle.
//  2. ActivateNextRoot: the next root and its intermediate sign from now on;
//     the old root stays in the bundle as retired. Wait until every SVID
//     signed under the old root has expired (at most the SVID TTL).
//  3. DropRetiredRoots: the bundle holds only the active root.
//
// The root pin (RootPin) changes at phase 2: join tokens handed out earlier
// carry the old pin and must be re-issued.

// IntermediateNeedsRotation reports whether the intermediate has used half
// its lifetime per the CA's clock; RotateIntermediate then.
func (ca *CA) IntermediateNeedsRotation() bool {
	in := ca.active.inter
	half := in.NotBefore.Add(in.NotAfter.Sub(in.NotBefore) / 2)
	return !ca.cfg.Clock.Now().Before(half)
}

// RotateIntermediate returns a CA whose new intermediate (IntermediateTTL,
// clipped to the root's NotAfter) is signed by the same root: the bundle and
// the root pin are unchanged, SVIDs issued before stay valid.
func (ca *CA) RotateIntermediate() (*CA, error) {
	now := ca.cfg.Clock.Now()
	if !now.Before(ca.active.root.NotAfter) {
		return nil, fmt.Errorf("%w: root expired at %s; rotate the root", ErrCAExpired, ca.active.root.NotAfter)
	}
	key, inter, err := newIntermediate(ca.cfg, now, ca.active.root, ca.active.rootKey)
	if err != nil {
		return nil, err
	}
	a := ca.active
	a.inter, a.interKey = inter, key
	ca.cfg.Logger.Info("certs: rotated intermediate", "trust_domain", ca.cfg.TrustDomain.Name(), "not_after", inter.NotAfter)
	return newCA(ca.cfg, a, ca.next, ca.retired), nil
}

// PrepareRootRotation is phase 1: it returns a CA that still signs as
// before but also trusts a fresh next root (in Bundle).
func (ca *CA) PrepareRootRotation() (*CA, error) {
	if ca.next != nil {
		return nil, fmt.Errorf("%w: a next root is already prepared", ErrRotation)
	}
	n, err := newAuthority(ca.cfg, ca.cfg.Clock.Now())
	if err != nil {
		return nil, err
	}
	ca.cfg.Logger.Info("certs: prepared next root", "trust_domain", ca.cfg.TrustDomain.Name(), "next_root_pin", SPKIPin(n.root))
	return newCA(ca.cfg, ca.active, &n, ca.retired), nil
}

// ActivateNextRoot is phase 2: the prepared root signs from now on and the
// former root is kept in the bundle as retired.
func (ca *CA) ActivateNextRoot() (*CA, error) {
	if ca.next == nil {
		return nil, fmt.Errorf("%w: no next root prepared", ErrRotation)
	}
	retired := append(slices.Clip(ca.retired), ca.active.root)
	ca.cfg.Logger.Info("certs: activated next root", "trust_domain", ca.cfg.TrustDomain.Name(), "root_pin", SPKIPin(ca.next.root))
	return newCA(ca.cfg, *ca.next, nil, retired), nil
}

// DropRetiredRoots is phase 3: the bundle keeps only the active root (and a
// prepared next root, if any).
func (ca *CA) DropRetiredRoots() (*CA, error) {
	if len(ca.retired) == 0 {
		return nil, fmt.Errorf("%w: no retired roots", ErrRotation)
	}
	ca.cfg.Logger.Info("certs: dropped retired roots", "trust_domain", ca.cfg.TrustDomain.Name(), "count", len(ca.retired))
	return newCA(ca.cfg, ca.active, ca.next, nil), nil
}

// NextRoot is the root prepared by PrepareRootRotation, or nil.
func (ca *CA) NextRoot() *x509.Certificate {
	if ca.next == nil {
		return nil
	}
	return ca.next.root
}

// RetiredRoots are former roots still in the bundle.
func (ca *CA) RetiredRoots() []*x509.Certificate { return slices.Clone(ca.retired) }

// WithOwnIntermediate returns ca signing with a fresh intermediate of
// lifetime ttl (clipped to the root's NotAfter), signed by the active root,
// for one meshd replica: each replica signs with its own, whose key is only
// ever in the returned value (MarshalState of it would write that key:
// persist the CA it was derived from instead). The bundle, the root pin and
// any next or retired roots are ca's.
func (ca *CA) WithOwnIntermediate(ttl time.Duration) (*CA, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("%w: intermediate TTL %v", ErrInvalidConfig, ttl)
	}
	now := ca.cfg.Clock.Now()
	if !now.Before(ca.active.root.NotAfter) {
		return nil, fmt.Errorf("%w: root expired at %s; rotate the root", ErrCAExpired, ca.active.root.NotAfter)
	}
	cfg := ca.cfg
	cfg.IntermediateTTL = ttl
	key, inter, err := newIntermediate(cfg, now, ca.active.root, ca.active.rootKey)
	if err != nil {
		return nil, err
	}
	a := ca.active
	a.inter, a.interKey = inter, key
	return newCA(ca.cfg, a, ca.next, ca.retired), nil
}

// WithIntermediateOf returns ca signing with own's intermediate, when own
// has the same active root (ok false otherwise): a replica keeps its own
// intermediate across CA changes that leave the active root alone.
func (ca *CA) WithIntermediateOf(own *CA) (out *CA, ok bool) {
	if own == nil || !own.active.root.Equal(ca.active.root) {
		return nil, false
	}
	a := ca.active
	a.inter, a.interKey = own.active.inter, own.active.interKey
	return newCA(ca.cfg, a, ca.next, ca.retired), true
}
