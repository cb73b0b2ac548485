package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Defaults of CAConfig.
const (
	DefaultRootTTL         = 10 * 365 * 24 * time.Hour
	DefaultIntermediateTTL = 365 * 24 * time.Hour
	DefaultBackdate        = 30 * time.Second
)

// CAConfig configures a CA. The zero value of every field but TrustDomain is
// a safe default.
type CAConfig struct {
	// TrustDomain of every certificate the CA issues. Required by NewCA; for
	// LoadCA, when zero it is taken from the root certificate.
	TrustDomain spiffeid.TrustDomain
	// Clock gives the time for validity periods. Default SystemClock.
	Clock Clock
	// Logger, default discards.
	Logger *slog.Logger
	// RootTTL is the root's lifetime. Default 10 years.
	RootTTL time.Duration
	// IntermediateTTL is the intermediate's lifetime, clipped to the root's. Default 1 year.
	IntermediateTTL time.Duration
	// SVIDTTL is the default SVID lifetime. Default DefaultSVIDTTL (1 h).
	SVIDTTL time.Duration
	// Backdate moves NotBefore of every issued certificate this far into the
	// past, to tolerate clock skew between machines. Default 30 s; negative
	// means none.
	Backdate time.Duration
}

// Validate reports a config that cannot work. Zero durations are defaults.
func (c CAConfig) Validate() error {
	switch {
	case c.RootTTL < 0, c.IntermediateTTL < 0, c.SVIDTTL < 0:
		return fmt.Errorf("%w: negative TTL", ErrInvalidConfig)
	case c.RootTTL != 0 && c.IntermediateTTL != 0 && c.IntermediateTTL > c.RootTTL:
		return fmt.Errorf("%w: IntermediateTTL %v exceeds RootTTL %v", ErrInvalidConfig, c.IntermediateTTL, c.RootTTL)
	}
	return nil
}

func (c CAConfig) withDefaults() CAConfig {
	c.Clock = clockOrSystem(c.Clock)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.RootTTL == 0 {
		c.RootTTL = DefaultRootTTL
	}
	if c.IntermediateTTL == 0 {
		c.IntermediateTTL = DefaultIntermediateTTL
	}
	if c.SVIDTTL == 0 {
		c.SVIDTTL = DefaultSVIDTTL
	}
	switch {
	case c.Backdate == 0:
		c.Backdate = DefaultBackdate
	case c.Backdate < 0:
		c.Backdate = 0
	}
	return c
}

// CA is a two-level SPIFFE certificate authority: a self-signed root and an
// intermediate signed by it that signs the X509-SVIDs. A CA value never
// changes, so it is safe for concurrent use; rotations (rotate.go) return a
// new CA to swap in and persist.
type CA struct {
	cfg     CAConfig
	active  authority           // signs
	next    *authority          // prepared by PrepareRootRotation, trusted, not signing
	retired []*x509.Certificate // former roots, still trusted until DropRetiredRoots
	bundle  *x509bundle.Bundle  // active root, next root, retired roots
}

// authority is a root and the intermediate it signed, with their keys.
type authority struct {
	root     *x509.Certificate
	rootKey  crypto.Signer
	inter    *x509.Certificate
	interKey crypto.Signer
}

// NewCA makes a fresh CA: an ECDSA P-256 self-signed root (URI SAN
// spiffe://<td>, as the SPIFFE spec asks) and an intermediate (CA, path
// length 0, name-constrained to the trust domain) signed by it.
func NewCA(cfg CAConfig) (*CA, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.TrustDomain.IsZero() {
		return nil, fmt.Errorf("%w: TrustDomain is required", ErrInvalidConfig)
	}
	cfg = cfg.withDefaults()
	a, err := newAuthority(cfg, cfg.Clock.Now())
	if err != nil {
		return nil, err
	}
	cfg.Logger.Info("certs: new CA", "trust_domain", cfg.TrustDomain.Name(), "root_pin", SPKIPin(a.root), "root_not_after", a.root.NotAfter)
	return newCA(cfg, a, nil, nil), nil
}

// newAuthority makes a fresh root and intermediate.
func newAuthority(cfg CAConfig, now time.Time) (authority, error) {
	rootKey, err := GenerateKey()
	if err != nil {
		return authority{}, err
	}
	serial, err := randomSerial()
	if err != nil {
		return authority{}, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"minimesh"}, CommonName: "minimesh root CA " + cfg.TrustDomain.Name()},
		NotBefore:             now.Add(-cfg.Backdate),
		NotAfter:              now.Add(cfg.RootTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{cfg.TrustDomain.ID().URL()},
		SubjectKeyId:          subjectKeyID(rootKey.Public()),
	}
	root, err := createCert(rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return authority{}, err
	}
	interKey, inter, err := newIntermediate(cfg, now, root, rootKey)
	if err != nil {
		return authority{}, err
	}
	return authority{root: root, rootKey: rootKey, inter: inter, interKey: interKey}, nil
}

func newIntermediate(cfg CAConfig, now time.Time, root *x509.Certificate, rootKey crypto.Signer) (crypto.Signer, *x509.Certificate, error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(cfg.IntermediateTTL)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"minimesh"}, CommonName: "minimesh intermediate CA " + cfg.TrustDomain.Name()},
		NotBefore:             now.Add(-cfg.Backdate),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{cfg.TrustDomain.ID().URL()},
		// Even a stolen intermediate key can only mint IDs of this trust domain.
		PermittedURIDomains: []string{cfg.TrustDomain.Name()},
		SubjectKeyId:        subjectKeyID(key.Public()),
	}
	cert, err := createCert(tmpl, root, key.Public(), rootKey)
	if err != nil {
		return nil, nil, err
	}
	return key, cert, nil
}

func newCA(cfg CAConfig, active authority, next *authority, retired []*x509.Certificate) *CA {
	roots := []*x509.Certificate{active.root}
	if next != nil {
		roots = append(roots, next.root)
	}
	roots = append(roots, retired...)
	return &CA{
		cfg:     cfg,
		active:  active,
		next:    next,
		retired: retired,
		bundle:  x509bundle.FromX509Authorities(cfg.TrustDomain, roots),
	}
}

// TrustDomain is the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.cfg.TrustDomain }

// Root is the root certificate. Do not modify it.
func (ca *CA) Root() *x509.Certificate { return ca.active.root }

// Intermediate is the signing certificate. Do not modify it.
func (ca *CA) Intermediate() *x509.Certificate { return ca.active.inter }

// Bundle is the trust bundle: the active root, plus during a root rotation
// the next or the retired roots. It is a fresh copy, safe to modify.
func (ca *CA) Bundle() *x509bundle.Bundle { return ca.bundle.Clone() }

// RootPin is "sha256:<hex of sha256(root SubjectPublicKeyInfo)>".
func (ca *CA) RootPin() string { return SPKIPin(ca.active.root) }

// SPKIPin is "sha256:<hex of sha256(cert's SubjectPublicKeyInfo)>", the form
// ParsePin and PinnedClientConfig accept.
func SPKIPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return pinPrefix + fmt.Sprintf("%x", sum[:])
}

// SignCSR validates the CSR (see ValidateCSR) for exactly id, which must be in
// the CA's trust domain, and signs an X509-SVID of lifetime ttl (0 = the
// configured SVIDTTL), clipped to the intermediate's NotAfter. It returns the
// chain [leaf, intermediate].
func (ca *CA) SignCSR(csrDER []byte, id spiffeid.ID, ttl time.Duration, opts ...IssueOption) ([]*x509.Certificate, error) {
	if err := ca.checkID(id); err != nil {
		return nil, err
	}
	csr, err := CheckCSR(csrDER, id)
	if err != nil {
		return nil, err
	}
	return ca.SignChecked(csr, ttl, opts...)
}

// SignChecked signs an X509-SVID for a CSR that CheckCSR accepted, for the
// identity it was checked against: the CSR is not parsed or checked again.
// It returns the chain [leaf, intermediate].
func (ca *CA) SignChecked(csr *CheckedCSR, ttl time.Duration, opts ...IssueOption) ([]*x509.Certificate, error) {
	if csr == nil || csr.csr == nil {
		return nil, fmt.Errorf("%w: no checked CSR", ErrCSRMalformed)
	}
	if err := ca.checkID(csr.id); err != nil {
		return nil, err
	}
	leaf, err := ca.issue(csr.csr.PublicKey, csr.id, ttl, opts)
	if err != nil {
		return nil, err
	}
	return []*x509.Certificate{leaf, ca.active.inter}, nil
}

// Current is the CA itself: a *CA is an immutable value, so a caller that
// takes it once signs, pins and bundles from one CA even while a rotation
// swaps in the next (see controlplane's holder, which returns the CA in
// force).
func (ca *CA) Current() *CA { return ca }

// IssueSVID generates a P-256 key and signs an SVID for id with it (meshd's
// own serving certificate, the operator credential). ttl 0 = SVIDTTL.
// The SVID's Certificates are [leaf, intermediate].
func (ca *CA) IssueSVID(id spiffeid.ID, ttl time.Duration, opts ...IssueOption) (*x509svid.SVID, error) {
	if err := ca.checkID(id); err != nil {
		return nil, err
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	leaf, err := ca.issue(key.Public(), id, ttl, opts)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf, ca.active.inter}, PrivateKey: key}, nil
}

// IssueServingSVID is IssueSVID with the root appended to the chain
// ([leaf, intermediate, root]): a server whose clients authenticate it by
// pin (PinnedClientConfig) must present the root they pin.
func (ca *CA) IssueServingSVID(id spiffeid.ID, ttl time.Duration) (*x509svid.SVID, error) {
	svid, err := ca.IssueSVID(id, ttl)
	if err != nil {
		return nil, err
	}
	svid.Certificates = append(svid.Certificates, ca.active.root)
	return svid, nil
}

func (ca *CA) checkID(id spiffeid.ID) error {
	switch {
	case id.IsZero():
		return fmt.Errorf("%w: empty ID", ErrInvalidID)
	case !id.MemberOf(ca.cfg.TrustDomain):
		return fmt.Errorf("%w: %q is not in trust domain %q", ErrInvalidID, id.String(), ca.cfg.TrustDomain.Name())
	case id.Path() == "":
		return fmt.Errorf("%w: %q has no path", ErrInvalidID, id.String())
	}
	return nil
}

func (ca *CA) issue(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration, opts []IssueOption) (*x509.Certificate, error) {
	var o issueOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.instance != "" {
		if err := CheckInstanceID(o.instance); err != nil {
			return nil, err
		}
	}
	subject := pkix.Name{Organization: []string{"minimesh"}, SerialNumber: o.instance}
	if o.podUID != "" {
		if err := CheckPodUID(o.podUID); err != nil {
			return nil, err
		}
		subject.OrganizationalUnit = []string{podUIDPrefix + o.podUID}
	}
	if ttl < 0 {
		return nil, fmt.Errorf("%w: negative TTL %v", ErrInvalidConfig, ttl)
	}
	if ttl == 0 {
		ttl = ca.cfg.SVIDTTL
	}
	now := ca.cfg.Clock.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.active.inter.NotAfter) {
		notAfter = ca.active.inter.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("%w: intermediate expired at %s", ErrCAExpired, ca.active.inter.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-ca.cfg.Backdate),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		IsCA:                  false,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:                  []*url.URL{id.URL()},
		SubjectKeyId:          subjectKeyID(pub),
	}
	leaf, err := createCert(tmpl, ca.active.inter, pub, ca.active.interKey)
	if err != nil {
		return nil, err
	}
	ca.cfg.Logger.Debug("certs: issued SVID", "spiffe_id", id.String(), "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter)
	return leaf, nil
}

// GenerateKey makes an ECDSA P-256 key.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate key: %w", err)
	}
	return k, nil
}

var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

// randomSerial is a random positive serial of up to 128 bits.
func randomSerial() (*big.Int, error) {
	return randomSerialFrom(rand.Reader)
}

func randomSerialFrom(r io.Reader) (*big.Int, error) {
	for {
		n, err := rand.Int(r, serialLimit)
		if err != nil {
			return nil, fmt.Errorf("certs: serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// subjectKeyID is the leftmost 160 bits of sha256 of the DER SubjectPublicKeyInfo.
func subjectKeyID(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(der)
	return sum[:20]
}

func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("certs: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parse created certificate: %w", err)
	}
	return cert, nil
}
