// Package certstest gives other packages' tests a real CA and real SVIDs
// without the certs package importing testing:
//
//	ca := certstest.NewCA(t, "example.org")
//	svid := certstest.SVID(t, ca, "spiffe://example.org/ns/shop/sa/web")
//	clock := certstest.NewClock(time.Now())
package certstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"minimesh/certs"
)

// NewCA makes a fresh CA for trust domain td with default settings, or fails t.
func NewCA(t testing.TB, td string) *certs.CA {
	t.Helper()
	trustDomain, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		t.Fatalf("certstest: trust domain %q: %v", td, err)
	}
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: trustDomain})
	if err != nil {
		t.Fatalf("certstest: NewCA: %v", err)
	}
	return ca
}

// SVID issues an SVID (default 1 h lifetime) for id ("spiffe://td/path") from ca, or fails t.
func SVID(t testing.TB, ca *certs.CA, id string) *x509svid.SVID {
	t.Helper()
	sid, err := spiffeid.FromString(id)
	if err != nil {
		t.Fatalf("certstest: SPIFFE ID %q: %v", id, err)
	}
	svid, err := ca.IssueSVID(sid, 0)
	if err != nil {
		t.Fatalf("certstest: IssueSVID(%s): %v", id, err)
	}
	return svid
}

// Clock is a manual certs.Clock, safe for concurrent use. The zero value
// starts at the real time of its first use (truncated to the second).
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

var _ certs.Clock = (*Clock)(nil)

// NewClock returns a Clock set to now.
func NewClock(now time.Time) *Clock { return &Clock{now: now} }

func (c *Clock) init() {
	if c.now.IsZero() {
		c.now = time.Now().Truncate(time.Second)
	}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	return c.now
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Add moves the clock by d and returns the new time.
func (c *Clock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	c.now = c.now.Add(d)
	return c.now
}

// SelfSigned makes a self-signed ECDSA P-256 server certificate for
// dnsName, valid for an hour either side of now, and a pool trusting it:
// for tests of TLS listeners that need no SPIFFE identity.
func SelfSigned(t testing.TB, dnsName string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
