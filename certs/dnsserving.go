package certs

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// MaxDNSServingNames bounds the names of one DNS serving certificate.
const MaxDNSServingNames = 16

// IssueDNSServing issues a TLS server certificate for DNS names from the
// active intermediate: meshd's admission webhook, which the Kubernetes API
// server calls by its Service's name (meshd.minimesh-system.svc) and
// verifies against the roots (the webhook configuration's caBundle).
//
// It is not an SVID and cannot pass for one: no URI SAN (so no SPIFFE ID:
// every mTLS peer check in the mesh refuses it), server authentication
// only. It is the only path that puts DNS names in a certificate; the SVID
// paths (SignCSR, SignChecked, IssueSVID) keep refusing them. The key is
// generated here and returned in the tls.Certificate alone; the chain is
// [leaf, intermediate]. ttl is clipped to the intermediate's NotAfter.
func (ca *CA) IssueDNSServing(dnsNames []string, ttl time.Duration) (*tls.Certificate, error) {
	if len(dnsNames) == 0 || len(dnsNames) > MaxDNSServingNames {
		return nil, fmt.Errorf("%w: DNS serving certificate: want 1 to %d DNS names, got %d", ErrInvalidConfig, MaxDNSServingNames, len(dnsNames))
	}
	for _, n := range dnsNames {
		// A DNS name, lower case, no wildcard, no IP address.
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			return nil, fmt.Errorf("%w: DNS serving certificate: name %q: %s", ErrInvalidConfig, n, errs[0])
		}
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("%w: DNS serving certificate: TTL %v must be positive", ErrInvalidConfig, ttl)
	}
	now := ca.cfg.Clock.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.active.inter.NotAfter) {
		notAfter = ca.active.inter.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("%w: intermediate expired at %s", ErrCAExpired, ca.active.inter.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"minimesh"}, CommonName: dnsNames[0]},
		NotBefore:             now.Add(-ca.cfg.Backdate),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              append([]string(nil), dnsNames...),
		SubjectKeyId:          subjectKeyID(key.Public()),
	}
	leaf, err := createCert(tmpl, ca.active.inter, key.Public(), ca.active.interKey)
	if err != nil {
		return nil, err
	}
	ca.cfg.Logger.Debug("certs: issued DNS serving certificate", "dns_names", dnsNames, "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter)
	return &tls.Certificate{
		Certificate: [][]byte{leaf.Raw, ca.active.inter.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}
