package meshctl_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/internal/inject"
	"minimesh/internal/meshctl"
)

const testImage = "minimesh/minimesh:test"

var injectSrc = filepath.Join("..", "inject", "testdata", "pod.yaml")

// The command reads a file or standard input and writes inject.Inject's
// output; without --ca-pin it asks meshd for the pins of every root of its
// bundle (both during a rotation); --join-token-secret is the old form.
func TestInjectCommand(t *testing.T) {
	src, err := os.ReadFile(injectSrc)
	if err != nil {
		t.Fatal(err)
	}
	pin := "sha256:" + strings.Repeat("ab", 32)
	want, err := inject.Inject(src, inject.Options{Image: testImage, CAPins: []string{pin}})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-f", injectSrc}, {"-f", "-"}} {
		var out, errOut bytes.Buffer
		root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: &errOut})
		root.SetIn(bytes.NewReader(src))
		root.SetArgs(append([]string{"inject", "--image", testImage, "--ca-pin", pin}, args...))
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("%v: output differs from Inject:\n%s", args, out.String())
		}
	}
	jt, err := inject.Inject(src, inject.Options{Image: testImage, JoinTokenSecret: "mesh-token-api"})
	if err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"--join-token-secret"} {
		var out bytes.Buffer
		root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: io.Discard})
		root.SetErr(io.Discard)
		root.SetArgs([]string{"inject", "--image", testImage, flag, "mesh-token-api", "-f", injectSrc})
		if err := root.Execute(); err != nil || !bytes.Equal(out.Bytes(), jt) {
			t.Errorf("%s: %v\n%s", flag, err, out.String())
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"inject"}, "-f FILE"},
		{[]string{"inject", "-f", filepath.Join(t.TempDir(), "missing.yaml")}, "no such file"},
		{[]string{"inject", "-f", injectSrc, "--ca-pin", pin, "--port", "15020"}, "pod.yaml: inject: document 1: Pod api: app port 15020"},
		{[]string{"inject", "-f", injectSrc, "--ca-pin", "sha256:00"}, `--ca-pin "sha256:00"`},
		{[]string{"inject", "-f", injectSrc, "--server", "127.0.0.1:1", "--credentials", t.TempDir()}, "--ca-pin not given, and meshd could not be asked for its roots"},
	} {
		root := meshctl.NewRoot(meshctl.IO{Out: io.Discard, Err: io.Discard})
		root.SetArgs(tt.args)
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want an error containing %q", tt.args, err, tt.want)
		}
	}

	// Asked of a real meshd: its root, then both roots once a rotation
	// has prepared the next.
	m := controlplanetest.Start(t, controlplane.Config{})
	asked := func() string {
		t.Helper()
		out, err := run(t, m, "inject", "--image", testImage, "-f", injectSrc)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	want, err = inject.Inject(src, inject.Options{Image: testImage, CAPins: []string{m.RootPin()}})
	if err != nil {
		t.Fatal(err)
	}
	if got := asked(); got != string(want) {
		t.Errorf("pins asked of meshd:\n%s", got)
	}
	if _, err := m.RotateCA(false); err != nil {
		t.Fatal(err)
	}
	st, err := m.CAStatus()
	if err != nil {
		t.Fatal(err)
	}
	if got := asked(); !strings.Contains(got, "--ca-pin="+st.GetActive().GetPin()+","+st.GetNext().GetPin()+"\n") {
		t.Errorf("during a rotation, want both roots' pins:\n%s", got)
	}
}
