// Command meshd is minimesh's control plane: the certificate authority,
// the store of mesh resources and the config push to every proxy.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"minimesh/controlplane"
	"minimesh/controlplane/push"
	"minimesh/internal/daemon"
	"minimesh/internal/version"
)

func main() {
	if err := newRoot(os.Stdout, os.Stderr).Execute(); err != nil {
		if !errors.Is(err, daemon.ErrLogged) {
			fmt.Fprintln(os.Stderr, "meshd:", err)
		}
		os.Exit(1)
	}
}

// serveOptions are the flags of `meshd` itself (serving).
type serveOptions struct {
	cfg                  controlplane.Config
	etcd                 controlplane.EtcdStoreFlags
	log                  daemon.LogFlags
	restore, metrics     string
	showVersion          bool
	checkBootstrapLimits func() error
	webhook              webhookOptions  // webhookflags.go
	kube                 kubeOptions     // kubeflags.go
	opSecret             opSecretOptions // opsecretflags.go
}

// newRoot is meshd's command tree: meshd serves; `meshd operator ...` and
// `meshd version` are offline tools.
func newRoot(stdout, stderr io.Writer) *cobra.Command {
	o := &serveOptions{}
	root := &cobra.Command{
		Use:   "meshd [flags]",
		Short: "minimesh's control plane: the certificate authority, the store of mesh resources and the config push to every proxy",
		Long: `meshd is minimesh's control plane: the certificate authority (SPIFFE
X509-SVIDs for every proxy), the store of mesh resources (a bbolt file in
--data-dir, or etcd for several replicas) and the config push to every
proxy, on one TLS gRPC port (--listen). With --metrics it also serves
Prometheus metrics and the HTTP health checks /livez and /readyz.

Every flag is spelled with two dashes (--data-dir); a single-dash long
flag (-data-dir) is refused.`,
		Example: `  # One meshd on this machine, its state and operator credential in ./meshd-data:
  meshd --data-dir ./meshd-data

  # A replica of three on etcd, metrics and health checks on :15011:
  meshd --data-dir /var/lib/minimesh/meshd --listen 0.0.0.0:15010 --metrics 0.0.0.0:15011 \
    --store etcd://etcd-0:2379,etcd-1:2379,etcd-2:2379 --ca-key-file /run/meshd/ca.key \
    --etcd-cert client.pem --etcd-key client-key.pem --etcd-ca ca.pem`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.showVersion {
				fmt.Fprintln(cmd.OutOrStdout(), version.Version)
				return nil
			}
			return o.serve(cmd.Context(), cmd.ErrOrStderr())
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.CompletionOptions.DisableDefaultCmd = true
	o.register(root.Flags())
	// A bad flag of meshd itself is a start-up failure: one log line, in
	// the --log-format given before it (JSON by default), like the rest.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return daemon.Failed(o.log.Logger(stderr), "meshd", fmt.Errorf("%w (meshd --help lists the flags)", err))
	})
	root.AddCommand(newOperatorCmd(), newVersionCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print meshd's version (the commit it was built from)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), version.Version)
			return nil
		},
	}
}

func (o *serveOptions) register(fs *pflag.FlagSet) {
	cfg := &o.cfg
	fs.SortFlags = false
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for the data file and the operator credential (required; with --store etcd://..., this replica's operator credential only)")
	fs.StringVar(&cfg.ListenAddr, "listen", "127.0.0.1:15010", "gRPC listen address (TLS; grpc.health.v1 answers there without a client certificate)")
	fs.StringVar(&cfg.AdvertiseAddr, "advertise-address", "", "host:port where the other replicas reach this one (stats queries); default --listen unless it is a wildcard address (in Kubernetes: the pod IP)")
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus /metrics and the health checks /livez and /readyz over plain HTTP on this address (e.g. 127.0.0.1:15011); off when empty")
	fs.StringVar(&o.etcd.Store, "store", "bbolt", "where meshd keeps its state: bbolt (a file in --data-dir) or etcd://HOST:PORT[,HOST:PORT...] (needs --ca-key-file)")
	fs.StringVar(&o.etcd.Cert, "etcd-cert", "", "client certificate (PEM) meshd presents to etcd")
	fs.StringVar(&o.etcd.Key, "etcd-key", "", "private key (PEM) of --etcd-cert")
	fs.StringVar(&o.etcd.CA, "etcd-ca", "", "CA certificate(s) (PEM) etcd's serving certificate chains to")
	fs.StringVar(&o.etcd.Prefix, "etcd-prefix", "/minimesh/", "prefix of every key meshd writes in etcd (one etcd can hold two meshes)")
	fs.DurationVar(&o.etcd.LeaseTTL, "lease-ttl", 10*time.Second, "with --store etcd://...: lease of this replica's leadership and its proxies' presence; a dead replica's proxies show DISCONNECTED and another replica leads after about this long")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "minimesh.local", "SPIFFE trust domain")
	fs.DurationVar(&cfg.SVIDTTL, "svid-ttl", time.Hour, "lifetime of workload SVIDs")
	fs.DurationVar(&cfg.ForgetAfter, "forget-after", 72*time.Hour, "forget proxies disconnected this long")
	fs.DurationVar(&cfg.EndpointGrace, "endpoint-grace", push.DefaultEndpointGrace, "keep a proxy whose stream ended without a drain (meshd restarted, the network broke) an endpoint this long; at start, hold the endpoints last known as long")
	fs.DurationVar(&cfg.MaxConnectionAge, "max-connection-age", 30*time.Minute, "end each client connection (a proxy's stream) after about this long (±10 %), so streams rebalance over the replicas after a restart")
	fs.DurationVar(&cfg.OperatorTTL, "operator-ttl", 30*24*time.Hour, "lifetime of the operator credential")
	fs.StringVar(&cfg.CAKeyFile, "ca-key-file", "", "file of exactly 32 random bytes (mode 0600, not a symlink) that encrypts the CA keys in the data file and so in every backup; once used, needed at every start and by --restore (make one: head -c 32 /dev/urandom > FILE && chmod 600 FILE)")
	o.checkBootstrapLimits = bootstrapLimitFlags(fs, cfg) // --bootstrap-rate, --bootstrap-burst
	o.webhook.register(fs)                                // --webhook-*
	o.kube.register(fs)                                   // --kube-api, --kubeconfig
	o.opSecret.register(fs)                               // --operator-secret
	fs.StringVar(&o.restore, "restore", "", "install this backup (from meshctl backup, or an older meshd's raw data-file copy) into an empty --data-dir or empty --etcd-prefix, then start")
	o.log.Register(fs)
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
}

// serve checks the flags and runs meshd until SIGTERM/SIGINT or ctx ends.
// Every failure is logged as one line in the log's format.
func (o *serveOptions) serve(ctx context.Context, stderr io.Writer) error {
	log := o.log.Logger(stderr)
	fail := func(err error) error { return daemon.Failed(log, "meshd", err) }
	cfg := o.cfg
	if cfg.DataDir == "" {
		return fail(errors.New("--data-dir is required"))
	}
	if err := o.checkBootstrapLimits(); err != nil {
		return fail(err)
	}
	ec, err := o.etcd.EtcdConfig()
	if err != nil {
		return fail(err)
	}
	cfg.Etcd = ec
	if ec != nil && cfg.CAKeyFile == "" {
		return fail(fmt.Errorf("--ca-key-file is required with --store %s: the CA keys are kept in etcd, sealed under it", o.etcd.Store))
	}
	cfg.Logger = log
	kc, err := o.kube.apply(&cfg, log)
	if err != nil {
		return fail(err)
	}
	if err := o.webhook.apply(&cfg, kc); err != nil {
		return fail(err)
	}
	if err := o.opSecret.apply(&cfg, kc, log); err != nil {
		return fail(err)
	}
	storeKind := "bbolt"
	if ec != nil {
		storeKind = "etcd"
	}
	log.Info("meshd starting", "version", version.Version, "store", storeKind, "listen", cfg.ListenAddr, "metrics", o.metrics)

	if o.restore != "" {
		restoreTo := func() error { return controlplane.Restore(cfg.DataDir, o.restore, cfg.CAKeyFile) }
		if ec != nil {
			restoreTo = func() error { return controlplane.RestoreEtcd(ec, cfg.DataDir, o.restore, cfg.CAKeyFile) }
		}
		if err := restoreTo(); err != nil {
			return fail(err)
		}
	}
	cfg.Registry = prometheus.NewRegistry()
	cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := controlplane.New(cfg)
	if err != nil {
		return fail(err)
	}
	run := func(ctx context.Context) error {
		g, ctx := errgroup.WithContext(ctx)
		g.Go(func() error { return srv.Run(ctx) })
		if o.metrics != "" {
			g.Go(func() error { return serveMetrics(ctx, o.metrics, cfg.Registry, srv.HealthHandler()) })
		}
		return g.Wait()
	}
	return daemon.Run(ctx, log, "meshd", run)
}
