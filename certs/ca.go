package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
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
// intermediate signed by it that signs the X509-SVIDs. It is safe for
// concurrent use; its state never changes after construction.
type CA struct {
	cfg      CAConfig
	root     *x509.Certificate
	rootKey  crypto.Signer
	inter    *x509.Certificate
	interKey crypto.Signer
	bundle   *x509bundle.Bundle
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
	now := cfg.Clock.Now()

	rootKey, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
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
		return nil, err
	}
	interKey, inter, err := newIntermediate(cfg, now, root, rootKey)
	if err != nil {
		return nil, err
	}
	cfg.Logger.Info("certs: new CA", "trust_domain", cfg.TrustDomain.Name(), "root_pin", SPKIPin(root), "root_not_after", root.NotAfter)
	return newCA(cfg, root, rootKey, inter, interKey), nil
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

func newCA(cfg CAConfig, root *x509.Certificate, rootKey crypto.Signer, inter *x509.Certificate, interKey crypto.Signer) *CA {
	return &CA{
		cfg:      cfg,
		root:     root,
		rootKey:  rootKey,
		inter:    inter,
		interKey: interKey,
		bundle:   x509bundle.FromX509Authorities(cfg.TrustDomain, []*x509.Certificate{root}),
	}
}

const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
)

// MarshalState serializes the CA as four PEM blocks: root certificate, root
// key, intermediate certificate, intermediate key (keys PKCS#8). The result
// holds private keys: store it 0600 and never log it.
func (ca *CA) MarshalState() ([]byte, error) {
	rootKey, err := x509.MarshalPKCS8PrivateKey(ca.rootKey)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal root key: %w", err)
	}
	interKey, err := x509.MarshalPKCS8PrivateKey(ca.interKey)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal intermediate key: %w", err)
	}
	var out []byte
	for _, b := range []*pem.Block{
		{Type: pemCertificate, Bytes: ca.root.Raw},
		{Type: pemPrivateKey, Bytes: rootKey},
		{Type: pemCertificate, Bytes: ca.inter.Raw},
		{Type: pemPrivateKey, Bytes: interKey},
	} {
		out = append(out, pem.EncodeToMemory(b)...)
	}
	return out, nil
}

// LoadCA restores a CA from MarshalState output. It checks that each key
// matches its certificate, that the root is a self-signed CA of the trust
// domain, and that the intermediate is a CA signed by the root. Errors wrap
// ErrInvalidCAState. Validity periods are not checked here: SignCSR refuses
// once the intermediate has expired.
func LoadCA(cfg CAConfig, state []byte) (*CA, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var blocks []*pem.Block
	rest := state
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks = append(blocks, b)
	}
	if len(blocks) != 4 {
		return nil, fmt.Errorf("%w: want 4 PEM blocks, got %d", ErrInvalidCAState, len(blocks))
	}
	for i, want := range []string{pemCertificate, pemPrivateKey, pemCertificate, pemPrivateKey} {
		if blocks[i].Type != want {
			return nil, fmt.Errorf("%w: PEM block %d is %q, want %q", ErrInvalidCAState, i, blocks[i].Type, want)
		}
	}
	root, rootKey, err := parseCertAndKey("root", blocks[0].Bytes, blocks[1].Bytes)
	if err != nil {
		return nil, err
	}
	inter, interKey, err := parseCertAndKey("intermediate", blocks[2].Bytes, blocks[3].Bytes)
	if err != nil {
		return nil, err
	}
	if !root.IsCA || !inter.IsCA {
		return nil, fmt.Errorf("%w: root and intermediate must both be CA certificates", ErrInvalidCAState)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("%w: root is not self-signed: %w", ErrInvalidCAState, err)
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("%w: intermediate is not signed by root: %w", ErrInvalidCAState, err)
	}
	if len(root.URIs) != 1 {
		return nil, fmt.Errorf("%w: root must have exactly one URI SAN", ErrInvalidCAState)
	}
	rootTD, err := spiffeid.TrustDomainFromURI(root.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("%w: root URI SAN: %w", ErrInvalidCAState, err)
	}
	if cfg.TrustDomain.IsZero() {
		cfg.TrustDomain = rootTD
	} else if rootTD != cfg.TrustDomain {
		return nil, fmt.Errorf("%w: root is for trust domain %q, want %q", ErrInvalidCAState, rootTD.Name(), cfg.TrustDomain.Name())
	}
	return newCA(cfg, root, rootKey, inter, interKey), nil
}

func parseCertAndKey(what string, certDER, keyDER []byte) (*x509.Certificate, crypto.Signer, error) {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s certificate: %w", ErrInvalidCAState, what, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s key: %w", ErrInvalidCAState, what, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s key of type %T cannot sign", ErrInvalidCAState, what, k)
	}
	if !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, nil, fmt.Errorf("%w: %s key does not match its certificate", ErrInvalidCAState, what)
	}
	return cert, signer, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// TrustDomain is the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.cfg.TrustDomain }

// Root is the root certificate. Do not modify it.
func (ca *CA) Root() *x509.Certificate { return ca.root }

// Intermediate is the signing certificate. Do not modify it.
func (ca *CA) Intermediate() *x509.Certificate { return ca.inter }

// Bundle is the trust bundle (the roots). It is a fresh copy, safe to modify.
func (ca *CA) Bundle() *x509bundle.Bundle { return ca.bundle.Clone() }

// RootPin is "sha256:<hex of sha256(root SubjectPublicKeyInfo)>".
func (ca *CA) RootPin() string { return SPKIPin(ca.root) }

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
func (ca *CA) SignCSR(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	if err := ca.checkID(id); err != nil {
		return nil, err
	}
	csr, err := ValidateCSR(csrDER, id)
	if err != nil {
		return nil, err
	}
	leaf, err := ca.issue(csr.PublicKey, id, ttl)
	if err != nil {
		return nil, err
	}
	return []*x509.Certificate{leaf, ca.inter}, nil
}

// IssueSVID generates a P-256 key and signs an SVID for id with it (meshd's
// own serving certificate, the operator credential). ttl 0 = SVIDTTL.
// The SVID's Certificates are [leaf, intermediate].
func (ca *CA) IssueSVID(id spiffeid.ID, ttl time.Duration) (*x509svid.SVID, error) {
	if err := ca.checkID(id); err != nil {
		return nil, err
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	leaf, err := ca.issue(key.Public(), id, ttl)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf, ca.inter}, PrivateKey: key}, nil
}

// IssueServingSVID is IssueSVID with the root appended to the chain
// ([leaf, intermediate, root]): a server whose clients authenticate it by
// pin (PinnedClientConfig) must present the root they pin.
func (ca *CA) IssueServingSVID(id spiffeid.ID, ttl time.Duration) (*x509svid.SVID, error) {
	svid, err := ca.IssueSVID(id, ttl)
	if err != nil {
		return nil, err
	}
	svid.Certificates = append(svid.Certificates, ca.root)
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

func (ca *CA) issue(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration) (*x509.Certificate, error) {
	if ttl < 0 {
		return nil, fmt.Errorf("%w: negative TTL %v", ErrInvalidConfig, ttl)
	}
	if ttl == 0 {
		ttl = ca.cfg.SVIDTTL
	}
	now := ca.cfg.Clock.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.inter.NotAfter) {
		notAfter = ca.inter.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("%w: intermediate expired at %s", ErrCAExpired, ca.inter.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"minimesh"}},
		NotBefore:             now.Add(-ca.cfg.Backdate),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		IsCA:                  false,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:                  []*url.URL{id.URL()},
		SubjectKeyId:          subjectKeyID(pub),
	}
	leaf, err := createCert(tmpl, ca.inter, pub, ca.interKey)
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
