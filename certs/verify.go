package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// MaxPeerChain is the longest certificate chain VerifyPeer looks at.
const MaxPeerChain = 8

// VerifyPeer verifies a peer's X509-SVID chain (DER, leaf first, as in
// tls.Config.VerifyPeerCertificate) against bundle at time now (zero = the
// real time). It returns the peer's SPIFFE ID and the verified chain. Errors
// wrap ErrPeerUnverified and say why: no certificate, expired, unknown
// authority, wrong trust domain.
func VerifyPeer(rawCerts [][]byte, bundle x509bundle.Source, now time.Time) (spiffeid.ID, []*x509.Certificate, error) {
	if len(rawCerts) == 0 {
		return spiffeid.ID{}, nil, fmt.Errorf("%w: no certificate presented", ErrPeerUnverified)
	}
	if len(rawCerts) > MaxPeerChain {
		return spiffeid.ID{}, nil, fmt.Errorf("%w: chain of %d certificates exceeds %d", ErrPeerUnverified, len(rawCerts), MaxPeerChain)
	}
	certs, err := ParseCertsDER(rawCerts)
	if err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("%w: %w", ErrPeerUnverified, err)
	}
	return VerifyPeerCertificates(certs, bundle, now)
}

// VerifyPeerCertificates is VerifyPeer for parsed certificates (as in
// tls.ConnectionState.PeerCertificates).
func VerifyPeerCertificates(certs []*x509.Certificate, bundle x509bundle.Source, now time.Time) (spiffeid.ID, []*x509.Certificate, error) {
	switch {
	case len(certs) == 0:
		return spiffeid.ID{}, nil, fmt.Errorf("%w: no certificate presented", ErrPeerUnverified)
	case len(certs) > MaxPeerChain:
		return spiffeid.ID{}, nil, fmt.Errorf("%w: chain of %d certificates exceeds %d", ErrPeerUnverified, len(certs), MaxPeerChain)
	case bundle == nil:
		return spiffeid.ID{}, nil, fmt.Errorf("%w: no trust bundle", ErrPeerUnverified)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("%w: not an X509-SVID: %w", ErrPeerUnverified, err)
	}
	if _, err := bundle.GetX509BundleForTrustDomain(id.TrustDomain()); err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("%w: wrong trust domain: %q is not trusted: %w", ErrPeerUnverified, id.TrustDomain().Name(), err)
	}
	var opts []x509svid.VerifyOption
	if !now.IsZero() {
		opts = append(opts, x509svid.WithTime(now))
	}
	id, chains, err := x509svid.Verify(certs, bundle, opts...)
	if err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("%w: %s: %w", ErrPeerUnverified, verifyReason(err), err)
	}
	return id, chains[0], nil
}

func verifyReason(err error) string {
	var inv x509.CertificateInvalidError
	var unk x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return "certificate expired or not yet valid"
	case errors.As(err, &inv):
		return "invalid certificate"
	case errors.As(err, &unk):
		return "unknown authority"
	default:
		return "invalid SVID"
	}
}

// AuthorizeAny accepts every verified peer.
func AuthorizeAny() func(spiffeid.ID) error {
	return func(spiffeid.ID) error { return nil }
}

// AuthorizeID accepts only the given IDs (e.g. the one expected server).
func AuthorizeID(allowed ...spiffeid.ID) func(spiffeid.ID) error {
	set := make(map[spiffeid.ID]struct{}, len(allowed))
	for _, id := range allowed {
		set[id] = struct{}{}
	}
	return func(id spiffeid.ID) error {
		if _, ok := set[id]; ok {
			return nil
		}
		return fmt.Errorf("%w: %q is not an allowed ID", ErrUnauthorized, id.String())
	}
}

// AuthorizeMemberOf accepts any ID of the trust domain td.
func AuthorizeMemberOf(td spiffeid.TrustDomain) func(spiffeid.ID) error {
	return authorizeMember(td, false)
}

// AuthorizeWorkloadOf admits members of td that are not one of minimesh's
// reserved identities (meshd, operator): a proxy's peers are workloads.
// The operator credential lives on laptops and in CI; it is for meshd's
// admin API, not for calling workloads.
func AuthorizeWorkloadOf(td spiffeid.TrustDomain) func(spiffeid.ID) error {
	return authorizeMember(td, true)
}

func authorizeMember(td spiffeid.TrustDomain, workloadOnly bool) func(spiffeid.ID) error {
	return func(id spiffeid.ID) error {
		if !td.IsZero() && id.MemberOf(td) {
			if workloadOnly && IsReserved(id) {
				return fmt.Errorf("%w: %q is reserved for minimesh itself, not a workload", ErrUnauthorized, id.String())
			}
			return nil
		}
		return fmt.Errorf("%w: %q is not in trust domain %q", ErrUnauthorized, id.String(), td.Name())
	}
}
