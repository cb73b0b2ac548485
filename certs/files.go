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

	"minimesh/internal/fsguard"
)

// File names WriteSVID and LoadSVID use inside their directory.
const (
	SVIDFile    = "svid.pem"     // the certificate chain, leaf first
	SVIDKeyFile = "svid_key.pem" // the PKCS#8 private key, mode 0600
	BundleFile  = "bundle.pem"   // the trust bundle's roots
)

// Size limits of the files LoadSVID reads.
const (
	maxChainFile = 1 << 20
	maxKeyFile   = 64 << 10
)

// WriteSVID writes dir/svid.pem (chain), dir/svid_key.pem and
// dir/bundle.pem, each atomically and with mode 0600; dir is created 0700 if
// missing, and must be a trusted directory (fsguard.OpenDir: ours, not
// writable by others, no symbolic link on its path). The three files are not
// replaced as one: a reader racing a write may see a new key with an old
// chain, which LoadSVID reports as an error to retry.
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
	d, err := fsguard.OpenDir(dir, true)
	if err != nil {
		return fmt.Errorf("certs: WriteSVID: %w", err)
	}
	defer d.Close()
	if err := d.WriteFile(SVIDKeyFile, keyPEM, 0o600); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := d.WriteFile(SVIDFile, EncodeCertsPEM(svid.Certificates), 0o600); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := d.WriteFile(BundleFile, EncodeCertsPEM(bundle.X509Authorities()), 0o600); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}

// LoadSVID reads what WriteSVID wrote. The SVID must be of trust domain td
// and the bundle is taken to be td's. dir must be a trusted directory
// (fsguard.OpenDir) and each file a regular file (never a symbolic link)
// owned by this process's user; the key must have mode 0600 (no group or
// other bits), the chain and bundle no group or other write bit. Anything
// else is an error wrapping fsguard.ErrUntrusted: a key this process did not
// write is never used. A missing directory or file wraps fs.ErrNotExist.
func LoadSVID(dir string, td spiffeid.TrustDomain) (*x509svid.SVID, *x509bundle.Bundle, error) {
	d, err := fsguard.OpenDir(dir, false)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: load SVID from %s: %w", dir, err)
	}
	defer d.Close()
	read := func(name string, secret bool, max int64) ([]byte, error) {
		return d.ReadFile(name, secret, max)
	}
	return loadSVID(dir, td, read)
}

// LoadMountedSVID reads a credential WriteSVID wrote that may have been
// copied into a mounted volume (meshctl's operator credential, from a
// Kubernetes Secret): symbolic links are followed, and each file must be a
// regular file owned by this process's user or root, not writable by group
// or others; the key must not be readable by others (0440 for the pod's
// group passes).
func LoadMountedSVID(dir string, td spiffeid.TrustDomain) (*x509svid.SVID, *x509bundle.Bundle, error) {
	read := func(name string, secret bool, max int64) ([]byte, error) {
		return fsguard.ReadMounted(filepath.Join(dir, name), secret, max)
	}
	return loadSVID(dir, td, read)
}

func loadSVID(dir string, td spiffeid.TrustDomain, read func(name string, secret bool, max int64) ([]byte, error)) (*x509svid.SVID, *x509bundle.Bundle, error) {
	chainPEM, err := read(SVIDFile, false, maxChainFile)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: load SVID from %s: %w", dir, err)
	}
	keyPEM, err := read(SVIDKeyFile, true, maxKeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: load SVID from %s: %w", dir, err)
	}
	svid, err := x509svid.Parse(chainPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: load SVID from %s: %w", dir, err)
	}
	if !svid.ID.MemberOf(td) {
		return nil, nil, fmt.Errorf("%w: SVID in %s is %q, not of trust domain %q", ErrInvalidID, dir, svid.ID.String(), td.Name())
	}
	bundlePEM, err := read(BundleFile, false, maxChainFile)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: load bundle from %s: %w", dir, err)
	}
	bundle, err := x509bundle.Parse(td, bundlePEM)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: load bundle from %s: %w", dir, err)
	}
	if bundle.Empty() {
		return nil, nil, fmt.Errorf("certs: load bundle from %s: %w: empty", dir, ErrNoBundle)
	}
	return svid, bundle, nil
}

// WriteFileAtomic replaces path with data: it writes a temporary file in the
// same directory with mode perm (created O_EXCL|O_NOFOLLOW), fsyncs it,
// renames it over path and fsyncs the directory. Readers see the old or the
// new content, never a mix, and a key is never readable beyond perm, not
// even briefly. The directory must be a trusted one (fsguard.OpenDir: ours,
// not writable by others, no symbolic link on its path).
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	d, err := fsguard.OpenDir(filepath.Dir(path), false)
	if err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	defer d.Close()
	if err := d.WriteFile(filepath.Base(path), data, perm); err != nil {
		return fmt.Errorf("certs: %w", err)
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
