package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
)

// --wait on apply and delete returns once every connected proxy ACKed the
// new revision, and fails on a NACK naming the proxy and its reason. A
// disconnected proxy holds a rotation and ca status names it; proxy forget
// drops it (a connected or revoked one is refused) and ca rotate --wait
// then follows the rotation to idle. REVOKED shows in proxies and
// proxy-status, table and JSON.
func TestWaitForgetAndRevokedStatus(t *testing.T) {
	meshd := controlplanetest.Start(t, controlplane.Config{SVIDTTL: 4 * time.Second, RotationCheck: 50 * time.Millisecond})
	webTok, apiTok := meshd.Token(t, "default", "web", 1), meshd.Token(t, "default", "api", 1)
	webShared := t.TempDir()
	api := startProxy(t, meshd, proxyOpts{service: "api", token: apiTok.Secret, pin: apiTok.CaPin, stateDir: t.TempDir(), app: startApp(t, "api")})
	web := startProxy(t, meshd, proxyOpts{service: "web", token: webTok.Secret, pin: webTok.CaPin, stateDir: t.TempDir(), app: startApp(t, "web"), sharedDir: webShared})
	api.waitReady(t)
	web.waitReady(t)
	webID, apiID := web.Agent.InstanceID(), api.Agent.InstanceID()
	dir := t.TempDir()
	file := func(name, doc string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	rl := file("mesh.yaml", meshResources)
	out, err := meshctlTry(meshd, "apply", "-f", rl, "--wait=20s")
	if err != nil || !strings.Contains(out, "every connected proxy ACKed it") {
		t.Fatalf("apply --wait: %v\n%s", err, out)
	}
	if out, err := meshctlTry(meshd, "delete", "route", "api", "--wait=20s"); err != nil || !strings.Contains(out, "every connected proxy ACKed it") {
		t.Fatalf("delete --wait: %v\n%s", err, out)
	}
	// web cannot write this ConfigFile (a symlink out of its shared dir).
	if err := os.Symlink(t.TempDir(), filepath.Join(webShared, "conf")); err != nil {
		t.Fatal(err)
	}
	cf := file("cf.yaml", "apiVersion: minimesh.io/v1alpha1\nkind: ConfigFile\nmetadata: {name: web-settings}\nspec: {service: web, path: conf/settings.ini, mode: 0644, content: \"a=1\\n\"}\n")
	out, err = meshctlTry(meshd, "apply", "-f", cf, "--wait=20s")
	if err == nil || !strings.Contains(err.Error(), webID+" NACKed") || !strings.Contains(err.Error(), "conf") {
		t.Fatalf("apply --wait of a snapshot web NACKs: %v\n%s", err, out)
	}
	meshctlTry(meshd, "delete", "configfile", "web-settings")

	// A disconnected proxy holds the rotation, and ca status says so.
	web.stop()
	meshctlRun(t, meshd, "ca", "rotate")
	eventually(t, 10*time.Second, "ca status names the disconnected proxy", func() error {
		out, err := meshctlTry(meshd, "ca", "status")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "disconnected: "+webID) || !strings.Contains(out, "would break:") {
			return errString2(out)
		}
		return nil
	})
	if out, err := meshctlTry(meshd, "proxy", "forget", apiID); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("forget a connected proxy: %v\n%s", err, out)
	}
	if out, err := meshctlTry(meshd, "proxy", "forget", webID); err != nil {
		t.Fatalf("forget %s: %v\n%s", webID, err, out)
	}
	out, err = meshctlTry(meshd, "ca", "rotate", "--wait=60s")
	if err != nil || !strings.Contains(out, "following it") || !strings.Contains(out, "phase idle: rotation done") {
		t.Fatalf("ca rotate --wait: %v\n%s", err, out)
	}

	// REVOKED: proxies and proxy-status, table and JSON; never forgotten.
	meshctlRun(t, meshd, "proxy", "revoke", apiID)
	eventually(t, 10*time.Second, "REVOKED everywhere", func() error {
		for _, args := range [][]string{{"proxies"}, {"proxy-status"}, {"proxies", "-o", "json"}, {"proxy-status", "-o", "json"}} {
			out, err := meshctlTry(meshd, args...)
			if err != nil {
				return err
			}
			if !strings.Contains(out, "revoked") && !strings.Contains(out, "REVOKED") {
				return errString2(strings.Join(args, " ") + ":\n" + out)
			}
		}
		return nil
	})
	if out, err := meshctlTry(meshd, "proxy", "forget", apiID, "--force"); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("forget a revoked proxy: %v\n%s", err, out)
	}
}
