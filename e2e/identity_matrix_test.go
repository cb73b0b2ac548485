package e2e

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/certs"
	"minimesh/certs/certstest"
	"minimesh/controlplane"
	meshv1 "minimesh/proto/mesh/v1"
)

// TestIdentityMatrix presents malformed certificates, signed by the mesh's
// own intermediate, at a proxy's inbound port and at meshd: every one is
// refused, and a well-formed one signed the same way is accepted.
func TestIdentityMatrix(t *testing.T) {
	// A CA whose keys the test holds, imported by meshd.
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: spiffeid.RequireTrustDomainFromString(td)})
	if err != nil {
		t.Fatal(err)
	}
	state, err := ca.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	interKey := pemBlock(t, state, 3)
	m := startMesh(t, controlplane.Config{CAState: state}, 1)
	if m.meshd.RootPin() != ca.RootPin() {
		t.Fatal("meshd did not import the CA")
	}
	inter := ca.Intermediate()
	signer, err := x509.ParsePKCS8PrivateKey(interKey)
	if err != nil {
		t.Fatal(err)
	}
	other := certstest.NewCA(t, "other.local")

	web := "spiffe://" + td + "/ns/default/sa/web"
	mk := func(mutate func(*x509.Certificate), parent *x509.Certificate, parentKey crypto.Signer) *x509svid.SVID {
		key, _ := certs.GenerateKey()
		u, _ := url.Parse(web)
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(time.Now().UnixNano()),
			Subject:               pkix.Name{Organization: []string{"test"}},
			NotBefore:             time.Now().Add(-time.Minute),
			NotAfter:              time.Now().Add(time.Hour),
			URIs:                  []*url.URL{u},
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
		}
		if mutate != nil {
			mutate(tmpl)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(der)
		return &x509svid.SVID{ID: spiffeid.RequireFromString(web), Certificates: []*x509.Certificate{leaf, parent}, PrivateKey: key}
	}
	ours := signer.(crypto.Signer)
	otherSVID := certstest.SVID(t, other, "spiffe://other.local/ns/default/sa/web")

	cases := []struct {
		name string
		svid *x509svid.SVID
	}{
		{"two URI SANs", mk(func(c *x509.Certificate) {
			u, _ := url.Parse("spiffe://" + td + "/ns/default/sa/admin")
			c.URIs = append(c.URIs, u)
		}, inter, ours)},
		{"a non-SPIFFE URI", mk(func(c *x509.Certificate) { c.URIs[0], _ = url.Parse("https://web.example.com/") }, inter, ours)},
		{"the wrong trust domain", mk(func(c *x509.Certificate) { c.URIs[0], _ = url.Parse("spiffe://other.local/ns/default/sa/web") }, inter, ours)},
		{"a CA bit", mk(func(c *x509.Certificate) { c.IsCA = true; c.KeyUsage |= x509.KeyUsageCertSign }, inter, ours)},
		{"expired", mk(func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
		}, inter, ours)},
		{"not yet valid", mk(func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
		}, inter, ours)},
		{"signed by an unknown root", otherSVID},
	}
	// The clients present the certificate as it is, whatever it says, and do
	// not check the server: only the server's verdict is under test.
	raw := func(svid *x509svid.SVID) *tls.Config {
		cert := tls.Certificate{PrivateKey: svid.PrivateKey}
		for _, c := range svid.Certificates {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	}
	inbound := func(svid *x509svid.SVID) error {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: raw(svid)}}
		_, err := get(c, "https://"+m.api.inbound+"/", nil)
		return err
	}
	renew := func(svid *x509svid.SVID) error {
		_, csr := csrOf(t, web)
		conn := m.meshd.Dial(t, raw(svid))
		_, err := meshv1.NewIdentityServiceClient(conn).Renew(context.Background(), &meshv1.RenewRequest{Csr: csr})
		return err
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := inbound(tc.svid); err == nil {
				t.Error("the api proxy's inbound accepted it")
			}
			err := renew(tc.svid)
			if c := status.Code(err); c != codes.Unauthenticated && c != codes.PermissionDenied {
				t.Errorf("meshd Renew: %v, want Unauthenticated or PermissionDenied", err)
			}
		})
	}
	// The control: a well-formed certificate signed the same way, presented
	// the same way, is accepted at both. It names its instance in the
	// Subject, as meshd's SVIDs do: Renew refuses a certificate bound to no
	// instance that meshd has no record of.
	good := mk(func(c *x509.Certificate) { c.Subject.SerialNumber = "web-control" }, inter, ours)
	if err := inbound(good); err != nil {
		t.Fatalf("a well-formed certificate was refused at the inbound: %v", err)
	}
	if err := renew(good); err != nil {
		t.Fatalf("a well-formed certificate was refused by meshd: %v", err)
	}
}

func pemBlock(t *testing.T, data []byte, index int) []byte {
	t.Helper()
	for i := 0; ; i++ {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			t.Fatalf("no PEM block %d", index)
		}
		if i == index {
			return b.Bytes
		}
	}
}

func csrOf(t *testing.T, id string) (crypto.Signer, []byte) {
	t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := certs.NewCSR(key, spiffeid.RequireFromString(id))
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}
