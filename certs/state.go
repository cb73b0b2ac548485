package certs

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"

	// pemRole is the PEM header that marks the blocks of a root rotation in
	// the CA state: "next" (root, key, intermediate, key) or "retired" (a
	// former root's certificate).
	pemRole        = "Minimesh-Role"
	pemRoleNext    = "next"
	pemRoleRetired = "retired"
)

// MarshalState serializes the CA as PEM: root certificate, root key,
// intermediate certificate, intermediate key (keys PKCS#8); during a root
// rotation these are followed by the next root's four blocks and the retired
// roots' certificates, marked with a "Minimesh-Role" header. The result holds
// private keys: store it 0600 and never log it.
func (ca *CA) MarshalState() ([]byte, error) {
	out, err := marshalAuthority(ca.active, nil)
	if err != nil {
		return nil, err
	}
	if ca.next != nil {
		next, err := marshalAuthority(*ca.next, map[string]string{pemRole: pemRoleNext})
		if err != nil {
			return nil, err
		}
		out = append(out, next...)
	}
	for _, r := range ca.retired {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Headers: map[string]string{pemRole: pemRoleRetired}, Bytes: r.Raw})...)
	}
	return out, nil
}

func marshalAuthority(a authority, headers map[string]string) ([]byte, error) {
	rootKey, err := x509.MarshalPKCS8PrivateKey(a.rootKey)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal root key: %w", err)
	}
	interKey, err := x509.MarshalPKCS8PrivateKey(a.interKey)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal intermediate key: %w", err)
	}
	var out []byte
	for _, b := range []*pem.Block{
		{Type: pemCertificate, Headers: headers, Bytes: a.root.Raw},
		{Type: pemPrivateKey, Headers: headers, Bytes: rootKey},
		{Type: pemCertificate, Headers: headers, Bytes: a.inter.Raw},
		{Type: pemPrivateKey, Headers: headers, Bytes: interKey},
	} {
		out = append(out, pem.EncodeToMemory(b)...)
	}
	return out, nil
}

// LoadCA restores a CA from MarshalState output. It checks that each key
// matches its certificate, that each root is a self-signed CA of the trust
// domain, and that each intermediate is a CA signed by its root. Errors wrap
// ErrInvalidCAState. Validity periods are not checked here: SignCSR refuses
// once the intermediate has expired (see IntermediateNeedsRotation).
func LoadCA(cfg CAConfig, state []byte) (*CA, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var active, next []*pem.Block
	var retired []*x509.Certificate
	rest := state
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch role := b.Headers[pemRole]; {
		case len(b.Headers) == 0:
			if next != nil || retired != nil {
				return nil, fmt.Errorf("%w: active blocks must come first", ErrInvalidCAState)
			}
			active = append(active, b)
		case len(b.Headers) == 1 && role == pemRoleNext:
			next = append(next, b)
		case len(b.Headers) == 1 && role == pemRoleRetired && b.Type == pemCertificate:
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: retired root: %w", ErrInvalidCAState, err)
			}
			retired = append(retired, c)
		default:
			return nil, fmt.Errorf("%w: unexpected %q block with headers %v", ErrInvalidCAState, b.Type, b.Headers)
		}
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the PEM blocks", ErrInvalidCAState)
	}
	a, rootTD, err := parseAuthority("", active)
	if err != nil {
		return nil, err
	}
	if cfg.TrustDomain.IsZero() {
		cfg.TrustDomain = rootTD
	}
	if err := checkRoot("root", a.root, cfg.TrustDomain); err != nil {
		return nil, err
	}
	var nextA *authority
	if next != nil {
		n, _, err := parseAuthority("next ", next)
		if err != nil {
			return nil, err
		}
		if err := checkRoot("next root", n.root, cfg.TrustDomain); err != nil {
			return nil, err
		}
		nextA = &n
	}
	for _, r := range retired {
		if err := checkRoot("retired root", r, cfg.TrustDomain); err != nil {
			return nil, err
		}
	}
	return newCA(cfg, a, nextA, retired), nil
}

// parseAuthority parses root cert, root key, intermediate cert, intermediate key.
func parseAuthority(what string, blocks []*pem.Block) (authority, spiffeid.TrustDomain, error) {
	if len(blocks) != 4 {
		return authority{}, spiffeid.TrustDomain{}, fmt.Errorf("%w: want 4 %sPEM blocks, got %d", ErrInvalidCAState, what, len(blocks))
	}
	for i, want := range []string{pemCertificate, pemPrivateKey, pemCertificate, pemPrivateKey} {
		if blocks[i].Type != want {
			return authority{}, spiffeid.TrustDomain{}, fmt.Errorf("%w: %sPEM block %d is %q, want %q", ErrInvalidCAState, what, i, blocks[i].Type, want)
		}
	}
	root, rootKey, err := parseCertAndKey(what+"root", blocks[0].Bytes, blocks[1].Bytes)
	if err != nil {
		return authority{}, spiffeid.TrustDomain{}, err
	}
	inter, interKey, err := parseCertAndKey(what+"intermediate", blocks[2].Bytes, blocks[3].Bytes)
	if err != nil {
		return authority{}, spiffeid.TrustDomain{}, err
	}
	if !inter.IsCA {
		return authority{}, spiffeid.TrustDomain{}, fmt.Errorf("%w: %sintermediate is not a CA certificate", ErrInvalidCAState, what)
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		return authority{}, spiffeid.TrustDomain{}, fmt.Errorf("%w: %sintermediate is not signed by its root: %w", ErrInvalidCAState, what, err)
	}
	td, err := rootTrustDomain(root)
	if err != nil {
		return authority{}, spiffeid.TrustDomain{}, fmt.Errorf("%w: %sroot: %w", ErrInvalidCAState, what, err)
	}
	return authority{root: root, rootKey: rootKey, inter: inter, interKey: interKey}, td, nil
}

func rootTrustDomain(root *x509.Certificate) (spiffeid.TrustDomain, error) {
	if len(root.URIs) != 1 {
		return spiffeid.TrustDomain{}, fmt.Errorf("want exactly one URI SAN, got %d", len(root.URIs))
	}
	return spiffeid.TrustDomainFromURI(root.URIs[0])
}

// checkRoot: a self-signed CA certificate of trust domain td.
func checkRoot(what string, root *x509.Certificate, td spiffeid.TrustDomain) error {
	if !root.IsCA {
		return fmt.Errorf("%w: %s is not a CA certificate", ErrInvalidCAState, what)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return fmt.Errorf("%w: %s is not self-signed: %w", ErrInvalidCAState, what, err)
	}
	got, err := rootTrustDomain(root)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidCAState, what, err)
	}
	if got != td {
		return fmt.Errorf("%w: %s is for trust domain %q, want %q", ErrInvalidCAState, what, got.Name(), td.Name())
	}
	return nil
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
