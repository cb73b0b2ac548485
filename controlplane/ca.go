package controlplane

import (
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
	"minimesh/controlplane/identity"
)

// caHolder is the current CA behind an atomic pointer: a rotation swaps in
// a new immutable *certs.CA and every signer sees it at its next call.
type caHolder struct {
	p atomic.Pointer[certs.CA]
}

var _ identity.CA = (*caHolder)(nil)

func (h *caHolder) get() *certs.CA { return h.p.Load() }

func (h *caHolder) set(ca *certs.CA) { h.p.Store(ca) }

// TrustDomain is the CA's trust domain.
func (h *caHolder) TrustDomain() spiffeid.TrustDomain { return h.get().TrustDomain() }

// Current implements identity.CA: the CA in force, one immutable value
// that an issuance signs, pins and bundles with.
func (h *caHolder) Current() *certs.CA { return h.get() }

// Bundle is the trust bundle of the CA in force.
func (h *caHolder) Bundle() *x509bundle.Bundle { return h.get().Bundle() }

// RootPin is the pin of the root that signs now.
func (h *caHolder) RootPin() string { return h.get().RootPin() }
