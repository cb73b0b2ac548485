package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"

	"minimesh/certs"
	"minimesh/dataplane/applink"
)

func TestDirectable(t *testing.T) {
	get := httptest.NewRequest(http.MethodGet, "/", nil)
	post := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("x"))
	emptyPost := httptest.NewRequest(http.MethodPost, "/", nil)
	upgrade := httptest.NewRequest(http.MethodGet, "/", nil)
	upgrade.Header.Set("Upgrade", "websocket")
	expect := httptest.NewRequest(http.MethodGet, "/", nil)
	expect.Header.Set("Expect", "100-continue")
	for _, tc := range []struct {
		r    *http.Request
		want bool
	}{{get, true}, {emptyPost, true}, {post, false}, {upgrade, false}, {expect, false}} {
		if got := applink.Directable(tc.r); got != tc.want {
			t.Errorf("%s with %v, body %d: directable %v, want %v", tc.r.Method, tc.r.Header, tc.r.ContentLength, got, tc.want)
		}
	}
}

// The app sees the same head from the direct path (a GET) as from
// ReverseProxy (a POST with a body): hop-by-hop headers, those Connection
// names and mesh headers dropped, Te: trailers kept, repeated fields and the
// raw query as sent, the forwarding headers each listener sets.
func TestDirectPathHeadMatchesReverseProxy(t *testing.T) {
	checkLeaks(t)
	a := newApp(t)
	m := newMesh(t)
	inLn := listenLocal(t)
	startInbound(t, m, a, newMetrics(t), inLn)
	pubLn, pubTLS := startPublic(t, a.addr())

	for _, tc := range []struct {
		name   string
		client *http.Client
		url    string
		public bool
	}{
		{"public http1", tlsClient(t, pubTLS.Clone(), false), "https://" + pubLn.Addr().String(), true},
		{"public http2", tlsClient(t, pubTLS.Clone(), true), "https://" + pubLn.Addr().String(), true},
		{"inbound http1", mtlsClient(t, m.web, m.bundle, apiID, false), "https://" + inLn.Addr().String(), false},
		{"inbound http2", mtlsClient(t, m.web, m.bundle, apiID, true), "https://" + inLn.Addr().String(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			send := func(method, body string) seen {
				t.Helper()
				req, _ := http.NewRequest(method, tc.url+"/p/a%20b/./c?q=1&r=2;s", strings.NewReader(body))
				if body == "" {
					req.Body = nil
				}
				h := req.Header
				h["X-Multi"] = []string{"a", "b"}
				h.Set("Te", "trailers")
				h.Set("Proxy-Authorization", "Basic c2VjcmV0")
				h.Set("X-Mesh-Fake", "1")
				h.Set("X-Forwarded-Client-Cert", "By=spiffe://evil")
				h.Set("X-Forwarded-For", "6.6.6.6")
				h.Set("X-Request-Id", "req-1")
				h["X_mesh_peer_id"] = []string{"spiffe://evil"}
				h.Set("X-Http-Method-Override", "DELETE")
				h.Set("Cookie", "a=1; b=2") // Go's HTTP/2 client sends two fields
				if !strings.HasSuffix(tc.name, "http2") {
					h.Set("Connection", "X-Hop")
					h.Set("X-Hop", "1")
					h.Set("Keep-Alive", "timeout=5")
				}
				resp, err := tc.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var s seen
				if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("%s: %d %v", method, resp.StatusCode, err)
				}
				return s
			}
			direct, proxied := send(http.MethodGet, ""), send(http.MethodPost, "body")
			if got := direct.Header["Cookie"]; !slices.Equal(got, []string{"a=1; b=2"}) {
				t.Errorf("the app got Cookie %q, want one field", got)
			}
			for _, s := range []*seen{&direct, &proxied} {
				delete(s.Header, "Content-Length")
				delete(s.Header, "Cookie") // ReverseProxy passes HTTP/2's split fields on as they are
			}
			if direct.Path != proxied.Path || direct.Query != proxied.Query || direct.Host != proxied.Host || !maps.EqualFunc(direct.Header, proxied.Header, slices.Equal) {
				t.Errorf("the app saw\ndirect: %s?%s %v\nproxied: %s?%s %v", direct.Path, direct.Query, direct.Header, proxied.Path, proxied.Query, proxied.Header)
			}
			if direct.Query != "q=1" {
				t.Errorf("query %q, want q=1 (the parameter with \";\" dropped, as ReverseProxy does)", direct.Query)
			}
			h := direct.Header
			for _, k := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization", "X-Mesh-Fake", "X-Forwarded-Client-Cert", "Connection", "X_mesh_peer_id", "X-Http-Method-Override"} {
				if v, ok := h[k]; ok {
					t.Errorf("the app got %s: %q", k, v)
				}
			}
			if !slices.Equal(h["X-Multi"], []string{"a", "b"}) || h.Get("Te") != "trailers" || h.Get("X-Request-Id") != "req-1" {
				t.Errorf("X-Multi %q, Te %q, X-Request-Id %q", h["X-Multi"], h.Get("Te"), h.Get("X-Request-Id"))
			}
			// The inbound passes a meshed caller's X-Forwarded-For as
			// sent; the public port replaces it (sanitize.go).
			wantXFF, wantPeer := "6.6.6.6", webID
			if tc.public {
				wantXFF, wantPeer = "127.0.0.1", ""
				if h.Get("X-Forwarded-Proto") != "https" || h.Get("X-Forwarded-Host") != pubLn.Addr().String() {
					t.Errorf("X-Forwarded-Proto %q, -Host %q", h.Get("X-Forwarded-Proto"), h.Get("X-Forwarded-Host"))
				}
			}
			if got := h.Get("X-Forwarded-For"); got != wantXFF {
				t.Errorf("X-Forwarded-For %q, want %q", got, wantXFF)
			}
			if got := h.Get(HeaderPeerID); got != wantPeer {
				t.Errorf("%s %q, want %q", HeaderPeerID, got, wantPeer)
			}
		})
	}
}

// startHeadApp is an app on plain loopback that keeps each request's head
// as it came off the wire (headRemote's serve, without TLS) and answers 200
// "ok".
func startHeadApp(t *testing.T) *headRemote {
	t.Helper()
	r := &headRemote{ln: listenLocal(t), heads: make(chan string, 16), conns: map[net.Conn]bool{}}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := r.ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns[c] = true
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = r.ln.Close()
		r.mu.Lock()
		for c := range r.conns {
			_ = c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// The app reads the same request line and fields off the wire from the
// inbound's and the public port's direct path (a GET without a body) as
// from their ReverseProxy path (the same GET with a body); only the order
// of different names may differ (ReverseProxy sorts them). The cases are
// where the two once differed: forwarding headers a caller's Connection
// names (ReverseProxy's Rewrite puts them back, so a meshed caller's pass
// and the public port's own are never removed), a query that cleans to
// nothing (no "?"), and Connection and Te matched with ASCII case folding
// and RFC 9110's trimming only, as http.Header.Del and
// httpguts.HeaderValuesContainsToken do (a KELVIN SIGN is not a "k", a
// LONG S not an "s", a no-break space is not trimmed).
func TestDirectPathWireHeadMatchesReverseProxy(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	a := startHeadApp(t)
	inLn := listenLocal(t)
	log, _ := newLogger()
	in, err := NewInbound(InboundConfig{Listener: inLn, App: a.addr(), SVID: m.api, Bundle: m.bundle,
		Metrics: newMetrics(t), Logger: log, Limits: Limits{Drain: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, in)
	pubLn, pubTLS := startPublic(t, a.addr())
	type listener struct {
		name   string
		url    string
		public bool
		client [2]*http.Client // HTTP/1.1, HTTP/2
	}
	listeners := []listener{
		{"inbound", "https://" + inLn.Addr().String(), false,
			[2]*http.Client{mtlsClient(t, m.web, m.bundle, apiID, false), mtlsClient(t, m.web, m.bundle, apiID, true)}},
		{"public", "https://" + pubLn.Addr().String(), true,
			[2]*http.Client{tlsClient(t, pubTLS.Clone(), false), tlsClient(t, pubTLS.Clone(), true)}},
	}

	type fields = map[string][]string
	for _, tc := range []struct {
		name   string
		target string
		header map[string]string
		h2     bool // also over HTTP/2 (which carries no Connection)
		check  func(t *testing.T, l listener, f fields, line string)
	}{
		{"forwarding headers named by Connection", "/fwd",
			map[string]string{"Connection": "X-Forwarded-For, x-forwarded-host,X-Forwarded-Proto , forwarded, X-Hop",
				"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "shop", "X-Forwarded-Proto": "http", "Forwarded": "for=6.6.6.6", "X-Hop": "1"},
			false,
			func(t *testing.T, l listener, f fields, line string) {
				want := fields{"X-Forwarded-For": {"6.6.6.6"}, "X-Forwarded-Host": {"shop"}, "X-Forwarded-Proto": {"http"}, "Forwarded": {"for=6.6.6.6"}}
				if l.public {
					want = fields{"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Host": {strings.TrimPrefix(l.url, "https://")}, "X-Forwarded-Proto": {"https"}, "Forwarded": nil}
				}
				for k, v := range want {
					if !slices.Equal(f[k], v) {
						t.Errorf("%s %q, want %q", k, f[k], v)
					}
				}
				if f["X-Hop"] != nil || f["Connection"] != nil {
					t.Errorf("X-Hop %q, Connection %q: want neither", f["X-Hop"], f["Connection"])
				}
			}},
		{"a query that cleans to nothing", "/q?a;b", nil, true,
			func(t *testing.T, l listener, f fields, line string) {
				if line != "GET /q HTTP/1.1" {
					t.Errorf("request line %q, want no query", line)
				}
			}},
		{"an empty query", "/q?", nil, true,
			func(t *testing.T, l listener, f fields, line string) {
				if line != "GET /q? HTTP/1.1" {
					t.Errorf("request line %q, want the \"?\" kept", line)
				}
			}},
		{"Connection and Te with Unicode folding and trimming", "/fold",
			map[string]string{"Connection": "X-\u212aey, X-Nbsp\u00a0, x-HOP", "X-Key": "1", "X-Nbsp": "1", "X-Hop": "1", "Te": "trailer\u017f"},
			false,
			func(t *testing.T, l listener, f fields, line string) {
				if !slices.Equal(f["X-Key"], []string{"1"}) || !slices.Equal(f["X-Nbsp"], []string{"1"}) || f["X-Hop"] != nil || f["Te"] != nil {
					t.Errorf("X-Key %q, X-Nbsp %q (want both), X-Hop %q, Te %q (want neither)", f["X-Key"], f["X-Nbsp"], f["X-Hop"], f["Te"])
				}
			}},
	} {
		for _, l := range listeners {
			for proto, c := range l.client {
				if proto == 1 && !tc.h2 {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/http%d", tc.name, l.name, proto+1), func(t *testing.T) {
					var heads [2]wireHead
					for i, body := range []string{"", "body"} { // the direct path, then ReverseProxy's
						req, err := http.NewRequest(http.MethodGet, l.url+tc.target, strings.NewReader(body))
						if err != nil {
							t.Fatal(err)
						}
						if body == "" {
							req.Body = nil
						}
						req.Header.Set(HeaderRequestID, "req-1") // else each path makes its own
						for k, v := range tc.header {
							req.Header[k] = []string{v}
						}
						resp, err := c.Do(req)
						if err != nil {
							t.Fatal(err)
						}
						got, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK || string(got) != "ok" {
							t.Fatalf("%d %q", resp.StatusCode, got)
						}
						select {
						case s := <-a.heads:
							heads[i] = parseWireHead(t, s)
						default:
							t.Fatal("the app read no request")
						}
					}
					d, p := heads[0], heads[1]
					if p.body != "body" || !slices.Equal(p.fields["Content-Length"], []string{"4"}) || d.body != "" || d.fields["Content-Length"] != nil {
						t.Fatalf("not one direct and one proxied request: bodies %q and %q", d.body, p.body)
					}
					delete(p.fields, "Content-Length")
					tc.check(t, l, d.fields, d.line)
					if d.line != p.line || !maps.EqualFunc(d.fields, p.fields, slices.Equal) {
						t.Errorf("the app read\ndirect:  %q %q\nproxied: %q %q", d.line, d.fields, p.line, p.fields)
					}
				})
			}
		}
	}
}

// The app's answer through the direct path: hop-by-hop fields dropped,
// repeated fields kept, 1xx passed on, a stream flushed as it comes,
// trailers delivered, and a body cut midway seen as an error.
func TestDirectPathResponse(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch r.URL.Path {
		case "/fields":
			h.Set("Connection", "X-Resp-Hop")
			h.Set("X-Resp-Hop", "1")
			h["X-Multi"] = []string{"a", "b"}
			h.Set("Link", "</s.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			h.Del("Link")
			h.Set("Trailer", "X-Sum")
			w.WriteHeader(http.StatusTeapot)
			_, _ = io.WriteString(w, "body")
			h.Set("X-Sum", "42")
		case "/stream":
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			_, _ = io.WriteString(w, " second")
		case "/cut":
			conn, bw, _ := w.(http.Hijacker).Hijack()
			_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
			_ = bw.Flush()
			_ = conn.Close()
		}
	}))
	defer a.Close()
	pubLn, pubTLS := startPublic(t, a.Listener.Addr().String())
	url := "https://" + pubLn.Addr().String()

	for _, h2 := range []bool{false, true} {
		c := tlsClient(t, pubTLS.Clone(), h2)
		var hints []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, h.Get("Link"))
			return nil
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url+"/fields", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTeapot || string(body) != "body" {
			t.Fatalf("h2 %v: %d %q", h2, resp.StatusCode, body)
		}
		if _, ok := resp.Header["X-Resp-Hop"]; ok {
			t.Errorf("h2 %v: a field the app's Connection named reached the client", h2)
		}
		if !slices.Equal(resp.Header["X-Multi"], []string{"a", "b"}) || resp.Trailer.Get("X-Sum") != "42" || !slices.Equal(hints, []string{"</s.css>; rel=preload"}) {
			t.Errorf("h2 %v: X-Multi %q, trailer X-Sum %q, 103 hints %q", h2, resp.Header["X-Multi"], resp.Trailer.Get("X-Sum"), hints)
		}

		cut, err := c.Get(url + "/cut")
		if err == nil {
			_, err = io.ReadAll(cut.Body)
			cut.Body.Close()
		}
		if err == nil {
			t.Errorf("h2 %v: a body the app cut midway reached the client whole", h2)
		}
	}

	// The first part of a stream arrives before the app sends the rest.
	resp, err := tlsClient(t, pubTLS.Clone(), false).Get(url + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, len("first"))
	got := make(chan error, 1)
	go func() { _, err := io.ReadFull(resp.Body, first); got <- err }()
	select {
	case err := <-got:
		if err != nil || string(first) != "first" {
			t.Fatalf("first part: %q %v", first, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream's first part was held back")
	}
	close(release)
	if rest, err := io.ReadAll(resp.Body); err != nil || string(rest) != " second" {
		t.Fatalf("rest: %q %v", rest, err)
	}
}

// The service's policy applies at the public listener to clients without
// an identity: a rule for everyone denies them, a rule naming a source
// never matches them, the path the app gets is the normalized one, and a
// rate limit counts them all as one source.
func TestPublicAppliesPolicy(t *testing.T) {
	checkLeaks(t)
	a := newApp(t)
	log, _ := newLogger()
	cert, certPEM, keyPEM := selfSigned(t)
	certFile, keyFile := writeCert(t, t.TempDir(), certPEM, keyPEM)
	fc, err := certs.NewFileCertificate(certs.FileCertificateConfig{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	ln := listenLocal(t)
	pub, err := NewPublic(PublicConfig{Listener: ln, App: a.addr(), Certificate: fc, Metrics: newMetrics(t), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	run(t, pub)
	pol, err := CompilePolicy(PolicyConfig{Service: "api"}, snapshot(t, `
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: pub}
spec:
  service: api
  rules:
  - {action: deny, paths: [{prefix: /admin}]}
  - {action: allow, from: ["spiffe://minimesh.local/ns/default/sa/web"], paths: [{prefix: /web-only}]}
  - {action: allow, paths: [{prefix: /open}], methods: [GET, POST]}
---
apiVersion: minimesh.io/v1alpha1
kind: RateLimit
metadata: {name: pub}
spec: {service: api, requestsPerSecond: 0.001, burst: 2, perSourceIdentity: true}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	pub.SetPolicy(pol)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	c := tlsClient(t, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}, false)
	url := "https://" + ln.Addr().String()

	for _, tc := range []struct {
		method, path string
		want         int
		appPath      string
	}{
		{http.MethodGet, "/admin/x", http.StatusForbidden, ""},
		{http.MethodGet, "/web-only", http.StatusForbidden, ""}, // a rule naming a source
		{http.MethodGet, "/open/../admin", http.StatusForbidden, ""},
		{http.MethodGet, "/open/a/./b", http.StatusOK, "/open/a/b"},
		{http.MethodPost, "/open/c", http.StatusOK, "/open/c"},
		{http.MethodGet, "/open/d", http.StatusTooManyRequests, ""}, // past the burst of 2
	} {
		var body io.Reader
		if tc.method == http.MethodPost {
			body = strings.NewReader("body")
		}
		req, _ := http.NewRequest(tc.method, url+tc.path, body)
		req.URL.Opaque = "//" + ln.Addr().String() + tc.path // sent as written, not cleaned
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var s seen
		_ = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if resp.StatusCode != tc.want || s.Path != tc.appPath {
			t.Errorf("%s %s: %d, app saw %q; want %d, %q", tc.method, tc.path, resp.StatusCode, s.Path, tc.want, tc.appPath)
		}
	}
	if got := counterValue(t, pub.enf.decisions.deny); got != 3 {
		t.Errorf("%v denials counted, want 3", got)
	}
}

// The request line written to the app is always one line of three fields,
// whatever bytes an HTTP/2 :path left in the query.
func TestDirectRequestLine(t *testing.T) {
	for _, tc := range []struct{ query, want string }{
		{"a=1&b=2", "GET /p?a=1&b=2 HTTP/1.1"},
		{"a b", "GET /p?a%20b HTTP/1.1"},
		{"x=\x7f\x01é", "GET /p?x=%7F%01%C3%A9 HTTP/1.1"},
		{"b=2;c=3&a=1", "GET /p?a=1 HTTP/1.1"}, // re-encoded as ReverseProxy does
		{"a=%zz&b=1", "GET /p?b=1 HTTP/1.1"},
		{"a;b", "GET /p HTTP/1.1"}, // cleaned to nothing: no "?", as ReverseProxy
	} {
		r := httptest.NewRequest(http.MethodGet, "/p", nil)
		r.URL.RawQuery = tc.query
		var b strings.Builder
		bw := bufio.NewWriter(&b)
		(&applink.Head{Addr: "127.0.0.1:1"}).Write(bw, r)
		_ = bw.Flush()
		if line, _, _ := strings.Cut(b.String(), "\r\n"); line != tc.want {
			t.Errorf("query %q: request line %q, want %q", tc.query, line, tc.want)
		}
	}
}
