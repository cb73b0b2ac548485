// Command mesh-proxy is minimesh's sidecar: it gets and renews the pod's
// identity from meshd, terminates mTLS (and plain TLS for outside clients)
// in front of the app, and carries the app's outbound calls over mTLS.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"minimesh/dataplane/admin"
	"minimesh/dataplane/filesync"
	"minimesh/dataplane/proxy"
	"minimesh/dataplane/sidecar"
	"minimesh/internal/version"
)

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

func main() {
	run := run
	if len(os.Args) > 1 && os.Args[1] == "redirect" {
		run = runRedirect // the init container's traffic capture
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mesh-proxy:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		cfg       sidecar.Config
		ups       upstreams
		tokenFile string
		logLevel  slog.Level
	)
	flag.StringVar(&cfg.ControlPlane, "control-plane", "127.0.0.1:15010", "meshd address")
	flag.StringVar(&cfg.Token, "token", os.Getenv("MESH_PROXY_TOKEN"), "join token id.secret, needed only to bootstrap (env MESH_PROXY_TOKEN)")
	flag.StringVar(&tokenFile, "token-file", "", "file holding the join token (a mounted Secret)")
	flag.StringVar(&cfg.CAPin, "ca-pin", os.Getenv("MESH_PROXY_CA_PIN"), "sha256:<hex> pin of meshd's root CA, to authenticate meshd when bootstrapping (env MESH_PROXY_CA_PIN)")
	flag.StringVar(&cfg.TrustDomain, "trust-domain", "minimesh.local", "SPIFFE trust domain")
	flag.StringVar(&cfg.Namespace, "namespace", "default", "namespace of this proxy's identity")
	flag.StringVar(&cfg.ServiceAccount, "service-account", "", "service account of this proxy's identity (default: --service)")
	flag.StringVar(&cfg.Service, "service", "", "the service this proxy serves (required)")
	flag.StringVar(&cfg.App, "app", "", "the app's address, 127.0.0.1:PORT (required)")
	flag.StringVar(&cfg.Inbound, "inbound", "127.0.0.1:15006", "mTLS listener for other proxies")
	flag.StringVar(&cfg.Advertise, "advertise", "", "host:port other proxies use to reach --inbound (default: --inbound)")
	flag.StringVar(&cfg.Admin, "admin", "127.0.0.1:15000", "admin listener: /ready, /metrics, /certs")
	flag.StringVar(&cfg.StateDir, "state-dir", "", "directory for the key, SVID and instance ID (required)")
	flag.Var(&ups, "upstream", "SERVICE[.NAMESPACE][:PORT]=LOCALADDR: a local port for a service of the mesh, its endpoints from meshd; with =REMOTEADDR=SPIFFEID appended, also a static endpoint used while meshd knows none (repeatable)")
	flag.StringVar(&cfg.OutboundHTTP, "outbound-http", "", "one local HTTP port for every service, routed by Host (api, api.ns, api.ns.svc); off when empty")
	flag.Func("egress", "HOST or HOST:PORT outside the mesh that --outbound-http may reach in plain HTTP (repeatable; default none: 502)", func(v string) error {
		cfg.Egress = append(cfg.Egress, v)
		return nil
	})
	flag.StringVar(&cfg.Public, "public", "", "plain TLS listener for clients outside the mesh")
	flag.StringVar(&cfg.PublicCert, "public-cert", "", "certificate file for --public (reloaded when it changes)")
	flag.StringVar(&cfg.PublicKey, "public-key", "", "key file for --public")
	flag.StringVar(&cfg.SharedDir, "shared-dir", "", "the pod's shared directory: ConfigFile resources and git sync are written there (off when empty)")
	flag.StringVar(&cfg.Reload.URL, "reload-url", "", "URL POSTed after files in --shared-dir change")
	flag.StringVar(&cfg.Reload.Process, "reload-process", "", "process (comm or argv[0]) signalled after files in --shared-dir change; another user's process needs CAP_KILL")
	flag.Func("reload-signal", "signal for --reload-process: HUP (default), USR1, USR2, …", func(v string) (err error) { cfg.Reload.Signal, err = filesync.ParseSignal(v); return err })
	flag.StringVar(&cfg.Roles.GitRepo, "git-repo", "", "git repository kept checked out under --shared-dir (off when empty)")
	flag.StringVar(&cfg.Roles.GitRef, "git-ref", "HEAD", "branch, tag or commit hash of --git-repo")
	flag.DurationVar(&cfg.Roles.GitInterval, "git-interval", 30*time.Second, "how often --git-repo is fetched")
	flag.StringVar(&cfg.Roles.GitDir, "git-dir", "git", "directory under --shared-dir that git sync owns")
	flag.StringVar(&cfg.Roles.GitLink, "git-link", "current", "symlink in --git-dir to the live checkout: the app reads --shared-dir/--git-dir/--git-link")
	flag.StringVar(&cfg.Roles.Topz, "topz", sidecar.TopzLoopback, "/topz and /procz/PID on the admin port: loopback (local clients only), any, or off")
	flag.StringVar(&cfg.AccessLogFile, "access-log", "", "where AccessLog resources write the access log: a file (appended, 0600) or - / empty for stdout")
	flag.DurationVar(&cfg.Drain, "drain", 10*time.Second, "grace period on SIGTERM or POST /quitquitquit: stop accepting, let requests in flight finish this long, then exit")
	appProbes := flag.String("app-probes", os.Getenv("MESH_APP_PROBES"), "JSON of the app's probes served on the admin port under /app-health/ (env MESH_APP_PROBES, set by meshctl inject)")
	flag.TextVar(&logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Version)
		return nil
	}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return err
		}
		cfg.Token = strings.TrimSpace(string(b))
	}
	if cfg.Service == "" || cfg.StateDir == "" {
		return fmt.Errorf("--service and --state-dir are required")
	}
	probes, err := admin.ParseAppProbes(*appProbes)
	if err != nil {
		return err
	}
	cfg.AppProbes = probes
	cfg.Upstreams = ups
	cfg.Version = version.Version
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel})).With("service", cfg.Service)

	sc, err := sidecar.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return sc.Run(ctx)
}
