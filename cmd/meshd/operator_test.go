package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"minimesh/controlplane"
)

// TestOperatorSubcommands runs `meshd operator issue|revoke` as a user
// types them, against a real data dir of a stopped meshd.
func TestOperatorSubcommands(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "meshd")
	srv, err := controlplane.New(controlplane.Config{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	meshd := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		root := newRoot(&out, &errOut)
		root.SetArgs(args)
		err := root.Execute()
		return out.String() + errOut.String(), err
	}

	outDir := filepath.Join(t.TempDir(), "op")
	out, err := meshd("operator", "issue", "--data-dir", dataDir, "--out", outDir, "--ttl", "1h")
	if err != nil {
		t.Fatalf("operator issue: %v\n%s", err, out)
	}
	i := strings.Index(out, "serial:")
	if i < 0 {
		t.Fatalf("operator issue printed no serial:\n%s", out)
	}
	serial := strings.Fields(out[i+len("serial:"):])[0]

	// The serial after the flags, in openssl's upper case.
	out, err = meshd("operator", "revoke", "--data-dir", dataDir, strings.ToUpper(serial))
	if err != nil || !strings.Contains(out, serial+" revoked") {
		t.Fatalf("operator revoke: %v\n%s", err, out)
	}
	// The serial before them; already revoked, nothing changes.
	out, err = meshd("operator", "revoke", serial, "--data-dir", dataDir)
	if err != nil || !strings.Contains(out, "already revoked") {
		t.Fatalf("operator revoke again: %v\n%s", err, out)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"operator"}, "a subcommand is required"},
		{[]string{"operator", "renew"}, "unknown subcommand"},
		{[]string{"operator", "issue", "--out", outDir}, "--data-dir is required"},
		{[]string{"operator", "issue", "--data-dir", dataDir}, "--out: required"},
		{[]string{"operator", "issue", "--data-dir", dataDir, "--out", outDir, "--ttl", "-1h"}, "--ttl"},
		{[]string{"operator", "revoke", "--data-dir", dataDir}, "SERIAL is required"},
		{[]string{"operator", "revoke", "xyz", "--data-dir", dataDir}, "not hexadecimal"},
	} {
		if out, err := meshd(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("meshd %v: %v, want an error naming %q\n%s", c.args, err, c.want, out)
		}
	}
}
