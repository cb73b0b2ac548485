package certs

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// File names WriteSVID and LoadSVID use inside their directory.
const (
	SVIDFile    = "svid.pem"     // the certificate chain, leaf first
	SVIDKeyFile = "svid_key.pem" // the PKCS#8 private key, mode 0600
	BundleFile  = "bundle.pem"   // the trust bundle's roots
)

// WriteSVID writes dir/svid.pem (chain), dir/svid_key.pem (0600) and
// dir/bundle.pem, each atomically; dir is created 0700 if missing. The three
// files are not replaced as one: a reader racing a write may see a new key
// with an old chain, which LoadSVID reports as an error to retry.
func WriteSVID(dir string, svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		return fmt.Errorf("certs: WriteSVID: %w", ErrNoSVID)
	}
	if bundle == nil {
		return fmt.Errorf("certs: WriteSVID: %w", ErrNoBundle)
	}
	keyPEM, err := EncodePrivateKeyPEM(svid.PrivateKey)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certs: WriteSVID: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, SVIDKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	if err := WriteFileAtomic(filepath.Join(dir, SVIDFile), EncodeCertsPEM(svid.Certificates), 0o644); err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, BundleFile), EncodeCertsPEM(bundle.X509Authorities()), 0o644)
}

// LoadSVID reads what WriteSVID wrote. The SVID must be of trust domain td
// and the bundle is taken to be td's.
func LoadSVID(dir string, td spiffeid.TrustDomain) (*x509svid.SVID, *x509bundle.Bundle, error) {
	svid, err := x509svid.Load(filepath.Join(dir, SVIDFile), filepath.Join(dir, SVIDKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("certs: load SVID from %s: %w", dir, err)
	}
	if !svid.ID.MemberOf(td) {
		return nil, nil, fmt.Errorf("%w: SVID in %s is %q, not of trust domain %q", ErrInvalidID, dir, svid.ID.String(), td.Name())
	}
	bundle, err := x509bundle.Load(td, filepath.Join(dir, BundleFile))
	if err != nil {
		return nil, nil, fmt.Errorf("certs: load bundle from %s: %w", dir, err)
	}
	if bundle.Empty() {
		return nil, nil, fmt.Errorf("certs: load bundle from %s: %w: empty", dir, ErrNoBundle)
	}
	return svid, bundle, nil
}

// WriteFileAtomic replaces path with data: it writes a temporary file in the
// same directory with mode perm, fsyncs it, renames it over path and fsyncs
// the directory. Readers see the old or the new content, never a mix, and a
// key is never readable beyond perm, not even briefly.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// CreateTemp makes the file 0600; set the wanted mode before any data.
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // best effort: makes the rename durable
		_ = d.Close()
	}
	return nil
}

// EncodeCertsPEM encodes certificates as consecutive CERTIFICATE blocks.
func EncodeCertsPEM(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: c.Raw})...)
	}
	return out
}

// ParseCertsPEM parses one or more CERTIFICATE blocks; any other block or
// trailing non-PEM data is an error wrapping ErrInvalidPEM.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var der [][]byte
	rest := data
	for {
		b, r := pem.Decode(rest)
		if b == nil {
			break
		}
		rest = r
		if b.Type != pemCertificate {
			return nil, fmt.Errorf("%w: unexpected %q block", ErrInvalidPEM, b.Type)
		}
		der = append(der, b.Bytes)
	}
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: no CERTIFICATE block", ErrInvalidPEM)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the last block", ErrInvalidPEM)
	}
	certs, err := ParseCertsDER(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPEM, err)
	}
	return certs, nil
}

// ParseCertsDER parses DER certificates (as in tls.Config.VerifyPeerCertificate
// or X509SVID.cert_chain).
func ParseCertsDER(der [][]byte) ([]*x509.Certificate, error) {
	if len(der) == 0 {
		return nil, errors.New("certs: no certificates")
	}
	out := make([]*x509.Certificate, 0, len(der))
	for i, d := range der {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("certs: certificate %d: %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// EncodePrivateKeyPEM encodes key as a PKCS#8 PRIVATE KEY block. The result
// is a secret: write it with mode 0600 and never log it.
func EncodePrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}
