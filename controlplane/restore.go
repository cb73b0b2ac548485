package controlplane

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"minimesh/certs"
	"minimesh/controlplane/store"
)

// Restore installs a backup (from `meshctl backup`) as the data file of
// dataDir. It refuses to overwrite an existing data file, and checks the
// backup first: it must read whole, memdb and bbolt must agree on what was
// restored, and it must hold a CA that loads. A backup whose CA is
// encrypted needs caKeyFile, the --ca-key-file meshd will run with ("" for
// none); a plain one restores with or without it (meshd encrypts it at its
// first start with the key file).
//
// A backup is the backend-neutral format (store.ReadBackup) or, from a
// meshd before it, a raw copy of the bbolt data file (told by bbolt's
// magic), which still restores.
func Restore(dataDir, backup, caKeyFile string) error {
	key, err := restoreKey(caKeyFile)
	if err != nil {
		return err
	}
	if err := store.CheckDataDir(dataDir); err != nil {
		return err
	}
	dst := filepath.Join(dataDir, dataFile)
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("controlplane: restore: %s already exists; restore into an empty data dir (nothing was overwritten)", dst)
	}
	contents, legacy, err := readBackup(backup, dataDir, key)
	if err != nil {
		return err
	}
	if legacy != "" { // already a checked data file in dataDir: move it in
		defer os.Remove(legacy)
		return os.Rename(legacy, dst)
	}
	tmpf, err := os.CreateTemp(dataDir, ".restore-*")
	if err != nil {
		return fmt.Errorf("controlplane: restore: %w", err)
	}
	tmp := tmpf.Name()
	_ = tmpf.Close()
	_ = os.Remove(tmp) // bbolt makes it
	defer os.Remove(tmp)
	st, err := store.Open(store.Config{Path: tmp})
	if err != nil {
		return fmt.Errorf("controlplane: restore: %w", err)
	}
	err = st.Import(contents)
	if err == nil {
		err = st.CheckConsistency()
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("controlplane: restore: %s: %w (nothing was restored)", backup, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("controlplane: restore: %w", err)
	}
	return os.Rename(tmp, dst)
}

// RestoreEtcd installs a backup into an empty etcd prefix (refusing one
// that holds anything). The CA must be sealed in etcd, so caKeyFile is
// required; a plain backup's CA is sealed with it on the way.
func RestoreEtcd(ec *store.EtcdConfig, scratchDir, backup, caKeyFile string) error {
	if caKeyFile == "" {
		return errors.New("controlplane: restore: --ca-key-file is required with an etcd store (the CA keys are kept sealed in etcd)")
	}
	key, err := restoreKey(caKeyFile)
	if err != nil {
		return err
	}
	contents, legacy, err := readBackup(backup, scratchDir, key)
	if err != nil {
		return err
	}
	if legacy != "" {
		defer os.Remove(legacy)
		st, err := store.Open(store.Config{Path: legacy})
		if err != nil {
			return fmt.Errorf("controlplane: restore: %w", err)
		}
		contents, err = st.Contents()
		_ = st.Close()
		if err != nil {
			return fmt.Errorf("controlplane: restore: %w", err)
		}
	}
	stored := contents[""][caMetaKey]
	if !caStateSealed(stored) {
		ca, err := certs.LoadCA(certs.CAConfig{}, stored)
		if err != nil {
			return fmt.Errorf("controlplane: restore: %s: stored CA: %w", backup, err)
		}
		if contents[""][caMetaKey], err = sealCAState(key, ca.TrustDomain(), stored); err != nil {
			return err
		}
	}
	st, err := store.Open(store.Config{Etcd: ec})
	if err != nil {
		return fmt.Errorf("controlplane: restore: %w", err)
	}
	defer st.Close()
	if err := st.Import(contents); err != nil {
		return fmt.Errorf("controlplane: restore: %s: %w", backup, err)
	}
	return st.CheckConsistency()
}

func restoreKey(caKeyFile string) (*CAKey, error) {
	if caKeyFile == "" {
		return nil, nil
	}
	key, err := ReadCAKeyFile(caKeyFile)
	if err != nil {
		return nil, fmt.Errorf("controlplane: restore: %w", err)
	}
	return key, nil
}

// readBackup reads and checks a backup. A backend-neutral one comes back
// as contents; a raw bbolt file (older meshd) is copied into dir and
// checked there, and its path comes back instead.
func readBackup(backup, dir string, key *CAKey) (contents store.Contents, legacy string, err error) {
	in, err := os.Open(backup)
	if err != nil {
		return nil, "", fmt.Errorf("controlplane: restore: %w", err)
	}
	defer in.Close()
	head := make([]byte, 64)
	n, _ := io.ReadFull(in, head)
	head = head[:n]
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return nil, "", fmt.Errorf("controlplane: restore: %w", err)
	}
	refuse := func(err error) error {
		if errors.Is(err, ErrCAKeyRequired) || errors.Is(err, ErrCAKeyMismatch) {
			return fmt.Errorf("controlplane: restore: %s: %w (nothing was restored)", backup, err)
		}
		return fmt.Errorf("controlplane: restore: %s is not a usable backup: %w", backup, err)
	}
	if !store.IsBackup(head) {
		path, err := copyLegacy(in, dir)
		if err != nil {
			return nil, "", err
		}
		if err := checkDataFile(path, key); err != nil {
			os.Remove(path)
			return nil, "", refuse(err)
		}
		return nil, path, nil
	}
	contents, err = store.ReadBackup(in)
	if err != nil {
		return nil, "", refuse(err)
	}
	stored := contents[""][caMetaKey]
	if stored == nil {
		return nil, "", refuse(errors.New("it holds no certificate authority"))
	}
	// A copy: loadCAValue clears the plain state it decoded.
	if _, _, err := loadCAValue(bytes.Clone(stored), key, certs.CAConfig{}); err != nil {
		return nil, "", refuse(err)
	}
	return contents, "", nil
}

// copyLegacy copies a raw bbolt backup into dir (0600, fsynced).
func copyLegacy(in io.Reader, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("controlplane: restore: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".restore-*")
	if err != nil {
		return "", fmt.Errorf("controlplane: restore: %w", err)
	}
	fail := func(err error) (string, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return "", fmt.Errorf("controlplane: restore: %w", err)
	}
	if _, err := io.Copy(tmp, in); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("controlplane: restore: %w", err)
	}
	return tmp.Name(), nil
}

// checkDataFile opens a data file and checks what meshd needs of it.
func checkDataFile(path string, key *CAKey) error {
	st, err := store.Open(store.Config{Path: path})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.CheckConsistency(); err != nil {
		return err
	}
	ca, _, err := loadCA(st, key, certs.CAConfig{})
	if err != nil {
		return err
	}
	if ca == nil {
		return errors.New("it holds no certificate authority")
	}
	return nil
}
