package certs_test

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
	"minimesh/certs/certstest"
)

func rawChain(cs []*x509.Certificate) [][]byte {
	var out [][]byte
	for _, c := range cs {
		out = append(out, c.Raw)
	}
	return out
}

func TestVerifyPeer(t *testing.T) {
	clock := certstest.NewClock(t0)
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td, Clock: clock})
	otherCA := mustNewCA(t, certs.CAConfig{TrustDomain: otherTD, Clock: clock})
	rogue := mustNewCA(t, certs.CAConfig{TrustDomain: td, Clock: clock})
	id := mustWorkloadID(t, td, "shop", "web")
	good := rawChain(issue(t, ca, id, time.Hour).Certificates)

	tests := []struct {
		name   string
		raw    [][]byte
		bundle x509bundle.Source
		now    time.Time
		reason string // "" = verifies
	}{
		{"valid", good, ca.Bundle(), t0, ""},
		{"valid, bundle source", good, certs.NewBundleSource(ca.Bundle()), t0.Add(59 * time.Minute), ""},
		{"expired", good, ca.Bundle(), t0.Add(time.Hour + time.Second), "expired"},
		{"not yet valid", good, ca.Bundle(), t0.Add(-time.Hour), "not yet valid"},
		{"unknown authority", rawChain(issue(t, rogue, id, 0).Certificates), ca.Bundle(), t0, "unknown authority"},
		{"wrong trust domain", rawChain(issue(t, otherCA, mustWorkloadID(t, otherTD, "shop", "web"), 0).Certificates), ca.Bundle(), t0, "wrong trust domain"},
		{"leaf without intermediate", good[:1], ca.Bundle(), t0, "unknown authority"},
		{"no certificate", nil, ca.Bundle(), t0, "no certificate"},
		{"garbage", [][]byte{[]byte("junk")}, ca.Bundle(), t0, "certificate 0"},
		{"CA certificate as leaf", rawChain([]*x509.Certificate{ca.Intermediate(), ca.Root()}), ca.Bundle(), t0, "CA"},
		{"chain too long", append(good, good[1], good[1], good[1], good[1], good[1], good[1], good[1]), ca.Bundle(), t0, "exceeds"},
		{"nil bundle", good, nil, t0, "no trust bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, chain, err := certs.VerifyPeer(tt.raw, tt.bundle, tt.now)
			if tt.reason == "" {
				if err != nil || got != id || len(chain) != 3 {
					t.Fatalf("VerifyPeer = %v, %d, %v", got, len(chain), err)
				}
				return
			}
			if !errors.Is(err, certs.ErrPeerUnverified) {
				t.Fatalf("VerifyPeer = %v, want ErrPeerUnverified", err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q does not say %q", err, tt.reason)
			}
			if !got.IsZero() || chain != nil {
				t.Errorf("returned %v, %d certs with an error", got, len(chain))
			}
		})
	}
}

func TestAuthorizers(t *testing.T) {
	web := mustWorkloadID(t, td, "shop", "web")
	db := mustWorkloadID(t, td, "shop", "db")
	foreign := mustWorkloadID(t, otherTD, "shop", "web")
	tests := []struct {
		name string
		auth func(spiffeid.ID) error
		id   spiffeid.ID
		ok   bool
	}{
		{"any", certs.AuthorizeAny(), foreign, true},
		{"ID match", certs.AuthorizeID(web, db), db, true},
		{"ID mismatch", certs.AuthorizeID(web), db, false},
		{"ID none allowed", certs.AuthorizeID(), web, false},
		{"member", certs.AuthorizeMemberOf(td), web, true},
		{"not member", certs.AuthorizeMemberOf(td), foreign, false},
		{"zero trust domain", certs.AuthorizeMemberOf(spiffeid.TrustDomain{}), web, false},
		{"workload", certs.AuthorizeWorkloadOf(td), web, true},
		{"workload: operator", certs.AuthorizeWorkloadOf(td), certs.OperatorID(td), false},
		{"workload: meshd", certs.AuthorizeWorkloadOf(td), certs.MeshdID(td), false},
		{"workload: not member", certs.AuthorizeWorkloadOf(td), foreign, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.auth(tt.id)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, certs.ErrUnauthorized)) {
				t.Fatalf("authorize(%s) = %v", tt.id, err)
			}
		})
	}
}
