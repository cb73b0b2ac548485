package controlplane

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
	"minimesh/controlplane/store"
)

func testCAKey(t *testing.T) *CAKey {
	t.Helper()
	raw := make([]byte, caKeySize)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	k, err := newCAKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestSealingLeavesNoPlainPage: sealing a plain data file must not leave
// the plain state in a freed page, where every backup would copy it. A
// value set in place leaves it there until some later write reuses the
// page; openStore rewrites the file instead.
func TestSealingLeavesNoPlainPage(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("minimesh.local")
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	// During a rotation the state is at its biggest (two roots' keys).
	if ca, err = ca.PrepareRootRotation(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), dataFile)
	st, err := store.Open(store.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := saveCA(st, nil, ca); err != nil {
		t.Fatal(err)
	}
	if err := st.Update(func(tx *store.Txn) error { return tx.SetMeta("other", []byte("kept")) }); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	state, _ := ca.MarshalState()
	var lines [][]byte // every base64 line of every private key block
	for rest := state; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "PRIVATE KEY" {
			enc := base64.StdEncoding.EncodeToString(b.Bytes)
			lines = append(lines, []byte(enc[64:128]))
		}
	}
	if len(lines) != 4 {
		t.Fatalf("%d private keys in the state", len(lines))
	}
	plainLines := func() int {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, l := range lines {
			if bytes.Contains(data, l) {
				n++
			}
		}
		return n
	}
	if plainLines() != 4 {
		t.Fatal("the plain data file should hold the keys: the test looks for the wrong bytes")
	}

	key := testCAKey(t)
	st, err = openStore(path, key, td, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	got, sealed, err := loadCA(st, key, certs.CAConfig{TrustDomain: td})
	if err != nil || !sealed || got.RootPin() != ca.RootPin() || got.NextRoot() == nil {
		t.Fatalf("after sealing: sealed %v, err %v", sealed, err)
	}
	if v, err := st.Meta("other"); err != nil || string(v) != "kept" {
		t.Fatalf("another meta value after sealing: %q %v", v, err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if n := plainLines(); n != 0 {
		t.Fatalf("after sealing, the data file still holds %d plain private keys (in freed pages)", n)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".seal-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// TestOpenCAStateReadsHostileInput: a sealed state comes from a data file or
// a backup anyone may have handed over: every truncation and every header
// byte changed is an error, never a panic or a silent success.
func TestOpenCAStateReadsHostileInput(t *testing.T) {
	key := testCAKey(t)
	td := spiffeid.RequireTrustDomainFromString("minimesh.local")
	plain := []byte("-----BEGIN CERTIFICATE-----\nstate\n-----END CERTIFICATE-----\n")
	sealed, err := sealCAState(key, td, plain)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, plain) {
		t.Fatal("sealed state holds the plain one")
	}
	again, _ := sealCAState(key, td, plain)
	if bytes.Equal(again, sealed) {
		t.Fatal("two seals of one state are equal: the nonce is not fresh")
	}
	got, sealedFor, err := openCAState(key, sealed)
	if err != nil || !bytes.Equal(got, plain) || sealedFor != "minimesh.local" {
		t.Fatalf("open: %q %q %v", got, sealedFor, err)
	}
	for n := len(caStateMagic); n < len(sealed); n++ {
		if _, _, err := openCAState(key, sealed[:n]); err == nil {
			t.Fatalf("a sealed state cut at %d bytes opened", n)
		}
	}
	for i := range sealed {
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x80
		if got, _, err := openCAState(key, bad); err == nil && i >= len(caStateMagic) {
			t.Fatalf("a sealed state with byte %d changed opened: %q", i, got)
		}
	}
	v2 := bytes.Clone(sealed)
	v2[len(caStateMagic)] = 2
	if _, _, err := openCAState(key, v2); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("version 2: %v", err)
	}
	if _, _, err := openCAState(nil, sealed); !errors.Is(err, ErrCAKeyRequired) || !strings.Contains(err.Error(), key.ID()) {
		t.Fatalf("no key: %v", err)
	}
	if _, _, err := openCAState(testCAKey(t), sealed); !errors.Is(err, ErrCAKeyMismatch) {
		t.Fatalf("another key: %v", err)
	}
	// Plain states pass through untouched.
	if got, _, err := openCAState(key, plain); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("plain: %q %v", got, err)
	}
}
