package agent

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"minimesh/certs"
	"minimesh/internal/fsguard"
)

const (
	instanceIDFile = "instance_id"
	pendingKeyFile = "pending_key.pem"

	maxInstanceIDFile = 256
	maxPendingKeyFile = 64 << 10
)

// openStateDir opens the state dir as a trusted directory (fsguard.OpenDir):
// no symbolic link on its path, owned by this process's user and not
// writable by group or others; with create, it is made 0700 when missing.
// Whatever the state dir holds is read and written through it, so nothing
// another user placed there is ever used.
func openStateDir(dir string, create bool) (*fsguard.Dir, error) {
	d, err := fsguard.OpenDir(dir, create)
	if err != nil {
		return nil, fmt.Errorf("agent: state dir (--state-dir): %w", err)
	}
	return d, nil
}

// loadOrCreateInstanceID returns the instance ID kept in dir, making one on
// first start: "<service>-<random hex>". A kept file that this process's
// user does not own, that others can read or write, or that is a symbolic
// link is refused (an error, never used).
func loadOrCreateInstanceID(dir, service string) (string, error) {
	d, err := openStateDir(dir, true)
	if err != nil {
		return "", err
	}
	defer d.Close()
	b, err := d.ReadFile(instanceIDFile, true, maxInstanceIDFile)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" {
			return "", fmt.Errorf("agent: %s/%s is empty", d.Path(), instanceIDFile)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("agent: instance id: %w", err)
	}
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("agent: instance id: %w", err)
	}
	prefix := service
	if len(prefix) > 40 {
		prefix = prefix[:40]
	}
	id := strings.Trim(prefix, "-") + "-" + hex.EncodeToString(r[:])
	if err := d.WriteFile(instanceIDFile, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("agent: instance id: %w", err)
	}
	return id, nil
}

// pendingKey returns the key kept for an unfinished bootstrap, making and
// keeping one when there is none. A bootstrap retried after a lost reply or
// a crash then presents the same key, and meshd returns the SVID it already
// issued instead of using the token again.
//
// The kept key is used only when this proxy wrote it: a regular file (not a
// symbolic link) owned by this process's user with mode 0600. Anything else
// is never used: it is logged, counted, removed and replaced by a new key
// (the retried bootstrap then costs a token use, which is the point: a key
// someone else holds must not get an SVID).
func (a *Agent) pendingKey() (crypto.Signer, error) {
	d, err := openStateDir(a.cfg.StateDir, true)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	b, err := d.ReadFile(pendingKeyFile, true, maxPendingKeyFile)
	switch {
	case err == nil:
		k, perr := parsePendingKey(b)
		if perr == nil {
			return k, nil
		}
		a.cfg.Logger.Warn("the kept pending key does not parse; replacing it", "path", d.Path()+"/"+pendingKeyFile, "error", perr)
	case errors.Is(err, fs.ErrNotExist):
	default:
		a.cfg.Logger.Warn("refusing the kept pending key: this proxy did not write it; a new key replaces it", "error", err)
		if a.refused != nil {
			a.refused.WithLabelValues(pendingKeyFile).Inc()
		}
		if rerr := d.Remove(pendingKeyFile); rerr != nil {
			return nil, fmt.Errorf("agent: pending key: %w (after refusing it: %v)", rerr, err)
		}
	}
	key, err := certs.GenerateKey()
	if err != nil {
		return nil, err
	}
	pemKey, err := certs.EncodePrivateKeyPEM(key)
	if err != nil {
		return nil, err
	}
	if err := d.WriteFile(pendingKeyFile, pemKey, 0o600); err != nil {
		return nil, fmt.Errorf("agent: pending key: %w", err)
	}
	return key, nil
}

func parsePendingKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T is not a signer", k)
	}
	return s, nil
}

func dropPendingKey(dir string) {
	if d, err := fsguard.OpenDir(dir, false); err == nil {
		_ = d.Remove(pendingKeyFile)
		_ = d.Close()
	}
}
