package main

import (
	"log/slog"
	"slices"
	"syscall"
	"testing"
)

func TestParseFlags(t *testing.T) {
	t.Setenv("MESH_PROXY_TOKEN", "env-token")
	o := parseFlags([]string{
		"--service", "web", "--state-dir", "/var/lib/mesh", "--app", "127.0.0.1:8080",
		"--upstream", "api=127.0.0.1:15201", "--upstream", "db.data:5432=127.0.0.1:15202",
		"--egress", "example.com", "--egress", "pay.example.com:8443",
		"--reload-signal", "USR1", "--log-level", "debug",
	})
	c := o.cfg
	if c.Service != "web" || c.StateDir != "/var/lib/mesh" || c.App != "127.0.0.1:8080" || c.Token != "env-token" {
		t.Errorf("config %+v", c)
	}
	if c.ControlPlane != "127.0.0.1:15010" || c.Inbound != "127.0.0.1:15006" || c.Admin != "127.0.0.1:15000" {
		t.Errorf("defaults: control plane %q, inbound %q, admin %q (loopback unless configured)", c.ControlPlane, c.Inbound, c.Admin)
	}
	if len(c.Upstreams) != 2 || c.Upstreams[0].Name != "api" || c.Upstreams[1].Port != 5432 {
		t.Errorf("upstreams %+v", c.Upstreams)
	}
	if !slices.Equal(c.Egress, []string{"example.com", "pay.example.com:8443"}) || c.Reload.Signal != syscall.SIGUSR1 || o.logLevel != slog.LevelDebug {
		t.Errorf("egress %q, reload signal %v, log level %v", c.Egress, c.Reload.Signal, o.logLevel)
	}
}
