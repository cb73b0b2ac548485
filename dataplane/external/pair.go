package external

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync/atomic"
	"time"

	"minimesh/internal/fsguard"
)

// pair is a client certificate read from its files, reloaded when they
// change. Its fields other than cert are used under the Set's mu.
type pair struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate] // the last good pair

	lastCert, lastKey []byte // the files' bytes of the last attempt
	lastErr           string // the last failure logged
}

// reload reads both files; when their bytes differ from the last attempt's
// it parses them and, if they make a pair, swaps it in. changed reports a
// new pair in use; err why the files do not make one (the last good pair
// stays).
func (p *pair) reload() (changed bool, err error) {
	cb, err := readBounded(p.certFile, false)
	if err != nil {
		return false, fmt.Errorf("certFile: %w", err)
	}
	kb, err := readBounded(p.keyFile, false)
	if err != nil {
		return false, fmt.Errorf("keyFile: %w", err)
	}
	if p.cert.Load() != nil && bytes.Equal(cb, p.lastCert) && bytes.Equal(kb, p.lastKey) {
		p.lastErr = "" // back to the pair in use
		return false, nil
	}
	c, err := tls.X509KeyPair(cb, kb)
	if err != nil {
		// The error names no key material (crypto/tls says which PEM
		// block or check failed).
		return false, fmt.Errorf("certFile %s and keyFile %s do not make a pair: %w", p.certFile, p.keyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return false, fmt.Errorf("certFile %s: %w", p.certFile, err)
		}
	}
	p.lastCert, p.lastKey, p.lastErr = cb, kb, ""
	p.cert.Store(&c)
	return true, nil
}

// noteFailure records err and reports whether it is new (to log once).
func (p *pair) noteFailure(err error) bool {
	if err.Error() == p.lastErr {
		return false
	}
	p.lastErr = err.Error()
	return true
}

// notAfter is the expiry of the pair in use.
func (p *pair) notAfter() time.Time {
	if c := p.cert.Load(); c != nil && c.Leaf != nil {
		return c.Leaf.NotAfter
	}
	return time.Time{}
}

// readBounded reads a file of at most MaxCertFileBytes, as a mounted
// Secret is checked (fsguard.ReadMounted): a regular file, ours or root's,
// not writable by others. A key every user may read is accepted, as a
// Secret volume's default mode (0644) makes it.
func readBounded(path string, secret bool) ([]byte, error) {
	return fsguard.ReadMounted(path, secret, MaxCertFileBytes)
}
