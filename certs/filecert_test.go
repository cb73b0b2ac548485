package certs_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minimesh/certs"
	"minimesh/internal/testlog"
)

// plainCert writes a self-signed localhost certificate with the given serial
// to certFile/keyFile, as cert-manager or an operator would, and returns its
// PEM key (to check it never reaches the logs).
func plainCert(t *testing.T, certFile, keyFile string, serial int64) []byte {
	t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := certs.EncodePrivateKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return keyPEM
}

func currentSerial(t *testing.T, f *certs.FileCertificate) int64 {
	t.Helper()
	c, err := f.GetCertificate(nil)
	if err != nil || c == nil || c.Leaf == nil {
		t.Fatalf("GetCertificate = %v, %v", c, err)
	}
	return c.Leaf.SerialNumber.Int64()
}

func TestFileCertificateReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	key1 := plainCert(t, certFile, keyFile, 1)
	var logs testlog.Buffer
	fc, err := certs.NewFileCertificate(certs.FileCertificateConfig{
		CertFile: certFile, KeyFile: keyFile,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := currentSerial(t, fc); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}

	// A real HTTPS-style listener whose config is never rebuilt.
	srv := startTLSServer(t, &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: fc.GetCertificate})
	client := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} //nolint:gosec // we inspect the served cert
	c1, err := dial(t, srv.addr(), client)
	if err != nil {
		t.Fatal(err)
	}
	if got := c1.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 1 {
		t.Fatalf("served serial %d, want 1", got)
	}

	// Unchanged files: nothing to do.
	if err := fc.CheckNow(); err != nil {
		t.Fatalf("CheckNow with unchanged files: %v", err)
	}

	key2 := plainCert(t, certFile, keyFile, 2)
	if err := fc.CheckNow(); err != nil {
		t.Fatal(err)
	}
	if got := currentSerial(t, fc); got != 2 {
		t.Fatalf("after rewrite serial %d, want 2", got)
	}
	c2, err := dial(t, srv.addr(), client)
	if err != nil {
		t.Fatal(err)
	}
	if got := c2.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 2 {
		t.Fatalf("served serial %d after reload, want 2", got)
	}
	if err := echo(c1); err != nil {
		t.Fatalf("live connection cut by reload: %v", err)
	}

	// Garbage: the previous certificate stays, the failure is reported and logged.
	if err := certs.WriteFileAtomic(certFile, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fc.CheckNow(); err == nil || !strings.HasPrefix(err.Error(), "certs: ") {
		t.Fatalf("CheckNow with garbage = %v", err)
	}
	if got := currentSerial(t, fc); got != 2 {
		t.Fatalf("after garbage serial %d, want the previous 2", got)
	}
	if err := fc.Reload(); err == nil {
		t.Fatal("Reload with garbage succeeded")
	}
	if _, err := dial(t, srv.addr(), client); err != nil {
		t.Fatalf("serving after a failed reload: %v", err)
	}
	if !strings.Contains(logs.String(), "keeping the previous certificate") {
		t.Errorf("failed reload not logged: %s", logs.String())
	}
	// A failed attempt is not retried (nor logged again) until a file changes.
	if err := fc.CheckNow(); err != nil {
		t.Errorf("CheckNow retried unchanged garbage: %v", err)
	}

	// A new key with the old certificate (half-written rotation) is refused too.
	plainCert(t, certFile, keyFile, 3)
	_ = plainCert(t, filepath.Join(dir, "other.crt"), keyFile, 4)
	if err := fc.CheckNow(); err == nil {
		t.Fatal("mismatched key accepted")
	}
	if got := currentSerial(t, fc); got != 2 {
		t.Fatalf("after mismatched key serial %d, want 2", got)
	}

	for _, k := range [][]byte{key1, key2} {
		if strings.Contains(logs.String(), string(k[40:80])) {
			t.Error("key material in the logs")
		}
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Error("PEM key in the logs")
	}
}

func TestFileCertificateRun(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	plainCert(t, certFile, keyFile, 1)
	fc, err := certs.NewFileCertificate(certs.FileCertificateConfig{CertFile: certFile, KeyFile: keyFile, ReloadInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fc.Run(ctx) }()

	plainCert(t, certFile, keyFile, 2)
	deadline := time.After(ioTimeout) // bounds a broken Run; not a speed requirement
	for currentSerial(t, fc) != 2 {
		select {
		case <-deadline:
			t.Fatal("Run never picked up the rewritten files")
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil on cancel", err)
	}
}

func TestNewFileCertificateErrors(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	plainCert(t, certFile, keyFile, 1)
	garbage := filepath.Join(dir, "garbage")
	if err := certs.WriteFileAtomic(garbage, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  certs.FileCertificateConfig
		want error
	}{
		{"no files", certs.FileCertificateConfig{}, certs.ErrInvalidConfig},
		{"negative interval", certs.FileCertificateConfig{CertFile: certFile, KeyFile: keyFile, ReloadInterval: -1}, certs.ErrInvalidConfig},
		{"missing cert", certs.FileCertificateConfig{CertFile: filepath.Join(dir, "nope"), KeyFile: keyFile}, nil},
		{"garbage key", certs.FileCertificateConfig{CertFile: certFile, KeyFile: garbage}, nil},
		{"key as cert", certs.FileCertificateConfig{CertFile: keyFile, KeyFile: keyFile}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc, err := certs.NewFileCertificate(tt.cfg)
			if err == nil || fc != nil {
				t.Fatalf("NewFileCertificate = %v, %v", fc, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}
