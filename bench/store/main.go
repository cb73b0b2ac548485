// Command store measures meshd on its two stores, bbolt and etcd: the
// latency of an Apply (p50/p99, through meshd's AdminService over mTLS)
// and the rate of Bootstraps (concurrent, each its own key, CSR and
// instance, through IdentityService). etcd runs in this process
// (go.etcd.io/etcd/server/v3/embed), and also as Debian's etcd binary
// when it is installed. Prints a markdown table (bench/RESULTS.md).
//
//	go run ./bench/store [-applies 300] [-bootstraps 400] [-workers 16]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/store"
	"minimesh/controlplane/store/storetest"
	meshv1 "minimesh/proto/mesh/v1"
)

func main() {
	applies := flag.Int("applies", 300, "Applies timed per store")
	boots := flag.Int("bootstraps", 400, "Bootstraps per store")
	workers := flag.Int("workers", 16, "concurrent Bootstraps")
	flag.Parse()
	if err := run(*applies, *boots, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "bench/store:", err)
		os.Exit(1)
	}
}

type result struct {
	name          string
	p50, p99      time.Duration
	bootstrapRate float64
}

func run(applies, boots, workers int) error {
	tmp, err := os.MkdirTemp("", "bench-store-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	keyFile := filepath.Join(tmp, "ca.key")
	if err := os.WriteFile(keyFile, randomKey(), 0o600); err != nil {
		return err
	}
	var results []result
	r, err := measure("bbolt", controlplane.Config{DataDir: filepath.Join(tmp, "bbolt"), CAKeyFile: keyFile}, applies, boots, workers)
	if err != nil {
		return err
	}
	results = append(results, r)
	emb, err := storetest.StartEmbedded(filepath.Join(tmp, "etcd-embedded"))
	if err != nil {
		return err
	}
	r, err = measure("etcd (embedded, in process)", controlplane.Config{DataDir: filepath.Join(tmp, "e1"), CAKeyFile: keyFile,
		Etcd: &store.EtcdConfig{Endpoints: emb.Endpoints}}, applies, boots, workers)
	emb.Stop()
	if err != nil {
		return err
	}
	results = append(results, r)
	if bin := storetest.EtcdBinary(); bin != "" {
		dir := filepath.Join(tmp, "etcd-binary")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		e, err := storetest.StartBinary(bin, dir)
		if err != nil {
			return err
		}
		r, err = measure("etcd ("+bin+", a child process)", controlplane.Config{DataDir: filepath.Join(tmp, "e2"), CAKeyFile: keyFile,
			Etcd: &store.EtcdConfig{Endpoints: e.Endpoints}}, applies, boots, workers)
		e.Stop()
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	fmt.Printf("| store | Apply p50 | Apply p99 | Bootstraps/s (%d concurrent) |\n| --- | ---: | ---: | ---: |\n", workers)
	for _, r := range results {
		fmt.Printf("| %s | %s | %s | %.0f |\n", r.name, r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.bootstrapRate)
	}
	return nil
}

func randomKey() []byte {
	f, _ := os.Open("/dev/urandom")
	defer f.Close()
	b := make([]byte, 32)
	_, _ = f.Read(b)
	return b
}

func measure(name string, cfg controlplane.Config, applies, boots, workers int) (result, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	cfg.Listener, cfg.ListenAddr = lis, lis.Addr().String()
	cfg.Registry = prometheus.NewRegistry()
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.BootstrapRate, cfg.BootstrapBurst = 1e6, 1e6 // all from 127.0.0.1
	srv, err := controlplane.New(cfg)
	if err != nil {
		lis.Close()
		return result{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()

	svid, _, err := certs.LoadSVID(srv.OperatorCredentialDir(), srv.TrustDomain())
	if err != nil {
		return result{}, err
	}
	src := certs.NewSVIDSource(nil)
	src.Set(svid)
	opConn, err := grpc.NewClient(cfg.ListenAddr, grpc.WithTransportCredentials(credentials.NewTLS(
		certs.MTLSClientConfig(src, certs.NewBundleSource(srv.CA().Bundle()), certs.AuthorizeID(certs.MeshdID(srv.TrustDomain())), certs.TLSOptions{}))))
	if err != nil {
		return result{}, err
	}
	defer opConn.Close()
	op := meshv1.NewAdminServiceClient(opConn)

	var lat []time.Duration
	for i := range applies {
		svc := &meshv1.Resource{ApiVersion: "minimesh.io/v1alpha1", Kind: "Service", Name: "web", Namespace: "default",
			Spec: &meshv1.Resource_Service{Service: &meshv1.ServiceSpec{
				Ports:             []*meshv1.ServicePort{{Name: "http", Port: uint32(1000 + i), Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
				ServingIdentities: []string{"spiffe://minimesh.local/ns/default/sa/web"},
			}}}
		c, cc := context.WithTimeout(ctx, 30*time.Second)
		start := time.Now()
		_, err := op.Apply(c, &meshv1.ApplyRequest{Resources: []*meshv1.Resource{svc}})
		lat = append(lat, time.Since(start))
		cc()
		if err != nil {
			return result{}, fmt.Errorf("%s: apply: %w", name, err)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })

	c, cc := context.WithTimeout(ctx, 30*time.Second)
	tok, err := op.CreateJoinToken(c, &meshv1.CreateJoinTokenRequest{Namespace: "default", ServiceAccount: "web", Uses: uint32(boots)})
	cc()
	if err != nil {
		return result{}, err
	}
	tc, err := certs.PinnedClientConfig(srv.RootPin(), certs.MeshdID(srv.TrustDomain()), certs.TLSOptions{})
	if err != nil {
		return result{}, err
	}
	anonConn, err := grpc.NewClient(cfg.ListenAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return result{}, err
	}
	defer anonConn.Close()
	id := spiffeid.RequireFromString("spiffe://minimesh.local/ns/default/sa/web")
	csrs := make([][]byte, boots) // made before the clock starts
	for i := range csrs {
		key, err := certs.GenerateKey()
		if err != nil {
			return result{}, err
		}
		if csrs[i], err = certs.NewCSR(key, id); err != nil {
			return result{}, err
		}
	}
	idc := meshv1.NewIdentityServiceClient(anonConn)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= boots {
					return
				}
				c, cc := context.WithTimeout(ctx, 30*time.Second)
				_, err := idc.Bootstrap(c, &meshv1.BootstrapRequest{Token: tok.GetSecret(), Csr: csrs[i], InstanceId: "web-" + strconv.Itoa(i)})
				cc()
				if err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		return result{}, fmt.Errorf("%s: bootstrap: %w", name, err)
	}
	return result{name: name, p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], bootstrapRate: float64(boots) / elapsed.Seconds()}, nil
}
