package main

import (
	"io"
	"testing"
)

func TestSATokenFileAndPinListFlags(t *testing.T) {
	pins := "sha256:aa,sha256:bb"
	o, err := parseFlags([]string{"--service", "web", "--state-dir", "/s", "--sa-token-file", "/var/run/secrets/minimesh/token", "--ca-pin", pins},
		io.Discard, io.Discard, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.SATokenFile != "/var/run/secrets/minimesh/token" || o.cfg.CAPin != pins {
		t.Fatalf("--sa-token-file %q --ca-pin %q", o.cfg.SATokenFile, o.cfg.CAPin)
	}
}
