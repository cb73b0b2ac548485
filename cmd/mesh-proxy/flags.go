package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"minimesh/dataplane/filesync"
	"minimesh/dataplane/proxy"
	"minimesh/dataplane/sidecar"
)

// options is mesh-proxy's command line: the sidecar's config and what main
// does around it.
type options struct {
	cfg       sidecar.Config
	tokenFile string
	// tokenOnCommandLine: --token was given as a flag (visible to ps).
	tokenOnCommandLine bool
	appProbes          string
	logLevel           slog.Level
	showVersion        bool
}

type upstreams []proxy.Upstream

func (u *upstreams) String() string { return fmt.Sprint(len(*u)) }
func (u *upstreams) Set(s string) error {
	up, err := proxy.ParseUpstream(s)
	if err != nil {
		return err
	}
	*u = append(*u, up)
	return nil
}

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

// parseFlags reads mesh-proxy's flags from args (os.Args[1:]), writing
// usage and errors to stderr; a bad flag is an error (main exits 2, as
// flag.Parse would). getenv reads the environment (os.Getenv).
func parseFlags(args []string, stderr io.Writer, getenv func(string) string) (*options, error) {
	o := &options{}
	var ups upstreams
	fs := flag.NewFlagSet("mesh-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.cfg.ControlPlane, "control-plane", "127.0.0.1:15010", "meshd address: host:port, a comma-separated list of its replicas, or a DNS name with several addresses (the proxy fails over among them)")
	fs.StringVar(&o.cfg.Token, "token", "", "join token id.secret, needed only to bootstrap (default $MESH_PROXY_TOKEN). Prefer --token-file or the variable: a command line is visible to ps and /proc in the pod")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the join token (a mounted Secret); the documented way, as meshctl inject sets it up")
	fs.StringVar(&o.cfg.CAPin, "ca-pin", "", "sha256:<hex> pin of meshd's root CA, to authenticate meshd when bootstrapping (default $MESH_PROXY_CA_PIN)")
	fs.StringVar(&o.cfg.TrustDomain, "trust-domain", "minimesh.local", "SPIFFE trust domain")
	fs.StringVar(&o.cfg.Namespace, "namespace", "default", "namespace of this proxy's identity")
	fs.StringVar(&o.cfg.ServiceAccount, "service-account", "", "service account of this proxy's identity (default: --service)")
	fs.StringVar(&o.cfg.Service, "service", "", "the service this proxy serves (required)")
	fs.StringVar(&o.cfg.App, "app", "", "the app's address, 127.0.0.1:PORT (required)")
	fs.StringVar(&o.cfg.Inbound, "inbound", "127.0.0.1:15006", "mTLS listener for other proxies")
	fs.StringVar(&o.cfg.Advertise, "advertise", "", "host:port other proxies use to reach --inbound (default: --inbound)")
	fs.StringVar(&o.cfg.Admin, "admin", "127.0.0.1:15000", "admin listener: /ready, /metrics, /certs")
	fs.StringVar(&o.cfg.StateDir, "state-dir", "", "directory for the key, SVID and instance ID (required)")
	fs.Var(&ups, "upstream", "SERVICE[.NAMESPACE][:PORT]=LOCALADDR: a local port for a service of the mesh, its endpoints from meshd; with =REMOTEADDR=SPIFFEID appended, also a static endpoint used while meshd knows none (repeatable)")
	fs.StringVar(&o.cfg.Transparent, "transparent", "", "listener for the app's outbound connections captured by `mesh-proxy redirect --outbound-port`: HTTP goes to --outbound-http, anything else to where it was going (off when empty)")
	fs.StringVar(&o.cfg.OutboundHTTP, "outbound-http", "", "one local HTTP port for every service, routed by Host (api, api.ns, api.ns.svc); off when empty")
	fs.Func("egress", "HOST or HOST:PORT outside the mesh that --outbound-http may reach in plain HTTP (repeatable; default none: 502)", func(v string) error {
		o.cfg.Egress = append(o.cfg.Egress, v)
		return nil
	})
	fs.StringVar(&o.cfg.Public, "public", "", "plain TLS listener for clients outside the mesh")
	fs.StringVar(&o.cfg.PublicCert, "public-cert", "", "certificate file for --public (reloaded when it changes)")
	fs.StringVar(&o.cfg.PublicKey, "public-key", "", "key file for --public")
	fs.StringVar(&o.cfg.SharedDir, "shared-dir", "", "the pod's shared directory: ConfigFile resources and git sync are written there (off when empty)")
	fs.StringVar(&o.cfg.Reload.URL, "reload-url", "", "URL POSTed after files in --shared-dir change")
	fs.StringVar(&o.cfg.Reload.Process, "reload-process", "", "process (comm or argv[0]) signalled after files in --shared-dir change; another user's process needs CAP_KILL")
	fs.Func("reload-signal", "signal for --reload-process: HUP (default), USR1, USR2, …", func(v string) (err error) { o.cfg.Reload.Signal, err = filesync.ParseSignal(v); return err })
	fs.StringVar(&o.cfg.Roles.GitRepo, "git-repo", "", "git repository kept checked out under --shared-dir (off when empty)")
	fs.StringVar(&o.cfg.Roles.GitRef, "git-ref", "HEAD", "branch, tag or commit hash of --git-repo")
	fs.DurationVar(&o.cfg.Roles.GitInterval, "git-interval", 30*time.Second, "how often --git-repo is fetched")
	fs.StringVar(&o.cfg.Roles.GitDir, "git-dir", "git", "directory under --shared-dir that git sync owns")
	fs.StringVar(&o.cfg.Roles.GitLink, "git-link", "current", "symlink in --git-dir to the live checkout: the app reads --shared-dir/--git-dir/--git-link")
	fs.StringVar(&o.cfg.Roles.Topz, "topz", sidecar.TopzLoopback, "/topz and /procz/PID on the admin port: loopback (local clients only), any, or off")
	fs.StringVar(&o.cfg.AccessLogFile, "access-log", "", "where AccessLog resources write the access log: a file (appended, 0600) or - / empty for stdout")
	fs.DurationVar(&o.cfg.Drain, "drain", 10*time.Second, "grace period on SIGTERM or POST /quitquitquit: stop accepting, let requests in flight finish this long, then exit")
	fs.StringVar(&o.appProbes, "app-probes", "", "JSON of the app's probes served on the admin port under /app-health/ (default $MESH_APP_PROBES, set by meshctl inject)")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, env := range envFlags {
		if v := getenv(env); v != "" && !given[name] {
			_ = fs.Set(name, v)
		}
	}
	o.tokenOnCommandLine = given["token"]
	o.cfg.Upstreams = ups
	return o, nil
}
