package redirect

import (
	"errors"
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The scripts are golden files: testdata/<name>.rules. UPDATE_GOLDEN=1
// rewrites them.
func TestScriptGolden(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"inbound-ports", Config{ProxyUID: 1337, CapturePorts: []int{9090, 8080, 8080}, ExcludeInboundPorts: []int{15020}}},
		{"inbound-all", Config{ProxyUID: 1337, CaptureAllInbound: true, ExcludeInboundPorts: []int{22, 15020}, OutboundPort: 15001}},
		{"outbound-only", Config{ProxyUID: 1337, ProxyGID: 1337, OutboundPort: 15001,
			ExcludeOutboundPorts: []int{53, 15010},
			ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("10.0.0.0/8")}}},
		{"both", Config{ProxyUID: 1337, InboundPort: 16006, CapturePorts: []int{8080}, OutboundPort: 16001}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			got := r.Script()
			golden := filepath.Join("testdata", tt.name+".rules")
			if os.Getenv("UPDATE_GOLDEN") == "1" {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("script differs from %s:\n%s", golden, got)
			}
		})
	}
}

// The jumps from the built-in chains are added when missing, kept once,
// and removed when duplicated or no longer wanted: installing twice never
// duplicates a rule.
func TestScriptReconcilesJumps(t *testing.T) {
	both := Config{ProxyUID: 1337, CapturePorts: []int{8080}, OutboundPort: 15001}
	inOnly := Config{ProxyUID: 1337, CapturePorts: []int{8080}}
	tests := []struct {
		name     string
		cfg      Config
		save     string
		want     []string
		wantNone []string
	}{
		{
			name: "fresh table", cfg: both, save: "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n",
			want: []string{"-A PREROUTING -p tcp -j MESH_INBOUND", "-A OUTPUT -p tcp -j MESH_OUTPUT"},
		},
		{
			name: "already installed", cfg: both,
			save:     "-A PREROUTING -p tcp -j MESH_INBOUND\n-A OUTPUT -p tcp -j MESH_OUTPUT\n",
			wantNone: []string{"-A PREROUTING -p tcp -j MESH_INBOUND", "-A OUTPUT -p tcp -j MESH_OUTPUT", "-D "},
		},
		{
			name: "duplicated jump", cfg: both,
			save: "-A PREROUTING -p tcp -j MESH_INBOUND\n-A PREROUTING -p tcp -j MESH_INBOUND\n-A OUTPUT -p tcp -j MESH_OUTPUT\n",
			want: []string{"-D PREROUTING -p tcp -j MESH_INBOUND"},
		},
		{
			name: "outbound no longer wanted", cfg: inOnly,
			save:     "-A PREROUTING -p tcp -j MESH_INBOUND\n-A OUTPUT -p tcp -j MESH_OUTPUT\n",
			want:     []string{"-D OUTPUT -p tcp -j MESH_OUTPUT"},
			wantNone: []string{"REDIRECT --to-ports 15001"},
		},
		{
			name: "someone else's rules are left alone", cfg: both,
			save:     "-A PREROUTING -p tcp -j MESH_INBOUND\n-A OUTPUT -p tcp -j MESH_OUTPUT\n-A OUTPUT -p tcp -j KUBE-SERVICES\n",
			wantNone: []string{"KUBE-SERVICES"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.cfg.withDefaults().script(countJumps(tt.save))
			for _, w := range tt.want {
				if strings.Count(s, w+"\n") != 1 {
					t.Errorf("script has %q %d times, want once:\n%s", w, strings.Count(s, w+"\n"), s)
				}
			}
			for _, w := range tt.wantNone {
				if strings.Contains(s, w) {
					t.Errorf("script has %q:\n%s", w, s)
				}
			}
			if !strings.HasPrefix(s, "*nat\n") || !strings.HasSuffix(s, "COMMIT\n") {
				t.Errorf("not one nat transaction:\n%s", s)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"inbound", Config{ProxyUID: 1337, CapturePorts: []int{8080}}, ""},
		{"all inbound", Config{ProxyUID: 1337, CaptureAllInbound: true}, ""},
		{"outbound", Config{ProxyUID: 1337, OutboundPort: 15001}, ""},
		{"root proxy", Config{ProxyUID: 0, CapturePorts: []int{8080}}, "non-root"},
		{"negative gid", Config{ProxyUID: 1337, ProxyGID: -1, CapturePorts: []int{8080}}, "GID"},
		{"nothing", Config{ProxyUID: 1337}, "nothing to capture"},
		{"port zero", Config{ProxyUID: 1337, CapturePorts: []int{0}}, "not a TCP port"},
		{"port too big", Config{ProxyUID: 1337, CapturePorts: []int{70000}}, "not a TCP port"},
		{"bad inbound port", Config{ProxyUID: 1337, InboundPort: -5, CapturePorts: []int{80}}, "inbound port"},
		{"bad outbound port", Config{ProxyUID: 1337, OutboundPort: 65536}, "outbound port"},
		{"capture the proxy", Config{ProxyUID: 1337, CapturePorts: []int{15006}}, "proxy's own port"},
		{"same ports", Config{ProxyUID: 1337, InboundPort: 15001, OutboundPort: 15001}, "both"},
		{"captured and excluded", Config{ProxyUID: 1337, CapturePorts: []int{80}, ExcludeInboundPorts: []int{80}}, "both captured and excluded"},
		{"all and list", Config{ProxyUID: 1337, CaptureAllInbound: true, CapturePorts: []int{80}}, "not both"},
		{"bad excluded", Config{ProxyUID: 1337, CaptureAllInbound: true, ExcludeInboundPorts: []int{0}}, "excluded inbound port"},
		{"bad excluded outbound", Config{ProxyUID: 1337, OutboundPort: 15001, ExcludeOutboundPorts: []int{0}}, "excluded outbound port"},
		{"IPv6 CIDR", Config{ProxyUID: 1337, OutboundPort: 15001, ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}}, "IPv4"},
		{"iptables with args", Config{ProxyUID: 1337, OutboundPort: 15001, Iptables: "iptables -w"}, "no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.HasPrefix(err.Error(), "redirect: ") {
				t.Errorf("%v: want ErrInvalidConfig with the package prefix", err)
			}
			if _, nerr := New(tt.cfg); nerr == nil {
				t.Error("New accepted what Validate refused")
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		check   func(t *testing.T, c Config, m Mode)
		wantErr string
	}{
		{
			name: "defaults", args: []string{"--capture-ports", "8080"},
			check: func(t *testing.T, c Config, m Mode) {
				if c.ProxyUID != 1337 || c.InboundPort != 15006 || c.OutboundPort != 0 || m != ModeInstall || c.Iptables != "iptables" {
					t.Errorf("got %+v mode %v", c, m)
				}
			},
		},
		{
			name: "everything",
			args: []string{"--proxy-uid", "2000", "--proxy-gid", "2001", "--inbound-port", "16006", "--capture-ports", "*",
				"--exclude-inbound-ports", "22, 15020", "--outbound-port", "16001", "--exclude-outbound-ports", "53",
				"--exclude-outbound-cidrs", "10.0.0.0/8,169.254.169.254", "--iptables", "iptables-legacy", "--dry-run"},
			check: func(t *testing.T, c Config, m Mode) {
				want := Config{ProxyUID: 2000, ProxyGID: 2001, InboundPort: 16006, CaptureAllInbound: true,
					ExcludeInboundPorts: []int{22, 15020}, OutboundPort: 16001, ExcludeOutboundPorts: []int{53},
					ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("169.254.169.254/32")},
					Iptables:             "iptables-legacy"}
				if c.withDefaults().script(nil) != want.withDefaults().script(nil) || m != ModeDryRun || c.Iptables != want.Iptables {
					t.Errorf("got %+v mode %v", c, m)
				}
			},
		},
		{name: "clean", args: []string{"--clean"}, check: func(t *testing.T, _ Config, m Mode) {
			if m != ModeClean {
				t.Errorf("mode %v", m)
			}
		}},
		{name: "bad port", args: []string{"--capture-ports", "80,http"}, wantErr: `port "http"`},
		{name: "port with sign", args: []string{"--capture-ports", "+80"}, wantErr: `port "+80"`},
		{name: "bad cidr", args: []string{"--outbound-port", "1", "--exclude-outbound-cidrs", "10.0.0.0/33"}, wantErr: "CIDR"},
		{name: "v6 cidr", args: []string{"--outbound-port", "1", "--exclude-outbound-cidrs", "::1"}, wantErr: "only IPv4"},
		{name: "both modes", args: []string{"--dry-run", "--clean"}, wantErr: "together"},
		{name: "unknown flag", args: []string{"--capture", "80"}, wantErr: "not defined"},
		{name: "stray argument", args: []string{"--capture-ports", "80", "extra"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, m, err := ParseFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseFlags = %v, want error containing %q", err, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalidConfig) {
					t.Errorf("%v does not wrap ErrInvalidConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c, m)
		})
	}
	if _, _, err := ParseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}

// Main's dry run prints the script and runs nothing; a refused config is
// an error before anything runs.
func TestMainDryRunAndRefusal(t *testing.T) {
	var out strings.Builder
	if err := Main(t.Context(), []string{"--capture-ports", "8080", "--dry-run"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "-A MESH_INBOUND -p tcp --dport 8080 -j MESH_IN_REDIRECT\n") {
		t.Errorf("dry run printed:\n%s", out.String())
	}
	err := Main(t.Context(), []string{"--proxy-uid", "0", "--capture-ports", "8080", "--iptables", "/nonexistent/iptables"}, io.Discard, io.Discard)
	if !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("root proxy: %v, want ErrInvalidConfig", err)
	}
	err = Main(t.Context(), []string{"--capture-ports", "8080", "--iptables", "/nonexistent/iptables"}, io.Discard, io.Discard)
	if !errors.Is(err, ErrIptables) || !strings.Contains(err.Error(), "/nonexistent/iptables-save") {
		t.Errorf("missing iptables: %v, want ErrIptables naming the command", err)
	}
}

func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"", "80", "80,443", " 8080 , 9090 ", "0", "65536", "-1", "+80", "080", "1,,2", "*", "8080\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ports, err := ParsePorts(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("%q: error %v does not wrap ErrInvalidConfig", s, err)
			}
			return
		}
		for _, p := range ports {
			if p < 1 || p > 65535 {
				t.Fatalf("%q: accepted port %d", s, p)
			}
		}
		// Every accepted list is valid in a config and renders one rule
		// per distinct port.
		if len(ports) > 0 {
			c := Config{ProxyUID: 1, InboundPort: 1, CapturePorts: ports}
			if slices.Contains(ports, 1) { // the inbound port here
				return
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("%q: %v", s, err)
			}
			if n := strings.Count(c.withDefaults().script(nil), "--dport"); n != len(sortedUnique(ports)) {
				t.Fatalf("%q: %d rules for %v", s, n, ports)
			}
		}
	})
}
