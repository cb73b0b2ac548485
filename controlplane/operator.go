package controlplane

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/status"

	"minimesh/certs"
	"minimesh/controlplane/admin"
	"minimesh/controlplane/authn"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// The operator credential's lifecycle. Every operator credential is
// spiffe://<td>/ns/minimesh-system/sa/operator, so one is told from another
// by its certificate serial: each is recorded in the certificates table
// with where it was issued (admin.IssuedAtStart, IssuedAtRotation,
// IssuedOffline), revoked by serial into the revocations table, and the
// operator rule refuses a revoked serial at every call. meshd writes one
// to <data-dir>/operator at start (again when that one is missing, past
// half its life, from another root, or revoked); `meshd operator issue`
// writes one anywhere with meshd stopped; `meshctl operator revoke` and
// `meshd operator revoke` (stopped) revoke one.

// revokedSerial is authn's revoked-set check: one memdb read.
func (s *Server) revokedSerial(serial string) bool {
	revoked := true // fail closed
	_ = s.store.View(func(r *store.Reader) error {
		revoked = admin.Revoked(r, serial)
		return nil
	})
	return revoked
}

// recordOperator records an operator certificate with where it was issued.
func recordOperator(st *store.Store, leaf *x509.Certificate, id spiffeid.ID, where, rootPin string) error {
	return st.Update(func(tx *store.Txn) error {
		return tx.Put(store.TableCertificates, &store.Certificate{
			Serial:    authn.Serial(leaf),
			SPIFFEID:  id.String(),
			NotBefore: leaf.NotBefore,
			NotAfter:  leaf.NotAfter,
			IssuedBy:  where,
			RootPin:   rootPin,
		})
	})
}

// writeOperatorFiles writes an operator credential into dir (created 0700):
// every file 0600, each replaced atomically. The bundle goes first (it
// holds every root, old and new), the key and certificate last, next to
// each other; meshctl retries a load that catches them in between.
func writeOperatorFiles(dir string, svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("controlplane: operator dir: %w", err)
	}
	keyPEM, err := certs.EncodePrivateKeyPEM(svid.PrivateKey)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{certs.BundleFile, certs.EncodeCertsPEM(bundle.X509Authorities())},
		{certs.SVIDKeyFile, keyPEM},
		{certs.SVIDFile, certs.EncodeCertsPEM(svid.Certificates)},
	} {
		if err := certs.WriteFileAtomic(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return fmt.Errorf("controlplane: operator credential: %w", err)
		}
	}
	return nil
}

// checkOutDir refuses an output directory that is a symlink or that others
// may read or write: it is to hold a private key. A missing one is fine
// (it is created 0700).
func checkOutDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("--out: %s is a symlink; name the directory itself", dir)
	case !fi.IsDir():
		return fmt.Errorf("--out: %s is not a directory", dir)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("--out: %s has mode %v; the credential's key must be private to you: chmod 700 %s", dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// ErrMeshdRunning is returned by the offline operator commands when meshd
// holds the data file.
var ErrMeshdRunning = errors.New("meshd is running on this data dir")

// openOffline opens the data dir's store as meshd does, and with withCA its
// CA, for the offline operator commands (meshd stopped). It never creates a
// data file or a CA.
func openOffline(cfg Config, withCA bool) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("--data-dir is required")
	}
	explicitTD := cfg.TrustDomain != ""
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	path := filepath.Join(cfg.DataDir, dataFile)
	if _, err := os.Stat(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("--data-dir: %w (nothing was written)", err)
	}
	if err := store.CheckDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s holds no data file (%s): start meshd on it once first, which creates the CA (nothing was written)", cfg.DataDir, dataFile)
	} else if err != nil {
		return nil, err
	}
	st, err := store.Open(store.Config{Path: path, Logger: cfg.Logger})
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("%w (%s is locked by another process): use `meshctl operator ...` against the running meshd, or stop it first", ErrMeshdRunning, path)
	}
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, store: st}
	if explicitTD {
		if s.td, err = spiffeid.TrustDomainFromString(cfg.TrustDomain); err != nil {
			_ = st.Close()
			return nil, fmt.Errorf("--trust-domain %q: %w", cfg.TrustDomain, err)
		}
	}
	if !withCA {
		return s, nil
	}
	// The loading path meshd's tools share (LoadCAState): a CA sealed with
	// --ca-key-file needs the same file here.
	ca, err := LoadCAState(st, cfg.CAKeyFile, certs.CAConfig{TrustDomain: s.td, Clock: cfg.Clock, SVIDTTL: cfg.SVIDTTL})
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	s.ca.set(ca)
	s.td = ca.TrustDomain()
	return s, nil
}

// IssuedOperator is what IssueOperator wrote.
type IssuedOperator struct {
	Dir      string
	Serial   string
	ID       spiffeid.ID
	NotAfter time.Time
	RootPin  string
}

// IssueOperator is `meshd operator issue`: with meshd stopped, it issues a
// new operator credential from the data dir's CA (loaded as meshd loads
// it), records it (issued_by operator:offline) and writes svid.pem,
// svid_key.pem and bundle.pem (0600) into outDir (0700). It needs no
// existing credential. ttl 0 is cfg.OperatorTTL's default.
func IssueOperator(cfg Config, outDir string, ttl time.Duration) (*IssuedOperator, error) {
	if outDir == "" {
		return nil, errors.New("--out: required (the directory to write the credential into)")
	}
	if ttl < 0 {
		return nil, fmt.Errorf("--ttl: %v is negative", ttl)
	}
	if err := checkOutDir(outDir); err != nil {
		return nil, err
	}
	if ttl != 0 {
		cfg.OperatorTTL = ttl
	}
	s, err := openOffline(cfg, true)
	if err != nil {
		return nil, err
	}
	defer s.close()
	ca := s.ca.get()
	id := certs.OperatorID(s.td)
	svid, err := ca.IssueSVID(id, s.cfg.OperatorTTL)
	if err != nil {
		return nil, err
	}
	leaf := svid.Certificates[0]
	// Recorded before it exists anywhere, so it can always be listed and
	// revoked.
	if err := recordOperator(s.store, leaf, id, admin.IssuedOffline, ca.RootPin()); err != nil {
		return nil, err
	}
	if err := writeOperatorFiles(outDir, svid, ca.Bundle()); err != nil {
		return nil, err
	}
	s.cfg.Logger.Info("wrote operator credential", "dir", outDir, "serial", authn.Serial(leaf), "issued_by", admin.IssuedOffline, "expires", leaf.NotAfter)
	return &IssuedOperator{Dir: outDir, Serial: authn.Serial(leaf), ID: id, NotAfter: leaf.NotAfter, RootPin: ca.RootPin()}, nil
}

// RevokeOperator is `meshd operator revoke`: with meshd stopped, it adds
// an operator credential's serial to the data dir's revoked set, with the
// same checks as meshctl operator revoke. Errors read as plain text. It
// needs no CA key: revoking must not wait for one.
func RevokeOperator(cfg Config, serial string, force bool) (*meshv1.RevokeOperatorResponse, error) {
	s, err := openOffline(cfg, false)
	if err != nil {
		return nil, err
	}
	defer s.close()
	resp, err := admin.RevokeOperator(s.store, admin.OperatorRevocation{Serial: serial, Force: force, Reason: "meshd operator revoke", Now: s.cfg.Clock.Now()})
	if err != nil {
		return nil, errors.New(status.Convert(err).Message())
	}
	if !resp.GetAlreadyRevoked() {
		s.cfg.Logger.Warn("operator credential revoked", "serial", resp.GetOperator().GetSerial(), "issued_by", resp.GetOperator().GetIssuedBy(), "remaining", resp.GetRemaining(), "force", force, "offline", true)
	}
	return resp, nil
}
