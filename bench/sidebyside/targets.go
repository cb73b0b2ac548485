package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// target is one row of the table: a URL wrk loads and the processes that
// serve it (hops[i] are the processes of the i-th proxy).
type target struct {
	name  string
	shape string // "direct", "one hop", "two hops"
	url   string
	hops  [][]int
	main  *child // the first hop's process
	mains []*child
	note  string // e.g. whether the policy is enforced
}

func (t *target) pids() []int {
	var out []int
	for _, h := range t.hops {
		out = append(out, h...)
	}
	return out
}

// env is what every target is built from.
type env struct {
	ctx   context.Context
	p     *procs
	dir   string
	bin   string
	app   string // host:port of the upstream app
	certs certFiles
	check *http.Client // trusts the bench CA
	// caddyBin is the Caddy binary (caddy.go).
	caddyBin string
	// cpuProfiles: see options.cpuProfiles.
	cpuProfiles string
}

// verify GETs url until it answers 200 with the app's body: the target
// really forwards to the app.
func (e *env) verify(c *child, what, url string) error {
	return waitFor(e.ctx, c, what, 30*time.Second, func() error {
		resp, err := e.check.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || string(b) != string(appBody) {
			return fmt.Errorf("status %d, body %q", resp.StatusCode, b)
		}
		return nil
	})
}

func newCheckClient(caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13},
			DisableKeepAlives: true,
		},
	}, nil
}

func (e *env) nginx(name, conf string) (*child, error) {
	path := filepath.Join(e.dir, name+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return e.p.start(name, nil, "nginx", "-e", filepath.Join(e.dir, name+".err"), "-c", path)
}

// nginxHead is the common part: workers = cores, no access log, temp
// paths of our own, in the foreground.
func (e *env) nginxHead(name string) string {
	d := filepath.Join(e.dir, name)
	return fmt.Sprintf(`daemon off;
master_process on;
worker_processes auto;
pid %[1]s.pid;
error_log %[1]s.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s-body;
    proxy_temp_path %[1]s-proxy;
    fastcgi_temp_path %[1]s-fastcgi;
    uwsgi_temp_path %[1]s-uwsgi;
    scgi_temp_path %[1]s-scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
`, d)
}

const nginxProxyToApp = `        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
`

func (e *env) nginxOneHop() (*target, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := e.nginxHead("nginx") + fmt.Sprintf(`    upstream app { server %s; keepalive 256; keepalive_requests 1000000; }
    server {
        listen %s ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.3;
%s    }
}
`, e.app, addr, e.certs.ServerCert, e.certs.ServerKey, nginxProxyToApp)
	c, err := e.nginx("nginx", conf)
	if err != nil {
		return nil, err
	}
	url := "https://" + addr + "/"
	if err := e.verify(c, "nginx", url); err != nil {
		return nil, err
	}
	return &target{name: "nginx", shape: "one hop", url: url, hops: [][]int{descendants(c.pid())}, main: c, mains: []*child{c}}, nil
}

// nginxChain is plain → nginx (originating mTLS with a client certificate,
// verifying the inner server) → nginx (terminating mTLS, verifying the
// client) → app, both hops with keep-alive pools.
func (e *env) nginxChain() (*target, error) {
	outer, err := freePort()
	if err != nil {
		return nil, err
	}
	inner, err := freePort()
	if err != nil {
		return nil, err
	}
	innerConf := e.nginxHead("nginx-inner") + fmt.Sprintf(`    upstream app { server %s; keepalive 256; keepalive_requests 1000000; }
    server {
        listen %s ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.3;
        ssl_client_certificate %s;
        ssl_verify_client on;
%s    }
}
`, e.app, inner, e.certs.ServerCert, e.certs.ServerKey, e.certs.CA, nginxProxyToApp)
	outerConf := e.nginxHead("nginx-outer") + fmt.Sprintf(`    upstream inner { server %s; keepalive 256; keepalive_requests 1000000; }
    server {
        listen %s;
        location / {
            proxy_pass https://inner;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_certificate %s;
            proxy_ssl_certificate_key %s;
            proxy_ssl_trusted_certificate %s;
            proxy_ssl_verify on;
            proxy_ssl_name %s;
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_session_reuse on;
        }
    }
}
`, inner, outer, e.certs.ClientCert, e.certs.ClientKey, e.certs.CA, innerName)
	ci, err := e.nginx("nginx-inner", innerConf)
	if err != nil {
		return nil, err
	}
	co, err := e.nginx("nginx-outer", outerConf)
	if err != nil {
		return nil, err
	}
	url := "http://" + outer + "/"
	if err := e.verify(co, "nginx chain", url); err != nil {
		return nil, err
	}
	return &target{name: "nginx → nginx", shape: "two hops", url: url,
		hops: [][]int{descendants(co.pid()), descendants(ci.pid())}, main: co, mains: []*child{co, ci}}, nil
}

func (e *env) haproxy() (*target, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`global
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    http-reuse always
frontend fe
    bind %s ssl crt %s
    default_backend app
backend app
    server app %s
`, addr, e.certs.HAProxyPEM, e.app)
	path := filepath.Join(e.dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	c, err := e.p.start("haproxy", nil, "haproxy", "-db", "-f", path)
	if err != nil {
		return nil, err
	}
	url := "https://" + addr + "/"
	if err := e.verify(c, "haproxy", url); err != nil {
		return nil, err
	}
	return &target{name: "haproxy", shape: "one hop", url: url, hops: [][]int{descendants(c.pid())}, main: c, mains: []*child{c}}, nil
}

// mesh is one meshd and the operator's view of it.
type mesh struct {
	e      *env
	addr   string
	pin    string
	ctlEnv []string
	n      int
}

func (e *env) startMesh() (*mesh, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(e.dir, "meshd")
	c, err := e.p.start("meshd", nil, filepath.Join(e.bin, "meshd"), "--data-dir", data, "--listen", addr, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	m := &mesh{e: e, addr: addr, ctlEnv: []string{"MESHCTL_SERVER=" + addr, "MESHCTL_CREDENTIALS=" + filepath.Join(data, "operator")}}
	if err := waitFor(e.ctx, c, "meshd", 30*time.Second, func() error {
		_, err := m.ctl("proxies")
		return err
	}); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *mesh) ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(m.e.ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(m.e.bin, "meshctl"), args...)
	cmd.Env = append(os.Environ(), m.ctlEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("sidebyside: meshctl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// token creates a one-use join token for default/<sa> and learns the pin.
func (m *mesh) token(sa string) (string, error) {
	out, err := m.ctl("token", "create", "--ns", "default", "--sa", sa)
	if err != nil {
		return "", err
	}
	var tok string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "token:"); ok {
			tok = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "ca-pin:"); ok {
			m.pin = strings.TrimSpace(v)
		}
	}
	if tok == "" || m.pin == "" {
		return "", fmt.Errorf("sidebyside: no token or ca-pin in %q", out)
	}
	return tok, nil
}

// policy applies a Service (its port is the app's, so a request carrying
// X-Mesh-Target reaches the same app) and an AuthorizationPolicy for it:
// deny /admin, allow GET on everything else from any caller.
func (m *mesh) policy(service string) error {
	_, port, err := net.SplitHostPort(m.e.app)
	if err != nil {
		return err
	}
	doc := fmt.Sprintf(`apiVersion: minimesh.io/v1alpha1
kind: Service
metadata:
  name: %[1]s
  namespace: default
spec:
  ports:
  - name: http
    port: %[2]s
    protocol: http
  servingIdentities:
  - spiffe://minimesh.local/ns/default/sa/%[1]s
---
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: bench-%[1]s
  namespace: default
spec:
  service: %[1]s
  rules:
  - action: deny
    paths:
    - prefix: /admin
  - action: allow
    paths:
    - prefix: /
    methods: [GET]
`, service, port)
	path := filepath.Join(m.e.dir, "policy-"+service+".yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		return err
	}
	_, err = m.ctl("apply", "-f", path)
	return err
}

// policyNote says whether the proxy enforces the policy: GET /admin must
// be refused (403) within a few seconds of the proxy being ready.
func (m *mesh) policyNote(applyErr error, url string) string {
	if applyErr != nil {
		return "policy not applied: " + firstLine(applyErr.Error())
	}
	status := 0
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && m.e.ctx.Err() == nil {
		resp, err := m.e.check.Get(url + "admin")
		if err == nil {
			resp.Body.Close()
			status = resp.StatusCode
			if status == http.StatusForbidden {
				return "AuthorizationPolicy enforced (GET /admin answered 403)"
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Sprintf("AuthorizationPolicy applied but not enforced by this build (GET /admin answered %d, not 403)", status)
}

// proxyAt starts one mesh-proxy (the binary at bin: this build's or an
// older one, to compare within one run) for service with a fresh token;
// extra are its listener flags. It waits for /ready on the admin port.
func (m *mesh) proxyAt(bin, service string, goenv []string, extra ...string) (*child, string, error) {
	tok, err := m.token(service)
	if err != nil {
		return nil, "", err
	}
	m.n++
	inbound, err := freePort()
	if err != nil {
		return nil, "", err
	}
	adminAddr, err := freePort()
	if err != nil {
		return nil, "", err
	}
	args := append([]string{
		"--control-plane", m.addr, "--token", tok, "--ca-pin", m.pin,
		"--service", service, "--app", m.e.app, "--inbound", inbound, "--admin", adminAddr,
		"--state-dir", filepath.Join(m.e.dir, "proxy-"+service), "--log-level", "warn",
	}, extra...)
	if m.e.cpuProfiles != "" && bin == filepath.Join(m.e.bin, "mesh-proxy") && len(goenv) == 0 {
		args = append(args, "--cpu-profile", filepath.Join(m.e.cpuProfiles, service+".pprof"))
	}
	c, err := m.e.p.start("mesh-proxy-"+service, goenv, bin, args...)
	if err != nil {
		return nil, "", err
	}
	err = waitFor(m.e.ctx, c, "mesh-proxy "+service, 30*time.Second, func() error {
		resp, err := m.e.check.Get("http://" + adminAddr + "/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ready: %d", resp.StatusCode)
		}
		return nil
	})
	return c, inbound, err
}

// meshOneHop is one mesh-proxy terminating TLS on its --public port.
func (m *mesh) oneHop(service, label string, goenv []string) (*target, error) {
	return m.oneHopAt(filepath.Join(m.e.bin, "mesh-proxy"), service, label, goenv)
}

// oneHopAt is oneHop with the mesh-proxy binary at bin.
func (m *mesh) oneHopAt(bin, service, label string, goenv []string) (*target, error) {
	pub, err := freePort()
	if err != nil {
		return nil, err
	}
	polErr := m.policy(service)
	c, _, err := m.proxyAt(bin, service, goenv, "--public", pub,
		"--public-cert", m.e.certs.ServerCert, "--public-key", m.e.certs.ServerKey)
	if err != nil {
		return nil, err
	}
	url := "https://" + pub + "/"
	if err := m.e.verify(c, label, url); err != nil {
		return nil, err
	}
	t := &target{name: label, shape: "one hop", url: url, hops: [][]int{{c.pid()}}, main: c, mains: []*child{c}}
	t.note = m.policyNote(polErr, url)
	return t, nil
}

// twoHops is client → web's outbound port → mTLS (HTTP/2) → api's inbound
// → app. Each pair has its own service names so discovery gives web only
// its own api.
func (m *mesh) twoHops(api, web, label string, goenv []string) (*target, error) {
	return m.twoHopsAt(filepath.Join(m.e.bin, "mesh-proxy"), api, web, label, goenv)
}

// twoHopsAt is twoHops with the mesh-proxy binary at bin for both hops.
func (m *mesh) twoHopsAt(bin, api, web, label string, goenv []string) (*target, error) {
	polErr := m.policy(api)
	ca, inbound, err := m.proxyAt(bin, api, goenv)
	if err != nil {
		return nil, err
	}
	local, err := freePort()
	if err != nil {
		return nil, err
	}
	id := "spiffe://minimesh.local/ns/default/sa/" + api
	cw, _, err := m.proxyAt(bin, web, goenv, "--upstream", api+"="+local+"="+inbound+"="+id)
	if err != nil {
		return nil, err
	}
	url := "http://" + local + "/"
	if err := m.e.verify(cw, label, url); err != nil {
		return nil, err
	}
	t := &target{name: label, shape: "two hops", url: url, hops: [][]int{{cw.pid()}, {ca.pid()}}, main: cw, mains: []*child{cw, ca}}
	t.note = m.policyNote(polErr, url)
	return t, nil
}
