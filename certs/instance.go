package certs

import (
	"crypto/x509"
	"fmt"
)

// An SVID carries the proxy instance it was issued to in its Subject's
// serialNumber attribute (OID 2.5.4.5), beside the one URI SAN, which stays
// the only SAN. meshd binds the instance at Bootstrap and copies it on every
// Renew, so the instance of a caller is read off its verified certificate:
// never from what a request says about itself.

// MaxInstanceIDLen bounds an instance ID (a DNS label's length).
const MaxInstanceIDLen = 63

// IssueOption adjusts one issued certificate.
type IssueOption func(*issueOptions)

type issueOptions struct {
	instance string
}

// WithInstance binds the certificate to a proxy instance ID (see
// CheckInstanceID). An empty instance binds none.
func WithInstance(instance string) IssueOption {
	return func(o *issueOptions) { o.instance = instance }
}

// InstanceID is the instance a certificate is bound to ("" when none).
// Only meaningful on a certificate whose chain was verified.
func InstanceID(leaf *x509.Certificate) string {
	if leaf == nil {
		return ""
	}
	return leaf.Subject.SerialNumber
}

// CheckInstanceID accepts 1..63 characters of lowercase letters, digits and
// '-', starting with a letter or digit (the form mesh-proxy generates:
// "<service>-<12 hex>"). Errors wrap ErrInvalidID.
func CheckInstanceID(s string) error {
	if s == "" {
		return fmt.Errorf("%w: instance ID: empty", ErrInvalidID)
	}
	if len(s) > MaxInstanceIDLen {
		return fmt.Errorf("%w: instance ID: longer than %d characters", ErrInvalidID, MaxInstanceIDLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0:
		default:
			return fmt.Errorf("%w: instance ID %q: only lowercase letters, digits and '-' (not first) are allowed", ErrInvalidID, s)
		}
	}
	return nil
}
