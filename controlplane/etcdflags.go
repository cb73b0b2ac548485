package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"minimesh/controlplane/store"
)

// EtcdStoreFlags are meshd's flags for an etcd store.
type EtcdStoreFlags struct {
	// Store is --store: "" or "bbolt" for the data dir's bbolt file,
	// etcd://HOST:PORT[,HOST:PORT...] for etcd.
	Store string
	// Cert, Key and CA are --etcd-cert, --etcd-key and --etcd-ca: meshd's
	// client certificate and key for etcd, and the CA etcd's serving
	// certificate chains to.
	Cert, Key, CA string
	// Prefix is --etcd-prefix (default /minimesh/).
	Prefix string
	// LeaseTTL is --lease-ttl: the lease of this replica's session
	// (leadership and its proxies' presence), whole seconds; 0 is the
	// store's default (10s).
	LeaseTTL time.Duration
}

// EtcdConfig turns the flags into the store's etcd config: nil for bbolt.
// Without TLS (no --etcd-cert) only loopback endpoints are accepted: etcd
// access is mesh admin, so it goes over client-certificate TLS.
func (f EtcdStoreFlags) EtcdConfig() (*store.EtcdConfig, error) {
	if f.Store == "" || f.Store == "bbolt" {
		if f.Cert != "" || f.Key != "" || f.CA != "" {
			return nil, errors.New("--etcd-cert, --etcd-key and --etcd-ca need --store etcd://HOST:PORT")
		}
		return nil, nil
	}
	rest, ok := strings.CutPrefix(f.Store, "etcd://")
	if !ok || rest == "" {
		return nil, fmt.Errorf("--store %q: want bbolt or etcd://HOST:PORT[,HOST:PORT...]", f.Store)
	}
	secure := f.Cert != "" || f.Key != "" || f.CA != ""
	if secure && (f.Cert == "" || f.Key == "" || f.CA == "") {
		return nil, errors.New("--etcd-cert, --etcd-key and --etcd-ca go together: meshd's client certificate and key for etcd and the CA of etcd's certificate")
	}
	scheme := "http://"
	if secure {
		scheme = "https://"
	}
	var eps []string
	for _, hp := range strings.Split(rest, ",") {
		host, port, err := net.SplitHostPort(hp)
		if err != nil || host == "" || port == "" || strings.ContainsAny(hp, "/?#@") {
			return nil, fmt.Errorf("--store: endpoint %q: want HOST:PORT", hp)
		}
		if !secure {
			ip := net.ParseIP(host)
			if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				return nil, fmt.Errorf("--store: endpoint %s without TLS: give --etcd-cert, --etcd-key and --etcd-ca (access to etcd is mesh admin; plain connections are for a loopback etcd only)", hp)
			}
		}
		eps = append(eps, scheme+hp)
	}
	if f.LeaseTTL != 0 && (f.LeaseTTL < 2*time.Second || f.LeaseTTL > time.Hour || f.LeaseTTL%time.Second != 0) {
		return nil, fmt.Errorf("--lease-ttl %s: want whole seconds from 2s to 1h (etcd lengthens shorter leases to its minimum)", f.LeaseTTL)
	}
	ec := &store.EtcdConfig{Endpoints: eps, Prefix: f.Prefix, SessionTTL: int(f.LeaseTTL / time.Second)}
	if secure {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert/--etcd-key: %w", err)
		}
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("--etcd-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-ca: %s holds no PEM certificate", f.CA)
		}
		ec.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return ec, nil
}
