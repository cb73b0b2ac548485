package certs_test

import (
	"crypto/x509"
	"errors"
	"testing"

	"minimesh/certs"
)

func FuzzLoadCA(f *testing.F) {
	ca := mustNewCA(f, certs.CAConfig{TrustDomain: td})
	state, err := ca.MarshalState()
	if err != nil {
		f.Fatal(err)
	}
	prepared, err := ca.PrepareRootRotation()
	if err != nil {
		f.Fatal(err)
	}
	pstate, err := prepared.MarshalState()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(state)
	f.Add(pstate)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		loaded, err := certs.LoadCA(certs.CAConfig{TrustDomain: td}, in)
		if err != nil {
			if !errors.Is(err, certs.ErrInvalidCAState) {
				t.Fatalf("error %v does not wrap ErrInvalidCAState", err)
			}
			return
		}
		// Whatever loads is consistent: its state round-trips.
		again, err := certs.LoadCA(certs.CAConfig{TrustDomain: td}, mustState(t, loaded))
		if err != nil || !again.Root().Equal(loaded.Root()) || !again.Bundle().Equal(loaded.Bundle()) {
			t.Fatalf("state of a loaded CA does not round-trip: %v", err)
		}
	})
}

func FuzzParseCertsPEM(f *testing.F) {
	ca := mustNewCA(f, certs.CAConfig{TrustDomain: td})
	f.Add(certs.EncodeCertsPEM([]*x509.Certificate{ca.Root(), ca.Intermediate()}))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		certsOut, err := certs.ParseCertsPEM(in)
		if err != nil {
			if !errors.Is(err, certs.ErrInvalidPEM) || certsOut != nil {
				t.Fatalf("ParseCertsPEM = %d, %v", len(certsOut), err)
			}
			return
		}
		again, err := certs.ParseCertsPEM(certs.EncodeCertsPEM(certsOut))
		if err != nil || len(again) != len(certsOut) {
			t.Fatalf("re-encoding does not round-trip: %v", err)
		}
		for i := range again {
			if !again[i].Equal(certsOut[i]) {
				t.Fatalf("certificate %d differs", i)
			}
		}
	})
}
