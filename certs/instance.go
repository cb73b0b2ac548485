package certs

import (
	"crypto/x509"
	"fmt"
	"strings"
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
	podUID   string
}

// WithInstance binds the certificate to a proxy instance ID (see
// CheckInstanceID). An empty instance binds none.
func WithInstance(instance string) IssueOption {
	return func(o *issueOptions) { o.instance = instance }
}

// An SVID that meshd issued on a Kubernetes service-account token review
// also carries the UID of the pod it was issued to, as a Subject
// organizationalUnit "k8s-pod-uid:<uid>". meshd copies it at every Renew
// and renews such an SVID only with a fresh token of that same pod: the
// certificate itself says how it must be renewed, so no store record
// (which a replica may not have yet) can be missing when it is checked.

const podUIDPrefix = "k8s-pod-uid:"

// MaxPodUIDLen bounds a pod UID (a UUID is 36 characters).
const MaxPodUIDLen = 64

// WithPodUID marks the certificate as issued to the Kubernetes pod with
// that UID (see CheckPodUID). An empty UID marks none.
func WithPodUID(uid string) IssueOption {
	return func(o *issueOptions) { o.podUID = uid }
}

// PodUID is the pod a certificate was issued to ("" when none). Only
// meaningful on a certificate whose chain was verified.
func PodUID(leaf *x509.Certificate) string {
	if leaf == nil {
		return ""
	}
	for _, ou := range leaf.Subject.OrganizationalUnit {
		if uid, ok := strings.CutPrefix(ou, podUIDPrefix); ok {
			return uid
		}
	}
	return ""
}

// CheckPodUID accepts 1..64 lowercase letters, digits and '-' (a
// Kubernetes UID is a lowercase UUID). Errors wrap ErrInvalidID.
func CheckPodUID(s string) error {
	if s == "" || len(s) > MaxPodUIDLen {
		return fmt.Errorf("%w: pod UID: want 1 to %d characters, got %d", ErrInvalidID, MaxPodUIDLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w: pod UID %q: only lowercase letters, digits and '-' are allowed", ErrInvalidID, s)
		}
	}
	return nil
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
