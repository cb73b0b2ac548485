package certs_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
	"minimesh/certs/certstest"
)

// A root rotation has two roots: a proxy given both pins accepts a meshd
// anchored at either, and still refuses one anchored at neither.
func TestPinnedClientConfigAnyPin(t *testing.T) {
	old := certstest.NewCA(t, "example.org")
	next := certstest.NewCA(t, "example.org")
	rogue := certstest.NewCA(t, "example.org")
	meshd := certs.MeshdID(td)
	pins := []string{old.RootPin(), next.RootPin()}
	for _, c := range []struct {
		name string
		ca   *certs.CA
		ok   bool
	}{{"first pin", old, true}, {"second pin", next, true}, {"neither", rogue, false}} {
		t.Run(c.name, func(t *testing.T) {
			serving, err := c.ca.IssueServingSVID(meshd, 0)
			if err != nil {
				t.Fatal(err)
			}
			src := certs.NewSVIDSource(nil)
			src.Set(serving)
			srv := startTLSServer(t, certs.OptionalClientServerConfig(src))
			cfg, err := certs.PinnedClientConfigAny(pins, meshd, certs.TLSOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = dial(t, srv.addr(), cfg)
			if c.ok && err != nil {
				t.Fatalf("dial: %v", err)
			}
			if !c.ok && (!errors.Is(err, certs.ErrPinMismatch) || !strings.Contains(err.Error(), pins[0]+" or "+pins[1])) {
				t.Fatalf("dial: %v, want ErrPinMismatch naming both pins", err)
			}
		})
	}
	if _, err := certs.PinnedClientConfigAny(nil, meshd, certs.TLSOptions{}); !errors.Is(err, certs.ErrInvalidPin) {
		t.Errorf("no pins: %v", err)
	}
	if _, err := certs.PinnedClientConfigAny([]string{old.RootPin(), "sha256:00"}, meshd, certs.TLSOptions{}); !errors.Is(err, certs.ErrInvalidPin) {
		t.Errorf("one bad pin: %v", err)
	}
}

func TestParsePins(t *testing.T) {
	a, b := "sha256:"+strings.Repeat("ab", 32), "sha256:"+strings.Repeat("cd", 32)
	got, err := certs.ParsePins(a + ", " + b)
	if err != nil || len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("ParsePins = %q, %v", got, err)
	}
	for _, bad := range []string{"", a + ",", a + ",sha256:00", ",", " "} {
		if _, err := certs.ParsePins(bad); !errors.Is(err, certs.ErrInvalidPin) || !strings.Contains(err.Error(), "pin ") {
			t.Errorf("ParsePins(%q) = %v", bad, err)
		}
	}
}

func TestPodUIDInSubject(t *testing.T) {
	ca := certstest.NewCA(t, "example.org")
	id := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web")
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	uid := "0f3c5a9e-1111-2222-3333-444455556666"
	chain, err := ca.SignCSR(csr, id, 0, certs.WithInstance("web-7d9f-0f3c5a9e"), certs.WithPodUID(uid))
	if err != nil {
		t.Fatal(err)
	}
	if got := certs.PodUID(chain[0]); got != uid {
		t.Fatalf("PodUID = %q", got)
	}
	if got := certs.InstanceID(chain[0]); got != "web-7d9f-0f3c5a9e" {
		t.Fatalf("InstanceID = %q", got)
	}
	if len(chain[0].URIs) != 1 || len(chain[0].DNSNames)+len(chain[0].IPAddresses)+len(chain[0].EmailAddresses) != 0 {
		t.Fatal("SANs changed")
	}
	chain, err = ca.SignCSR(csr, id, 0, certs.WithInstance("web-1"))
	if err != nil {
		t.Fatal(err)
	}
	if got := certs.PodUID(chain[0]); got != "" {
		t.Fatalf("PodUID without the option = %q", got)
	}
	for _, bad := range []string{"UPPER", "a b", "x\x1b[31m", strings.Repeat("a", certs.MaxPodUIDLen+1)} {
		if _, err := ca.SignCSR(csr, id, 0, certs.WithPodUID(bad)); !errors.Is(err, certs.ErrInvalidID) {
			t.Errorf("WithPodUID(%q): %v", bad, err)
		}
	}
	// A CSR cannot ask for it: meshd writes the Subject itself.
	u, _ := url.Parse(id.String())
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{OrganizationalUnit: []string{"k8s-pod-uid:" + uid}, SerialNumber: "web-x"},
		URIs:    []*url.URL{u},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err = ca.SignCSR(der, id, 0, certs.WithInstance("web-1"))
	if err != nil {
		t.Fatal(err)
	}
	if certs.PodUID(chain[0]) != "" || certs.InstanceID(chain[0]) != "web-1" {
		t.Fatalf("the CSR's Subject leaked into the certificate: %v", chain[0].Subject)
	}
}
