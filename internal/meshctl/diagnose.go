package meshctl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"minimesh/certs"
)

// A stale operator credential, or a meshd restored from a backup older
// than a root rotation, shows on meshctl's side as a handshake that fails
// with "x509: certificate signed by unknown authority": meshd's
// certificate does not chain to a root of the credential's bundle.pem.
// explain replaces that with what happened and what to do, after looking
// at meshd's certificate chain itself (a handshake that verifies nothing
// and sends nothing but the TLS hello).

// explain turns a failed handshake with meshd into an explanation; any
// other error is returned as is.
func (g *globals) explain(err error) error {
	if err == nil || !isHandshakeFailure(err) {
		return err
	}
	msg, derr := diagnoseServerCert(WithDefaultPort(g.server), g.credentials, time.Now(), g.timeout)
	if derr != nil || msg == "" {
		return err
	}
	return fmt.Errorf("%s\n  (handshake: %s)", msg, status.Convert(err).Message())
}

// diagnoseServerCert says why meshd's certificate at server does not
// verify against the bundle in dir ("" when it does).
func diagnoseServerCert(server, dir string, now time.Time, timeout time.Duration) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, certs.BundleFile))
	if err != nil {
		return "", err
	}
	roots, err := certs.ParseCertsPEM(b)
	if err != nil || len(roots) == 0 {
		return "", fmt.Errorf("bundle: %v", err)
	}
	d := &net.Dialer{Timeout: timeout}
	conn, err := tls.DialWithDialer(d, "tcp", server, &tls.Config{
		// Only to read meshd's chain, never to send anything.
		InsecureSkipVerify: true, //nolint:gosec
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{"h2"},
	})
	if err != nil {
		return "", err
	}
	chain := conn.ConnectionState().PeerCertificates
	_ = conn.Close()
	if len(chain) == 0 {
		return "", errors.New("meshd sent no certificate")
	}
	return explainChain(chain, roots, now), nil
}

// explainChain compares meshd's chain with the credential's roots.
func explainChain(chain, roots []*x509.Certificate, now time.Time) string {
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	var newest time.Time
	var pins []string
	for _, r := range roots {
		pool.AddCert(r)
		pins = append(pins, shortPin(certs.SPKIPin(r)))
		if r.NotBefore.After(newest) {
			newest = r.NotBefore
		}
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		return ""
	}
	issuer := chain[len(chain)-1] // meshd's intermediate
	head := fmt.Sprintf("meshd's certificate does not chain to a root of your credential's bundle.pem (roots %s)", strings.Join(pins, ", "))
	if !issuer.NotBefore.Before(newest) { // a tie: the commoner case
		return head + fmt.Sprintf(": meshd's CA (intermediate of %s) is not older than your credential's roots (newest of %s). "+
			"Your operator credential was issued before a root rotation; get a fresh one: copy <data-dir>/operator again (meshd re-issued it at the rotation) or run `meshd operator issue`",
			issuer.NotBefore.UTC().Format(time.RFC3339), newest.UTC().Format(time.RFC3339))
	}
	return head + fmt.Sprintf(": meshd's CA (intermediate of %s) is older than your credential's newest root (of %s). "+
		"meshd's data was probably restored from a backup taken before a root rotation: its CA is the old one, and proxies that hold SVIDs of the newer root cannot reach it either. "+
		"Restore a backup taken after the rotation; or, to stay on this one, use the credential meshd wrote to <data-dir>/operator and bootstrap the proxies again with new join tokens",
		issuer.NotBefore.UTC().Format(time.RFC3339), newest.UTC().Format(time.RFC3339))
}
