package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/dataplane/sidecar"
	"minimesh/internal/daemon"
	"minimesh/internal/testlog"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{
		"--service", "web", "--state-dir", "/var/lib/mesh", "--app", "127.0.0.1:8080",
		"--upstream", "api=127.0.0.1:15201", "--upstream", "db.data:5432=127.0.0.1:15202",
		"--egress", "example.com", "--egress", "pay.example.com:8443",
		"--reload-signal", "USR1", "--log-level", "debug",
	}, &bytes.Buffer{}, &bytes.Buffer{}, env(map[string]string{"MESH_PROXY_TOKEN": "env-token", "MESH_PROXY_CA_PIN": "sha256:00"}))
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if c.Service != "web" || c.StateDir != "/var/lib/mesh" || c.App != "127.0.0.1:8080" || c.Token != "env-token" || c.CAPin != "sha256:00" || o.tokenOnCommandLine {
		t.Errorf("config %+v", c)
	}
	if c.ControlPlane != "127.0.0.1:15010" || c.Inbound != "127.0.0.1:15006" || c.Admin != "127.0.0.1:15000" {
		t.Errorf("defaults: control plane %q, inbound %q, admin %q (loopback unless configured)", c.ControlPlane, c.Inbound, c.Admin)
	}
	if len(c.Upstreams) != 2 || c.Upstreams[0].Name != "api" || c.Upstreams[1].Port != 5432 {
		t.Errorf("upstreams %+v", c.Upstreams)
	}
	if !slices.Equal(c.Egress, []string{"example.com", "pay.example.com:8443"}) || c.Reload.Signal != syscall.SIGUSR1 || o.log.Level != slog.LevelDebug {
		t.Errorf("egress %q, reload signal %v, log level %v", c.Egress, c.Reload.Signal, o.log.Level)
	}
	// A flag given wins over the variable.
	o, err = parseFlags([]string{"--token", "flag-token"}, &bytes.Buffer{}, &bytes.Buffer{}, env(map[string]string{"MESH_PROXY_TOKEN": "env-token"}))
	if err != nil || o.cfg.Token != "flag-token" || !o.tokenOnCommandLine {
		t.Errorf("--token with MESH_PROXY_TOKEN set: %v %q", err, o.cfg.Token)
	}
}

// No secret from the environment or a token file reaches the usage text
// (a bad flag, -h) or the logs: the variables' values are never flag
// defaults, and a bootstrap that meshd refuses logs no token.
func TestNoSecretInUsageOrLogs(t *testing.T) {
	const envSecret, probeSecret = "ENVSECRET0123", "PROBESECRET456"
	vars := env(map[string]string{
		"MESH_PROXY_TOKEN":  "abcd." + envSecret,
		"MESH_PROXY_CA_PIN": "sha256:0000",
		"MESH_APP_PROBES":   `{"/app-health/app/livez":{"httpGet":{"port":8080,"httpHeaders":[{"name":"Authorization","value":"Bearer ` + probeSecret + `"}]}}}`,
	})
	for _, args := range [][]string{{"--bogus"}, {"-h"}, {"--help"}, {"--drain", "x"}, {"--service", "web", "--token"}} {
		var usage bytes.Buffer
		o, err := parseFlags(args, &usage, &usage, vars)
		help := args[0] == "-h" || args[0] == "--help"
		if o != nil || (err == nil) != help || (err != nil && !errors.Is(err, daemon.ErrLogged)) {
			t.Errorf("%q: %v %v", args, o, err)
		}
		out := usage.String()
		if strings.Contains(out, envSecret) || strings.Contains(out, probeSecret) || strings.Contains(out, "sha256:0000") {
			t.Errorf("%q: the usage shows a value from the environment:\n%s", args, out)
		}
		if help && (!strings.Contains(out, "$MESH_PROXY_TOKEN") || !strings.Contains(out, "--token-file")) {
			t.Errorf("%q: the usage does not name $MESH_PROXY_TOKEN and --token-file:\n%s", args, out)
		}
		if !help && !strings.HasPrefix(out, `{"time":`) {
			t.Errorf("%q: the failure is not a JSON log line:\n%s", args, out)
		}
	}

	// The token from a file, refused by a real meshd (wrong secret): the
	// proxy's logs never show it.
	m := controlplanetest.Start(t, controlplane.Config{})
	tok := m.Token(t, "default", "web", 1)
	tokenFile := filepath.Join(t.TempDir(), "token")
	id, real, _ := strings.Cut(tok.GetSecret(), ".")
	// Well formed (hex, the right length), so meshd checks it and refuses.
	fileSecret := strings.Repeat("f0", len(real)/2)
	if err := os.WriteFile(tokenFile, []byte(id+"."+fileSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags([]string{"--control-plane", m.Addr, "--token-file", tokenFile, "--ca-pin", tok.GetCaPin(),
		"--service", "web", "--app", "127.0.0.1:1", "--state-dir", t.TempDir(), "--admin", "127.0.0.1:0",
		"--inbound", "127.0.0.1:0", "--log-level", "debug"}, &bytes.Buffer{}, &bytes.Buffer{}, vars)
	if err != nil {
		t.Fatal(err)
	}
	var logs testlog.Buffer
	cfg, err := config(o, &logs)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Token != id+"."+fileSecret {
		t.Fatalf("token %q: the file should win over the variable", cfg.Token)
	}
	sc, err := sidecar.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(logs.String(), "agent: bootstrap:") {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	out := logs.String()
	if !strings.Contains(out, "agent: bootstrap:") {
		t.Fatalf("no refused bootstrap in the logs:\n%s", out)
	}
	for _, secret := range []string{fileSecret, envSecret, probeSecret} {
		if strings.Contains(out, secret) {
			t.Errorf("the logs show a secret (%s):\n%s", secret, out)
		}
	}
}

// A join token in a file others can write is not used: the proxy stops at
// start naming the file (the token is never in the error). A Secret
// volume's default mode, 0644, is read.
func TestTokenFileOthersCanWriteIsRefused(t *testing.T) {
	for _, c := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o622, false}, {0o646, false}, {0o644, true}, {0o600, true}} {
		tokenFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, []byte("0123abcd.f00dfeed\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(tokenFile, c.mode); err != nil {
			t.Fatal(err)
		}
		o, err := parseFlags([]string{"--control-plane", "127.0.0.1:1", "--token-file", tokenFile, "--ca-pin", "sha256:00",
			"--service", "web", "--app", "127.0.0.1:1", "--state-dir", t.TempDir()}, &bytes.Buffer{}, &bytes.Buffer{}, env(nil))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config(o, &bytes.Buffer{})
		if c.ok {
			if err != nil || cfg.Token != "0123abcd.f00dfeed" {
				t.Fatalf("mode %v: config = %q, %v", c.mode, cfg.Token, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "--token-file") || !strings.Contains(err.Error(), tokenFile) || strings.Contains(err.Error(), "f00dfeed") {
			t.Fatalf("mode %v: config = %v, want a refusal naming --token-file and the file, without the token", c.mode, err)
		}
	}
}
