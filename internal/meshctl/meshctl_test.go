package meshctl_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/internal/meshctl"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func run(t *testing.T, m *controlplanetest.Meshd, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: &errOut})
	root.SetArgs(append([]string{"--server", m.Addr, "--credentials", m.OperatorCredentialDir()}, args...))
	err := root.Execute()
	return out.String(), err
}

func TestTokenLifecycleAndCerts(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})

	out, err := run(t, m, "token", "create", "--ns", "default", "--sa", "web", "--uses", "3", "-o", "json")
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	var created struct {
		Token struct {
			ID       string `json:"id"`
			SPIFFEID string `json:"spiffeId"`
			Uses     int    `json:"uses"`
		} `json:"token"`
		Secret string `json:"secret"`
		CAPin  string `json:"caPin"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("token create -o json: %v\n%s", err, out)
	}
	if created.Token.SPIFFEID != "spiffe://minimesh.local/ns/default/sa/web" || created.Token.Uses != 3 {
		t.Errorf("created = %+v", created.Token)
	}
	if !strings.HasPrefix(created.Secret, created.Token.ID+".") || created.CAPin != m.RootPin() {
		t.Errorf("secret %q / pin %q do not match id %q / root pin %q", created.Secret, created.CAPin, created.Token.ID, m.RootPin())
	}

	out, err = run(t, m, "token", "list")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, created.Token.ID) || !strings.Contains(out, "active") || strings.Contains(out, created.Secret) {
		t.Errorf("token list does not show the token as active, or shows its secret:\n%s", out)
	}
	if _, err := run(t, m, "token", "revoke", created.Token.ID); err != nil {
		t.Fatal(err)
	}
	out, _ = run(t, m, "token", "list")
	if !strings.Contains(out, "revoked") {
		t.Errorf("token list after revoke:\n%s", out)
	}

	out, err = run(t, m, "certs", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "spiffe://minimesh.local/ns/minimesh-system/sa/operator") {
		t.Errorf("certs does not list the operator credential:\n%s", out)
	}
	out, err = run(t, m, "certs")
	if err != nil || !strings.Contains(out, "SERIAL") {
		t.Errorf("certs table: %v\n%s", err, out)
	}
}

func TestClearErrors(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	var out bytes.Buffer
	root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: &out})
	root.SetArgs([]string{"--server", m.Addr, "--credentials", "", "token", "list"})
	t.Setenv("MESHCTL_CREDENTIALS", "")
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "--credentials") {
		t.Errorf("no credentials: %v", err)
	}
	if _, err := run(t, m, "token", "create", "--ns", "minimesh-system", "--sa", "operator"); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("reserved identity: %v", err)
	}
	if _, err := run(t, m, "certs", "-o", "xml"); err == nil {
		t.Error("unknown output format accepted")
	}
}

func TestCredentialsFromEnvironment(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	t.Setenv("MESHCTL_SERVER", m.Addr)
	t.Setenv("MESHCTL_CREDENTIALS", m.OperatorCredentialDir())
	var out bytes.Buffer
	root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: &out})
	root.SetArgs([]string{"proxies"})
	if err := root.Execute(); err != nil {
		t.Fatalf("proxies with env credentials: %v", err)
	}
	for _, f := range []string{"svid.pem", "svid_key.pem", "bundle.pem"} {
		fi, err := os.Stat(filepath.Join(m.OperatorCredentialDir(), f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
}
