package logship

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"minimesh/api"
	"minimesh/internal/fsguard"
)

// maxCredentialsBytes bounds the credentials file.
const maxCredentialsBytes = 64 << 10

// fileCredentials is a minio-go credentials.Provider reading a
// credentialsFile of KEY=VALUE lines: access_key_id, secret_access_key
// and optionally session_token ('#' starts a comment). It is read again
// whenever the file changes (a rotated Secret), checked before each
// request. Errors name the file, the line and the key, never a value.
type fileCredentials struct {
	path string

	mu    sync.Mutex
	stamp fileStamp
}

type fileStamp struct {
	ino   uint64
	size  int64
	mtime time.Time
	ok    bool
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path) // follows links: a mounted Secret is a chain of them
	if err != nil {
		return fileStamp{}
	}
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime(), ok: true}
	if sys, ok := fi.Sys().(interface{ Ino() uint64 }); ok {
		st.ino = sys.Ino()
	}
	return st
}

// RetrieveWithCredContext implements credentials.Provider.
func (p *fileCredentials) RetrieveWithCredContext(*credentials.CredContext) (credentials.Value, error) {
	return p.Retrieve()
}

// Retrieve implements credentials.Provider.
func (p *fileCredentials) Retrieve() (credentials.Value, error) {
	st := stampOf(p.path)
	v, err := readCredentials(p.path)
	p.mu.Lock()
	p.stamp = st
	if err != nil {
		p.stamp = fileStamp{} // try again next request
	}
	p.mu.Unlock()
	return v, err
}

// IsExpired implements credentials.Provider: the file changed since it
// was read.
func (p *fileCredentials) IsExpired() bool {
	st := stampOf(p.path)
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.stamp.ok || st != p.stamp
}

// readCredentials parses a credentials file.
func readCredentials(path string) (credentials.Value, error) {
	// A mounted Secret (through links), not writable by others (a
	// Secret volume's default mode, 0644, is accepted).
	b, err := fsguard.ReadMounted(path, false, maxCredentialsBytes)
	if err != nil {
		return credentials.Value{}, fmt.Errorf("credentialsFile: %w", err)
	}
	v := credentials.Value{SignerType: credentials.SignatureV4}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxCredentialsBytes)
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		k, val, ok := strings.Cut(t, "=")
		k, val = strings.TrimSpace(k), strings.TrimSpace(val)
		if !ok {
			return credentials.Value{}, fmt.Errorf("credentialsFile %s: line %d is not KEY=VALUE", path, line)
		}
		switch k {
		case "access_key_id":
			v.AccessKeyID = val
		case "secret_access_key":
			v.SecretAccessKey = val
		case "session_token":
			v.SessionToken = val
		default:
			if len(k) > 64 {
				k = k[:64]
			}
			return credentials.Value{}, fmt.Errorf("credentialsFile %s: line %d: unknown key %q (want access_key_id, secret_access_key, session_token)", path, line, k)
		}
	}
	if err := sc.Err(); err != nil {
		return credentials.Value{}, fmt.Errorf("credentialsFile %s: %w", path, err)
	}
	var missing []string
	if v.AccessKeyID == "" {
		missing = append(missing, "access_key_id")
	}
	if v.SecretAccessKey == "" {
		missing = append(missing, "secret_access_key")
	}
	if len(missing) > 0 {
		return credentials.Value{}, fmt.Errorf("credentialsFile %s: no %s", path, strings.Join(missing, " or "))
	}
	return v, nil
}

// storeTimeouts bound every call to the store.
type storeTimeouts struct {
	dial, tlsHandshake, responseHeader time.Duration
	// dialContext, when set, opens the connections (Config.DialContext).
	dialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// newClient builds the S3 client of a LogShipping: path-style or
// virtual-hosted, the region, the caBundle for https, the credentials
// file, no retries of its own (the uploader retries).
func newClient(s *api.LogShipping, to storeTimeouts) (*minio.Client, *http.Transport, error) {
	spec := s.Spec
	u, err := url.Parse(spec.GetEndpoint())
	if err != nil {
		return nil, nil, fmt.Errorf("spec.endpoint: %w", err)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if b := spec.GetCaBundle(); b != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(b)) {
			return nil, nil, errors.New("spec.caBundle: no PEM certificate in it")
		}
		tlsConf.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: to.dial, KeepAlive: 30 * time.Second}
	dial := dialer.DialContext
	if to.dialContext != nil {
		dial = to.dialContext
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dial,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   to.tlsHandshake,
		ResponseHeaderTimeout: to.responseHeader,
		ExpectContinueTimeout: time.Second,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
		DisableCompression:    true,
	}
	lookup := minio.BucketLookupDNS
	if spec.GetPathStyle() {
		lookup = minio.BucketLookupPath
	}
	region := spec.GetRegion()
	if region == "" {
		region = api.DefaultLogShippingRegion
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.New(&fileCredentials{path: spec.GetCredentialsFile()}),
		Secure:       u.Scheme == "https",
		Transport:    tr,
		Region:       region,
		BucketLookup: lookup,
		MaxRetries:   1,
		// Needed by minio-go for an x-amz-checksum-* header; with
		// Content-MD5 set it sends no trailer.
		TrailingHeaders: true,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("spec.endpoint: %w", err)
	}
	return c, tr, nil
}
