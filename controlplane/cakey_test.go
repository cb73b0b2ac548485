package controlplane_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/store"
	"minimesh/internal/testlog"
	meshv1 "minimesh/proto/mesh/v1"
)

// writeCAKey writes a fresh --ca-key-file and returns its path and bytes.
func writeCAKey(t *testing.T) (string, []byte) {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.key")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, key
}

// caPrivateKeys is the PKCS#8 DER of every private key in the CA's state
// (the root's and the intermediate's, and the next root's during a rotation).
func caPrivateKeys(t *testing.T, m *controlplanetest.Meshd) [][]byte {
	t.Helper()
	state, err := m.CA().MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	var keys [][]byte
	for rest := state; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "PRIVATE KEY" {
			keys = append(keys, b.Bytes)
		}
	}
	if len(keys) < 2 {
		t.Fatalf("the CA state holds %d private keys", len(keys))
	}
	return keys
}

// holdsAny says how many of keys appear in data, as DER or as the PEM
// that MarshalState writes (base64 in lines of 64: the second line is
// bytes 48 to 95 of the key, all of them the key's own).
func holdsAny(data []byte, keys [][]byte) int {
	n := 0
	for _, k := range keys {
		line := base64.StdEncoding.EncodeToString(k)[64:128]
		if bytes.Contains(data, k) || bytes.Contains(data, []byte(line)) {
			n++
		}
	}
	return n
}

// storedCA is the data file's stored CA state (read with meshd stopped).
func storedCA(t *testing.T, dataDir string) []byte {
	t.Helper()
	st, err := store.Open(store.Config{Path: filepath.Join(dataDir, "meshd.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, err := st.Meta("ca")
	if err != nil || v == nil {
		t.Fatalf("stored CA: %q %v", v, err)
	}
	return v
}

// backupVia takes a backup through the admin API, as meshctl backup does,
// and returns it with the CA-keys header.
func backupVia(t *testing.T, m *controlplanetest.Meshd) ([]byte, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := m.Operator(t).Backup(ctx, &meshv1.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r.GetChunk()...)
	}
	md, err := stream.Header()
	if err != nil {
		t.Fatal(err)
	}
	return out, strings.Join(md.Get(controlplane.BackupCAKeysHeader), ",")
}

// noKeyIn fails when any spelling of key appears in text.
func noKeyIn(t *testing.T, what, text string, key []byte) {
	t.Helper()
	for _, k := range []string{string(key), hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key), base64.RawURLEncoding.EncodeToString(key), fmt.Sprint(key)} {
		if strings.Contains(text, k) {
			t.Fatalf("%s shows the CA key file's content", what)
		}
	}
}

func TestCAKeysAtRest(t *testing.T) {
	for _, withKey := range []bool{true, false} {
		t.Run(fmt.Sprintf("key=%v", withKey), func(t *testing.T) {
			var keyFile string
			var key []byte
			if withKey {
				keyFile, key = writeCAKey(t)
			}
			logs := &testlog.Buffer{}
			m := controlplanetest.Start(t, controlplane.Config{CAKeyFile: keyFile, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			keys := caPrivateKeys(t, m)
			backup, header := backupVia(t, m)
			// A rotation step writes the CA state again (changeCA), with a
			// next root's keys in it.
			if _, err := m.RotateCA(false); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, caPrivateKeys(t, m)...)
			backup2, _ := backupVia(t, m)
			pin := m.RootPin()
			m.Stop()
			file, err := os.ReadFile(filepath.Join(m.DataDir, "meshd.db"))
			if err != nil {
				t.Fatal(err)
			}
			if !withKey {
				// What the keyed case proves absent is there without a key.
				if holdsAny(file, keys) == 0 || holdsAny(backup, keys) == 0 || holdsAny(backup2, keys) == 0 {
					t.Fatal("without a key file the data file and backups should hold the CA keys in clear: the test looks for the wrong bytes")
				}
				if header != "clear" {
					t.Fatalf("backup header %q, want clear", header)
				}
				return
			}
			for what, data := range map[string][]byte{"data file": file, "backup": backup, "backup after rotation": backup2} {
				if n := holdsAny(data, keys); n != 0 {
					t.Errorf("the %s holds %d CA private keys in clear", what, n)
				}
				if bytes.Contains(data, []byte("PRIVATE KEY")) {
					t.Errorf("the %s holds a PEM private key", what)
				}
			}
			if header != "encrypted" {
				t.Fatalf("backup header %q, want encrypted", header)
			}

			// Restart with the key: same CA, rotation still in progress.
			m2 := controlplanetest.Start(t, controlplane.Config{DataDir: m.DataDir, CAKeyFile: keyFile, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if m2.RootPin() != pin || m2.CA().NextRoot() == nil {
				t.Fatalf("restarted with the key: root %s next %v, want %s and a next root", m2.RootPin(), m2.CA().NextRoot() != nil, pin)
			}
			m2.Stop()
			noKeyIn(t, "the log", logs.String(), key)
			stored := storedCA(t, m.DataDir)

			// Without it, with another one, or under another trust domain:
			// refused, the stored CA untouched.
			otherKey, _ := writeCAKey(t)
			for _, c := range []struct {
				name string
				cfg  controlplane.Config
				is   error
				says string
			}{
				{"no key file", controlplane.Config{}, controlplane.ErrCAKeyRequired, "--ca-key-file"},
				{"another key file", controlplane.Config{CAKeyFile: otherKey}, controlplane.ErrCAKeyMismatch, "the CA key file does not decrypt this data file's CA"},
				{"another trust domain", controlplane.Config{CAKeyFile: keyFile, TrustDomain: "other.test"}, nil, `"minimesh.local", not "other.test"`},
			} {
				c.cfg.DataDir = m.DataDir
				_, err := controlplane.New(c.cfg)
				if err == nil || (c.is != nil && !errors.Is(err, c.is)) || !strings.Contains(err.Error(), c.says) {
					t.Fatalf("%s: %v, want an error saying %q", c.name, err, c.says)
				}
				t.Logf("%s: %v", c.name, err)
				noKeyIn(t, "an error", err.Error(), key)
				if !bytes.Equal(storedCA(t, m.DataDir), stored) {
					t.Fatalf("%s: the refused start changed the stored CA", c.name)
				}
			}
		})
	}
}

func TestCAKeyFileIsCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	good, _ := writeCAKey(t)
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask
			t.Fatal(err)
		}
		return p
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	text := []byte("correct horse battery staple 123")
	cases := []struct {
		name, path, says string
		content          []byte
	}{
		{"31 bytes", write("short", random(31), 0o600), "holds 31 bytes; it must hold exactly 32", nil},
		{"33 bytes", write("long", random(33), 0o600), "holds 33 bytes or more", nil},
		{"32 bytes and a newline", write("newline", append(random(32), '\n'), 0o600), "holds 33 bytes or more", nil},
		{"empty", write("empty", nil, 0o600), "holds 0 bytes", nil},
		{"mode 0644", write("open", random(32), 0o644), "mode 0644", nil},
		{"mode 0640", write("group", random(32), 0o640), "mode 0640", nil},
		{"mode 0604", write("other", random(32), 0o604), "mode 0604", nil},
		{"symlink", link, "symlink", nil},
		{"directory", dir, "not a regular file", nil},
		{"missing", filepath.Join(dir, "nope"), "cannot read it: no such file or directory", nil},
		{"text", write("text", text, 0o600), "printable text", text},
		{"zeros", write("zeros", make([]byte, 32), 0o600), "only 1 distinct byte values", nil},
	}
	for _, c := range cases {
		dataDir := filepath.Join(t.TempDir(), "data")
		_, err := controlplane.New(controlplane.Config{DataDir: dataDir, CAKeyFile: c.path})
		if err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: %v, want an error naming the file and saying %q", c.name, err, c.says)
			continue
		}
		t.Logf("%s: %v", c.name, err)
		if c.content != nil && strings.Contains(err.Error(), string(c.content)) {
			t.Errorf("%s: the error shows the file's content", c.name)
		}
		if _, err := os.Stat(dataDir); err == nil {
			t.Errorf("%s: a refused key file left a data dir behind", c.name)
		}
	}
	// And the good one works; its value never prints.
	k, err := controlplane.ReadCAKeyFile(good)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(good)
	noKeyIn(t, "fmt", fmt.Sprintf("%v %+v %#v %s %x %X %d %q", k, k, k, k, k, k, k, k), raw)
	if !strings.Contains(fmt.Sprint(k), k.ID()) {
		t.Fatalf("a CA key prints as %v", k)
	}
}

// TestPlainDataFileIsEncryptedAtFirstStartWithKey: the migration.
func TestPlainDataFileIsEncryptedAtFirstStartWithKey(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	tok := m.Token(t, "default", "web", 5)
	keys := caPrivateKeys(t, m)
	pin := m.RootPin()
	m.Stop()
	path := filepath.Join(m.DataDir, "meshd.db")
	if plain, _ := os.ReadFile(path); holdsAny(plain, keys) == 0 {
		t.Fatal("a data file made without a key file should hold the CA keys in clear")
	}

	keyFile, key := writeCAKey(t)
	logs := &testlog.Buffer{}
	m2 := controlplanetest.Start(t, controlplane.Config{DataDir: m.DataDir, CAKeyFile: keyFile, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if m2.RootPin() != pin {
		t.Fatalf("root %s after encrypting, want %s", m2.RootPin(), pin)
	}
	if !strings.Contains(logs.String(), "encrypted the certificate authority's keys in the data file") {
		t.Fatalf("the migration was not logged:\n%s", logs)
	}
	noKeyIn(t, "the log", logs.String(), key)
	// Everything else came across: the token is still there.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := m2.Operator(t).ListJoinTokens(ctx, &meshv1.ListJoinTokensRequest{})
	if err != nil || len(list.GetTokens()) != 1 || list.GetTokens()[0].GetId() != tok.GetToken().GetId() {
		t.Fatalf("tokens after encrypting: %v %v", list, err)
	}
	backup, header := backupVia(t, m2)
	m2.Stop()
	file, _ := os.ReadFile(path)
	if holdsAny(file, keys) != 0 || holdsAny(backup, keys) != 0 || header != "encrypted" {
		t.Fatalf("after encrypting, the data file holds %d and a backup %d CA keys in clear (header %q)", holdsAny(file, keys), holdsAny(backup, keys), header)
	}
	if _, err := controlplane.New(controlplane.Config{DataDir: m.DataDir}); !errors.Is(err, controlplane.ErrCAKeyRequired) {
		t.Fatalf("start without the key file after encrypting: %v", err)
	}
	controlplanetest.Start(t, controlplane.Config{DataDir: m.DataDir, CAKeyFile: keyFile}).Stop()
}

// TestEncryptedCAStateIsAuthenticated: a changed byte of the sealed state
// is refused, and the error tells it from a wrong key.
func TestEncryptedCAStateIsAuthenticated(t *testing.T) {
	keyFile, _ := writeCAKey(t)
	m := controlplanetest.Start(t, controlplane.Config{CAKeyFile: keyFile})
	m.Stop()
	path := filepath.Join(m.DataDir, "meshd.db")
	st, err := store.Open(store.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	v, err := st.Meta("ca")
	if err != nil || len(v) < 100 {
		t.Fatalf("meta ca: %d bytes, %v", len(v), err)
	}
	v[len(v)-40] ^= 1
	if err := st.Update(func(tx *store.Txn) error { return tx.SetMeta("ca", v) }); err != nil {
		t.Fatal(err)
	}
	// LoadCAState (meshd operator's way in) refuses it too.
	if _, err := controlplane.LoadCAState(st, keyFile, certs.CAConfig{}); !errors.Is(err, controlplane.ErrCAKeyMismatch) || !strings.Contains(err.Error(), "damaged or was altered") {
		t.Fatalf("LoadCAState of an altered state: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = controlplane.New(controlplane.Config{DataDir: m.DataDir, CAKeyFile: keyFile})
	if !errors.Is(err, controlplane.ErrCAKeyMismatch) || !strings.Contains(err.Error(), "damaged or was altered") {
		t.Fatalf("start on an altered CA state: %v", err)
	}
}

func TestRestoreNeedsTheCAKeyFile(t *testing.T) {
	keyFile, _ := writeCAKey(t)
	otherKey, _ := writeCAKey(t)
	m := controlplanetest.Start(t, controlplane.Config{CAKeyFile: keyFile})
	sealed, _ := backupVia(t, m)
	pin := m.RootPin()
	m.Stop()
	sealedFile := filepath.Join(t.TempDir(), "sealed.backup")
	if err := os.WriteFile(sealedFile, sealed, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, key string
		is        error
	}{{"no key file", "", controlplane.ErrCAKeyRequired}, {"another key file", otherKey, controlplane.ErrCAKeyMismatch}} {
		dir := filepath.Join(t.TempDir(), "data")
		err := controlplane.Restore(dir, sealedFile, c.key)
		if !errors.Is(err, c.is) {
			t.Fatalf("restore with %s: %v, want %v", c.name, err, c.is)
		}
		t.Logf("restore with %s: %v", c.name, err)
		if _, err := os.Stat(filepath.Join(dir, "meshd.db")); err == nil {
			t.Fatalf("restore with %s left a data file", c.name)
		}
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := controlplane.Restore(dir, sealedFile, keyFile); err != nil {
		t.Fatalf("restore with the key file: %v", err)
	}
	if r := controlplanetest.Start(t, controlplane.Config{DataDir: dir, CAKeyFile: keyFile}); r.RootPin() != pin {
		t.Fatalf("restored root %s, want %s", r.RootPin(), pin)
	}

	// A plain backup restores with a key file, and is encrypted at start.
	p := controlplanetest.Start(t, controlplane.Config{})
	plain, _ := backupVia(t, p)
	keys := caPrivateKeys(t, p)
	p.Stop()
	plainFile := filepath.Join(t.TempDir(), "plain.backup")
	if err := os.WriteFile(plainFile, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(t.TempDir(), "data")
	if err := controlplane.Restore(dir, plainFile, keyFile); err != nil {
		t.Fatalf("restore a plain backup with a key file: %v", err)
	}
	controlplanetest.Start(t, controlplane.Config{DataDir: dir, CAKeyFile: keyFile}).Stop()
	if file, _ := os.ReadFile(filepath.Join(dir, "meshd.db")); holdsAny(file, keys) != 0 {
		t.Fatal("a restored plain backup was not encrypted at start with the key file")
	}
}
