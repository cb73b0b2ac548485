package certs_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
)

func TestWorkloadID(t *testing.T) {
	tests := []struct {
		name    string
		td      spiffeid.TrustDomain
		ns, sa  string
		want    string
		wantErr bool
	}{
		{name: "simple", td: td, ns: "shop", sa: "web", want: "spiffe://example.org/ns/shop/sa/web"},
		{name: "digits and inner dash", td: td, ns: "a-1", sa: "0b", want: "spiffe://example.org/ns/a-1/sa/0b"},
		{name: "63 chars", td: td, ns: strings.Repeat("a", 63), sa: "x", want: "spiffe://example.org/ns/" + strings.Repeat("a", 63) + "/sa/x"},
		{name: "64 chars", td: td, ns: strings.Repeat("a", 64), sa: "x", wantErr: true},
		{name: "empty ns", td: td, ns: "", sa: "web", wantErr: true},
		{name: "empty sa", td: td, ns: "shop", sa: "", wantErr: true},
		{name: "uppercase", td: td, ns: "Shop", sa: "web", wantErr: true},
		{name: "leading dash", td: td, ns: "-shop", sa: "web", wantErr: true},
		{name: "trailing dash", td: td, ns: "shop", sa: "web-", wantErr: true},
		{name: "dot", td: td, ns: "sh.op", sa: "web", wantErr: true},
		{name: "slash", td: td, ns: "shop", sa: "w/b", wantErr: true},
		{name: "underscore", td: td, ns: "shop", sa: "w_b", wantErr: true},
		{name: "non-ascii", td: td, ns: "shöp", sa: "web", wantErr: true},
		{name: "zero trust domain", ns: "shop", sa: "web", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := certs.WorkloadID(tt.td, tt.ns, tt.sa)
			if tt.wantErr {
				if !errors.Is(err, certs.ErrInvalidID) {
					t.Fatalf("WorkloadID = %v, %v; want ErrInvalidID", id, err)
				}
				if !strings.HasPrefix(err.Error(), "certs: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
				return
			}
			if err != nil || id.String() != tt.want {
				t.Fatalf("WorkloadID = %v, %v; want %s", id, err, tt.want)
			}
			ns, sa, err := certs.ParseWorkloadID(id)
			if err != nil || ns != tt.ns || sa != tt.sa {
				t.Fatalf("ParseWorkloadID(%s) = %q, %q, %v", id, ns, sa, err)
			}
		})
	}
}

func TestParseWorkloadID(t *testing.T) {
	tests := []struct {
		id      string
		ns, sa  string
		wantErr bool
	}{
		{id: "spiffe://example.org/ns/shop/sa/web", ns: "shop", sa: "web"},
		{id: "spiffe://example.org/ns/minimesh-system/sa/meshd", ns: "minimesh-system", sa: "meshd"},
		{id: "spiffe://example.org", wantErr: true},
		{id: "spiffe://example.org/ns/shop", wantErr: true},
		{id: "spiffe://example.org/ns/shop/sa", wantErr: true},
		{id: "spiffe://example.org/ns/shop/sa/web/extra", wantErr: true},
		{id: "spiffe://example.org/prefix/ns/shop/sa/web", wantErr: true},
		{id: "spiffe://example.org/namespace/shop/sa/web", wantErr: true},
		{id: "spiffe://example.org/ns/shop/serviceaccount/web", wantErr: true},
		{id: "spiffe://example.org/ns/Shop/sa/web", wantErr: true},
		{id: "spiffe://example.org/ns/shop/sa/web_1", wantErr: true},
		{id: "spiffe://example.org/ns/-shop/sa/web", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			id := spiffeid.RequireFromString(tt.id)
			ns, sa, err := certs.ParseWorkloadID(id)
			if tt.wantErr {
				if !errors.Is(err, certs.ErrInvalidID) {
					t.Fatalf("ParseWorkloadID = %q, %q, %v; want ErrInvalidID", ns, sa, err)
				}
				return
			}
			if err != nil || ns != tt.ns || sa != tt.sa {
				t.Fatalf("ParseWorkloadID = %q, %q, %v; want %q, %q", ns, sa, err, tt.ns, tt.sa)
			}
		})
	}
	if _, _, err := certs.ParseWorkloadID(spiffeid.ID{}); !errors.Is(err, certs.ErrInvalidID) {
		t.Errorf("zero ID: %v", err)
	}
}

func TestReservedIDs(t *testing.T) {
	if got := certs.MeshdID(td).String(); got != "spiffe://example.org/ns/minimesh-system/sa/meshd" {
		t.Errorf("MeshdID = %s", got)
	}
	if got := certs.OperatorID(td).String(); got != "spiffe://example.org/ns/minimesh-system/sa/operator" {
		t.Errorf("OperatorID = %s", got)
	}
	tests := []struct {
		id   string
		want bool
	}{
		{"spiffe://example.org/ns/minimesh-system/sa/meshd", true},
		{"spiffe://example.org/ns/minimesh-system/sa/operator", true},
		{"spiffe://other.org/ns/minimesh-system/sa/meshd", true},
		{"spiffe://example.org/ns/minimesh-system/sa/web", false},
		{"spiffe://example.org/ns/shop/sa/meshd", false},
		{"spiffe://example.org/ns/minimesh-system/sa/meshd/x", false},
		{"spiffe://example.org", false},
	}
	for _, tt := range tests {
		if got := certs.IsReserved(spiffeid.RequireFromString(tt.id)); got != tt.want {
			t.Errorf("IsReserved(%s) = %v, want %v", tt.id, got, tt.want)
		}
	}
	if certs.IsReserved(spiffeid.ID{}) {
		t.Error("IsReserved(zero) = true")
	}
	// A workload can never be named like a reserved identity through WorkloadID's
	// normal use; the reserved namespace is a valid label, so callers must check.
	if id := mustWorkloadID(t, td, certs.SystemNamespace, "meshd"); !certs.IsReserved(id) {
		t.Errorf("IsReserved(%s) = false", id)
	}
}

func FuzzParseWorkloadID(f *testing.F) {
	for _, s := range []string{
		"spiffe://example.org/ns/shop/sa/web",
		"spiffe://example.org/ns/a/sa/b/c",
		"spiffe://example.org/ns//sa/x",
		"spiffe://td/ns/-/sa/-",
		"spiffe://example.org",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return
		}
		ns, sa, err := certs.ParseWorkloadID(id)
		if err != nil {
			if !errors.Is(err, certs.ErrInvalidID) {
				t.Fatalf("error %v does not wrap ErrInvalidID", err)
			}
			return
		}
		// Whatever parses must rebuild to the very same ID.
		again, err := certs.WorkloadID(id.TrustDomain(), ns, sa)
		if err != nil {
			t.Fatalf("WorkloadID(%q, %q) of a parsed ID: %v", ns, sa, err)
		}
		if again != id {
			t.Fatalf("round trip: %s != %s", again, id)
		}
	})
}
