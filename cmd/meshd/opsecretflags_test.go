package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes/fake"

	"minimesh/controlplane"
)

// TestOperatorSecretFlag: with API access the default keeps
// minimesh-system/meshctl-operator; another NAMESPACE/NAME is taken; empty
// turns it off; without API access it is off; bad values are refused
// naming the flag and the part.
func TestOperatorSecretFlag(t *testing.T) {
	client := fake.NewClientset()
	parse := func(withAPI bool, args ...string) (controlplane.Config, error) {
		var o opSecretOptions
		fs := pflag.NewFlagSet("meshd", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		o.register(fs)
		var cfg controlplane.Config
		if err := fs.Parse(args); err != nil {
			return cfg, err
		}
		if !withAPI {
			return cfg, o.apply(&cfg, nil, slog.New(slog.DiscardHandler))
		}
		return cfg, o.apply(&cfg, client, slog.New(slog.DiscardHandler))
	}
	cfg, err := parse(true)
	if err != nil || cfg.OperatorSecret.Kube == nil || cfg.OperatorSecret.Namespace != "minimesh-system" || cfg.OperatorSecret.Name != "meshctl-operator" {
		t.Fatalf("default: %+v %v", cfg.OperatorSecret, err)
	}
	if cfg, err = parse(true, "--operator-secret=mesh/ops"); err != nil || cfg.OperatorSecret.Namespace != "mesh" || cfg.OperatorSecret.Name != "ops" {
		t.Fatalf("mesh/ops: %+v %v", cfg.OperatorSecret, err)
	}
	if cfg, err = parse(true, "--operator-secret="); err != nil || cfg.OperatorSecret.Kube != nil {
		t.Fatalf("empty: %+v %v: want off", cfg.OperatorSecret, err)
	}
	if cfg, err = parse(false); err != nil || cfg.OperatorSecret.Kube != nil {
		t.Fatalf("no API access: %+v %v: want off", cfg.OperatorSecret, err)
	}
	for _, tt := range []struct{ arg, want string }{
		{"meshctl-operator", "want NAMESPACE/NAME"},
		{"a/b/c", "want NAMESPACE/NAME"},
		{"Mesh/ops", "namespace"},
		{"mesh/Ops_1", "name"},
		{"/ops", "namespace"},
	} {
		_, err := parse(true, "--operator-secret="+tt.arg)
		if err == nil || !strings.Contains(err.Error(), "--operator-secret") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("--operator-secret=%s: %v, want an error naming %q", tt.arg, err, tt.want)
		}
	}
}
