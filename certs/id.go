package certs

import (
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	// DefaultSVIDTTL is the lifetime of an SVID when none is asked for.
	DefaultSVIDTTL = time.Hour
	// SystemNamespace holds minimesh's own identities (meshd, operator).
	SystemNamespace = "minimesh-system"

	meshdSA    = "meshd"
	operatorSA = "operator"
)

// WorkloadID builds spiffe://<td>/ns/<ns>/sa/<sa>. ns and sa must be DNS-1123
// labels: 1..63 characters of lowercase letters, digits and '-', starting and
// ending with a letter or digit. Errors wrap ErrInvalidID.
func WorkloadID(td spiffeid.TrustDomain, ns, sa string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, fmt.Errorf("%w: empty trust domain", ErrInvalidID)
	}
	if err := checkLabel("namespace", ns); err != nil {
		return spiffeid.ID{}, err
	}
	if err := checkLabel("service account", sa); err != nil {
		return spiffeid.ID{}, err
	}
	id, err := spiffeid.FromSegments(td, "ns", ns, "sa", sa)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %w", ErrInvalidID, err)
	}
	return id, nil
}

// ParseWorkloadID returns ns and sa of an ID of exactly the shape WorkloadID
// builds, else an error wrapping ErrInvalidID.
func ParseWorkloadID(id spiffeid.ID) (ns, sa string, err error) {
	if id.IsZero() {
		return "", "", fmt.Errorf("%w: empty ID", ErrInvalidID)
	}
	parts := strings.Split(id.Path(), "/")
	// "/ns/<ns>/sa/<sa>" splits into "", "ns", ns, "sa", sa.
	if len(parts) != 5 || parts[0] != "" || parts[1] != "ns" || parts[3] != "sa" {
		return "", "", fmt.Errorf("%w: %q is not of the form spiffe://<td>/ns/<ns>/sa/<sa>", ErrInvalidID, id.String())
	}
	if err := checkLabel("namespace", parts[2]); err != nil {
		return "", "", err
	}
	if err := checkLabel("service account", parts[4]); err != nil {
		return "", "", err
	}
	return parts[2], parts[4], nil
}

// MeshdID is spiffe://<td>/ns/minimesh-system/sa/meshd.
func MeshdID(td spiffeid.TrustDomain) spiffeid.ID { return mustSystemID(td, meshdSA) }

// OperatorID is spiffe://<td>/ns/minimesh-system/sa/operator.
func OperatorID(td spiffeid.TrustDomain) spiffeid.ID { return mustSystemID(td, operatorSA) }

// IsReserved reports whether id is meshd's or the operator's identity (of
// its own trust domain). Workloads must never be issued these.
func IsReserved(id spiffeid.ID) bool {
	if id.IsZero() {
		return false
	}
	td := id.TrustDomain()
	return id == MeshdID(td) || id == OperatorID(td)
}

func mustSystemID(td spiffeid.TrustDomain, sa string) spiffeid.ID {
	if td.IsZero() {
		return spiffeid.ID{}
	}
	id, err := spiffeid.FromSegments(td, "ns", SystemNamespace, "sa", sa)
	if err != nil {
		// Unreachable: the segments are constants of valid shape.
		panic(err)
	}
	return id
}

// checkLabel reports whether s is a DNS-1123 label.
func checkLabel(what, s string) error {
	if len(s) == 0 || len(s) > 63 {
		return fmt.Errorf("%w: %s must be 1..63 characters, got %d", ErrInvalidID, what, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		switch {
		case alnum:
		case c == '-' && i != 0 && i != len(s)-1:
		default:
			return fmt.Errorf("%w: %s %q is not a DNS-1123 label (lowercase letters, digits, inner '-')", ErrInvalidID, what, s)
		}
	}
	return nil
}
