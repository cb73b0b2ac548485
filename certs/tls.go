package certs

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TLSOptions tunes the TLS builders. The zero value is ready to use.
type TLSOptions struct {
	// Clock is the time peer certificates are verified at. Default SystemClock.
	Clock Clock
}

// Every builder below:
//   - requires TLS 1.3;
//   - reads our certificate from the source at each handshake
//     (GetCertificate/GetClientCertificate), so the config is never rebuilt;
//   - verifies peers in VerifyConnection, which also runs on resumed sessions;
//   - disables server session tickets, so a peer's credentials are always
//     checked afresh against the current bundle and clock.

// MTLSServerConfig requires a client X509-SVID, verifies it against bundle
// and then authorize(id) (nil authorize: any ID the bundle verifies).
func MTLSServerConfig(svid x509svid.Source, bundle x509bundle.Source, authorize func(spiffeid.ID) error, opts TLSOptions) *tls.Config {
	clock := clockOrSystem(opts.Clock)
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		ClientAuth:             tls.RequireAnyClientCert,
		SessionTicketsDisabled: true,
		Time:                   clock.Now,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return certificateFrom(svid)
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyAndAuthorize(cs.PeerCertificates, bundle, authorize, clock)
		},
	}
}

// MTLSClientConfig verifies the server's X509-SVID against bundle and then
// authorize(id) (typically AuthorizeID(expectedServer); nil: any ID the
// bundle verifies), and presents our SVID when asked.
func MTLSClientConfig(svid x509svid.Source, bundle x509bundle.Source, authorize func(spiffeid.ID) error, opts TLSOptions) *tls.Config {
	clock := clockOrSystem(opts.Clock)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		Time:       clock.Now,
		// The standard verification knows nothing of SPIFFE IDs; ours runs
		// in VerifyConnection below.
		InsecureSkipVerify: true, //nolint:gosec
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return certificateFrom(svid)
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyAndAuthorize(cs.PeerCertificates, bundle, authorize, clock)
		},
	}
}

// OptionalClientServerConfig presents svid and requests (tls.RequestClientCert)
// but does not verify a client certificate: the layer above verifies it per
// method with VerifyPeer, so that it can answer with a clear status (meshd's
// Bootstrap is reachable without one). Never trust a peer of this config
// without calling VerifyPeer.
func OptionalClientServerConfig(svid x509svid.Source) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		ClientAuth:             tls.RequestClientCert,
		SessionTicketsDisabled: true,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return certificateFrom(svid)
		},
	}
}

// PinnedClientConfig is for bootstrap, before the client holds a bundle. The
// server must send its chain including the root (see CA.IssueServingSVID).
// The handshake succeeds only if some self-signed certificate of that chain
// has the SubjectPublicKeyInfo pin ("sha256:<hex>", see SPKIPin), the leaf
// verifies up to it at the clock's time, and the leaf's SPIFFE ID is
// serverID. It presents no client certificate. Handshake errors wrap
// ErrPinMismatch; a malformed pin is an error wrapping ErrInvalidPin here.
func PinnedClientConfig(pin string, serverID spiffeid.ID, opts TLSOptions) (*tls.Config, error) {
	return PinnedClientConfigAny([]string{pin}, serverID, opts)
}

// PinnedClientConfigAny is PinnedClientConfig with several pins (every
// root of a bundle during a rotation): a chain anchored at any one of them
// is accepted. At least one pin is required.
func PinnedClientConfigAny(pins []string, serverID spiffeid.ID, opts TLSOptions) (*tls.Config, error) {
	if len(pins) == 0 {
		return nil, fmt.Errorf("%w: no pin", ErrInvalidPin)
	}
	want := make([][]byte, len(pins))
	for i, pin := range pins {
		b, err := ParsePin(pin)
		if err != nil {
			return nil, err
		}
		want[i] = b
	}
	if serverID.IsZero() {
		return nil, fmt.Errorf("%w: empty server ID", ErrInvalidID)
	}
	clock := clockOrSystem(opts.Clock)
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Time:               clock.Now,
		InsecureSkipVerify: true, //nolint:gosec // verified against the pins in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs.PeerCertificates, want, serverID, clock)
		},
	}, nil
}

// ParsePins splits a comma-separated list of pins (spaces around each are
// ignored) and checks each; an error names the position of a bad one.
func ParsePins(list string) ([]string, error) {
	var out []string
	for i, p := range strings.Split(list, ",") {
		p = strings.TrimSpace(p)
		if _, err := ParsePin(p); err != nil {
			return nil, fmt.Errorf("pin %d of %d: %w", i+1, strings.Count(list, ",")+1, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func verifyPinned(certs []*x509.Certificate, pins [][]byte, serverID spiffeid.ID, clock Clock) error {
	if len(certs) == 0 || len(certs) > MaxPeerChain {
		return fmt.Errorf("%w: server sent %d certificates", ErrPinMismatch, len(certs))
	}
	var anchor *x509.Certificate
	for _, c := range certs {
		sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
		if slices.ContainsFunc(pins, func(p []byte) bool { return bytes.Equal(sum[:], p) }) && bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil {
			anchor = c
			break
		}
	}
	if anchor == nil {
		shown := make([]string, len(pins))
		for i, p := range pins {
			shown[i] = pinPrefix + hex.EncodeToString(p)
		}
		return fmt.Errorf("%w: no self-signed certificate in the server's chain has pin %s", ErrPinMismatch, strings.Join(shown, " or "))
	}
	var rest []*x509.Certificate
	for _, c := range certs {
		if c != anchor {
			rest = append(rest, c)
		}
	}
	if len(rest) == 0 {
		return fmt.Errorf("%w: server sent only the pinned root, no leaf", ErrPinMismatch)
	}
	b := x509bundle.FromX509Authorities(serverID.TrustDomain(), []*x509.Certificate{anchor})
	if leafID, err := x509svid.IDFromCert(rest[0]); err == nil && leafID.TrustDomain() != serverID.TrustDomain() {
		// Said plainly: a pin error here sends the operator after the pin.
		return fmt.Errorf("%w: the server is of trust domain %q, this client expects %q (is its trust domain setting meshd's?)", ErrPinMismatch, leafID.TrustDomain().Name(), serverID.TrustDomain().Name())
	}
	id, _, err := x509svid.Verify(rest, b, x509svid.WithTime(clock.Now()))
	if err != nil {
		return fmt.Errorf("%w: server chain does not verify up to the pinned root: %w", ErrPinMismatch, err)
	}
	if id != serverID {
		return fmt.Errorf("%w: server is %q, want %q", ErrPinMismatch, id.String(), serverID.String())
	}
	return nil
}

func verifyAndAuthorize(certs []*x509.Certificate, bundle x509bundle.Source, authorize func(spiffeid.ID) error, clock Clock) error {
	id, _, err := VerifyPeerCertificates(certs, bundle, clock.Now())
	if err != nil {
		return err
	}
	if authorize == nil {
		return nil
	}
	if err := authorize(id); err != nil {
		return fmt.Errorf("certs: peer %q: %w", id.String(), err)
	}
	return nil
}

const pinPrefix = "sha256:"

// ParsePin validates "sha256:<64 hex digits>" (lower- or uppercase hex) and
// returns the 32-byte digest. Errors wrap ErrInvalidPin.
func ParsePin(pin string) ([]byte, error) {
	hexPart, ok := strings.CutPrefix(pin, pinPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: want prefix %q", ErrInvalidPin, pinPrefix)
	}
	if len(hexPart) != 2*sha256.Size {
		return nil, fmt.Errorf("%w: want %d hex digits, got %d characters", ErrInvalidPin, 2*sha256.Size, len(hexPart))
	}
	b, err := hex.DecodeString(hexPart)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPin, err)
	}
	return b, nil
}
