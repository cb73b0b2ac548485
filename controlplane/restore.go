package controlplane

import (
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
// backup first: it must open as a data file of this schema, memdb and bbolt
// must agree on it, and it must hold a CA that loads. A backup whose CA is
// encrypted needs caKeyFile, the --ca-key-file meshd will run with ("" for
// none); a plain one restores with or without it (meshd encrypts it at its
// first start with the key file).
func Restore(dataDir, backup, caKeyFile string) error {
	var key *CAKey
	if caKeyFile != "" {
		var err error
		if key, err = ReadCAKeyFile(caKeyFile); err != nil {
			return fmt.Errorf("controlplane: restore: %w", err)
		}
	}
	if err := store.CheckDataDir(dataDir); err != nil {
		return err
	}
	dst := filepath.Join(dataDir, dataFile)
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("controlplane: restore: %s already exists; restore into an empty data dir (nothing was overwritten)", dst)
	}
	in, err := os.Open(backup)
	if err != nil {
		return fmt.Errorf("controlplane: restore: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dataDir, ".restore-*")
	if err != nil {
		return fmt.Errorf("controlplane: restore: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("controlplane: restore: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("controlplane: restore: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("controlplane: restore: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return fmt.Errorf("controlplane: restore: %w", err)
	}
	if err := checkDataFile(tmp.Name(), key); err != nil {
		if errors.Is(err, ErrCAKeyRequired) || errors.Is(err, ErrCAKeyMismatch) {
			return fmt.Errorf("controlplane: restore: %s: %w (nothing was restored)", backup, err)
		}
		return fmt.Errorf("controlplane: restore: %s is not a usable backup: %w", backup, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("controlplane: restore: %w", err)
	}
	return nil
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
