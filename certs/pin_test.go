package certs_test

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"minimesh/certs"
)

func TestParsePin(t *testing.T) {
	hex64 := strings.Repeat("ab", 32)
	tests := []struct {
		pin string
		ok  bool
	}{
		{"sha256:" + hex64, true},
		{"sha256:" + strings.ToUpper(hex64), true},
		{"sha256:" + strings.Repeat("0", 64), true},
		{"", false},
		{"sha256:", false},
		{hex64, false},
		{"SHA256:" + hex64, false},
		{"sha1:" + hex64, false},
		{"sha256:" + hex64[:62], false},
		{"sha256:" + hex64 + "ab", false},
		{"sha256:" + hex64[:63] + "g", false},
		{"sha256: " + hex64[1:], false},
		{" sha256:" + hex64, false},
		{"sha256:" + hex64 + "\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.pin, func(t *testing.T) {
			b, err := certs.ParsePin(tt.pin)
			if !tt.ok {
				if !errors.Is(err, certs.ErrInvalidPin) || b != nil {
					t.Fatalf("ParsePin = %x, %v; want ErrInvalidPin", b, err)
				}
				return
			}
			if err != nil || len(b) != 32 || hex.EncodeToString(b) != strings.ToLower(strings.TrimPrefix(tt.pin, "sha256:")) {
				t.Fatalf("ParsePin = %x, %v", b, err)
			}
		})
	}
}

func FuzzParsePin(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("ab", 32))
	f.Add("sha256:" + strings.Repeat("AB", 32))
	f.Add("sha256:zz")
	f.Add("")
	f.Fuzz(func(t *testing.T, pin string) {
		b, err := certs.ParsePin(pin)
		if err != nil {
			if !errors.Is(err, certs.ErrInvalidPin) || b != nil {
				t.Fatalf("ParsePin(%q) = %x, %v", pin, b, err)
			}
			return
		}
		// Accepted pins are exactly the canonical form, up to hex case.
		if len(b) != 32 || "sha256:"+hex.EncodeToString(b) != "sha256:"+strings.ToLower(pin[len("sha256:"):]) || !strings.HasPrefix(pin, "sha256:") {
			t.Fatalf("ParsePin(%q) accepted as %x", pin, b)
		}
	})
}
