package sidecar

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
)

// nonLoopbackIP is an address of this host other than loopback, to reach
// a listener on 0.0.0.0 as the pod network would; "" if there is none.
func nonLoopbackIP() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

func adminDo(method, url, host string, hdr map[string]string) (int, string, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, "", err
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// The admin port on 0.0.0.0, as meshctl inject sets it: /config shows a
// ConfigFile's size and hash, never its content, and only to loopback;
// /gitsync and /ready never show the git URL's credentials; a foreign
// Host is refused; /quitquitquit needs X-Mesh-Admin: 1 and then drains.
func TestAdminPortSecrets(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	tok := m.Token(t, "default", "api", 1)
	applyDocs(t, m, `
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: 8080, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/api"]
---
apiVersion: minimesh.io/v1alpha1
kind: ConfigFile
metadata: {name: api-settings}
spec: {service: api, path: settings.ini, mode: 0600, content: "password=hunter2\n"}
`)
	app := startPathApp(t)
	listen := func(addr string) net.Listener {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	admL := listen("0.0.0.0:0")
	port := admL.Addr().(*net.TCPAddr).Port
	local := "http://127.0.0.1:" + itoa(port)
	sc, err := New(Config{
		ControlPlane: m.Addr, Token: tok.GetSecret(), CAPin: tok.GetCaPin(), Service: "api",
		App: app.addr, StateDir: t.TempDir(), SharedDir: t.TempDir(), InboundListener: listen("127.0.0.1:0"), AdminListener: admL,
		Roles:    RolesConfig{GitRepo: "https://bob:GITSECRET@127.0.0.1:1/site.git?access_token=QUERYSECRET", GitInterval: time.Hour},
		Registry: prometheus.NewRegistry(), AgentBackoffMax: 200 * time.Millisecond, Version: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sc.Run(context.Background()) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_, _, _ = adminDo(http.MethodPost, local+"/quitquitquit", "", map[string]string{"X-Mesh-Admin": "1"})
			<-done
		}
	})

	var body string
	waitFor(t, "the snapshot on /config", func() error {
		var code int
		code, body, err = adminDo(http.MethodGet, local+"/config", "", nil)
		if err == nil && code != http.StatusOK {
			err = &statusError{code, body}
		}
		return err
	})
	if strings.Contains(body, "hunter2") || !strings.Contains(body, "<redacted: 17 bytes, sha256 ") || !strings.Contains(body, "settings.ini") {
		t.Errorf("/config shows the ConfigFile's content, or not its path and size:\n%s", body)
	}
	code, body, err := adminDo(http.MethodGet, local+"/config?format=yaml", "", nil)
	if err != nil || code != http.StatusOK || strings.Contains(body, "hunter2") {
		t.Errorf("/config?format=yaml: %d %v\n%s", code, err, body)
	}
	waitFor(t, "a failed git sync", func() error {
		_, body, err = adminDo(http.MethodGet, local+"/gitsync", "", nil)
		if err == nil && !strings.Contains(body, "last_error") {
			err = &statusError{0, body}
		}
		return err
	})
	_, ready, _ := adminDo(http.MethodGet, local+"/ready", "", nil)
	for _, text := range []string{body, ready} {
		if strings.Contains(text, "GITSECRET") || strings.Contains(text, "QUERYSECRET") || strings.Contains(text, "bob") {
			t.Errorf("the git URL's credentials are shown:\n%s", text)
		}
	}
	if !strings.Contains(body, `https://\u003credacted\u003e@127.0.0.1:1/site.git`) {
		t.Errorf("/gitsync does not show the redacted URL:\n%s", body)
	}

	// DNS rebinding: a name that is not this server's.
	if code, _, err := adminDo(http.MethodGet, local+"/ready", "rebind.example:"+itoa(port), nil); err != nil || code != http.StatusMisdirectedRequest {
		t.Errorf("/ready with a foreign Host: %d %v, want 421", code, err)
	}
	if ip := nonLoopbackIP(); ip != "" {
		remote := "http://" + ip + ":" + itoa(port)
		for _, path := range []string{"/config", "/gitsync", "/topz", "/external"} {
			if code, body, err := adminDo(http.MethodGet, remote+path, "", nil); err != nil || code != http.StatusForbidden {
				t.Errorf("GET %s from the pod network: %d %v %q, want 403", path, code, err, body)
			}
		}
		// The kubelet's probe: Host is the pod IP and port.
		if code, _, err := adminDo(http.MethodGet, remote+"/healthz", "", nil); err != nil || code != http.StatusOK {
			t.Errorf("GET /healthz as the kubelet: %d %v", code, err)
		}
	} else {
		t.Log("no non-loopback address: the pod-network checks are skipped")
	}

	// A cross-site form POST cannot carry the header.
	if code, _, err := adminDo(http.MethodPost, local+"/quitquitquit", "", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"}); err != nil || code != http.StatusForbidden {
		t.Errorf("POST /quitquitquit without X-Mesh-Admin: %d %v, want 403", code, err)
	}
	select {
	case err := <-done:
		t.Fatalf("the proxy stopped: %v", err)
	default:
	}
	if code, _, err := adminDo(http.MethodPost, local+"/quitquitquit", "", map[string]string{"X-Mesh-Admin": "1"}); err != nil || code != http.StatusOK {
		t.Fatalf("POST /quitquitquit with X-Mesh-Admin: 1: %d %v", code, err)
	}
	if err := <-done; err != nil {
		t.Errorf("Run after /quitquitquit: %v", err)
	}
	stopped = true
}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return itoa(e.code) + ": " + e.body }

func itoa(n int) string { return strconv.Itoa(n) }
