// Command meshd is minimesh's control plane: the certificate authority,
// the store of mesh resources and the config push to every proxy.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"minimesh/controlplane"
	"minimesh/controlplane/push"
	"minimesh/internal/version"
)

// subcommands are the offline tools on a stopped meshd's data dir:
// `meshd NAME ARGS...`. Without one, meshd serves (run).
var subcommands = map[string]func(args []string, stdout, stderr io.Writer) error{
	"operator": runOperator,
}

func main() {
	var err error
	if len(os.Args) > 1 && subcommands[os.Args[1]] != nil {
		err = subcommands[os.Args[1]](os.Args[2:], os.Stdout, os.Stderr)
	} else {
		err = run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshd:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		cfg      controlplane.Config
		logLevel slog.Level
	)
	var etcdFlags controlplane.EtcdStoreFlags
	flag.StringVar(&cfg.DataDir, "data-dir", "", "directory for the data file and the operator credential (required; with --store etcd://..., this replica's operator credential only)")
	flag.StringVar(&etcdFlags.Store, "store", "bbolt", "where meshd keeps its state: bbolt (a file in --data-dir) or etcd://HOST:PORT[,HOST:PORT...] (needs --ca-key-file)")
	flag.StringVar(&etcdFlags.Cert, "etcd-cert", "", "client certificate (PEM) meshd presents to etcd")
	flag.StringVar(&etcdFlags.Key, "etcd-key", "", "private key (PEM) of --etcd-cert")
	flag.StringVar(&etcdFlags.CA, "etcd-ca", "", "CA certificate(s) (PEM) etcd's serving certificate chains to")
	flag.StringVar(&etcdFlags.Prefix, "etcd-prefix", "/minimesh/", "prefix of every key meshd writes in etcd (one etcd can hold two meshes)")
	flag.DurationVar(&etcdFlags.LeaseTTL, "lease-ttl", 10*time.Second, "with --store etcd://...: lease of this replica's leadership and its proxies' presence; a dead replica's proxies show DISCONNECTED and another replica leads after about this long")
	flag.StringVar(&cfg.ListenAddr, "listen", "127.0.0.1:15010", "gRPC listen address")
	flag.StringVar(&cfg.TrustDomain, "trust-domain", "minimesh.local", "SPIFFE trust domain")
	flag.DurationVar(&cfg.SVIDTTL, "svid-ttl", time.Hour, "lifetime of workload SVIDs")
	flag.DurationVar(&cfg.ForgetAfter, "forget-after", 72*time.Hour, "forget proxies disconnected this long")
	flag.DurationVar(&cfg.EndpointGrace, "endpoint-grace", push.DefaultEndpointGrace, "keep a proxy whose stream ended without a drain (meshd restarted, the network broke) an endpoint this long; at start, hold the endpoints last known as long")
	flag.DurationVar(&cfg.MaxConnectionAge, "max-connection-age", 30*time.Minute, "end each client connection (a proxy's stream) after about this long (±10 %), so streams rebalance over the replicas after a restart")
	flag.DurationVar(&cfg.OperatorTTL, "operator-ttl", 30*24*time.Hour, "lifetime of the operator credential")
	flag.StringVar(&cfg.CAKeyFile, "ca-key-file", "", "file of exactly 32 random bytes (mode 0600, not a symlink) that encrypts the CA keys in the data file and so in every backup; once used, needed at every start and by --restore (make one: head -c 32 /dev/urandom > FILE && chmod 600 FILE)")
	checkBootstrapLimits := bootstrapLimitFlags(flag.CommandLine, &cfg) // --bootstrap-rate, --bootstrap-burst
	flag.TextVar(&logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	restore := flag.String("restore", "", "install this backup (from meshctl backup, or an older meshd's raw data-file copy) into an empty --data-dir or empty --etcd-prefix, then start")
	metricsAddr := flag.String("metrics", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:15011); off when empty")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Version)
		return nil
	}
	if cfg.DataDir == "" {
		return fmt.Errorf("--data-dir is required")
	}
	if err := checkBootstrapLimits(); err != nil {
		return err
	}
	ec, err := etcdFlags.EtcdConfig()
	if err != nil {
		return err
	}
	cfg.Etcd = ec
	if ec != nil && cfg.CAKeyFile == "" {
		return fmt.Errorf("--ca-key-file is required with --store %s: the CA keys are kept in etcd, sealed under it", etcdFlags.Store)
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))

	if *restore != "" {
		restoreTo := func() error { return controlplane.Restore(cfg.DataDir, *restore, cfg.CAKeyFile) }
		if ec != nil {
			restoreTo = func() error { return controlplane.RestoreEtcd(ec, cfg.DataDir, *restore, cfg.CAKeyFile) }
		}
		if err := restoreTo(); err != nil {
			return err
		}
	}
	cfg.Registry = prometheus.NewRegistry()
	cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := controlplane.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(ctx) })
	if *metricsAddr != "" {
		g.Go(func() error { return serveMetrics(ctx, *metricsAddr, cfg.Registry) })
	}
	return g.Wait()
}
