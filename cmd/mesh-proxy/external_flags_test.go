package main

import (
	"bytes"
	"strings"
	"testing"

	"minimesh/dataplane/sidecar"
)

func TestExternalFlags(t *testing.T) {
	o, err := parseFlags([]string{"--external", "partner=127.0.0.1:15301", "--external", "db=localhost:15302",
		"--outbound-policy", "registry-only"}, &bytes.Buffer{}, &bytes.Buffer{}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := []sidecar.ExternalListener{{Name: "partner", Addr: "127.0.0.1:15301"}, {Name: "db", Addr: "localhost:15302"}}
	if len(o.cfg.Externals) != 2 || o.cfg.Externals[0] != want[0] || o.cfg.Externals[1] != want[1] || o.cfg.OutboundPolicy != sidecar.OutboundRegistryOnly {
		t.Errorf("externals %+v, policy %q", o.cfg.Externals, o.cfg.OutboundPolicy)
	}
	if o, _ := parseFlags(nil, &bytes.Buffer{}, &bytes.Buffer{}, env(nil)); o.cfg.OutboundPolicy != sidecar.OutboundAllowAny {
		t.Errorf("default policy %q", o.cfg.OutboundPolicy)
	}
	for arg, why := range map[string]string{
		"partner":               "want NAME=127.0.0.1:PORT",
		"Partner=127.0.0.1:1":   "not an ExternalService name",
		"partner=0.0.0.0:15301": "not a loopback address",
		"partner=127.0.0.1":     "want 127.0.0.1:PORT",
	} {
		var stderr bytes.Buffer
		_, err := parseFlags([]string{"--external", arg}, &bytes.Buffer{}, &stderr, env(nil))
		if err == nil || !strings.Contains(err.Error()+stderr.String(), why) {
			t.Errorf("--external %s: %v %s, want %q", arg, err, stderr.String(), why)
		}
	}
}
