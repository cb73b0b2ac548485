package proxy

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/dataplane/edge"
)

// plainExchange writes raw to a new connection to addr and returns the
// answers read until the server closes it (within 20s).
func plainExchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// The outbound's app-facing ports (an upstream port and the Host-routed
// one) are served by dataplane/h1's loop for HTTP/1.1 and net/http's
// server for h2c, through edge.ServeSplitPlain; MESH_PROXY_HTTP1=nethttp
// puts net/http back for both. Checked in both modes: keep-alive requests
// routed by the port they came in on (the upstream's ConnContext sees its
// connection), h2c with prior knowledge, an h2c Upgrade request answered
// as before, a silent client and one that sends part of the preface and
// closes while others are served (closed unanswered; net/http answered
// that one 400). In our mode, the loop's rules apply at the outbound
// (HTTP/1.2: 505; net/http took it for HTTP/1.1).
func TestOutboundAppPortsSplitServe(t *testing.T) {
	upgrades := map[string]string{}
	for _, mode := range []string{"own", "nethttp"} {
		t.Run(mode, func(t *testing.T) {
			t.Setenv(edge.HTTP1Env, mode)
			checkLeaks(t)
			m, a := newMesh(t), newApp(t)
			inLn := listenLocal(t)
			startInbound(t, m, a, newMetrics(t), inLn)
			appPort := portOfAddr(t, a.addr())
			upLn, hostLn := listenLocal(t), listenLocal(t)
			log, logs := newLogger()
			defer func() {
				if t.Failed() {
					t.Log(logs.String())
				}
			}()
			out, err := NewOutbound(OutboundConfig{
				Upstreams:    []Upstream{{Name: "api", Listener: upLn, Service: "api", Namespace: "default", Port: appPort, Remote: inLn.Addr().String(), ID: spiffeid.RequireFromString(apiID)}},
				HTTPListener: hostLn,
				SVID:         m.web, Bundle: m.bundle, Logger: log,
				Limits: Limits{Drain: time.Second, ReadHeader: 300 * time.Millisecond},
			})
			if err != nil {
				t.Fatal(err)
			}
			tab, err := CompileTable(TableConfig{}, snapshot(t, `
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: `+strconv.Itoa(int(appPort))+`, protocol: http}]
  servingIdentities: ["`+apiID+`"]
`, "default/api "+inLn.Addr().String()+" "+apiID))
			if err != nil {
				t.Fatal(err)
			}
			out.Install(tab)
			run(t, out)
			up, host := upLn.Addr().String(), hostLn.Addr().String()

			// A silent client and one stopped inside the preface wait while
			// the others are served, and are closed unanswered.
			silent, err := net.Dial("tcp", up)
			if err != nil {
				t.Fatal(err)
			}
			defer silent.Close()
			prefix, err := net.Dial("tcp", host)
			if err != nil {
				t.Fatal(err)
			}
			defer prefix.Close()
			_, _ = io.WriteString(prefix, "PRI * HTTP/2.0\r\n")

			// Keep-alive: two requests on one connection, whatever their
			// Host, go to the upstream's service; on the Host-routed port,
			// the Host chooses (a name the mesh does not know: 502).
			got := plainExchange(t, up, "GET /one HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n"+
				"GET /two HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n")
			if strings.Count(got, "HTTP/1.1 200 ") != 2 || !strings.Contains(got, `"path":"/one"`) || !strings.Contains(got, `"path":"/two"`) {
				t.Fatalf("upstream port, keep-alive: %q", got)
			}
			if got := plainExchange(t, host, "GET /h HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 200 ") || !strings.Contains(got, `"path":"/h"`) {
				t.Fatalf("Host-routed port: %q", got)
			}
			if got := plainExchange(t, host, "GET /h HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 502 ") {
				t.Fatalf("Host-routed port, unknown Host: %q", got)
			}

			// h2c with prior knowledge (how gRPC apps call).
			h2c := &http.Transport{Protocols: new(http.Protocols)}
			h2c.Protocols.SetUnencryptedHTTP2(true)
			defer h2c.CloseIdleConnections()
			for _, addr := range []string{up, host} {
				req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/h2c", nil)
				req.Host = "api"
				resp, err := h2c.RoundTrip(req)
				if err != nil {
					t.Fatalf("h2c to %s: %v", addr, err)
				}
				var s seen
				_ = json.NewDecoder(resp.Body).Decode(&s)
				resp.Body.Close()
				if resp.StatusCode != 200 || resp.ProtoMajor != 2 || s.Path != "/h2c" {
					t.Fatalf("h2c to %s: %d %s, app saw %q", addr, resp.StatusCode, resp.Proto, s.Path)
				}
			}

			// An h2c Upgrade: answered as net/http's server answered it.
			got = plainExchange(t, up, "GET /up HTTP/1.1\r\nHost: api\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
				"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /after HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
			upgrades[mode] = normalizeAnswers(got)

			// HTTP/1.2: our loop refuses it (505, nothing sent on);
			// net/http took it for HTTP/1.1.
			hits := a.hits.Load()
			got = plainExchange(t, up, "GET /v12 HTTP/1.2\r\nHost: api\r\nConnection: close\r\n\r\n")
			if want := map[string]string{"own": "HTTP/1.1 505 ", "nethttp": "HTTP/1.1 200 "}[mode]; !strings.HasPrefix(got, want) {
				t.Errorf("HTTP/1.2: %q, want %s", got, want)
			}
			if sent := a.hits.Load() != hits; sent != (mode == "nethttp") {
				t.Errorf("HTTP/1.2: reached the app: %v", sent)
			}

			// A client that sends part of the preface and closes.
			short, err := net.Dial("tcp", up)
			if err != nil {
				t.Fatal(err)
			}
			defer short.Close()
			_ = short.SetDeadline(time.Now().Add(20 * time.Second))
			_, _ = io.WriteString(short, "PRI * HT")
			_ = short.(*net.TCPConn).CloseWrite()
			for name, c := range map[string]net.Conn{"silent": silent, "inside the preface": prefix, "short": short} {
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				b, err := io.ReadAll(bufio.NewReader(c))
				if name == "short" && mode == "nethttp" && strings.HasPrefix(string(b), "HTTP/1.1 400 ") {
					continue // net/http answers a truncated head; our loop, as on the TLS ports, does not
				}
				if err != nil || len(b) != 0 {
					t.Errorf("%s client: read %q, %v; want closed unanswered", name, b, err)
				}
			}
		})
	}
	t.Logf("an h2c Upgrade: %s", upgrades["own"])
	if upgrades["own"] != upgrades["nethttp"] || upgrades["own"] == "" {
		t.Errorf("an h2c Upgrade is answered\nown:     %q\nnethttp: %q", upgrades["own"], upgrades["nethttp"])
	}
}

// normalizeAnswers keeps the status lines and the app's echoed paths of a
// raw exchange, which do not change between runs.
func normalizeAnswers(raw string) string {
	var b strings.Builder
	br := bufio.NewReader(strings.NewReader(raw))
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return b.String()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var s seen
		_ = json.Unmarshal(body, &s)
		b.WriteString(resp.Status + " " + s.Path + " upgrade=" + s.Header.Get("Upgrade") + ";")
	}
}
