package certs

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// SVIDSource holds the current X509-SVID behind an atomic pointer, so a
// renewal is one Set and every TLS config built on it (MTLSServerConfig, ...)
// presents the new certificate from the next handshake on, without
// rebuilding listeners or cutting live connections.
type SVIDSource struct {
	clock Clock
	cur   atomic.Pointer[svidEntry]
}

// svidEntry pairs an SVID with its tls.Certificate, built once per Set.
type svidEntry struct {
	svid *x509svid.SVID
	cert *tls.Certificate
}

var _ x509svid.Source = (*SVIDSource)(nil)

// NewSVIDSource makes an empty source; clock nil means SystemClock.
func NewSVIDSource(clock Clock) *SVIDSource {
	return &SVIDSource{clock: clockOrSystem(clock)}
}

// Set replaces the current SVID (nil clears it). The SVID must not be modified afterwards.
func (s *SVIDSource) Set(svid *x509svid.SVID) {
	if svid == nil {
		s.cur.Store(nil)
		return
	}
	s.cur.Store(&svidEntry{svid: svid, cert: tlsCertificate(svid)})
}

// Current is the SVID last Set, possibly expired; nil if none.
func (s *SVIDSource) Current() *x509svid.SVID {
	if e := s.cur.Load(); e != nil {
		return e.svid
	}
	return nil
}

// GetX509SVID implements x509svid.Source. It returns ErrNoSVID when unset and
// ErrSVIDExpired when the leaf has expired per the clock, so new handshakes are
// refused while established connections are untouched.
func (s *SVIDSource) GetX509SVID() (*x509svid.SVID, error) {
	e, err := s.entry()
	if err != nil {
		return nil, err
	}
	return e.svid, nil
}

func (s *SVIDSource) entry() (*svidEntry, error) {
	e := s.cur.Load()
	if e == nil || len(e.svid.Certificates) == 0 {
		return nil, ErrNoSVID
	}
	if now := s.clock.Now(); !now.Before(e.svid.Certificates[0].NotAfter) {
		return nil, fmt.Errorf("%w: %s expired at %s", ErrSVIDExpired, e.svid.ID.String(), e.svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
	}
	return e, nil
}

func tlsCertificate(svid *x509svid.SVID) *tls.Certificate {
	c := &tls.Certificate{PrivateKey: svid.PrivateKey}
	for _, x := range svid.Certificates {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	if len(svid.Certificates) > 0 {
		c.Leaf = svid.Certificates[0]
	}
	return c
}

// certificateFrom gets the tls.Certificate for a handshake from any
// x509svid.Source, reusing the prebuilt one of an SVIDSource.
func certificateFrom(src x509svid.Source) (*tls.Certificate, error) {
	if s, ok := src.(*SVIDSource); ok {
		e, err := s.entry()
		if err != nil {
			return nil, err
		}
		return e.cert, nil
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("certs: get SVID: %w", err)
	}
	if svid == nil {
		return nil, ErrNoSVID
	}
	return tlsCertificate(svid), nil
}

// BundleSource holds the trust bundle behind an atomic pointer; Set swaps it
// for every later verification (root rotation adds and drops roots this way).
type BundleSource struct {
	cur atomic.Pointer[x509bundle.Bundle]
}

var _ x509bundle.Source = (*BundleSource)(nil)

// NewBundleSource makes a source holding b (may be nil).
func NewBundleSource(b *x509bundle.Bundle) *BundleSource {
	s := &BundleSource{}
	s.Set(b)
	return s
}

// Set replaces the bundle. The bundle must not be modified afterwards.
func (s *BundleSource) Set(b *x509bundle.Bundle) { s.cur.Store(b) }

// Bundle is the current bundle, or nil.
func (s *BundleSource) Bundle() *x509bundle.Bundle { return s.cur.Load() }

// GetX509BundleForTrustDomain implements x509bundle.Source: the bundle if it
// is for td, else an error wrapping ErrNoBundle.
func (s *BundleSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b := s.cur.Load()
	switch {
	case b == nil:
		return nil, fmt.Errorf("%w: none set", ErrNoBundle)
	case b.TrustDomain() != td:
		return nil, fmt.Errorf("%w: for trust domain %q (have %q)", ErrNoBundle, td.Name(), b.TrustDomain().Name())
	}
	return b, nil
}
