package agent

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"minimesh/certs"
)

const (
	instanceIDFile = "instance_id"
	pendingKeyFile = "pending_key.pem"
)

// loadOrCreateInstanceID returns the instance ID kept in dir, making one on
// first start: "<service>-<random hex>".
func loadOrCreateInstanceID(dir, service string) (string, error) {
	p := filepath.Join(dir, instanceIDFile)
	b, err := os.ReadFile(p)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" {
			return "", fmt.Errorf("agent: %s is empty", p)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
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
	if err := certs.WriteFileAtomic(p, []byte(id+"\n"), 0o600); err != nil {
		return "", err
	}
	return id, nil
}

// pendingKey returns the key kept for an unfinished bootstrap, making and
// keeping one when there is none. A bootstrap retried after a lost reply or
// a crash then presents the same key, and meshd returns the SVID it already
// issued instead of using the token again.
func pendingKey(dir string) (crypto.Signer, error) {
	p := filepath.Join(dir, pendingKeyFile)
	if b, err := os.ReadFile(p); err == nil {
		blk, _ := pem.Decode(b)
		if blk != nil {
			if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
				if s, ok := k.(crypto.Signer); ok {
					return s, nil
				}
			}
		}
		// Unreadable: replace it.
	}
	key, err := certs.GenerateKey()
	if err != nil {
		return nil, err
	}
	b, err := certs.EncodePrivateKeyPEM(key)
	if err != nil {
		return nil, err
	}
	if err := certs.WriteFileAtomic(p, b, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

func dropPendingKey(dir string) {
	_ = os.Remove(filepath.Join(dir, pendingKeyFile))
}
