package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Caddy is measured as a Go proxy built for this job: one hop terminating
// TLS like the nginx row, and two hops with mTLS between like the nginx
// chain. Its JSON config is written out in full (no Caddyfile adapter):
// no admin endpoint (three instances would fight over :2019), no automatic
// HTTPS (the bench's own certificates, nothing fetched or redirected), no
// access logs (none configured), HTTP/1.1 only on every listener and
// between the hops, as nginx is configured here (and no HTTP/3 UDP
// listener), TLS 1.3 only, and a keep-alive pool of 256 idle connections
// per upstream, as nginx's `keepalive 256`.

// caddyTLSPolicy is a server's TLS connection policy: the bench's server
// certificate, TLS 1.3 only; with clientCA, a client certificate signed by
// it is required and verified.
func caddyTLSPolicy(clientCA string) map[string]any {
	p := map[string]any{
		"certificate_selection": map[string]any{"any_tag": []string{"bench"}},
		"protocol_min":          "tls1.3",
		"protocol_max":          "tls1.3",
	}
	if clientCA != "" {
		p["client_authentication"] = map[string]any{
			"ca":   map[string]any{"provider": "file", "pem_files": []string{clientCA}},
			"mode": "require_and_verify",
		}
	}
	return p
}

// caddyProxy is a reverse_proxy route to upstream over HTTP/1.1 with
// keep-alive; tls (may be nil) is the transport's TLS to the upstream, and
// host (may be empty) the Host header sent there: nginx sends the
// upstream's name, and Caddy answers 421 to a request whose Host is not the
// name a client certificate was verified for.
func caddyProxy(upstream, host string, tls map[string]any) []any {
	transport := map[string]any{
		"protocol": "http",
		"versions": []string{"1.1"},
		"keep_alive": map[string]any{
			"enabled":                 true,
			"max_idle_conns_per_host": 256,
			"idle_timeout":            "120s",
		},
	}
	if tls != nil {
		transport["tls"] = tls
	}
	proxy := map[string]any{
		"handler":   "reverse_proxy",
		"transport": transport,
		"upstreams": []any{map[string]any{"dial": upstream}},
	}
	if host != "" {
		proxy["headers"] = map[string]any{"request": map[string]any{"set": map[string]any{"Host": []string{host}}}}
	}
	return []any{map[string]any{"handle": []any{proxy}}}
}

// caddyConfig is one Caddy instance: a single server on listen (TLS when
// tlsPolicy is not nil) proxying to routes.
func caddyConfig(c certFiles, listen string, tlsPolicy map[string]any, routes []any) ([]byte, error) {
	srv := map[string]any{
		"listen":          []string{listen},
		"routes":          routes,
		"protocols":       []string{"h1"},
		"automatic_https": map[string]any{"disable": true},
	}
	if tlsPolicy != nil {
		srv["tls_connection_policies"] = []any{tlsPolicy}
	}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "WARN"}}},
		"apps": map[string]any{
			"http": map[string]any{"servers": map[string]any{"bench": srv}},
			"tls": map[string]any{
				"certificates": map[string]any{"load_files": []any{map[string]any{
					"certificate": c.ServerCert, "key": c.ServerKey, "format": "pem", "tags": []string{"bench"},
				}}},
			},
		},
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// caddy starts one Caddy with conf; its storage and config dirs are its
// own under the work dir.
func (e *env) caddy(name string, conf []byte) (*child, error) {
	if _, err := os.Stat(e.caddyBin); err != nil {
		return nil, fmt.Errorf("sidebyside: caddy %s not found at %s: run bench/sidebyside/run.sh, which installs it (%w)", caddyVersion, e.caddyBin, err)
	}
	path := filepath.Join(e.dir, name+".json")
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		return nil, err
	}
	home := filepath.Join(e.dir, name+"-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	env := []string{"HOME=" + home, "XDG_DATA_HOME=" + filepath.Join(home, "data"), "XDG_CONFIG_HOME=" + filepath.Join(home, "config")}
	return e.p.start(name, env, e.caddyBin, "run", "--config", path)
}

// caddyOneHop is Caddy terminating TLS in front of the app.
func (e *env) caddyOneHop() (*target, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	conf, err := caddyConfig(e.certs, addr, caddyTLSPolicy(""), caddyProxy(e.app, "", nil))
	if err != nil {
		return nil, err
	}
	c, err := e.caddy("caddy", conf)
	if err != nil {
		return nil, err
	}
	url := "https://" + addr + "/"
	if err := e.verify(c, "caddy", url); err != nil {
		return nil, err
	}
	return &target{name: "caddy", shape: "one hop", url: url, hops: [][]int{descendants(c.pid())}, main: c, mains: []*child{c}}, nil
}

// caddyChain is plain → Caddy (originating mTLS with the client
// certificate, verifying the inner server's name) → Caddy (requiring and
// verifying the client certificate) → app: the nginx chain's shape.
func (e *env) caddyChain() (*target, error) {
	outer, err := freePort()
	if err != nil {
		return nil, err
	}
	inner, err := freePort()
	if err != nil {
		return nil, err
	}
	innerConf, err := caddyConfig(e.certs, inner, caddyTLSPolicy(e.certs.CA), caddyProxy(e.app, "", nil))
	if err != nil {
		return nil, err
	}
	outerConf, err := caddyConfig(e.certs, outer, nil, caddyProxy(inner, innerName, map[string]any{
		"ca":                          map[string]any{"provider": "file", "pem_files": []string{e.certs.CA}},
		"client_certificate_file":     e.certs.ClientCert,
		"client_certificate_key_file": e.certs.ClientKey,
		"server_name":                 innerName,
	}))
	if err != nil {
		return nil, err
	}
	ci, err := e.caddy("caddy-inner", innerConf)
	if err != nil {
		return nil, err
	}
	co, err := e.caddy("caddy-outer", outerConf)
	if err != nil {
		return nil, err
	}
	url := "http://" + outer + "/"
	if err := e.verify(co, "caddy chain", url); err != nil {
		return nil, err
	}
	// The hop between must be mutual TLS: the inner Caddy refuses a client
	// without a certificate (the check client has none).
	if resp, err := e.check.Get("https://" + inner + "/"); err == nil {
		resp.Body.Close()
		return nil, fmt.Errorf("sidebyside: the inner Caddy answered %d to a client without a certificate: mTLS not required", resp.StatusCode)
	}
	return &target{name: "caddy → caddy", shape: "two hops", url: url,
		hops: [][]int{descendants(co.pid()), descendants(ci.pid())}, main: co, mains: []*child{co, ci},
		note: "the inner Caddy refused a client without a certificate (mTLS required)"}, nil
}
