package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxCSRSize is the largest CSR ValidateCSR parses.
const MaxCSRSize = 8 << 10

// MinRSABits is the smallest RSA modulus ValidateCSR accepts.
const MinRSABits = 2048

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// ValidateCSR parses and checks a PKCS#10 CSR (DER, at most MaxCSRSize bytes)
// asking for an SVID of exactly want. In order:
//   - unparseable or too large: ErrCSRMalformed
//   - self-signature does not verify: ErrCSRSignature
//   - key not ECDSA P-256/P-384, RSA >= 2048 bits or Ed25519: ErrWeakKey
//     (Ed25519 is accepted: it is strong, and TLS 1.3 and go-spiffe support it)
//   - basicConstraints with CA=true requested: ErrCSRCA
//   - any DNS, IP, e-mail or other non-URI SAN, or more than one URI: ErrCSRExtraSAN
//   - no URI SAN, or one that is not exactly want: ErrCSRIdentity
//
// The subject and every other requested extension are ignored: the CA builds
// the certificate from its own template.
func ValidateCSR(csrDER []byte, want spiffeid.ID) (*x509.CertificateRequest, error) {
	if len(csrDER) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrCSRMalformed)
	}
	if len(csrDER) > MaxCSRSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrCSRMalformed, len(csrDER), MaxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSRMalformed, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSRSignature, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if rest, err := asn1.Unmarshal(ext.Value, &bc); err != nil || len(rest) != 0 {
				return nil, fmt.Errorf("%w: basicConstraints extension does not parse", ErrCSRMalformed)
			}
			if bc.IsCA {
				return nil, fmt.Errorf("%w: basicConstraints CA=true", ErrCSRCA)
			}
		case ext.Id.Equal(oidSubjectAltName):
			if err := checkOnlyURISANs(ext.Value); err != nil {
				return nil, err
			}
		}
	}
	switch {
	case len(csr.DNSNames) > 0:
		return nil, fmt.Errorf("%w: DNS names %q", ErrCSRExtraSAN, csr.DNSNames)
	case len(csr.IPAddresses) > 0:
		return nil, fmt.Errorf("%w: IP addresses %v", ErrCSRExtraSAN, csr.IPAddresses)
	case len(csr.EmailAddresses) > 0:
		return nil, fmt.Errorf("%w: e-mail addresses %q", ErrCSRExtraSAN, csr.EmailAddresses)
	case len(csr.URIs) > 1:
		return nil, fmt.Errorf("%w: %d URI SANs, want exactly one", ErrCSRExtraSAN, len(csr.URIs))
	case len(csr.URIs) == 0:
		return nil, fmt.Errorf("%w: no URI SAN, want %q", ErrCSRIdentity, want.String())
	case want.IsZero():
		return nil, fmt.Errorf("%w: no expected identity given", ErrCSRIdentity)
	}
	got, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("%w: URI SAN %q is not a SPIFFE ID: %w", ErrCSRIdentity, truncate(csr.URIs[0].String(), 256), err)
	}
	if got != want {
		return nil, fmt.Errorf("%w: CSR asks for %q, want %q", ErrCSRIdentity, got.String(), want.String())
	}
	return csr, nil
}

// CheckedCSR is a CSR that ValidateCSR accepted for one identity: the only
// input SignChecked takes, so a CSR is parsed and checked once per issuance.
type CheckedCSR struct {
	csr *x509.CertificateRequest
	id  spiffeid.ID
}

// CheckCSR is ValidateCSR returning a CheckedCSR for CA.SignChecked.
func CheckCSR(csrDER []byte, want spiffeid.ID) (*CheckedCSR, error) {
	csr, err := ValidateCSR(csrDER, want)
	if err != nil {
		return nil, err
	}
	return &CheckedCSR{csr: csr, id: want}, nil
}

// ID is the identity the CSR was checked for.
func (c *CheckedCSR) ID() spiffeid.ID { return c.id }

// PublicKey is the CSR's public key.
func (c *CheckedCSR) PublicKey() crypto.PublicKey { return c.csr.PublicKey }

// checkOnlyURISANs rejects SAN extensions holding any GeneralName other than
// uniformResourceIdentifier ([6]), including the kinds x509 does not parse
// (otherName, directoryName, registeredID, ...).
func checkOnlyURISANs(value []byte) error {
	var names []asn1.RawValue
	rest, err := asn1.Unmarshal(value, &names)
	if err != nil || len(rest) != 0 {
		return fmt.Errorf("%w: subjectAltName extension does not parse", ErrCSRMalformed)
	}
	for _, n := range names {
		if n.Class != asn1.ClassContextSpecific || n.Tag != 6 {
			return fmt.Errorf("%w: SAN of class %d tag %d (only URI SANs are allowed)", ErrCSRExtraSAN, n.Class, n.Tag)
		}
	}
	return nil
}

func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384():
			return nil
		}
		return fmt.Errorf("%w: ECDSA curve %s (want P-256 or P-384)", ErrWeakKey, k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return fmt.Errorf("%w: RSA %d bits (want >= %d)", ErrWeakKey, k.N.BitLen(), MinRSABits)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("%w: key type %T", ErrWeakKey, pub)
	}
}

// NewCSR builds a DER PKCS#10 CSR for id (its only SAN) signed by key: the
// client side of SignCSR.
func NewCSR(key crypto.Signer, id spiffeid.ID) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("certs: NewCSR: nil key")
	}
	if id.IsZero() {
		return nil, fmt.Errorf("%w: empty ID", ErrInvalidID)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{id.URL()},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("certs: create CSR: %w", err)
	}
	return der, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
