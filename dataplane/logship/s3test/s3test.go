// Package s3test runs a real S3-compatible server for tests: versitygw
// (github.com/versity/versitygw, `make .bin/versitygw`) with its posix
// backend on a temporary directory, on a loopback port, which a test can
// stop and start again on the same port (an outage of the store).
package s3test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Version is the versitygw the tests run.
const Version = "v1.8.0"

// Server is one versitygw process and its data directory.
type Server struct {
	t               testing.TB
	bin             string
	Dir             string // the posix backend's root: one directory per bucket
	Addr            string // 127.0.0.1:port
	AccessKeyID     string
	SecretAccessKey string

	opts Options

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
	out  *bytes.Buffer
}

// Binary returns versitygw's path in the module's .bin/, installing it
// there when it is missing (go install); when that fails the test fails
// under CI=true and is skipped elsewhere.
func Binary(t testing.TB) string {
	t.Helper()
	root := moduleRoot(t)
	bin := filepath.Join(root, ".bin", "versitygw")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	cmd := exec.Command("go", "install", "github.com/versity/versitygw/cmd/versitygw@"+Version)
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Join(root, ".bin"))
	out, err := cmd.CombinedOutput()
	if err == nil {
		return bin
	}
	msg := fmt.Sprintf("versitygw is not installed and `go install` failed (run make .bin/versitygw): %v\n%s", err, out)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func moduleRoot(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("s3test: no caller")
	}
	// dataplane/logship/s3test/s3test.go
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// Start starts versitygw on a free loopback port, with buckets made for
// each name in buckets; it is stopped when the test ends.
func Start(t testing.TB, buckets ...string) *Server {
	t.Helper()
	return StartWith(t, Options{}, buckets...)
}

// Options are a Server's extras.
type Options struct {
	// VirtualDomain turns on virtual-hosted-style addressing:
	// <bucket>.<VirtualDomain> names a bucket (versitygw --virtual-domain).
	VirtualDomain string
	// TLS, when set, is the server's certificate (PEM files): it serves
	// https; RootCAs is what the test's own client trusts.
	CertFile, KeyFile string
	RootCAs           *x509.CertPool
}

// StartWith is Start with options.
func StartWith(t testing.TB, o Options, buckets ...string) *Server {
	t.Helper()
	s := &Server{t: t, bin: Binary(t), Dir: t.TempDir(), AccessKeyID: "AKIAMINIMESHTEST", SecretAccessKey: randomHex(t, 20), opts: o}
	for _, b := range buckets {
		if err := os.Mkdir(filepath.Join(s.Dir, b), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	_ = l.Close()
	s.StartAgain()
	t.Cleanup(s.Stop)
	return s
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Endpoint is the server's URL.
func (s *Server) Endpoint() string {
	if s.opts.CertFile != "" {
		return "https://" + s.Addr
	}
	return "http://" + s.Addr
}

// CredentialsFile writes the server's keys to a 0600 file in dir, in the
// form LogShipping's credentialsFile takes, and returns its path.
func (s *Server) CredentialsFile(dir string) string {
	p := filepath.Join(dir, "s3-credentials")
	body := "# test store\naccess_key_id=" + s.AccessKeyID + "\nsecret_access_key=" + s.SecretAccessKey + "\n"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// StartAgain starts the server (again) on its address; it waits until the
// port answers, retrying while the previous process's socket lingers.
func (s *Server) StartAgain() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.out = &bytes.Buffer{}
		args := []string{"--port", s.Addr, "--quiet"}
		if s.opts.VirtualDomain != "" {
			args = append(args, "--virtual-domain", s.opts.VirtualDomain)
		}
		if s.opts.CertFile != "" {
			args = append(args, "--cert", s.opts.CertFile, "--key", s.opts.KeyFile)
		}
		cmd := exec.Command(s.bin, append(args, "posix", s.Dir)...)
		cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.AccessKeyID, "ROOT_SECRET_ACCESS_KEY="+s.SecretAccessKey)
		cmd.Stdout, cmd.Stderr = s.out, s.out
		if err := cmd.Start(); err != nil {
			s.t.Fatalf("versitygw: %v", err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if s.waitListening(done, deadline) {
			s.cmd = cmd
			s.done = done
			return
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			s.t.Fatalf("versitygw did not listen on %s\n%s", s.Addr, s.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitListening reports whether the port answers before the process
// exits or the deadline passes.
func (s *Server) waitListening(exited <-chan error, deadline time.Time) bool {
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			_ = c.Close()
			return true
		}
		select {
		case <-exited:
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return false
}

// Stop kills the server; its data stays for StartAgain.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Client is a minio-go client of the server, for the test's own reads.
func (s *Server) Client() *minio.Client {
	s.t.Helper()
	tr := &http.Transport{DisableKeepAlives: true} // no connection outlives a read
	o := &minio.Options{Creds: credentials.NewStaticV4(s.AccessKeyID, s.SecretAccessKey, ""),
		BucketLookup: minio.BucketLookupPath, Region: "us-east-1", Transport: tr}
	if s.opts.CertFile != "" {
		o.Secure = true
		tr.TLSClientConfig = &tls.Config{RootCAs: s.opts.RootCAs, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	}
	c, err := minio.New(s.Addr, o)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// Object is one stored object, its body gunzipped into lines.
type Object struct {
	Key   string
	Lines [][]byte
}

// Objects lists the bucket under prefix and reads every object, in key
// order.
func (s *Server) Objects(ctx context.Context, bucket, prefix string) ([]Object, error) {
	c := s.Client()
	var keys []string
	for o := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, o.Err
		}
		keys = append(keys, o.Key)
	}
	sort.Strings(keys)
	var out []Object
	for _, k := range keys {
		obj, err := c.GetObject(ctx, bucket, k, minio.GetObjectOptions{})
		if err != nil {
			return nil, err
		}
		zr, err := gzip.NewReader(obj)
		if err != nil {
			_ = obj.Close()
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		b, err := io.ReadAll(zr)
		_ = obj.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		o := Object{Key: k}
		for _, l := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
			if len(l) > 0 {
				o.Lines = append(o.Lines, l)
			}
		}
		out = append(out, o)
	}
	return out, nil
}

// ErrNotYet is what a poll returns while waiting.
var ErrNotYet = errors.New("not yet")

// Eventually calls f every 100 ms until it returns nil or timeout passes,
// then fails the test with f's last error.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
