package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"minimesh/certs"
	"minimesh/dataplane/applink"
)

// received is one request as the app read it.
type received struct {
	method, uri, host string
	header            http.Header
	tunnel            bool // read from a connection the app had switched (101)
}

// edgeApp is a real app that records every request it reads. It answers
// an upgrade to websocket with 101 and echoes the bytes that follow; any
// other upgrade (h2c, say) with 101 too, after which it reads the
// connection as HTTP/1.1 requests and records them as tunnelled: what an
// app would do that speaks the protocol it was offered.
type edgeApp struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []received
	raw  bytes.Buffer // every byte the app read, whether it could parse it or not
}

func newEdgeApp(t testing.TB) *edgeApp {
	t.Helper()
	a := &edgeApp{}
	a.Server = httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	a.Listener = rawListener{a.Listener, a}
	a.Start()
	t.Cleanup(a.Close)
	return a
}

// rawListener's connections copy what the app reads to a.raw.
type rawListener struct {
	net.Listener
	a *edgeApp
}

func (l rawListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return rawConn{c, l.a}, nil
}

type rawConn struct {
	net.Conn
	a *edgeApp
}

func (c rawConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.a.mu.Lock()
	c.a.raw.Write(p[:n])
	c.a.mu.Unlock()
	return n, err
}

// rawLen is how many bytes the app has read.
func (a *edgeApp) rawLen() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.raw.Len()
}

// rawSince is what the app read after its first n bytes.
func (a *edgeApp) rawSince(n int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return string(a.raw.Bytes()[n:])
}

func (a *edgeApp) record(r *http.Request, tunnel bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reqs = append(a.reqs, received{method: r.Method, uri: r.RequestURI, host: r.Host, header: r.Header.Clone(), tunnel: tunnel})
}

func (a *edgeApp) serve(w http.ResponseWriter, r *http.Request) {
	a.record(r, false)
	_, _ = io.Copy(io.Discard, r.Body)
	up := r.Header.Get("Upgrade")
	if up == "" {
		_, _ = io.WriteString(w, "ok "+r.RequestURI)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+up+"\r\n\r\n")
	if strings.EqualFold(up, "websocket") {
		buf := make([]byte, 64)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				_, _ = c.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}
	for {
		req, err := http.ReadRequest(brw.Reader)
		if err != nil {
			return
		}
		a.record(req, true)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ntunnel!\n")
	}
}

func (a *edgeApp) received() []received {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]received(nil), a.reqs...)
}

// sawPathSince reports whether the app read a request for a path starting
// with p, after its first n requests.
func (a *edgeApp) sawPathSince(n int, p string) bool {
	for _, r := range a.received()[n:] {
		if strings.HasPrefix(r.uri, p) {
			return true
		}
	}
	return false
}

// appEdge is an inbound and a public listener in front of one app, with one
// policy and one Metrics.
type appEdge struct {
	app             *edgeApp
	metrics         *Metrics
	inAddr, pubAddr string
	inTLS, pubTLS   *tls.Config // HTTP/1.1 only; Clone and set NextProtos for h2
	inbound         *Inbound
	public          *Public
}

const edgePolicy = `
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: edge}
spec:
  service: api
  rules:
  - {action: deny, methods: [DELETE]}
  - {action: deny, paths: [{prefix: /admin}]}
`

func startEdge(t *testing.T) *appEdge {
	t.Helper()
	e := &appEdge{app: newEdgeApp(t), metrics: newMetrics(t)}
	m := newMesh(t)
	log, _ := newLogger()
	inLn := listenLocal(t)
	in, err := NewInbound(InboundConfig{Listener: inLn, App: e.app.Listener.Addr().String(), SVID: m.api, Bundle: m.bundle,
		Metrics: e.metrics, Logger: log, Limits: Limits{Drain: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	cert, certPEM, keyPEM := selfSigned(t)
	certFile, keyFile := writeCert(t, t.TempDir(), certPEM, keyPEM)
	fc, err := certs.NewFileCertificate(certs.FileCertificateConfig{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	pubLn := listenLocal(t)
	pub, err := NewPublic(PublicConfig{Listener: pubLn, App: e.app.Listener.Addr().String(), Certificate: fc, Metrics: e.metrics, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := CompilePolicy(PolicyConfig{Service: "api"}, snapshot(t, edgePolicy), nil)
	if err != nil {
		t.Fatal(err)
	}
	in.SetPolicy(pol)
	pub.SetPolicy(pol)
	run(t, in)
	run(t, pub)
	e.inbound, e.public = in, pub
	e.inAddr, e.pubAddr = inLn.Addr().String(), pubLn.Addr().String()
	e.inTLS = certs.MTLSClientConfig(m.web, m.bundle, certs.AuthorizeID(spiffeid.RequireFromString(apiID)), certs.TLSOptions{})
	e.inTLS.NextProtos = []string{"http/1.1"}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	e.pubTLS = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}}
	return e
}

// listeners are the four ways into the app: each listener over HTTP/1.1
// and HTTP/2.
func (e *appEdge) listeners(t *testing.T) []edgeListener {
	h2 := func(c *tls.Config) *tls.Config { c = c.Clone(); c.NextProtos = []string{"h2"}; return c }
	return []edgeListener{
		{"inbound http1", ListenerInbound, e.inAddr, e.inTLS, tlsClient(t, e.inTLS.Clone(), false)},
		{"inbound http2", ListenerInbound, e.inAddr, h2(e.inTLS), tlsClient(t, h2(e.inTLS), true)},
		{"public http1", ListenerPublic, e.pubAddr, e.pubTLS, tlsClient(t, e.pubTLS.Clone(), false)},
		{"public http2", ListenerPublic, e.pubAddr, h2(e.pubTLS), tlsClient(t, h2(e.pubTLS), true)},
	}
}

type edgeListener struct {
	name, listener, addr string
	tls                  *tls.Config
	client               *http.Client
}

func (l edgeListener) do(t *testing.T, method, path, body string, h http.Header) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "https://"+l.addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := l.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s %s: %v", l.name, method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Methods are matched exactly, so a method spelled in lower case (which
// Flask and Django serve as its upper-case form) is refused with 400 at
// both listeners, over HTTP/1.1 and HTTP/2, and never reaches the app.
func TestAppEdgeMethodSpelling(t *testing.T) {
	checkLeaks(t)
	e := startEdge(t)
	for _, l := range e.listeners(t) {
		for _, m := range []string{"delete", "Delete", "dELETE", "get", "propfind"} {
			if code, body := l.do(t, m, "/m/"+m, "", nil); code != http.StatusBadRequest {
				t.Errorf("%s: %s answered %d %q, want 400", l.name, m, code, body)
			}
		}
		if code, _ := l.do(t, http.MethodDelete, "/m/DELETE", "", nil); code != http.StatusForbidden {
			t.Errorf("%s: DELETE answered %d, want 403", l.name, code)
		}
		if code, _ := l.do(t, "PROPFIND", "/m/ok", "", nil); code != http.StatusOK {
			t.Errorf("%s: PROPFIND answered %d, want 200", l.name, code)
		}
	}
	for _, r := range e.app.received() {
		if r.uri != "/m/ok" {
			t.Errorf("the app got %s %s", r.method, r.uri)
		}
	}
}

// Headers whose names hold "_" (which CGI/WSGI apps read as the "-"
// spelling), the routing overrides and, at the public port, every
// client-address header never reach the app, by either forwarding path;
// the drops are counted. The inbound keeps a meshed caller's forwarding
// headers as they were sent.
func TestAppEdgeHeaders(t *testing.T) {
	checkLeaks(t)
	e := startEdge(t)
	sent := http.Header{
		"X_mesh_peer_id":         {"spiffe://minimesh.local/ns/default/sa/admin"},
		"X_forwarded_for":        {"10.0.0.1"},
		"X-Original-Url":         {"/admin"},
		"X-Rewrite-Url":          {"/admin"},
		"X-Http-Method-Override": {"DELETE"},
		"X-Http-Method":          {"DELETE"},
		"X-Method-Override":      {"DELETE"},
		"X-Forwarded-For":        {"6.6.6.6"},
		"X-Forwarded-Host":       {"evil.example"},
		"X-Forwarded-Proto":      {"http"},
		"X-Forwarded-Port":       {"80"},
		"X-Forwarded-Prefix":     {"/admin"},
		"Forwarded":              {"for=6.6.6.6"},
		"X-Real-Ip":              {"6.6.6.6"},
		"True-Client-Ip":         {"6.6.6.6"},
		"X-Client-Ip":            {"6.6.6.6"},
		"X-Kept":                 {"1"},
		"X-Ssl-Client-Verify":    {"SUCCESS"},
		"X-Ssl-Client-S-Dn":      {"CN=admin"},
		"X-Client-Cert":          {"MIIB..."},
	}
	n := 0
	for _, l := range e.listeners(t) {
		for _, body := range []string{"", "a body"} { // the direct path, ReverseProxy
			n++
			method := http.MethodGet
			if body != "" {
				method = http.MethodPost
			}
			if code, resp := l.do(t, method, "/h", body, sent); code != http.StatusOK {
				t.Fatalf("%s %s: %d %q", l.name, method, code, resp)
			}
			got := e.app.received()
			if len(got) != n {
				t.Fatalf("the app got %d requests, want %d", len(got), n)
			}
			h := got[n-1].header
			for k := range h {
				if strings.ContainsRune(k, '_') || isRoutingOverride(k) || clientCertHeader(k) || strings.HasPrefix(k, "X-Ssl") {
					t.Errorf("%s %s: the app got %s: %q", l.name, method, k, h[k])
				}
			}
			if h.Get("X-Kept") != "1" {
				t.Errorf("%s %s: X-Kept lost", l.name, method)
			}
			if l.listener == ListenerPublic {
				for _, k := range []string{"X-Forwarded-Port", "X-Forwarded-Prefix", "Forwarded", "X-Real-Ip", "True-Client-Ip", "X-Client-Ip"} {
					if v, ok := h[k]; ok {
						t.Errorf("%s %s: the app got %s: %q from an outside client", l.name, method, k, v)
					}
				}
				if xff, xfh, xfp := h.Get("X-Forwarded-For"), h.Get("X-Forwarded-Host"), h.Get("X-Forwarded-Proto"); xff != "127.0.0.1" || xfh != e.pubAddr || xfp != "https" {
					t.Errorf("%s %s: X-Forwarded-For %q, -Host %q, -Proto %q", l.name, method, xff, xfh, xfp)
				}
				continue
			}
			if got := h.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "6.6.6.6" {
				t.Errorf("%s %s: X-Forwarded-For %q, want the caller's as sent", l.name, method, got)
			}
			for _, k := range []string{"X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port", "Forwarded", "X-Real-Ip"} {
				if h.Get(k) != sent.Get(k) {
					t.Errorf("%s %s: %s %q, want the meshed caller's %q", l.name, method, k, h.Get(k), sent.Get(k))
				}
			}
			if h.Get(HeaderPeerID) != webID {
				t.Errorf("%s %s: %s %q", l.name, method, HeaderPeerID, h.Get(HeaderPeerID))
			}
		}
	}
	for _, l := range []string{ListenerInbound, ListenerPublic} {
		if got := counterValue(t, e.metrics.headersDropped.WithLabelValues(l, dropUnderscore)); got != 8 {
			t.Errorf("%s: %v underscore headers counted, want 8", l, got)
		}
		if got := counterValue(t, e.metrics.headersDropped.WithLabelValues(l, dropOverride)); got != 20 {
			t.Errorf("%s: %v overrides counted, want 20", l, got)
		}
	}
}

// Request trailers a client declares reach the app (its Trailer field)
// only under names a header could have: no mesh name, none with "_".
func TestAppEdgeTrailers(t *testing.T) {
	checkLeaks(t)
	e := startEdge(t)
	for _, l := range []struct {
		name, addr string
		cfg        *tls.Config
	}{{"public", e.pubAddr, e.pubTLS}, {"inbound", e.inAddr, e.inTLS}} {
		before := e.app.rawLen()
		out := rawExchange(t, l.addr, l.cfg, "POST /t HTTP/1.1\r\nHost: api\r\nTrailer: X-Mesh-Peer-Id, X_Evil, X-Http-Method-Override, X-Sum\r\n"+
			"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nx\r\n0\r\nX-Mesh-Peer-Id: spiffe://evil\r\nX_Evil: 1\r\nX-Http-Method-Override: DELETE\r\nX-Sum: 1\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.1 200 ") {
			t.Fatalf("%s: %q", l.name, out)
		}
		raw := e.app.rawSince(before)
		for _, line := range strings.Split(raw, "\r\n") {
			if applink.HasPrefixFold(line, "Trailer:") && (strings.Contains(line, "Mesh") || strings.Contains(line, "_") || strings.Contains(line, "Override") || !strings.Contains(line, "X-Sum")) {
				t.Errorf("%s: the app got %q", l.name, line)
			}
		}
	}
}

// rawExchange writes raw on a new HTTP/1.1 connection to addr and returns
// everything the server answers until it closes the connection.
func rawExchange(t *testing.T, addr string, cfg *tls.Config, raw string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg.Clone())
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

// The public port checks HTTP/1.1 framing as the inbound does: a request
// framed ambiguously is refused, and nothing pipelined behind it reaches
// the app. Both listeners refuse a chunk extension that is not of the
// RFC 9112 grammar.
func TestAppEdgeFraming(t *testing.T) {
	checkLeaks(t)
	e := startEdge(t)
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"
	for _, tc := range []struct {
		name, raw string
		body      bool // a bad chunk: the head went on to the app
	}{
		{"bare LF", "GET /bad HTTP/1.1\nHost: api\n\n", false},
		{"duplicate Content-Length", "POST /bad HTTP/1.1\r\nHost: api\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", false},
		{"obs-fold", "GET /bad HTTP/1.1\r\nHost: api\r\nX-A: 1\r\n 2\r\n\r\n", false},
		{"obs-folded Transfer-Encoding", "POST /bad HTTP/1.1\r\nHost: api\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", false},
		{"Content-Length and Transfer-Encoding", "POST /bad HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
		{"chunk extension with a bare LF", "POST /bad HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nx\r\n0\r\n\r\n", true},
		{"chunk extension unterminated quote", "POST /bad HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"b\r\nx\r\n0\r\n\r\n", true},
		{"chunk extension without a name", "POST /bad HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n1;=b\r\nx\r\n0\r\n\r\n", true},
		{"chunk extension after whitespace", "POST /bad HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n1 ;a\r\nx\r\n0\r\n\r\n", true},
		{"malformed trailer", "POST /bad HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nno colon\r\n\r\n", true},
		{"chunk extension with a control", "POST /bad HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\x01\r\nx\r\n0\r\n\r\n", true},
	} {
		for _, l := range []struct {
			name, addr string
			cfg        *tls.Config
		}{{"public", e.pubAddr, e.pubTLS}, {"inbound", e.inAddr, e.inTLS}} {
			before := len(e.app.received())
			out := rawExchange(t, l.addr, l.cfg, tc.raw+smuggled)
			if strings.Contains(out, "ok /smuggled") || e.app.sawPathSince(before, "/smuggled") {
				t.Errorf("%s, %s: the request behind reached the app; answers %q", l.name, tc.name, out)
			}
			if !tc.body && len(e.app.received()) != before {
				t.Errorf("%s, %s: the app got %+v", l.name, tc.name, e.app.received()[before:])
			}
			if !strings.HasPrefix(out, "HTTP/1.1 400 ") && !strings.HasPrefix(out, "HTTP/1.1 502 ") && out != "" {
				t.Errorf("%s, %s: answered %q", l.name, tc.name, out)
			}
		}
	}
	// A well-formed extension, and a keep-alive connection, still pass.
	ok := "POST /fine HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n1; a = \"q\\\"x\" ;b\r\nx\r\n0\r\n\r\n" +
		"GET /fine2 HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"
	for _, addr := range []struct {
		a   string
		cfg *tls.Config
	}{{e.pubAddr, e.pubTLS}, {e.inAddr, e.inTLS}} {
		if out := rawExchange(t, addr.a, addr.cfg, ok); strings.Count(out, "HTTP/1.1 200 ") != 2 {
			t.Errorf("%s: %q", addr.a, out)
		}
	}
}

// An upgrade to anything but websocket is not forwarded: the app gets a
// plain request, so no 101 turns the connection into a tunnel past the
// policy. A WebSocket handshake still works, bytes both ways.
func TestAppEdgeUpgrades(t *testing.T) {
	checkLeaks(t)
	e := startEdge(t)
	for _, l := range []struct {
		name, addr, listener string
		cfg                  *tls.Config
	}{{"public", e.pubAddr, ListenerPublic, e.pubTLS}, {"inbound", e.inAddr, ListenerInbound, e.inTLS}} {
		before := len(e.app.received())
		out := rawExchange(t, l.addr, l.cfg,
			"GET /up HTTP/1.1\r\nHost: api\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"+
				"GET /admin HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
		got := e.app.received()[before:]
		if e.app.sawPathSince(before, "/admin") {
			t.Errorf("%s: a denied path reached the app after the upgrade: %q", l.name, out)
		}
		if len(got) != 1 || got[0].uri != "/up" || got[0].header.Get("Upgrade") != "" || got[0].header.Get("Http2-Settings") != "" {
			t.Errorf("%s: the app got %+v", l.name, got)
		}
		if !strings.HasPrefix(out, "HTTP/1.1 200 ") || !strings.Contains(out, "HTTP/1.1 403 ") {
			t.Errorf("%s: answers %q", l.name, out)
		}
		if n := counterValue(t, e.metrics.headersDropped.WithLabelValues(l.listener, dropUpgrade)); n != 1 {
			t.Errorf("%s: %v upgrades dropped, want 1", l.name, n)
		}

		// WebSocket: 101 through the proxy, then bytes both ways.
		c, err := tls.Dial("tcp", l.addr, l.cfg.Clone())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: api\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
			t.Fatalf("%s: websocket handshake: %v %v", l.name, resp, err)
		}
		for _, msg := range []string{"\x81\x04ping", "GET /admin HTTP/1.1\r\n\r\n"} {
			_, _ = io.WriteString(c, msg)
			echo := make([]byte, len(msg))
			if _, err := io.ReadFull(br, echo); err != nil || string(echo) != msg {
				t.Fatalf("%s: echo %q %v", l.name, echo, err)
			}
		}
		_ = c.Close()
	}
}

// h2Request sends one HTTP/2 request with the given header fields (in
// order, pseudo-headers first) on a new connection and returns the
// answer's :status and body.
func h2Request(t *testing.T, addr string, cfg *tls.Config, fields [][2]string) (status, body string) {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range fields {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 && status == "" {
				status = f.PseudoValue("status")
			}
			if f.StreamID == 1 && f.StreamEnded() {
				return status, b.String()
			}
		case *http2.DataFrame:
			if f.StreamID == 1 {
				b.Write(f.Data())
				if f.StreamEnded() {
					return status, b.String()
				}
			}
		case *http2.RSTStreamFrame:
			return "reset " + f.ErrCode.String(), b.String()
		case *http2.GoAwayFrame:
			return "goaway " + f.ErrCode.String(), b.String()
		}
	}
}

// An HTTP/2 :method or :authority that an HTTP/1.1 request line or Host
// field cannot carry is refused with 400 at both listeners and never
// reaches the app.
func TestAppEdgeH2PseudoHeaders(t *testing.T) {
	checkLeaks(t)
	e := startEdge(t)
	for _, l := range []struct {
		name, addr string
		cfg        *tls.Config
	}{{"public", e.pubAddr, e.pubTLS}, {"inbound", e.inAddr, e.inTLS}} {
		for _, tc := range []struct {
			method, authority, want string
		}{
			{"GET /admin", "api", "400"},
			{"GET", "api /admin", "400"},
			{"GET", "api/admin", "400"},
			{"GE(T", "api", "400"},
			{"delete", "api", "400"},
			{"GET", "api:8080", "200"},
		} {
			before := e.app.rawLen()
			got, body := h2Request(t, l.addr, l.cfg, [][2]string{
				{":method", tc.method}, {":scheme", "https"}, {":authority", tc.authority}, {":path", "/p2"},
			})
			if got != tc.want || tc.want == "400" && !strings.HasPrefix(body, "bad request ") {
				t.Errorf("%s: :method %q :authority %q answered %s %q, want %s from the proxy", l.name, tc.method, tc.authority, got, body, tc.want)
			}
			if raw := e.app.rawSince(before); tc.want != "200" && raw != "" {
				t.Errorf("%s: :method %q :authority %q: the app read %q", l.name, tc.method, tc.authority, raw)
			}
		}
		// A CONNECT is no request for the app: 405 at the public port,
		// 421 at the inbound (which tunnels to TCP ports only).
		before := e.app.rawLen()
		got, body := h2Request(t, l.addr, l.cfg, [][2]string{{":method", "CONNECT"}, {":authority", "evil.example:443"}})
		if want := map[string]string{"public": "405", "inbound": "421"}[l.name]; got != want {
			t.Errorf("%s: CONNECT answered %s %q, want %s", l.name, got, body, want)
		}
		if raw := e.app.rawSince(before); raw != "" {
			t.Errorf("%s: CONNECT: the app read %q", l.name, raw)
		}
		// TRACE from outside would have the app echo the request as it saw
		// it (cookies, the proxy's headers): 405 at the public port; an
		// authenticated caller's goes on.
		before = e.app.rawLen()
		got, body = h2Request(t, l.addr, l.cfg, [][2]string{{":method", "TRACE"}, {":scheme", "https"}, {":authority", "api"}, {":path", "/p2"}})
		raw := e.app.rawSince(before)
		switch l.name {
		case "public":
			if got != "405" || raw != "" {
				t.Errorf("public: TRACE answered %s %q, the app read %q; want 405 and nothing", got, body, raw)
			}
		case "inbound":
			if got != "200" || !strings.HasPrefix(raw, "TRACE /p2 ") {
				t.Errorf("inbound: TRACE answered %s %q, the app read %q; want it forwarded", got, body, raw)
			}
		}
	}
}

// The sanitizer's rules, request by request.
func TestSanitize(t *testing.T) {
	s := newSanitizer(newMetrics(t), ListenerInbound)
	for _, tc := range []struct {
		up, conn         []string
		wantUp, wantConn []string
	}{
		{[]string{"websocket"}, []string{"Upgrade"}, []string{"websocket"}, []string{"Upgrade"}},
		{[]string{"WebSocket"}, []string{"upgrade"}, []string{"WebSocket"}, []string{"upgrade"}},
		{[]string{"h2c"}, []string{"Upgrade, HTTP2-Settings"}, nil, []string{"HTTP2-Settings"}},
		{[]string{"h2c, websocket"}, []string{"Upgrade"}, []string{"websocket"}, []string{"Upgrade"}},
		{[]string{"TLS/1.2"}, []string{"upgrade"}, nil, nil},
		{[]string{"websocket", "h2c"}, nil, []string{"websocket"}, nil},
	} {
		r := &http.Request{Method: "GET", Host: "api", Header: http.Header{"Upgrade": tc.up}}
		if tc.conn != nil {
			r.Header["Connection"] = tc.conn
		}
		if err := s.sanitize(r); err != nil {
			t.Fatal(err)
		}
		if got := r.Header["Upgrade"]; strings.Join(got, "|") != strings.Join(tc.wantUp, "|") {
			t.Errorf("Upgrade %q: got %q, want %q", tc.up, got, tc.wantUp)
		}
		if got, ok := r.Header["Connection"]; strings.Join(got, "|") != strings.Join(tc.wantConn, "|") || ok != (tc.wantConn != nil) {
			t.Errorf("Upgrade %q, Connection %q: Connection %q, want %q", tc.up, tc.conn, got, tc.wantConn)
		}
	}
	for m, ok := range map[string]bool{"GET": true, "PROPFIND": true, "M-SEARCH": true, "get": false, "Post": false, "": false, "GET /x": false, "GÉT": false, "A\tB": false} {
		if err := checkMethod(m); (err == nil) != ok {
			t.Errorf("checkMethod(%q) = %v", m, err)
		}
	}
	r := &http.Request{Method: "GET", Host: "api", Header: http.Header{"X-A": {"1"}, "X-Forwarded-For": {"10.0.0.1", "10.0.0.2"}}, RemoteAddr: "127.0.0.1:5555"}
	if n := testing.AllocsPerRun(100, func() { _ = s.sanitize(r) }); n != 0 {
		t.Errorf("sanitize allocates %v times on a plain request", n)
	}
	// The direct path passes a meshed caller's X-Forwarded-For as sent.
	var out strings.Builder
	bw := bufio.NewWriter(&out)
	r.URL = &url.URL{Path: "/"}
	(&applink.Head{Addr: "app"}).Write(bw, r)
	_ = bw.Flush()
	if !strings.Contains(out.String(), "\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n") {
		t.Errorf("head %q", out.String())
	}
	bw.Reset(io.Discard)
	if n := testing.AllocsPerRun(100, func() { (&applink.Head{Addr: "app"}).Write(bw, r) }); n != 0 {
		t.Errorf("the direct head allocates %v times", n)
	}
}
