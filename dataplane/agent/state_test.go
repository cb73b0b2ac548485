package agent_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/dataplane/agent"
	"minimesh/dataplane/redirect"
	"minimesh/internal/fsguard"
	meshv1 "minimesh/proto/mesh/v1"
)

// helperEnv makes this test binary, re-executed under setpriv as another
// user, run agent.New on the state dir it names and report.
const helperEnv = "MINIMESH_AGENT_STATE_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(stateHelper(dir))
	}
	os.Exit(m.Run())
}

// stateHelper starts an agent on dir twice (the second start reads what the
// first wrote) and prints "ok <uid> <instance id>" or the error.
func stateHelper(dir string) int {
	var ids []string
	for range 2 {
		a, err := agent.New(agent.Config{ControlPlane: "127.0.0.1:1", Service: "web", StateDir: dir})
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		ids = append(ids, a.InstanceID())
	}
	if ids[0] != ids[1] {
		fmt.Println("error: instance id changed:", ids)
		return 1
	}
	fmt.Println("ok", os.Geteuid(), ids[0])
	return 0
}

func newAgent(dir string) (*agent.Agent, error) {
	return agent.New(agent.Config{ControlPlane: "127.0.0.1:1", Service: "web", StateDir: dir})
}

func mustRefuse(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("agent.New accepted it; want a refusal saying %q", want)
	}
	if !errors.Is(err, fsguard.ErrUntrusted) || !strings.Contains(err.Error(), want) {
		t.Fatalf("agent.New: %v; want an ErrUntrusted refusal saying %q", err, want)
	}
}

func TestStateDirMadePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "proxy")
	if _, err := newAgent(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Dir(dir), dir} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want 0700", p, fi.Mode(), err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "instance_id")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("instance_id: %v %v, want 0600", fi.Mode(), err)
	}
}

func TestStateDirSymlinkRefused(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(base, "state")); err != nil {
		t.Fatal(err)
	}
	_, err := newAgent(filepath.Join(base, "state"))
	mustRefuse(t, err, "is a symbolic link")
	_, err = newAgent(filepath.Join(base, "state", "proxy"))
	mustRefuse(t, err, "is a symbolic link")
	if entries, _ := os.ReadDir(real); len(entries) != 0 {
		t.Errorf("the agent wrote through the link: %v", entries)
	}
}

func TestStateDirWritableByOthersRefused(t *testing.T) {
	for _, mode := range []os.FileMode{0o770, 0o777, 0o1777} {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		_, err := newAgent(dir)
		mustRefuse(t, err, "other users can write it")
	}
}

// Files in the state dir the proxy did not write are refused: a symbolic
// link to a key, a key others can read, an instance_id link.
func TestStateFilesNotOursRefused(t *testing.T) {
	elsewhere := t.TempDir()
	keyPEM := newKeyPEM(t)
	if err := os.WriteFile(filepath.Join(elsewhere, "key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(elsewhere, "id"), []byte("web-planted\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		plant func(dir string) error
		want  string
	}{
		{"svid_key.pem symlink", func(dir string) error {
			return os.Symlink(filepath.Join(elsewhere, "key.pem"), filepath.Join(dir, certs.SVIDKeyFile))
		}, "is a symbolic link"},
		{"svid_key.pem 0644", func(dir string) error {
			return writeMode(filepath.Join(dir, certs.SVIDKeyFile), keyPEM, 0o644)
		}, "want 0600"},
		{"instance_id symlink", func(dir string) error {
			return os.Symlink(filepath.Join(elsewhere, "id"), filepath.Join(dir, "instance_id"))
		}, "is a symbolic link"},
		{"instance_id 0666", func(dir string) error {
			return writeMode(filepath.Join(dir, "instance_id"), []byte("web-planted\n"), 0o666)
		}, "want 0600"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// The SVID's chain is present, so New reaches the key.
			if err := writeMode(filepath.Join(dir, certs.SVIDFile), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := tc.plant(dir); err != nil {
				t.Fatal(err)
			}
			_, err := newAgent(dir)
			mustRefuse(t, err, tc.want)
		})
	}
}

// The attack: a pending_key.pem the proxy did not write (a link to the
// attacker's key, the attacker's key with loose permissions, or, as root,
// one owned by another user) must not become the key meshd certifies.
// Before the fix the agent bootstrapped with the planted key, and its
// holder could reach peers as the proxy.
func TestPlantedPendingKeyNeverCertified(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	td := spiffeid.RequireTrustDomainFromString("minimesh.local")
	attacker := t.TempDir()
	keyPEM := newKeyPEM(t)
	if err := os.WriteFile(filepath.Join(attacker, "key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	plantedPub := publicKeyDER(t, keyPEM)
	cases := []struct {
		name  string
		root  bool
		plant func(dir string) error
	}{
		{"symlink", false, func(dir string) error {
			return os.Symlink(filepath.Join(attacker, "key.pem"), filepath.Join(dir, "pending_key.pem"))
		}},
		{"mode 0644", false, func(dir string) error {
			return writeMode(filepath.Join(dir, "pending_key.pem"), keyPEM, 0o644)
		}},
		{"owned by nobody", true, func(dir string) error {
			p := filepath.Join(dir, "pending_key.pem")
			if err := writeMode(p, keyPEM, 0o600); err != nil {
				return err
			}
			uid, gid := nobody(t)
			return os.Chown(p, uid, gid)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				requireRoot(t)
			}
			dir := t.TempDir()
			if err := tc.plant(dir); err != nil {
				t.Fatal(err)
			}
			tok := m.Token(t, "default", "web", 1)
			reg := prometheus.NewRegistry()
			a, err := agent.New(agent.Config{
				ControlPlane: m.Addr, TrustDomain: td, Token: tok.GetSecret(), CAPin: tok.GetCaPin(),
				Service: "web", StateDir: dir, Registerer: reg, BackoffMax: 200 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = a.Run(ctx) }()
			defer func() { cancel(); <-done }()
			waitReady(t, a)
			leaf := a.SVIDSource().Current().Certificates[0]
			pub, err := x509.MarshalPKIXPublicKey(leaf.PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(pub, plantedPub) {
				t.Fatal("meshd certified the planted pending key: its holder is now this proxy")
			}
			if got := refused(t, reg, "pending_key.pem"); got != 1 {
				t.Errorf("minimesh_proxy_state_files_refused_total{file=pending_key.pem} = %v, want 1", got)
			}
			if b, _ := os.ReadFile(filepath.Join(attacker, "key.pem")); !bytes.Equal(b, keyPEM) {
				t.Error("the link's target was changed")
			}
		})
	}
}

// Inject's layout: the state volume is an emptyDir, a root-owned 0777
// directory, and mesh-proxy runs as UID 1337 (meshctl.ProxyUID) with
// --state-dir=<volume>/proxy, which it makes 0700 and owns. That works;
// a "proxy" directory another user made there first is refused.
func TestInjectLayoutAsProxyUser(t *testing.T) {
	requireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		unavailable(t, "setpriv not found")
	}
	bin := helperBinary(t)
	volume := filepath.Join(rootOwnedTemp(t), "state")
	if err := os.Mkdir(volume, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(volume, 0o777); err != nil { // as kubelet makes an emptyDir
		t.Fatal(err)
	}
	run := func(uid int, dir string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, setpriv, "--reuid="+strconv.Itoa(uid), "--regid="+strconv.Itoa(uid), "--clear-groups", "--", bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+dir)
		cmd.Dir = "/"
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	uid := redirect.DefaultProxyUID
	out, err := run(uid, filepath.Join(volume, "proxy"))
	if err != nil || !strings.HasPrefix(out, "ok "+strconv.Itoa(uid)+" web-") {
		t.Fatalf("the proxy as uid %d in the emptyDir layout: %v: %s", uid, err, out)
	}
	fi, err := os.Stat(filepath.Join(volume, "proxy"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir: %v %v, want 0700", fi.Mode(), err)
	}
	// Another user of the volume got there first.
	nuid, ngid := nobody(t)
	squat := filepath.Join(volume, "squatted")
	if err := os.Mkdir(squat, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(squat, nuid, ngid); err != nil {
		t.Fatal(err)
	}
	out, err = run(uid, squat)
	if err == nil || !strings.Contains(out, "is owned by uid "+strconv.Itoa(nuid)) {
		t.Fatalf("a state dir made by uid %d was accepted by uid %d: %v: %s", nuid, uid, err, out)
	}
}

// requireRoot skips without root, except under CI=true, where it fails
// (the convention of make test-netns).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "not root")
	}
}

func unavailable(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("ownership test cannot run under CI=true: %s", msg)
	}
	t.Skipf("ownership test skipped: %s (it needs root and setpriv; under CI=true it fails instead)", msg)
}

func nobody(t *testing.T) (uid, gid int) {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		unavailable(t, "no user nobody: "+err.Error())
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// rootOwnedTemp is a temp dir others can traverse (t.TempDir's parent is
// 0700 to them).
func rootOwnedTemp(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "minimesh-agent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// helperBinary copies this test binary where another user can run it.
func helperBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(rootOwnedTemp(t), "agent.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func writeMode(p string, b []byte, mode os.FileMode) error {
	if err := os.WriteFile(p, b, mode); err != nil {
		return err
	}
	return os.Chmod(p, mode)
}

func newKeyPEM(t *testing.T) []byte {
	t.Helper()
	k, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := certs.EncodePrivateKeyPEM(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func publicKeyDER(t *testing.T, keyPEM []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(keyPEM)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.(crypto.Signer).Public())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func waitReady(t *testing.T, a *agent.Agent) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for a.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("no SVID: %v", a.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// refused is minimesh_proxy_state_files_refused_total{file}.
func refused(t *testing.T, reg *prometheus.Registry, file string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "minimesh_proxy_state_files_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "file" && l.GetValue() == file {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

type recordApplier struct{ n atomic.Int32 }

func (r *recordApplier) Apply(*meshv1.Snapshot) ([]*meshv1.FileStatus, error) {
	r.n.Add(1)
	return nil, nil
}

// The kept last-good snapshot is config (routes, policies, ConfigFile
// contents): one the proxy did not write (here a link to another file) is
// refused, counted and never applied.
func TestPlantedSnapshotNotApplied(t *testing.T) {
	dir := t.TempDir()
	b, err := proto.Marshal(&meshv1.Snapshot{Version: "planted"})
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(t.TempDir(), "snapshot.pb")
	if err := os.WriteFile(elsewhere, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(dir, "snapshot.pb")); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	app := &recordApplier{}
	a, err := agent.New(agent.Config{ControlPlane: "127.0.0.1:1", Service: "web", StateDir: dir, Registerer: reg, Applier: app})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for refused(t, reg, "snapshot.pb") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the planted snapshot was not refused")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := app.n.Load(); n != 0 || a.Applied() != nil {
		t.Errorf("the planted snapshot was applied (%d applies, in force %v)", n, a.Applied())
	}
}
