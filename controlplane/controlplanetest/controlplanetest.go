// Package controlplanetest runs a real meshd in-process for tests: a real
// gRPC server on 127.0.0.1:0 over TLS, a real bbolt file in t.TempDir().
package controlplanetest

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/stats"
	meshv1 "minimesh/proto/mesh/v1"
)

// Meshd is a running meshd.
type Meshd struct {
	*controlplane.Server
	Addr     string
	DataDir  string
	Registry *prometheus.Registry

	cfg    controlplane.Config
	cancel context.CancelFunc
	done   chan error
}

// Start runs meshd with cfg (DataDir defaults to a new temp dir, the
// listener to 127.0.0.1:0) until the test ends or Stop is called.
func Start(t testing.TB, cfg controlplane.Config) *Meshd {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir() + "/meshd"
	}
	if cfg.Logger == nil && os.Getenv("MINIMESH_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	addr := "127.0.0.1:0"
	if cfg.ListenAddr != "" {
		addr = cfg.ListenAddr
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	cfg.Listener = lis
	cfg.ListenAddr = lis.Addr().String()
	cfg.Registry = prometheus.NewRegistry()
	srv, err := controlplane.New(cfg)
	if err != nil {
		lis.Close()
		t.Fatalf("controlplane.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Meshd{Server: srv, Addr: lis.Addr().String(), DataDir: cfg.DataDir, Registry: cfg.Registry, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- srv.Run(ctx) }()
	t.Cleanup(m.Stop)
	return m
}

// Stop stops meshd and waits for it; safe to call twice.
func (m *Meshd) Stop() {
	m.cancel()
	if m.done != nil {
		<-m.done
		m.done = nil
	}
}

// Restart stops meshd and starts a new one on the same data dir and address.
func (m *Meshd) Restart(t testing.TB) *Meshd {
	t.Helper()
	m.Stop()
	cfg := m.cfg
	cfg.Listener = nil
	cfg.ListenAddr = m.Addr
	var lastErr error
	// The port was ours a moment ago; retry briefly if the OS is slow to free it.
	for i := 0; i < 50; i++ {
		lis, err := net.Listen("tcp", m.Addr)
		if err == nil {
			lis.Close()
			return Start(t, cfg)
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("restart: %v", lastErr)
	return nil
}

// Dial opens a gRPC connection with the given TLS config.
func (m *Meshd) Dial(t testing.TB, tc *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(m.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// DialAs opens a connection presenting svid as client certificate.
func (m *Meshd) DialAs(t testing.TB, svid *x509svid.SVID) *grpc.ClientConn {
	t.Helper()
	src := certs.NewSVIDSource(nil)
	src.Set(svid)
	bundle := certs.NewBundleSource(m.CA().Bundle())
	return m.Dial(t, certs.MTLSClientConfig(src, bundle, certs.AuthorizeID(certs.MeshdID(m.TrustDomain())), certs.TLSOptions{}))
}

// DialAnonymous opens a connection without a client certificate that
// authenticates meshd by its root pin, as a proxy does to bootstrap.
func (m *Meshd) DialAnonymous(t testing.TB) *grpc.ClientConn {
	t.Helper()
	tc, err := certs.PinnedClientConfig(m.RootPin(), certs.MeshdID(m.TrustDomain()), certs.TLSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m.Dial(t, tc)
}

// Operator returns an admin client with the operator credential.
func (m *Meshd) Operator(t testing.TB) meshv1.AdminServiceClient {
	t.Helper()
	svid, _, err := certs.LoadSVID(m.OperatorCredentialDir(), m.TrustDomain())
	// meshd may be re-issuing it (root rotation): its files change one by one.
	for i := 0; err != nil && i < 20; i++ {
		time.Sleep(25 * time.Millisecond)
		svid, _, err = certs.LoadSVID(m.OperatorCredentialDir(), m.TrustDomain())
	}
	if err != nil {
		t.Fatalf("operator credential: %v", err)
	}
	return meshv1.NewAdminServiceClient(m.DialAs(t, svid))
}

// Token creates a join token through the admin API.
func (m *Meshd) Token(t testing.TB, ns, sa string, uses uint32) *meshv1.CreateJoinTokenResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := m.Operator(t).CreateJoinToken(ctx, &meshv1.CreateJoinTokenRequest{Namespace: ns, ServiceAccount: sa, Uses: uses})
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	return resp
}

// Bootstrap gets an SVID for ns/sa (instance "i-<sa>") through a fresh
// join token, as a proxy's first start does.
func (m *Meshd) Bootstrap(t testing.TB, ns, sa string) *x509svid.SVID {
	t.Helper()
	tok := m.Token(t, ns, sa, 1)
	id, err := spiffeid.FromSegments(m.TrustDomain(), "ns", ns, "sa", sa)
	if err != nil {
		t.Fatal(err)
	}
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := meshv1.NewIdentityServiceClient(m.DialAnonymous(t)).Bootstrap(ctx, &meshv1.BootstrapRequest{Token: tok.Secret, Csr: csr, InstanceId: "i-" + sa})
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	chain, err := certs.ParseCertsDER(resp.Svid.CertChain)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

// Register opens a config stream as a proxy of ns/service just
// bootstrapped (Bootstrap), says Hello advertising 127.0.0.1:1, and
// returns the stream once meshd answered Registered. The stream lives
// as long as ctx.
func (m *Meshd) Register(t testing.TB, ctx context.Context, ns, service string) meshv1.ConfigService_StreamClient {
	t.Helper()
	st, err := meshv1.NewConfigServiceClient(m.DialAs(t, m.Bootstrap(t, ns, service))).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Hello{Hello: &meshv1.Hello{Service: service, AdvertiseAddress: "127.0.0.1:1"}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || r.GetRegistered() == nil {
		t.Fatalf("registration of %s/%s: %v %v", ns, service, r, err)
	}
	return st
}

// SendOversizeStats sends, on a registered proxy's stream st, two reports
// of stats.MaxReportEdges mTLS callers each (512 in all, caller-0 to
// caller-511 in namespace default, caller-N having made N+1 requests),
// each caller with four identities of about 2 KiB: about 4 MiB, more than
// meshd's Stats answer may carry. It returns how many requests they count.
func SendOversizeStats(t testing.TB, st meshv1.ConfigService_StreamClient) (requests uint64) {
	t.Helper()
	long := strings.Repeat("x", 2040)
	for r := range 2 {
		var es []*meshv1.EdgeStats
		for i := range stats.MaxReportEdges {
			n := uint64(r*stats.MaxReportEdges + i + 1)
			requests += n
			lat := make([]uint64, len(stats.LatencyBounds)+1)
			lat[3] = n
			id := fmt.Sprintf("spiffe://minimesh.local/ns/default/sa/caller-%d/", n-1)
			es = append(es, &meshv1.EdgeStats{SourceService: fmt.Sprintf("caller-%d", n-1), SourceNamespace: "default", Mtls: true,
				SourceIdentities: []string{id + "1" + long, id + "2" + long, id + "3" + long, id + "4" + long},
				Classes:          []uint64{0, n, 0, 0, 0, 0, 0}, LatencyBuckets: lat})
		}
		if err := st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Stats{Stats: &meshv1.StatsReport{
			Interval: durationpb.New(10 * time.Second), LatencyBounds: stats.LatencyBounds, Edges: es}}}); err != nil {
			t.Fatal(err)
		}
	}
	return requests
}

// Counter sums the series of the counter name whose label has value.
func (m *Meshd) Counter(t testing.TB, name, label, value string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, mm := range f.GetMetric() {
			for _, l := range mm.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += mm.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
