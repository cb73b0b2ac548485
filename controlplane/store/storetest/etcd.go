// Package storetest is the store's conformance suite, run against every
// backend (bbolt, and etcd both embedded in-process and as Debian's etcd
// binary), and the helpers that start a real etcd for tests.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a running etcd for tests: in-process (embed) or a child process.
type Etcd struct {
	Endpoints []string
	stop      func()
}

// Stop stops it.
func (e *Etcd) Stop() { e.stop() }

// Client is a plain client for the test's own reads, compactions and
// lease revocations.
func (e *Etcd) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: e.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// freePorts picks n free TCP ports on 127.0.0.1. etcd needs its client
// and peer URLs before it listens, so the ports are listened on and closed;
// another process taking one in between makes the start fail, not pass.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// StartEmbedded starts etcd (go.etcd.io/etcd/server/v3/embed) in this
// process with its data in dir, on 127.0.0.1.
func StartEmbedded(dir string) (*Etcd, error) { return StartEmbeddedQuota(dir, 0) }

// StartEmbeddedQuota is StartEmbedded with a backend quota in bytes (0:
// etcd's default), to raise the NOSPACE alarm in a test.
func StartEmbeddedQuota(dir string, quota int64) (*Etcd, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cu := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(ports[0])}
	pu := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(ports[1])}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.QuotaBackendBytes = quota
	// No HTTP gateway: meshd speaks gRPC, and the gateway's websocket proxy
	// reads os.Stderr from a serving goroutine while testing.M.Run (with
	// -json) replaces it, a race the detector reports.
	cfg.EnableGRPCGateway = false
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, errors.New("embedded etcd did not become ready in 30s")
	}
	return &Etcd{Endpoints: []string{cu.String()}, stop: e.Close}, nil
}

// EtcdBinary is the etcd binary on this machine (Debian's etcd-server
// installs /usr/bin/etcd), or "".
func EtcdBinary() string {
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/etcd", "/usr/local/bin/etcd"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// StartBinary runs the etcd binary with its data in dir and waits until
// it answers.
func StartBinary(bin, dir string) (*Etcd, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	cu := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	pu := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	log, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--name", "test", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", cu, "--advertise-client-urls", cu,
		"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
		"--initial-cluster", "test="+pu, "--log-level", "error")
	cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH="+os.Getenv("GOARCH"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done); log.Close() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-done
	}
	e := &Etcd{Endpoints: []string{cu}, stop: stop}
	cli, err := e.Client()
	if err != nil {
		stop()
		return nil, err
	}
	defer cli.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "probe")
		cancel()
		if err == nil {
			return e, nil
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			return nil, fmt.Errorf("etcd exited: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("etcd did not answer in 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
