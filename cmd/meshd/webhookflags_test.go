package main

import (
	"io"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"minimesh/controlplane"
	"minimesh/controlplane/webhook"
)

// TestWebhookFlags: off by default; --webhook-* reach Config.Webhook; bad
// values are refused naming the flag.
func TestWebhookFlags(t *testing.T) {
	parse := func(args ...string) (controlplane.Config, error) {
		var o webhookOptions
		fs := pflag.NewFlagSet("meshd", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		o.register(fs)
		var cfg controlplane.Config
		if err := fs.Parse(args); err != nil {
			return cfg, err
		}
		return cfg, o.apply(&cfg, nil)
	}
	cfg, err := parse()
	if err != nil || cfg.Webhook.Listen != "" || cfg.Webhook.Listener != nil {
		t.Fatalf("default: %+v %v: want off", cfg.Webhook, err)
	}
	cfg, err = parse("--webhook-listen", "127.0.0.1:15017", "--webhook-dns-names", "meshd.mesh.svc,meshd.mesh.svc.cluster.local", "--webhook-image", "x/y:1")
	if err != nil || cfg.Webhook.Listen != "127.0.0.1:15017" || strings.Join(cfg.Webhook.DNSNames, ",") != "meshd.mesh.svc,meshd.mesh.svc.cluster.local" ||
		cfg.Webhook.Image != "x/y:1" || cfg.Webhook.ConfigurationName != webhook.DefaultConfigurationName {
		t.Fatalf("%+v %v", cfg.Webhook, err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--webhook-listen", "15017"}, "--webhook-listen \"15017\""},
		{[]string{"--webhook-listen", ":15017", "--webhook-dns-names", "*.svc"}, "--webhook-dns-names \"*.svc\""},
		{[]string{"--webhook-listen", ":15017", "--webhook-configuration", "Bad_Name"}, "--webhook-configuration \"Bad_Name\""},
	} {
		if _, err := parse(tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want %q", tt.args, err, tt.want)
		}
	}
}
