package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"minimesh/certs"
	"minimesh/dataplane/balancer"
)

// headRemote stands where a remote proxy's inbound is: mTLS with api's
// SVID, ALPN http/1.1 only (so the outbound's pool carries every request),
// and it keeps each request's head as it came off the wire. It answers 200
// "ok"; on /early it first sends a 103 and answers with a field its
// Connection names. A hanging one reads heads and never answers.
type headRemote struct {
	ln    net.Listener
	heads chan string
	hang  bool
	hits  atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func startHeadRemote(t *testing.T, m *mesh, hang bool) *headRemote {
	t.Helper()
	cfg := certs.MTLSServerConfig(m.api, m.bundle, nil, certs.TLSOptions{})
	cfg.NextProtos = []string{"http/1.1"}
	r := &headRemote{ln: tls.NewListener(listenLocal(t), cfg), heads: make(chan string, 256), hang: hang, conns: map[net.Conn]bool{}}
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

func (r *headRemote) addr() string { return r.ln.Addr().String() }

func (r *headRemote) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		// The body, by its Content-Length, goes after the head.
		var n int64
		for _, l := range strings.Split(head.String(), "\r\n") {
			if v, ok := strings.CutPrefix(l, "Content-Length: "); ok {
				n, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		if _, err := io.CopyN(&head, br, n); err != nil {
			return
		}
		r.hits.Add(1)
		r.heads <- head.String()
		if r.hang {
			continue // never answers; the outbound gives up and closes
		}
		answer := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		switch {
		case strings.HasPrefix(head.String(), "HEAD "):
			answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
		case strings.HasPrefix(head.String(), "GET /early"):
			answer = "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nConnection: X-Resp-Hop\r\nX-Resp-Hop: 1\r\nX-Multi: a\r\nX-Multi: b\r\nContent-Length: 2\r\n\r\nok"
		}
		if _, err := io.WriteString(c, answer); err != nil {
			return
		}
	}
}

// wireHead is a request head as read off the wire: its request line, its
// fields by name with their values in order, and the names in order; and
// the body after it.
type wireHead struct {
	line   string
	fields map[string][]string
	names  []string
	body   string
}

func parseWireHead(t *testing.T, s string) wireHead {
	t.Helper()
	s, body, _ := strings.Cut(s, "\r\n\r\n")
	lines := strings.Split(s, "\r\n")
	h := wireHead{line: lines[0], fields: map[string][]string{}, body: body}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			k, v, ok = strings.Cut(l, ":")
		}
		if !ok {
			t.Fatalf("field line %q in\n%s", l, s)
		}
		h.fields[k] = append(h.fields[k], v)
		h.names = append(h.names, k)
	}
	return h
}

// outboundPair is two outbounds of web towards one remote (a table with
// api's http port): one sends by the direct path, the other through
// ReverseProxy only.
func outboundPair(t *testing.T, m *mesh, eps []string, routes string) (direct, proxied *Outbound, directURL, proxiedURL string) {
	t.Helper()
	tab, err := CompileTable(TableConfig{}, snapshot(t, `
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: 8080, protocol: http}]
  servingIdentities: ["`+apiID+`"]
`+routes, eps...))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(noDirect bool) (*Outbound, string) {
		ln := listenLocal(t)
		log, _ := newLogger()
		o, err := NewOutbound(OutboundConfig{Upstreams: []Upstream{{Name: "api", Listener: ln}}, SVID: m.web, Bundle: m.bundle,
			Logger: log, Metrics: newMetrics(t), Limits: Limits{Drain: time.Second}, Outlier: balancer.Config{ConsecutiveFailures: 2}})
		if err != nil {
			t.Fatal(err)
		}
		o.noDirect, o.directs = noDirect, new(atomic.Int64)
		o.Install(tab)
		run(t, o)
		return o, ln.Addr().String()
	}
	direct, directURL = mk(false)
	proxied, proxiedURL = mk(true)
	return direct, proxied, directURL, proxiedURL
}

// rawOutExchange writes raw to addr on a new connection and reads the answers
// up to the final one: the 1xx codes and fields first, then the final
// response with its body.
func rawOutExchange(t *testing.T, addr, raw string) (early []http.Header, resp *http.Response, body string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // a hang fails, it does not time
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if resp.StatusCode >= 200 {
			break
		}
		early = append(early, resp.Header)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%q: body: %v", raw, err)
	}
	return early, resp, string(b)
}

// The remote reads the same head from the outbound's direct path as from
// its ReverseProxy path, hostile requests included: hop-by-hop fields and
// the fields Connection names gone (but never the mesh headers the outbound
// sets, nor the forwarding headers, which ReverseProxy's Rewrite puts
// back), repeated fields in order, the app's mesh headers stripped,
// X-Request-Id kept only when it is one valid value, the Host as sent (the
// service's name without one), the query cleaned alike. Only the order of
// different names may differ (ReverseProxy sorts them). A body of known
// length follows as sent. The answer's 1xx
// reach the app and its hop-by-hop fields do not, on both paths.
func TestOutboundDirectHeadMatchesReverseProxy(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	remote := startHeadRemote(t, m, false)
	direct, proxied, directAddr, proxiedAddr := outboundPair(t, m, []string{"default/api " + remote.addr() + " " + apiID}, "")

	type fields = map[string][]string
	for _, tc := range []struct {
		name  string
		raw   string
		check func(t *testing.T, f fields, line string)
	}{
		{"hop-by-hop smuggling via Connection",
			"GET /hop HTTP/1.1\r\nHost: api\r\nConnection: keep-alive, X-Hop , x-request-id,X-Forwarded-For, X-Mesh-Target, user-agent, x-mesh-target\r\n" +
				"X-Hop: 1\r\nX-Request-Id: app-1\r\nX-Forwarded-For: 6.6.6.6\r\nUser-Agent: app/1\r\nKeep-Alive: timeout=5\r\n" +
				"Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nTe: deflate, trailers\r\nX-Kept: yes\r\n\r\n",
			func(t *testing.T, f fields, line string) {
				for _, k := range []string{"X-Hop", "Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "User-Agent"} {
					if v, ok := f[k]; ok {
						t.Errorf("the remote got %s: %q", k, v)
					}
				}
				if !slices.Equal(f["Te"], []string{"trailers"}) || !slices.Equal(f["X-Forwarded-For"], []string{"6.6.6.6"}) ||
					!slices.Equal(f["X-Kept"], []string{"yes"}) || len(f[HeaderTarget]) != 1 {
					t.Errorf("Te %q, X-Forwarded-For %q, X-Kept %q, %s %q", f["Te"], f["X-Forwarded-For"], f["X-Kept"], HeaderTarget, f[HeaderTarget])
				}
				if id := f[HeaderRequestID]; len(id) != 1 || id[0] == "app-1" || !validRequestID(id[0]) {
					t.Errorf("X-Request-Id %q: want a new one (Connection named the app's)", id)
				}
			}},
		{"mesh headers from the app",
			"GET /mesh?x=%zz&y=1 HTTP/1.1\r\nHost: api.default:8080\r\nX-Mesh-Target: 127.0.0.1:22\r\nX-Mesh-Peer-Id: spiffe://evil\r\n" +
				"x-mesh-lower: 1\r\nX-Forwarded-Client-Cert: By=spiffe://evil\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n\r\n",
			func(t *testing.T, f fields, line string) {
				for k, v := range f {
					if strings.HasPrefix(strings.ToLower(k), "x-mesh-") && k != HeaderTarget || k == "X-Forwarded-Client-Cert" {
						t.Errorf("the remote got %s: %q", k, v)
					}
				}
				if v := f[HeaderTarget]; len(v) != 1 || v[0] == "127.0.0.1:22" {
					t.Errorf("%s %q: want the outbound's one", HeaderTarget, v)
				}
				if id := f[HeaderRequestID]; len(id) != 1 || id[0] == "a" || id[0] == "b" {
					t.Errorf("X-Request-Id %q: want a new one (two were sent)", id)
				}
				if line != "GET /mesh?y=1 HTTP/1.1" || !slices.Equal(f["Host"], []string{"api.default:8080"}) {
					t.Errorf("%q, Host %q", line, f["Host"])
				}
			}},
		{"duplicates and a POST without body",
			"POST /a%2Fb/./%7e/%C3%BC?k=v&k=w HTTP/1.1\r\nHost: API.Default\r\nContent-Length: 0\r\nX-Multi: a\r\nX-Multi: b\r\nX-Multi: c, d\r\n" +
				"Cookie: a=1\r\nCookie: b=2\r\nX-Empty:\r\nX-Request-Id: keep-me-1\r\nUser-Agent: app/1.0\r\nUser-Agent: second\r\n" +
				"Forwarded: for=1.2.3.4\r\nX-Forwarded-Host: shop\r\nX_mesh_peer_id: spiffe://evil\r\n\r\n",
			func(t *testing.T, f fields, line string) {
				if line != "POST /a%2Fb/./%7e/%C3%BC?k=v&k=w HTTP/1.1" {
					t.Errorf("request line %q", line)
				}
				if !slices.Equal(f["X-Multi"], []string{"a", "b", "c, d"}) || !slices.Equal(f["Cookie"], []string{"a=1", "b=2"}) ||
					!slices.Equal(f["User-Agent"], []string{"app/1.0"}) || !slices.Equal(f[HeaderRequestID], []string{"keep-me-1"}) ||
					!slices.Equal(f["Content-Length"], []string{"0"}) || !slices.Equal(f["X-Empty"], []string{""}) {
					t.Errorf("X-Multi %q, Cookie %q, User-Agent %q, X-Request-Id %q, Content-Length %q, X-Empty %q",
						f["X-Multi"], f["Cookie"], f["User-Agent"], f[HeaderRequestID], f["Content-Length"], f["X-Empty"])
				}
			}},
		{"a body of known length",
			"PUT /put HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX-Mesh-Target: 127.0.0.1:22\r\n\r\nhello",
			func(t *testing.T, f fields, line string) {
				if !slices.Equal(f["Content-Length"], []string{"5"}) || f["X-Hop"] != nil || slices.Contains(f[HeaderTarget], "127.0.0.1:22") {
					t.Errorf("Content-Length %q, X-Hop %q, %s %q", f["Content-Length"], f["X-Hop"], HeaderTarget, f[HeaderTarget])
				}
			}},
		{"absolute-form target",
			"GET http://api.default/abs/%2e%2e/x?y=1 HTTP/1.1\r\nHost: other\r\n\r\n",
			func(t *testing.T, f fields, line string) {
				if line != "GET /abs/%2e%2e/x?y=1 HTTP/1.1" || !slices.Equal(f["Host"], []string{"api.default"}) {
					t.Errorf("%q, Host %q", line, f["Host"])
				}
			}},
		{"HTTP/1.0 without Host",
			"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
			func(t *testing.T, f fields, line string) {
				if !slices.Equal(f["Host"], []string{"api.default"}) || line != "GET /old HTTP/1.1" {
					t.Errorf("%q, Host %q: want the service's name", line, f["Host"])
				}
			}},
		{"a 1xx and the answer's hop-by-hop fields",
			"GET /early HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
			func(t *testing.T, f fields, line string) {
				if _, ok := f["Connection"]; ok {
					t.Errorf("the app's Connection: close reached the remote: %q", f["Connection"])
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var heads [2]wireHead
			for i, addr := range []string{directAddr, proxiedAddr} {
				early, resp, body := rawOutExchange(t, addr, tc.raw)
				if resp.StatusCode != http.StatusOK || body != "ok" {
					t.Fatalf("%d %q", resp.StatusCode, body)
				}
				if strings.Contains(tc.raw, "/early") {
					if len(early) != 1 || early[0].Get("Link") != "</s.css>; rel=preload" || resp.Header.Get("X-Resp-Hop") != "" ||
						!slices.Equal(resp.Header["X-Multi"], []string{"a", "b"}) {
						t.Errorf("path %d: 1xx %v; answer %v", i, early, resp.Header)
					}
				}
				select {
				case s := <-remote.heads:
					heads[i] = parseWireHead(t, s)
				default:
					t.Fatal("the remote read no request")
				}
			}
			d, p := heads[0], heads[1]
			if d.names[0] != "Host" || p.names[0] != "Host" {
				t.Errorf("Host is not the first field: direct %q, proxied %q", d.names, p.names)
			}
			tc.check(t, d.fields, d.line)
			if d.fields[HeaderRequestID][0] != p.fields[HeaderRequestID][0] {
				// Each made its own: compare them as made.
				if !validRequestID(p.fields[HeaderRequestID][0]) {
					t.Errorf("proxied X-Request-Id %q", p.fields[HeaderRequestID])
				}
				delete(d.fields, HeaderRequestID)
				delete(p.fields, HeaderRequestID)
			}
			if d.line != p.line || !maps.EqualFunc(d.fields, p.fields, slices.Equal) || d.body != p.body {
				t.Errorf("the remote read\ndirect:  %q %q %q\nproxied: %q %q %q", d.line, d.fields, d.body, p.line, p.fields, p.body)
			}
			if _, want, _ := strings.Cut(tc.raw, "\r\n\r\n"); d.body != want {
				t.Errorf("body %q, want %q", d.body, want)
			}
		})
	}

	// An h2c app: a :path whose query holds a space, fields as HTTP/2
	// carries them.
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	var heads [2]wireHead
	for i, addr := range []string{directAddr, proxiedAddr} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/h2", nil)
		req.URL.RawQuery = "a b=1&c=%41"
		req.Host = "api"
		req.Header.Set("Cookie", "a=1; b=2")
		req.Header["X-Multi"] = []string{"a", "b"}
		req.Header.Set("Te", "trailers")
		req.Header.Set("X-Mesh-Peer-Id", "spiffe://evil")
		resp, err := h2c.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Fatalf("h2c: %d %s", resp.StatusCode, resp.Proto)
		}
		heads[i] = parseWireHead(t, <-remote.heads)
	}
	d, p := heads[0], heads[1]
	delete(d.fields, HeaderRequestID)
	delete(p.fields, HeaderRequestID)
	if d.line != "GET /h2?a%20b=1&c=%41 HTTP/1.1" || !slices.Equal(d.fields["Te"], []string{"trailers"}) || d.fields["X-Mesh-Peer-Id"] != nil {
		t.Errorf("h2c: %q, Te %q, X-Mesh-Peer-Id %q", d.line, d.fields["Te"], d.fields["X-Mesh-Peer-Id"])
	}
	if d.line != p.line || !maps.EqualFunc(d.fields, p.fields, slices.Equal) {
		t.Errorf("h2c: the remote read\ndirect:  %q %q\nproxied: %q %q", d.line, d.fields, p.line, p.fields)
	}
	if n, want := direct.directs.Load(), int64(8); n != want || proxied.directs.Load() != 0 {
		t.Errorf("direct path taken %d times (want %d) and %d times by the ReverseProxy-only outbound", n, want, proxied.directs.Load())
	}
}

// On the direct path a route's retries, per-try timeouts and outlier
// ejection work as on ReverseProxy's: with one of two endpoints never
// answering, every GET, HEAD and PUT (its body kept for the retry) ends 200
// on the other (tried again after its try timed out), and the silent one
// is ejected.
func TestOutboundDirectRetriesAndTimeouts(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	silent, ok := startHeadRemote(t, m, true), startHeadRemote(t, m, false)
	direct, _, url, _ := outboundPair(t, m, []string{"default/api " + silent.addr() + " " + apiID, "default/api " + ok.addr() + " " + apiID}, `
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: api}
spec:
  service: api
  backends: [{service: api}]
  retries: {attempts: 1, perTryTimeout: 200ms, retryOn: [gateway-error], budget: {percent: 100, minRetriesPerSecond: 1000}}
`)
	c := plainClient(t)
	// Each request picks either endpoint with even odds until the silent
	// one is ejected: that none of 20 tried it first has odds 2^-20.
	for i := range 21 {
		method, body := http.MethodGet, io.Reader(nil)
		switch i % 3 {
		case 1:
			method = http.MethodHead
		case 2:
			method, body = http.MethodPut, strings.NewReader(fmt.Sprint("body ", i))
		}
		req, _ := http.NewRequestWithContext(context.Background(), method, "http://"+url+fmt.Sprint("/r", i), body)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %d: %d", method, i, resp.StatusCode)
		}
	}
	if silent.hits.Load() == 0 || requests(t, direct.cfg.Metrics, ListenerOutbound, "2xx") != 21 {
		t.Fatalf("the silent endpoint was tried %d times; outbound 2xx %v", silent.hits.Load(), requests(t, direct.cfg.Metrics, ListenerOutbound, "2xx"))
	}
	if n := direct.directs.Load(); n != 21 {
		t.Errorf("%d requests by the direct path, want 21", n)
	}
	// Every PUT reached the answering remote whole, a retried one too.
	var puts int
	for len(ok.heads) > 0 {
		h := parseWireHead(t, <-ok.heads)
		if strings.HasPrefix(h.line, "PUT ") {
			puts++
			if _, path, _ := strings.Cut(h.line, " /r"); h.body != "body "+strings.TrimSuffix(path, " HTTP/1.1") {
				t.Errorf("%s: body %q", h.line, h.body)
			}
		}
	}
	if puts != 7 {
		t.Errorf("%d PUTs reached the answering remote, want 7", puts)
	}
	if silent.hits.Load() > 2 {
		t.Errorf("the silent endpoint was tried %d times: not ejected after 2 timeouts", silent.hits.Load())
	}
}

// An app whose body ends short of its Content-Length (it went away) ends
// the direct path's exchange at once, as ReverseProxy's: the remote, which
// waits for the rest, is not held until the response-header timeout, and
// never sees a whole request.
func TestOutboundDirectBodyCutShort(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	remote := startHeadRemote(t, m, false)
	direct, proxied, directAddr, proxiedAddr := outboundPair(t, m, []string{"default/api " + remote.addr() + " " + apiID}, "")
	for i, addr := range []string{directAddr, proxiedAddr} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second)) // a hang fails, it does not time
		_, _ = io.WriteString(c, "PUT /cut HTTP/1.1\r\nHost: api\r\nContent-Length: 100\r\n\r\nshort")
		_ = c.(*net.TCPConn).CloseWrite()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("path %d: %d, want 502", i, resp.StatusCode)
			}
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("path %d: the exchange was held: %v", i, err)
		}
		c.Close()
	}
	if n := remote.hits.Load(); n != 0 {
		t.Errorf("the remote read %d whole requests, want none", n)
	}
	if direct.directs.Load() != 1 || proxied.directs.Load() != 0 {
		t.Errorf("direct path taken %d and %d times, want 1 and 0", direct.directs.Load(), proxied.directs.Load())
	}
}
