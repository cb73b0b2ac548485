package agent

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"minimesh/certs"
)

// ErrUntrustedSVID: the proxy's own SVID does not chain to a root of its
// own trust bundle, so its peers (which hold the same bundle) refuse it.
var ErrUntrustedSVID = errors.New("agent: the SVID does not chain to a root of the trust bundle")

// CheckOwnSVID verifies the proxy's own SVID against its own bundle, as
// its peers will: nil when it chains to one of the bundle's roots and is
// valid at now. It describes this proxy only, never its peers.
func CheckOwnSVID(svid *x509svid.SVID, bundle *x509bundle.Bundle, now time.Time) error {
	if svid == nil || len(svid.Certificates) == 0 {
		return fmt.Errorf("%w: no SVID", ErrNoIdentity)
	}
	leaf := svid.Certificates[0]
	if !now.Before(leaf.NotAfter) {
		return fmt.Errorf("%w: SVID (serial %s) expired at %s", ErrNoIdentity, leaf.SerialNumber.Text(16), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if bundle == nil {
		return fmt.Errorf("%w: no trust bundle", ErrUntrustedSVID)
	}
	if _, _, err := certs.VerifyPeerCertificates(svid.Certificates, bundle, now); err != nil {
		return fmt.Errorf("%w: SVID (serial %s, issued by %q) does not chain to its bundle's roots (%s): its peers refuse it; meshd re-issues it from a root in the bundle at the next renewal, or the proxy needs a new join token: %v",
			ErrUntrustedSVID, leaf.SerialNumber.Text(16), leaf.Issuer.CommonName, pins(bundle.X509Authorities()), err)
	}
	return nil
}

func pins(roots []*x509.Certificate) string {
	if len(roots) == 0 {
		return "none"
	}
	out := make([]string, len(roots))
	for i, r := range roots {
		out[i] = certs.SPKIPin(r)
	}
	return strings.Join(out, ", ")
}
