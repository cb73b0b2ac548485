// Package kubetest starts a real kube-apiserver in this process
// (k8s.io/kubernetes/cmd/kube-apiserver/app/testing) on an embedded etcd
// (go.etcd.io/etcd/server/v3/embed), both on 127.0.0.1, for tests that
// need the API's own TokenRequest, TokenReview and admission webhooks.
//
// It lives in its own module (test/kube) so that k8s.io/kubernetes and its
// dependencies never enter minimesh's go.mod.
package kubetest

import (
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	apiservertesting "k8s.io/kubernetes/cmd/kube-apiserver/app/testing"
)

// Audience is the audience minimesh's projected service-account tokens
// carry and meshd's TokenReview asks for.
const Audience = "minimesh"

// Issuer is the service-account issuer the test API server signs with
// (set by the apiserver testing package, with its own fixed test key).
const Issuer = "https://foo.bar.example.com"

// Server is a running kube-apiserver.
type Server struct {
	// Config is an admin client configuration (the loopback token).
	Config *rest.Config
	// Kubeconfig is a kubeconfig file (0600) with the same credentials,
	// for programs that take --kubeconfig.
	Kubeconfig string
}

// Start starts etcd and kube-apiserver, with these kube-apiserver flags
// added (e.g. --authorization-mode=RBAC; the default authorizes every
// request); both stop when t ends.
func Start(t *testing.T, flags ...string) *Server {
	t.Helper()
	etcdURL, err := startEtcd(t)
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}

	storage := storagebackend.NewDefaultConfig("/registry", nil)
	storage.Transport.ServerList = []string{etcdURL}

	ts, err := apiservertesting.StartTestServer(t,
		&apiservertesting.TestServerInstanceOptions{DisableInvariantChecks: true},
		flags,
		storage)
	if err != nil {
		t.Fatalf("kube-apiserver: %v", err)
	}
	t.Cleanup(ts.TearDownFn)

	cfg := rest.CopyConfig(ts.ClientConfig)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := WriteKubeconfig(kc, cfg); err != nil {
		t.Fatal(err)
	}
	return &Server{Config: cfg, Kubeconfig: kc}
}

// WriteKubeconfig writes cfg (server, CA, bearer token) as a kubeconfig
// file with mode 0600.
func WriteKubeconfig(path string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthorityData: cfg.CAData,
		TLSServerName:            cfg.ServerName,
	}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	kc.CurrentContext = "test"
	b, err := clientcmd.Write(*kc)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// startEtcd starts an embedded etcd on 127.0.0.1 with its data in a
// temporary directory; it stops when t ends.
func startEtcd(t *testing.T) (string, error) {
	var ports [2]int
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		// Closed before etcd binds it: another process could take the
		// port in between, a race a test run survives by failing loudly.
		l.Close()
	}
	cfg := embed.NewConfig()
	cfg.Name = "kubetest"
	cfg.Dir = t.TempDir()
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cu := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(ports[0])}
	pu := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(ports[1])}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.EnableGRPCGateway = false
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return "", err
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		return "", errors.New("embedded etcd did not become ready in 30s")
	}
	return cu.String(), nil
}
