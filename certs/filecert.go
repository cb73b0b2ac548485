package certs

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"minimesh/internal/fsguard"
)

// DefaultReloadInterval is how often FileCertificate.Run looks at its files.
const DefaultReloadInterval = time.Second

// FileCertificateConfig configures a FileCertificate.
type FileCertificateConfig struct {
	// CertFile is a PEM chain, leaf first; KeyFile its PEM private key. Required.
	CertFile, KeyFile string
	// Clock is used to warn about expired certificates. Default SystemClock.
	Clock Clock
	// Logger, default discards. Key material is never logged.
	Logger *slog.Logger
	// ReloadInterval is how often Run checks the files' mtime, size and
	// identity. Default DefaultReloadInterval.
	ReloadInterval time.Duration
}

// Validate reports a config that cannot work.
func (c FileCertificateConfig) Validate() error {
	switch {
	case c.CertFile == "" || c.KeyFile == "":
		return fmt.Errorf("%w: CertFile and KeyFile are required", ErrInvalidConfig)
	case c.ReloadInterval < 0:
		return fmt.Errorf("%w: negative ReloadInterval", ErrInvalidConfig)
	}
	return nil
}

// FileCertificate is a plain (non-SPIFFE) certificate and key loaded from
// files, e.g. for public HTTPS, and re-read when the files change. Use its
// GetCertificate in a tls.Config: the certificate sits behind an atomic
// pointer, so a reload never rebuilds the listener nor cuts live
// connections. A failed reload keeps the previous certificate and logs.
type FileCertificate struct {
	cfg  FileCertificateConfig
	cert atomic.Pointer[tls.Certificate]

	mu   sync.Mutex // serializes reloads; guards seen
	seen [2]os.FileInfo
}

// NewFileCertificate loads the files once; it fails if that fails.
func NewFileCertificate(cfg FileCertificateConfig) (*FileCertificate, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Clock = clockOrSystem(cfg.Clock)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	f := &FileCertificate{cfg: cfg}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// GetCertificate returns the current certificate; for tls.Config.GetCertificate.
func (f *FileCertificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.cert.Load(), nil
}

// Certificate returns the current certificate (never nil).
func (f *FileCertificate) Certificate() *tls.Certificate { return f.cert.Load() }

// Reload reads both files now. On failure the previous certificate stays in
// use and the error is returned (and logged).
func (f *FileCertificate) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reloadLocked()
}

func (f *FileCertificate) reloadLocked() error {
	// Stat before reading: if a file changes in between, the next check sees
	// a newer stamp and reads again.
	f.seen = f.stat()
	cert, err := loadMountedPair(f.cfg.CertFile, f.cfg.KeyFile)
	if err != nil {
		err = fmt.Errorf("certs: load %s: %w", f.cfg.CertFile, err)
		if f.cert.Load() != nil {
			f.cfg.Logger.Warn("certs: reload failed, keeping the previous certificate", "cert_file", f.cfg.CertFile, "error", err)
		}
		return err
	}
	f.cert.Store(&cert)
	if leaf := cert.Leaf; leaf != nil {
		f.cfg.Logger.Info("certs: loaded certificate", "cert_file", f.cfg.CertFile,
			"subject", leaf.Subject.String(), "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter)
		if !f.cfg.Clock.Now().Before(leaf.NotAfter) {
			f.cfg.Logger.Warn("certs: loaded certificate is expired", "cert_file", f.cfg.CertFile, "not_after", leaf.NotAfter)
		}
	}
	return nil
}

// changed reports whether either file differs from the last attempted load.
func (f *FileCertificate) changed() bool {
	now := f.stat()
	for i := range now {
		a, b := f.seen[i], now[i]
		switch {
		case a == nil || b == nil:
			if a != b {
				return true
			}
		case a.Size() != b.Size() || !a.ModTime().Equal(b.ModTime()) || !os.SameFile(a, b):
			return true
		}
	}
	return false
}

func (f *FileCertificate) stat() [2]os.FileInfo {
	var out [2]os.FileInfo
	for i, p := range []string{f.cfg.CertFile, f.cfg.KeyFile} {
		if fi, err := os.Stat(p); err == nil {
			out[i] = fi
		}
	}
	return out
}

// CheckNow reloads if either file changed since the last attempt (a failed
// attempt is not retried until a file changes again). Run calls it every
// ReloadInterval.
func (f *FileCertificate) CheckNow() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.changed() {
		return nil
	}
	return f.reloadLocked()
}

// Run checks the files every ReloadInterval until ctx is done, then returns
// nil. Reload failures are logged, never fatal.
func (f *FileCertificate) Run(ctx context.Context) error {
	t := time.NewTicker(f.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_ = f.CheckNow()
		}
	}
}

// maxPairFile bounds each file of a certificate pair read from disk.
const maxPairFile = 1 << 20

// loadMountedPair is tls.LoadX509KeyPair over files checked as a mounted
// Secret is (fsguard.ReadMounted): regular files, ours or root's, not
// writable by others (a Secret volume's default 0644 is accepted).
func loadMountedPair(certFile, keyFile string) (tls.Certificate, error) {
	cb, err := fsguard.ReadMounted(certFile, false, maxPairFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	kb, err := fsguard.ReadMounted(keyFile, false, maxPairFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(cb, kb)
}
