package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/internal/daemon"
	"minimesh/internal/testlog"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proxyProc is a mesh-proxy run as main runs it, from its command line.
type proxyProc struct {
	logs   testlog.Buffer
	admin  string
	cancel context.CancelFunc
	done   chan error
}

func startProxy(t *testing.T, m *controlplanetest.Meshd, service string, args ...string) *proxyProc {
	t.Helper()
	tok := m.Token(t, "default", service, 1)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(tok.GetSecret()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &proxyProc{admin: freeAddr(t), done: make(chan error, 1)}
	args = append([]string{"--control-plane", m.Addr, "--token-file", tokenFile, "--ca-pin", tok.GetCaPin(),
		"--service", service, "--state-dir", t.TempDir(), "--admin", p.admin, "--log-level", "debug"}, args...)
	var ctx context.Context
	ctx, p.cancel = context.WithCancel(context.Background())
	root := newRoot(io.Discard, &p.logs, func(string) string { return "" }, func(ctx context.Context, o *options) error { return run(ctx, o, &p.logs) })
	root.SetArgs(args)
	go func() { p.done <- root.ExecuteContext(ctx) }()
	t.Cleanup(p.stop)
	eventually(t, service+" /readyz", func() error {
		code, body, err := httpGet("http://" + p.admin + "/readyz")
		if err == nil && code != http.StatusOK {
			err = &httpError{code, body}
		}
		return err
	})
	return p
}

type httpError struct {
	code int
	body string
}

func (e *httpError) Error() string { return http.StatusText(e.code) + ": " + e.body }

func (p *proxyProc) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
	p.cancel = nil
}

// TestLogsHaveNoDuplicateKeys: two mesh-proxies started from their command
// lines (JSON logs at debug) with a real meshd, a request through them,
// one that fails at the app, and a shutdown: every line either wrote is
// one JSON object with no key twice (the proxy's own service and an
// upstream's, or a listener named twice, were), durations are strings,
// and each says when shutdown started and ended.
func TestLogsHaveNoDuplicateKeys(t *testing.T) {
	var meshdLogs testlog.Buffer
	m := controlplanetest.Start(t, controlplane.Config{Logger: daemon.NewLogger(&meshdLogs, daemon.FormatJSON, slog.LevelDebug)})
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang-up" { // the proxy's upstream fails
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
			return
		}
		_, _ = io.WriteString(w, "hello from api\n")
	}), ReadHeaderTimeout: 5 * time.Second}
	appL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(appL) }()
	defer app.Close()

	api := startProxy(t, m, "api", "--app", appL.Addr().String(), "--inbound", freeAddr(t))
	upstream := freeAddr(t)
	web := startProxy(t, m, "web", "--app", "127.0.0.1:1", "--inbound", freeAddr(t), "--upstream", "api="+upstream)
	eventually(t, "web -> api", func() error {
		code, body, err := httpGet("http://" + upstream + "/hello")
		if err == nil && (code != http.StatusOK || body != "hello from api\n") {
			err = &httpError{code, body}
		}
		return err
	})
	if code, _, err := httpGet("http://" + upstream + "/hang-up"); err != nil || code != http.StatusBadGateway {
		t.Errorf("a request the app hangs up on: %d %v, want 502", code, err)
	}
	web.stop()
	api.stop()

	m.Stop()
	sc := bufio.NewScanner(strings.NewReader(meshdLogs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if dups, err := daemon.DuplicateKeys(sc.Bytes()); err != nil || len(dups) > 0 {
			t.Errorf("meshd: keys %v twice (%v) in: %s", dups, err, sc.Text())
		}
	}

	for name, p := range map[string]*proxyProc{"api": api, "web": web} {
		out := p.logs.String()
		var msgs []string
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			dups, err := daemon.DuplicateKeys(sc.Bytes())
			if err != nil {
				t.Errorf("%s: a line that is not JSON: %v: %s", name, err, sc.Text())
				continue
			}
			if len(dups) > 0 {
				t.Errorf("%s: keys %v twice in: %s", name, dups, sc.Text())
			}
			var l map[string]any
			_ = json.Unmarshal(sc.Bytes(), &l)
			msgs = append(msgs, l["msg"].(string))
			if l["service"] != name {
				t.Errorf("%s: a line without service=%s: %s", name, name, sc.Text())
			}
			for k, v := range l {
				if _, isNumber := v.(float64); isNumber && (strings.Contains(k, "took") || strings.HasSuffix(k, "_in") || strings.Contains(k, "duration") || strings.Contains(k, "backoff")) {
					t.Errorf("%s: %s is a number, want a duration string: %s", name, k, sc.Text())
				}
			}
		}
		all := strings.Join(msgs, "\n")
		for _, want := range []string{"mesh-proxy starting", "registered with meshd", "mesh-proxy shutting down", "mesh-proxy stopped"} {
			if !strings.Contains(all, want) {
				t.Errorf("%s: no %q line in:\n%s", name, want, out)
			}
		}
		if name == "api" && !strings.Contains(all, "proxy: upstream failed") {
			t.Errorf("api: the failed request is not logged:\n%s", out)
		}
		if name == "web" && !strings.Contains(all, "proxy: outbound listening") {
			t.Errorf("web: no outbound listening line:\n%s", out)
		}
	}
}
