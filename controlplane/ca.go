package controlplane

import (
	"crypto/x509"
	"sync/atomic"
	"time"

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

// TrustDomain implements identity.CA.
func (h *caHolder) TrustDomain() spiffeid.TrustDomain { return h.get().TrustDomain() }

// SignCSR implements identity.CA.
func (h *caHolder) SignCSR(csrDER []byte, id spiffeid.ID, ttl time.Duration, opts ...certs.IssueOption) ([]*x509.Certificate, error) {
	return h.get().SignCSR(csrDER, id, ttl, opts...)
}

// Bundle implements identity.CA.
func (h *caHolder) Bundle() *x509bundle.Bundle { return h.get().Bundle() }

// RootPin implements identity.CA: the pin of the root that signs now.
func (h *caHolder) RootPin() string { return h.get().RootPin() }
