package certs_test

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
	"minimesh/certs/certstest"
)

// The webhook's certificate: DNS names only, server auth only, chained to
// the root through the intermediate (whose URI name constraint does not
// touch DNS names), and useless as an SVID. The SVID path still refuses a
// CSR with a DNS name.
func TestIssueDNSServing(t *testing.T) {
	clock := certstest.NewClock(t0)
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td, Clock: clock})
	names := []string{"meshd.minimesh-system.svc", "meshd.minimesh-system.svc.cluster.local"}
	c, err := ca.IssueDNSServing(names, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.Leaf
	if len(c.Certificate) != 2 || string(c.Certificate[1]) != string(ca.Intermediate().Raw) || string(c.Certificate[0]) != string(leaf.Raw) {
		t.Fatalf("chain: want [leaf, intermediate]")
	}
	if len(leaf.URIs) != 0 || len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || strings.Join(leaf.DNSNames, ",") != strings.Join(names, ",") {
		t.Errorf("SANs: URIs %v IPs %v DNS %v: want the DNS names only", leaf.URIs, leaf.IPAddresses, leaf.DNSNames)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.IsCA {
		t.Errorf("key usage %v, CA %v: want server auth only", leaf.ExtKeyUsage, leaf.IsCA)
	}
	if got := leaf.NotAfter.Sub(clock.Now()); got != 24*time.Hour {
		t.Errorf("lifetime %v", got)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(ca.Root())
	inters.AddCert(ca.Intermediate())
	for _, n := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: roots, Intermediates: inters, CurrentTime: clock.Now()}); err != nil {
			t.Errorf("verify as %s: %v", n, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "evil.example", Roots: roots, Intermediates: inters, CurrentTime: clock.Now()}); err == nil {
		t.Error("verified for a name it does not hold")
	}
	// Not an SVID: the mesh's peer check refuses it.
	if _, _, err := certs.VerifyPeerCertificates([]*x509.Certificate{leaf, ca.Intermediate()}, ca.Bundle(), clock.Now()); err == nil {
		t.Error("the DNS serving certificate passed as an SVID")
	}
	// Clipped to the intermediate.
	if c, err := ca.IssueDNSServing(names[:1], 100*365*24*time.Hour); err != nil || !c.Leaf.NotAfter.Equal(ca.Intermediate().NotAfter) {
		t.Errorf("long TTL: %v, not after %v, intermediate %v", err, c.Leaf.NotAfter, ca.Intermediate().NotAfter)
	}

	for _, bad := range [][]string{nil, {""}, {"*.minimesh-system.svc"}, {"Meshd.svc"}, {"10.0.0.1:443"}, {"meshd.svc", "a b"}, make([]string, 17)} {
		if _, err := ca.IssueDNSServing(bad, time.Hour); !errors.Is(err, certs.ErrInvalidConfig) {
			t.Errorf("names %q: %v, want ErrInvalidConfig", bad, err)
		}
	}
	if _, err := ca.IssueDNSServing(names, 0); !errors.Is(err, certs.ErrInvalidConfig) {
		t.Errorf("TTL 0: %v", err)
	}

	// The SVID path keeps refusing DNS names.
	id := spiffeid.RequireFromPath(td, "/ns/minimesh-system/sa/meshd")
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr := makeCSR(t, key, &x509.CertificateRequest{URIs: uris(id.String()), DNSNames: []string{"meshd.minimesh-system.svc"}})
	if _, err := ca.SignCSR(csr, id, time.Hour); !errors.Is(err, certs.ErrCSRExtraSAN) {
		t.Errorf("SignCSR with a DNS SAN: %v, want ErrCSRExtraSAN", err)
	}
}
