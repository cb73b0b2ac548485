package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"minimesh/controlplane"
)

// TestOperatorIssueNeedsTheCAKeyFile: `meshd operator issue` loads the CA
// the way meshd does, so a CA sealed with --ca-key-file needs that file.
func TestOperatorIssueNeedsTheCAKeyFile(t *testing.T) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "ca.key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(t.TempDir(), "meshd")
	srv, err := controlplane.New(controlplane.Config{DataDir: dataDir, CAKeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	issue := func(extra ...string) (string, error) {
		var out bytes.Buffer
		args := append([]string{"operator", "issue", "--data-dir", dataDir, "--out", filepath.Join(t.TempDir(), "op")}, extra...)
		root := newRoot(&out, &out)
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), err
	}
	if out, err := issue(); err == nil || !strings.Contains(err.Error(), "--ca-key-file") {
		t.Fatalf("operator issue without the key file: %v\n%s", err, out)
	}
	if out, err := issue("--ca-key-file", keyFile); err != nil {
		t.Fatalf("operator issue with the key file: %v\n%s", err, out)
	}
}
