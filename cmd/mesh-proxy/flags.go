package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"minimesh/dataplane/filesync"
	"minimesh/dataplane/proxy"
	"minimesh/dataplane/sidecar"
	"minimesh/internal/daemon"
	"minimesh/internal/version"
)

// options is mesh-proxy's command line: the sidecar's config and what main
// does around it.
type options struct {
	cfg       sidecar.Config
	tokenFile string
	// tokenOnCommandLine: --token was given as a flag (visible to ps).
	tokenOnCommandLine bool
	appProbes          string
	log                daemon.LogFlags
	showVersion        bool
	// cpuProfile: write a Go CPU profile of the whole run there.
	cpuProfile string
}

type upstreams []proxy.Upstream

func (u *upstreams) String() string { return "" }
func (u *upstreams) Type() string   { return "SERVICE=ADDR" }
func (u *upstreams) Set(s string) error {
	up, err := proxy.ParseUpstream(s)
	if err != nil {
		return err
	}
	*u = append(*u, up)
	return nil
}

// funcValue is a flag that calls set with each value; typ names the value
// in the usage.
type funcValue struct {
	typ string
	set func(string) error
}

func (f funcValue) String() string     { return "" }
func (f funcValue) Type() string       { return f.typ }
func (f funcValue) Set(s string) error { return f.set(s) }

// envFlags are the flags whose value may come from the environment: the
// variable is read after parsing, only when the flag was not given, so its
// value is never a flag default and never shown by the usage text (which
// names the variable instead). The join token is a secret; the app probes
// may carry a probe's headers (an Authorization); the CA pin is public but
// follows the same rule.
var envFlags = map[string]string{
	"token":      "MESH_PROXY_TOKEN",
	"ca-pin":     "MESH_PROXY_CA_PIN",
	"app-probes": "MESH_APP_PROBES",
}

// registerFlags adds mesh-proxy's flags to fs, writing into o and ups.
func registerFlags(fs *pflag.FlagSet, o *options, ups *upstreams) {
	fs.SortFlags = false
	fs.StringVar(&o.cfg.ControlPlane, "control-plane", "127.0.0.1:15010", "meshd address: host:port, a comma-separated list of its replicas, or a DNS name with several addresses (the proxy fails over among them)")
	fs.StringVar(&o.cfg.Token, "token", "", "join token id.secret, needed only to bootstrap (default $MESH_PROXY_TOKEN). Prefer --token-file or the variable: a command line is visible to ps and /proc in the pod")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the join token (a mounted Secret); the documented way, as meshctl inject sets it up")
	fs.StringVar(&o.cfg.SATokenFile, "sa-token-file", "", "a Kubernetes projected service-account token (audience minimesh) to bootstrap with instead of a join token; read again at every renewal, never logged")
	fs.StringVar(&o.cfg.CAPin, "ca-pin", "", "sha256:<hex> pin of meshd's root CA, or a comma-separated list of them (any one matching suffices), to authenticate meshd before a token is sent (default $MESH_PROXY_CA_PIN)")
	fs.StringVar(&o.cfg.TrustDomain, "trust-domain", "minimesh.local", "SPIFFE trust domain")
	fs.StringVar(&o.cfg.Namespace, "namespace", "default", "namespace of this proxy's identity")
	fs.StringVar(&o.cfg.ServiceAccount, "service-account", "", "service account of this proxy's identity (default: --service)")
	fs.StringVar(&o.cfg.Service, "service", "", "the service this proxy serves (required)")
	fs.StringVar(&o.cfg.App, "app", "", "the app's address, 127.0.0.1:PORT (required)")
	fs.StringVar(&o.cfg.Inbound, "inbound", "127.0.0.1:15006", "mTLS listener for other proxies")
	fs.StringVar(&o.cfg.Advertise, "advertise", "", "host:port other proxies use to reach --inbound (default: --inbound)")
	fs.StringVar(&o.cfg.Admin, "admin", "127.0.0.1:15000", "admin listener: /livez, /readyz (and /healthz, /ready), /metrics, /certs")
	fs.StringVar(&o.cfg.StateDir, "state-dir", "", "directory for the key, SVID and instance ID (required)")
	fs.Var(ups, "upstream", "SERVICE[.NAMESPACE][:PORT]=LOCALADDR: a local port for a service of the mesh, its endpoints from meshd; with =REMOTEADDR=SPIFFEID appended, also a static endpoint used while meshd knows none (repeatable)")
	fs.StringVar(&o.cfg.Transparent, "transparent", "", "listener for the app's outbound connections captured by mesh-proxy redirect --outbound-port: HTTP goes to --outbound-http, anything else to where it was going (off when empty)")
	fs.StringVar(&o.cfg.OutboundHTTP, "outbound-http", "", "one local HTTP port for every service, routed by Host (api, api.ns, api.ns.svc); off when empty")
	fs.Var(funcValue{"HOST[:PORT]", func(v string) error {
		o.cfg.Egress = append(o.cfg.Egress, v)
		return nil
	}}, "egress", "deprecated: declare an ExternalService instead. HOST or HOST:PORT outside the mesh that --outbound-http may reach in plain HTTP (repeatable; default none: 502)")
	fs.Var(funcValue{"NAME=127.0.0.1:PORT", func(v string) error {
		e, err := sidecar.ParseExternal(v)
		o.cfg.Externals = append(o.cfg.Externals, e)
		return err
	}}, "external", "a local port for the ExternalService NAME of this namespace: the app speaks plain TCP (tls, tcp) or HTTP (https, http) to it and the proxy originates TLS, verifies the server and presents the client certificate (repeatable)")
	fs.StringVar(&o.cfg.OutboundPolicy, "outbound-policy", sidecar.OutboundAllowAny, "captured non-HTTP traffic to a destination outside the mesh: allow-any (passes through) or registry-only (refused, counted and logged unless an ExternalService declares its address: a host that is that IP, or a DNS host resolved to it, on the service's port)")
	fs.StringVar(&o.cfg.Public, "public", "", "plain TLS listener for clients outside the mesh")
	fs.StringVar(&o.cfg.PublicCert, "public-cert", "", "certificate file for --public (reloaded when it changes)")
	fs.StringVar(&o.cfg.PublicKey, "public-key", "", "key file for --public")
	fs.StringVar(&o.cfg.SharedDir, "shared-dir", "", "the pod's shared directory: ConfigFile resources and git sync are written there (off when empty)")
	fs.StringVar(&o.cfg.Reload.URL, "reload-url", "", "URL POSTed after files in --shared-dir change")
	fs.StringVar(&o.cfg.Reload.Process, "reload-process", "", "process (comm or argv[0]) signalled after files in --shared-dir change; another user's process needs CAP_KILL")
	fs.Var(funcValue{"SIGNAL", func(v string) (err error) { o.cfg.Reload.Signal, err = filesync.ParseSignal(v); return err }},
		"reload-signal", "signal for --reload-process: HUP (default), USR1, USR2, …")
	fs.StringVar(&o.cfg.Roles.GitRepo, "git-repo", "", "git repository kept checked out under --shared-dir (off when empty)")
	fs.StringVar(&o.cfg.Roles.GitRef, "git-ref", "HEAD", "branch, tag or commit hash of --git-repo")
	fs.DurationVar(&o.cfg.Roles.GitInterval, "git-interval", 30*time.Second, "how often --git-repo is fetched")
	fs.StringVar(&o.cfg.Roles.GitDir, "git-dir", "git", "directory under --shared-dir that git sync owns")
	fs.StringVar(&o.cfg.Roles.GitLink, "git-link", "current", "symlink in --git-dir to the live checkout: the app reads --shared-dir/--git-dir/--git-link")
	fs.StringVar(&o.cfg.Roles.Topz, "topz", sidecar.TopzLoopback, "/topz and /procz/PID on the admin port: loopback (local clients only), any, or off")
	fs.StringVar(&o.cfg.AccessLogFile, "access-log", "", "where AccessLog resources write the access log: a file (appended, 0600) or - / empty for stdout")
	fs.StringVar(&o.cfg.AppMetrics, "app-metrics", "", "the app's Prometheus endpoint on loopback, PORT or PORT/path, merged into the admin /metrics with source=\"app\" (meshctl inject sets it from the pod's prometheus.io annotations; a Service's spec.metrics wins)")
	fs.StringVar(&o.cfg.SpoolDir, "spool-dir", "", "directory on disk (never the memory-backed state dir; in Kubernetes the mesh-spool emptyDir) in which a LogShipping's batches wait for the object store, in logship/ (made 0700); needed by a LogShipping (off when empty)")
	fs.DurationVar(&o.cfg.Drain, "drain", 10*time.Second, "grace period on SIGTERM or POST /quitquitquit: stop accepting, let requests in flight finish this long, then exit")
	fs.StringVar(&o.appProbes, "app-probes", "", "JSON of the app's probes served on the admin port under /app-health/ (default $MESH_APP_PROBES, set by meshctl inject)")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a Go CPU profile (pprof) of the whole run to `FILE` (0600) when mesh-proxy stops, for go tool pprof or a profile-guided build (saved as cmd/mesh-proxy/default.pgo); off when empty")
	o.log.Register(fs)
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
}

// fromEnv sets the flags of envFlags that were not given from their
// variables (after parsing: never as a default, never in the usage).
func fromEnv(fs *pflag.FlagSet, getenv func(string) string) error {
	for name, env := range envFlags {
		if v := getenv(env); v != "" && !fs.Changed(name) {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("$%s: %w", env, err) // the value is not quoted: it may be a secret
			}
		}
	}
	return nil
}

// newRoot is mesh-proxy's command tree: mesh-proxy runs the sidecar (run
// gets the parsed options, the environment applied); `mesh-proxy
// redirect` is the init container's traffic capture; `mesh-proxy
// version`. getenv reads the environment (os.Getenv).
func newRoot(stdout, stderr io.Writer, getenv func(string) string, run func(context.Context, *options) error) *cobra.Command {
	o := &options{}
	var ups upstreams
	root := &cobra.Command{
		Use:   "mesh-proxy --service NAME --app 127.0.0.1:PORT --state-dir DIR [flags]",
		Short: "minimesh's sidecar: the pod's identity from meshd, mTLS in front of the app and for its outbound calls",
		Long: `mesh-proxy is minimesh's sidecar: it gets and renews the pod's identity
(a SPIFFE X509-SVID) from meshd, terminates mTLS (and plain TLS for outside
clients) in front of the app, and carries the app's outbound calls over
mTLS. Its admin port (--admin) serves /livez, /readyz, /metrics and /certs.

Every flag is spelled with two dashes (--service); a single-dash long flag
(-service) is refused. The join token is read from --token-file (or
$MESH_PROXY_TOKEN); it is never printed.`,
		Example: `  # web's proxy: bootstrap with a join token, serve the app on 127.0.0.1:8080,
  # and reach the api service on 127.0.0.1:15201:
  mesh-proxy --control-plane 127.0.0.1:15010 --token-file ./web.token --ca-pin sha256:... \
    --service web --app 127.0.0.1:8080 --state-dir ./web-state --inbound 127.0.0.1:15006 \
    --upstream api=127.0.0.1:15201

  # The pod's init container (root, NET_ADMIN): capture the app's traffic.
  mesh-proxy redirect --capture-ports 8080 --outbound-port 15001`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.showVersion {
				fmt.Fprintln(cmd.OutOrStdout(), version.Version)
				return nil
			}
			fs := cmd.Flags()
			o.tokenOnCommandLine = fs.Changed("token")
			if err := fromEnv(fs, getenv); err != nil {
				return daemon.Failed(o.log.Logger(stderr), "mesh-proxy", err)
			}
			o.cfg.Upstreams = ups
			return run(cmd.Context(), o)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.CompletionOptions.DisableDefaultCmd = true
	registerFlags(root.Flags(), o, &ups)
	// A bad flag is a start-up failure: one log line, in the --log-format
	// given before it (JSON by default), like the rest.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return daemon.Failed(o.log.Logger(stderr), "mesh-proxy", fmt.Errorf("%w (mesh-proxy --help lists the flags)", err))
	})
	root.AddCommand(newRedirectCmd(), &cobra.Command{
		Use:   "version",
		Short: "Print mesh-proxy's version (the commit it was built from)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), version.Version)
			return nil
		},
	})
	return root
}

// parseFlags parses args as mesh-proxy does, without running it (tests).
// A nil options and nil error: nothing to run (--help, --version).
func parseFlags(args []string, stdout, stderr io.Writer, getenv func(string) string) (*options, error) {
	var got *options
	root := newRoot(stdout, stderr, getenv, func(_ context.Context, o *options) error { got = o; return nil })
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		return nil, err
	}
	return got, nil
}
