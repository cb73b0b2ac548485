package meshctl_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/internal/meshctl"
)

func TestBackupAndRestore(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	if _, err := run(t, m, "apply", "-f", "testdata/mesh.yaml"); err != nil {
		t.Fatal(err)
	}
	pin := m.RootPin()
	backup := filepath.Join(t.TempDir(), "meshd.backup")
	out, err := run(t, m, "backup", backup)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v (want mode 0600)\n%s", fi, err, out)
	}
	want, _ := run(t, m, "get", "all", "-o", "yaml")
	m.Stop()

	dir := filepath.Join(t.TempDir(), "restored")
	if err := controlplane.Restore(dir, backup, ""); err != nil {
		t.Fatalf("restore: %v", err)
	}
	// Restoring again over the restored file overwrites nothing.
	before, _ := os.ReadFile(filepath.Join(dir, "meshd.db"))
	if err := controlplane.Restore(dir, backup, ""); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("restore over an existing data file: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "meshd.db"))
	if string(before) != string(after) {
		t.Fatal("a refused restore changed the data file")
	}

	r := controlplanetest.Start(t, controlplane.Config{DataDir: dir})
	if r.RootPin() != pin {
		t.Fatalf("restored meshd has root %s, want %s", r.RootPin(), pin)
	}
	got, _ := run(t, r, "get", "all", "-o", "yaml")
	if got != want {
		t.Fatalf("restored resources differ:\nwant\n%s\ngot\n%s", want, got)
	}
}

func TestBadDataFilesAreRefusedAndLeftAlone(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	backup := filepath.Join(t.TempDir(), "b")
	if _, err := run(t, m, "backup", backup); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	good, _ := os.ReadFile(backup)

	// A truncated data file: meshd refuses to start and leaves it as it was.
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	truncated := good[:len(good)/3]
	if err := os.WriteFile(filepath.Join(dir, "meshd.db"), truncated, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := controlplane.New(controlplane.Config{DataDir: dir}); err == nil {
		t.Fatal("meshd started on a truncated data file")
	} else {
		t.Logf("truncated data file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "meshd.db")); string(b) != string(truncated) {
		t.Fatal("meshd changed a truncated data file")
	}

	// A corrupt backup is refused by restore.
	corrupt := filepath.Join(t.TempDir(), "corrupt")
	bad := append([]byte(nil), good...)
	for i := len(bad) / 3; i < 2*len(bad)/3; i++ { // the middle third, whatever the format's size
		bad[i] ^= 0xff
	}
	if err := os.WriteFile(corrupt, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := controlplane.Restore(empty, corrupt, ""); err == nil {
		t.Fatal("restore accepted a corrupt backup")
	}
	if _, err := os.Stat(filepath.Join(empty, "meshd.db")); err == nil {
		t.Fatal("a refused restore left a data file behind")
	}

	// A data dir others can read is refused.
	open := filepath.Join(t.TempDir(), "open")
	if err := os.MkdirAll(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := controlplane.New(controlplane.Config{DataDir: open}); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("0755 data dir: %v", err)
	}
}

// runErr runs meshctl and returns its stdout and stderr.
func runErr(t *testing.T, m *controlplanetest.Meshd, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: &errOut})
	root.SetArgs(append([]string{"--server", m.Addr, "--credentials", m.OperatorCredentialDir()}, args...))
	err := root.Execute()
	return out.String(), errOut.String(), err
}

func TestBackupWarnsWhenTheCAKeysAreInClear(t *testing.T) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "ca.key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	const warning = "holds the CA's private keys in clear"
	for _, c := range []struct {
		keyFile string
		warns   bool
	}{{"", true}, {keyFile, false}} {
		m := controlplanetest.Start(t, controlplane.Config{CAKeyFile: c.keyFile})
		file := filepath.Join(t.TempDir(), "b")
		out, errOut, err := runErr(t, m, "backup", file)
		if err != nil {
			t.Fatalf("backup (key file %q): %v", c.keyFile, err)
		}
		if strings.Contains(errOut, warning) != c.warns || strings.Contains(out, warning) {
			t.Fatalf("backup with key file %q: stdout %q stderr %q; want the warning on stderr: %v", c.keyFile, out, errOut, c.warns)
		}
		m.Stop()
	}
	m := controlplanetest.Start(t, controlplane.Config{})
	help, _, err := runErr(t, m, "backup", "--help")
	if err != nil || !strings.Contains(help, "in clear") || !strings.Contains(help, "--ca-key-file") {
		t.Fatalf("backup --help does not say the CA keys are in clear without --ca-key-file: %v\n%s", err, help)
	}
}
