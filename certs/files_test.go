package certs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"minimesh/certs"
	"minimesh/certs/certstest"
)

func TestWriteLoadSVID(t *testing.T) {
	ca := certstest.NewCA(t, "example.org")
	svid := certstest.SVID(t, ca, "spiffe://example.org/ns/shop/sa/web")
	dir := filepath.Join(t.TempDir(), "identity")

	if err := certs.WriteSVID(dir, svid, ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	modes := map[string]os.FileMode{certs.SVIDKeyFile: 0o600, certs.SVIDFile: 0o600, certs.BundleFile: 0o600}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode %o, want %o", name, got, want)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	keyPEM, _ := os.ReadFile(filepath.Join(dir, certs.SVIDKeyFile))
	if !bytes.HasPrefix(keyPEM, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Errorf("key file is not PKCS#8 PEM: %.30q", keyPEM)
	}

	got, bundle, err := certs.LoadSVID(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != svid.ID || len(got.Certificates) != 2 || !got.Certificates[0].Equal(svid.Certificates[0]) || !got.Certificates[1].Equal(ca.Intermediate()) {
		t.Errorf("loaded SVID differs: %v, %d certs", got.ID, len(got.Certificates))
	}
	if !bundle.Equal(ca.Bundle()) {
		t.Error("loaded bundle differs")
	}

	// Rewriting replaces and keeps the key's mode, leaving no temp files.
	svid2 := certstest.SVID(t, ca, "spiffe://example.org/ns/shop/sa/web")
	if err := certs.WriteSVID(dir, svid2, ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	if got, _, err := certs.LoadSVID(dir, td); err != nil || !got.Certificates[0].Equal(svid2.Certificates[0]) {
		t.Fatalf("after rewrite: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, certs.SVIDKeyFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("rewritten key mode %o", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("dir holds %d entries, want 3", len(entries))
	}

	if _, _, err := certs.LoadSVID(dir, otherTD); !errors.Is(err, certs.ErrInvalidID) {
		t.Errorf("LoadSVID(other trust domain) = %v", err)
	}
	if _, _, err := certs.LoadSVID(t.TempDir(), td); err == nil || !strings.HasPrefix(err.Error(), "certs: ") {
		t.Errorf("LoadSVID(empty dir) = %v", err)
	}
	// A key that does not match the chain is refused.
	other := certstest.SVID(t, ca, "spiffe://example.org/ns/shop/sa/web")
	otherKey, _ := certs.EncodePrivateKeyPEM(other.PrivateKey)
	if err := certs.WriteFileAtomic(filepath.Join(dir, certs.SVIDKeyFile), otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := certs.LoadSVID(dir, td); err == nil {
		t.Error("LoadSVID with a mismatched key succeeded")
	}

	if err := certs.WriteSVID(dir, nil, ca.Bundle()); !errors.Is(err, certs.ErrNoSVID) {
		t.Errorf("WriteSVID(nil) = %v", err)
	}
	if err := certs.WriteSVID(dir, svid, nil); !errors.Is(err, certs.ErrNoBundle) {
		t.Errorf("WriteSVID(nil bundle) = %v", err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	tests := []struct {
		data []byte
		perm os.FileMode
	}{
		{[]byte("one"), 0o600},
		{[]byte("two, longer"), 0o644},
		{nil, 0o600},
	}
	for _, tt := range tests {
		if err := certs.WriteFileAtomic(p, tt.data, tt.perm); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, tt.data) {
			t.Fatalf("read %q, %v; want %q", got, err, tt.data)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != tt.perm {
			t.Errorf("mode %o, want %o", fi.Mode().Perm(), tt.perm)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d entries left in dir", len(entries))
	}
	if err := certs.WriteFileAtomic(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Error("write into a missing dir succeeded")
	}
}

func TestPEMHelpers(t *testing.T) {
	ca := certstest.NewCA(t, "example.org")
	svid := certstest.SVID(t, ca, "spiffe://example.org/ns/a/sa/b")
	pemBytes := certs.EncodeCertsPEM(svid.Certificates)
	if n := bytes.Count(pemBytes, []byte("-----BEGIN CERTIFICATE-----")); n != 2 {
		t.Fatalf("%d blocks", n)
	}
	got, err := certs.ParseCertsPEM(pemBytes)
	if err != nil || len(got) != 2 || !got[0].Equal(svid.Certificates[0]) {
		t.Fatalf("ParseCertsPEM = %d, %v", len(got), err)
	}
	keyPEM, _ := certs.EncodePrivateKeyPEM(svid.PrivateKey)
	for name, in := range map[string][]byte{
		"empty":          nil,
		"key block":      keyPEM,
		"cert then key":  append(bytes.Clone(pemBytes), keyPEM...),
		"trailing junk":  append(bytes.Clone(pemBytes), "junk"...),
		"bad DER inside": []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
	} {
		if _, err := certs.ParseCertsPEM(in); !errors.Is(err, certs.ErrInvalidPEM) {
			t.Errorf("%s: %v", name, err)
		}
	}

	der := [][]byte{svid.Certificates[0].Raw, svid.Certificates[1].Raw}
	if got, err := certs.ParseCertsDER(der); err != nil || len(got) != 2 || !got[1].Equal(ca.Intermediate()) {
		t.Errorf("ParseCertsDER = %v", err)
	}
	if _, err := certs.ParseCertsDER([][]byte{{1, 2}}); err == nil {
		t.Error("ParseCertsDER(garbage) succeeded")
	}
	if _, err := certs.ParseCertsDER(nil); err == nil {
		t.Error("ParseCertsDER(nil) succeeded")
	}
}
