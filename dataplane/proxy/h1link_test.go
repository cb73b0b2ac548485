package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
	"minimesh/certs/certstest"
	meshv1 "minimesh/proto/mesh/v1"
)

// alpnListener counts the connections it accepts by the protocol their
// client offers in its ClientHello (sent in the clear): the outbound's
// HTTP/1.1 pool offers only "http/1.1", its HTTP/2 link only "h2". It also
// counts the connections closed by the server.
type alpnListener struct {
	net.Listener
	h1, h2, closed atomic.Int64
}

func (l *alpnListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, l: l}, nil
}

type sniffConn struct {
	net.Conn
	l       *alpnListener
	hello   []byte
	decided bool
	once    sync.Once
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.decided && n > 0 {
		c.hello = append(c.hello, p[:n]...)
		switch {
		case bytes.Contains(c.hello, []byte("\x08http/1.1")):
			c.l.h1.Add(1)
			c.decided = true
		case bytes.Contains(c.hello, []byte("\x02h2")):
			c.l.h2.Add(1)
			c.decided = true
		case len(c.hello) > 4096:
			c.decided = true
		}
		if c.decided {
			c.hello = nil
		}
	}
	return n, err
}

func (c *sniffConn) Close() error {
	c.once.Do(func() { c.l.closed.Add(1) })
	return c.Conn.Close()
}

// gatedApp answers each request with the caller's identity once the gate
// opens (nil: at once), counting the requests that arrived.
type gatedApp struct {
	*httptest.Server
	arrived atomic.Int64
	gate    atomic.Pointer[chan struct{}]
}

func newGatedApp(t *testing.T) *gatedApp {
	t.Helper()
	a := &gatedApp{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.arrived.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		if g := a.gate.Load(); g != nil {
			<-*g
		}
		_, _ = io.WriteString(w, r.Header.Get(HeaderPeerID))
	}))
	t.Cleanup(a.Close)
	return a
}

// hold makes requests wait until the function it returns is called.
func (a *gatedApp) hold() (release func()) {
	g := make(chan struct{})
	a.gate.Store(&g)
	var once sync.Once
	return func() { once.Do(func() { a.gate.Store(nil); close(g) }) }
}

func (a *gatedApp) asApp() *app { return &app{Server: a.Server} }

// h1Mesh is web's outbound (static endpoint) in front of api's inbound
// (its listener counting connections by protocol) in front of a gated app.
func h1Mesh(t *testing.T, inLimits Limits) (m *mesh, a *gatedApp, in *Inbound, inLn *alpnListener, url string, metrics *Metrics) {
	t.Helper()
	m, a, metrics = newMesh(t), newGatedApp(t), newMetrics(t)
	inLn = &alpnListener{Listener: listenLocal(t)}
	log, _ := newLogger()
	if inLimits.Drain == 0 {
		inLimits.Drain = 5 * time.Second
	}
	var err error
	in, err = NewInbound(InboundConfig{Listener: inLn, App: a.asApp().addr(), SVID: m.api, Bundle: m.bundle,
		Metrics: metrics, Logger: log, Limits: inLimits, RecheckEvery: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	run(t, in)
	outLn, logs := startOutbound(t, m, inLn.Addr().String(), apiID, metrics)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("outbound's log:\n%s", logs)
		}
	})
	return m, a, in, inLn, "http://" + outLn.Addr().String(), metrics
}

// send makes one request through the outbound and returns an error unless
// it was answered 200 with web's identity (the peer identity the inbound
// gave the app).
func send(c *http.Client, method, url string) error {
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("order")
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(b) != webID {
		return fmt.Errorf("%s %s: %d %q", method, url, resp.StatusCode, b)
	}
	return nil
}

// concurrently sends n GETs at once and returns the errors.
func concurrently(c *http.Client, n int, url string) []error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range n {
		wg.Go(func() {
			if err := send(c, http.MethodGet, url); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errs
}

// Requests for an http port go between the proxies over HTTP/1.1
// connections that are reused: sequential requests take one connection;
// requests held at the app at the same time take one each, and are
// served again over the same ones afterwards. The app sees the caller's
// identity as over HTTP/2.
func TestMeshLinkHTTP1Reused(t *testing.T) {
	checkLeaks(t)
	_, a, _, inLn, url, metrics := h1Mesh(t, Limits{})
	c := plainClient(t)
	for i := range 20 {
		method := http.MethodGet
		if i%2 == 1 {
			method = http.MethodPost
		}
		if err := send(c, method, url+"/seq"); err != nil {
			t.Fatal(err)
		}
	}
	if h1, h2 := inLn.h1.Load(), inLn.h2.Load(); h1 != 1 || h2 != 0 {
		t.Fatalf("20 sequential requests: %d HTTP/1.1 and %d HTTP/2 connections, want 1 and 0", h1, h2)
	}
	// 64 requests held at the app together need 64 connections (one
	// request each), the first one reused; never more.
	release := a.hold()
	defer release() // a failed wait must not leave the app holding requests (Close would wait for them)
	var errs []error
	done := make(chan struct{})
	go func() { errs = concurrently(c, 64, url+"/par"); close(done) }()
	eventually(t, "64 requests at the app", func() bool { return a.arrived.Load() == 20+64 })
	release()
	<-done
	for _, err := range errs {
		t.Error(err)
	}
	if h1, h2 := inLn.h1.Load(), inLn.h2.Load(); h1 != 64 || h2 != 0 {
		t.Fatalf("64 concurrent requests: %d HTTP/1.1 and %d HTTP/2 connections, want 64 and 0", h1, h2)
	}
	// They stay in the pool: 64 more, concurrent, open none.
	if errs := concurrently(c, 64, url+"/again"); len(errs) > 0 {
		t.Fatal(errs)
	}
	if h1 := inLn.h1.Load(); h1 != 64 {
		t.Errorf("after 64 more requests: %d connections, want the same 64", h1)
	}
	if got := requests(t, metrics, ListenerInbound, "2xx"); got != 20+64+64 {
		t.Errorf("inbound 2xx = %v, want %d", got, 20+64+64)
	}
}

// The pool is bounded: 200 requests at once to one remote open at most 64
// HTTP/1.1 connections; the others wait for one of them. One kept
// waiting while all 64 are held (a long poll, say) goes over the HTTP/2
// connection after a second instead (meshlink.DefaultPoolWait).
func TestMeshLinkHTTP1Bounded(t *testing.T) {
	checkLeaks(t)
	_, a, _, inLn, url, _ := h1Mesh(t, Limits{})
	c := plainClient(t)
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = 200
	if errs := concurrently(c, 200, url+"/burst"); len(errs) > 0 {
		t.Fatal(errs)
	}
	if h1 := inLn.h1.Load(); h1 > 64 || h1 < 1 {
		t.Fatalf("200 concurrent requests: %d HTTP/1.1 connections, want 1 to 64", h1)
	}
	// Overflow: all 64 held at the app, one more request arrives there
	// all the same, over HTTP/2.
	before, h2Before := a.arrived.Load(), inLn.h2.Load()
	release := a.hold()
	defer release() // a failed wait must not leave the app holding requests (Close would wait for them)
	defer release()
	var errs []error
	done := make(chan struct{})
	go func() { errs = concurrently(c, 65, url+"/held"); close(done) }()
	eventually(t, "65 requests at the app while 64 are held", func() bool { return a.arrived.Load() == before+65 })
	release()
	<-done
	for _, err := range errs {
		t.Error(err)
	}
	// (The burst above may have overflowed too, if a request waited a
	// second on a loaded machine: HTTP/2 then has its connection already.)
	if h1, h2 := inLn.h1.Load(), inLn.h2.Load(); h1 != 64 || h2 < 1 || h2 > h2Before+1 {
		t.Errorf("%d HTTP/1.1 and %d HTTP/2 connections (%d before), want 64 and 1", h1, h2, h2Before)
	}
}

// The remote inbound closes idle connections (its idle timeout, a
// restart): the pool finds each closed connection before using it, or,
// when the close crosses the request, sends an idempotent request again
// on a new connection. No request fails, with or without a body.
func TestMeshLinkHTTP1RemoteClosesIdle(t *testing.T) {
	checkLeaks(t)
	_, _, _, inLn, url, _ := h1Mesh(t, Limits{Idle: 50 * time.Millisecond})
	c := plainClient(t)
	const n = 6
	for i := range n {
		method := http.MethodGet
		if i%2 == 1 {
			method = http.MethodPost
		}
		if err := send(c, method, url+"/idle"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		eventually(t, "the inbound closes the idle connection", func() bool { return inLn.closed.Load() == int64(i+1) })
	}
	if h1 := inLn.h1.Load(); h1 != n {
		t.Errorf("%d connections for %d requests, each after the last was closed: want %d", h1, n, n)
	}
}

// Revocation over the pool. The outbound's revocations close its pooled
// connections to the revoked remote and refuse new ones; the inbound's
// close the revoked caller's pooled connection, and the pool's next
// connection is refused at the handshake: nothing reaches the app.
func TestMeshLinkHTTP1Revocation(t *testing.T) {
	checkLeaks(t)
	t.Run("outbound revokes the remote", func(t *testing.T) {
		m, a, _, inLn, _, metrics := h1Mesh(t, Limits{})
		log, _ := newLogger()
		ln := listenLocal(t)
		out, err := NewOutbound(OutboundConfig{
			Upstreams: []Upstream{{Name: "api", Listener: ln, Remote: inLn.Addr().String(), ID: spiffeid.RequireFromString(apiID)}},
			SVID:      m.web, Bundle: m.bundle, Metrics: metrics, Logger: log, Limits: Limits{Drain: 5 * time.Second},
		})
		if err != nil {
			t.Fatal(err)
		}
		run(t, out)
		url := "http://" + ln.Addr().String()
		c := plainClient(t)
		for range 3 {
			if err := send(c, http.MethodGet, url+"/before"); err != nil {
				t.Fatal(err)
			}
		}
		if h1 := inLn.h1.Load(); h1 != 1 {
			t.Fatalf("%d connections before, want 1", h1)
		}
		pol, err := CompilePolicy(PolicyConfig{Service: "web"}, &meshv1.Snapshot{Version: "1", RevokedSerials: []string{serialOf(m.api.Current())}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		out.SetRevocations(pol.Revocations())
		if n := counterValue(t, metrics.revokedConns.WithLabelValues(ListenerOutbound, closeRevoked)); n != 1 {
			t.Errorf("%v pooled connections closed as revoked, want 1", n)
		}
		eventually(t, "the pooled connection closed", func() bool { return inLn.closed.Load() == 1 })
		hits := a.arrived.Load()
		if err := send(c, http.MethodGet, url+"/after"); err == nil {
			t.Fatal("a request to the revoked remote was served")
		}
		if a.arrived.Load() != hits {
			t.Error("a request reached the revoked remote's app")
		}
		if n := handshakeFailures(t, metrics, ListenerOutbound, ReasonRevoked); n < 1 {
			t.Errorf("refused handshakes counted: %v", n)
		}
	})
	t.Run("inbound revokes the caller", func(t *testing.T) {
		m, a, in, inLn, url, metrics := h1Mesh(t, Limits{})
		c := plainClient(t)
		for range 3 {
			if err := send(c, http.MethodPost, url+"/before"); err != nil {
				t.Fatal(err)
			}
		}
		pol, err := CompilePolicy(PolicyConfig{Service: "api"}, &meshv1.Snapshot{Version: "1", RevokedSerials: []string{serialOf(m.web.Current())}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		in.SetPolicy(pol)
		eventually(t, "the revoked caller's connection closed", func() bool { return inLn.closed.Load() == 1 })
		hits := a.arrived.Load()
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			if err := send(c, method, url+"/after"); err == nil {
				t.Fatalf("%s by the revoked caller was served", method)
			}
		}
		if a.arrived.Load() != hits {
			t.Error("a request of the revoked caller reached the app")
		}
		if n := handshakeFailures(t, metrics, ListenerInbound, ReasonRevoked); n < 1 {
			t.Errorf("refused handshakes counted at the inbound: %v", n)
		}
	})
}

// A root rotation under load over the pool: both sides trust both roots,
// SVIDs move to the new root (pooled connections keep working: no new
// connection), then the old root is dropped: connections made under it
// are closed (by the inbound's recheck and the outbound's), the pool dials
// new ones under the new root, and no request fails.
func TestMeshLinkHTTP1RootRotation(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	ca2, both := m.secondRoot(t)
	inBundle, outBundle := certs.NewBundleSource(both), certs.NewBundleSource(both)
	a, metrics := newGatedApp(t), newMetrics(t)
	inLn := &alpnListener{Listener: listenLocal(t)}
	log, _ := newLogger()
	in, err := NewInbound(InboundConfig{Listener: inLn, App: a.asApp().addr(), SVID: m.api, Bundle: inBundle,
		Metrics: metrics, Logger: log, Limits: Limits{Drain: 5 * time.Second}, RecheckEvery: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	run(t, in)
	ln := listenLocal(t)
	out, err := NewOutbound(OutboundConfig{
		Upstreams: []Upstream{{Name: "api", Listener: ln, Remote: inLn.Addr().String(), ID: spiffeid.RequireFromString(apiID)}},
		SVID:      m.web, Bundle: outBundle, Metrics: metrics, Logger: log, Limits: Limits{Drain: 5 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, out)
	url := "http://" + ln.Addr().String() + "/load"
	c := plainClient(t)
	// Four connections, one per client of the load below.
	release := a.hold()
	defer release() // a failed wait must not leave the app holding requests (Close would wait for them)
	warm := make(chan []error)
	go func() { warm <- concurrently(c, 4, url) }()
	eventually(t, "four requests at the app", func() bool { return a.arrived.Load() == 4 })
	release()
	if errs := <-warm; len(errs) > 0 {
		t.Fatal(errs)
	}
	const opened = 4

	// Load: four clients, one request at a time each, until stopped.
	stop := make(chan struct{})
	var failed atomic.Int64
	var sent atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				if err := send(c, http.MethodGet, url); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	waitSent := func(what string, n int64) {
		from := sent.Load()
		eventually(t, what, func() bool { return sent.Load() >= from+n })
	}
	waitSent("load before the rotation", 50)
	if n := inLn.h1.Load(); n != opened {
		t.Fatalf("%d connections for four clients, want %d", n, opened)
	}
	// SVIDs of the new root: the connections already open go on.
	m.web.Set(certstest.SVID(t, ca2, webID))
	m.api.Set(certstest.SVID(t, ca2, apiID))
	waitSent("load across the SVID rotation", 50)
	if n := inLn.h1.Load(); n != opened {
		t.Errorf("the SVID rotation opened %d connections, want none", n-opened)
	}
	// The old root leaves both bundles: its connections close, new ones
	// are made under the new root.
	inBundle.Set(ca2.Bundle())
	outBundle.Set(ca2.Bundle())
	eventually(t, "the old root's connections closed", func() bool { return inLn.closed.Load() >= opened })
	waitSent("load after the old root was dropped", 50)
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed across the rotation; first: %v", n, sent.Load(), *firstErr.Load())
	}
	if n := inLn.h1.Load(); n <= opened {
		t.Errorf("no new connection after the old root was dropped (%d)", n)
	}
	if n := inLn.h2.Load(); n != 0 {
		t.Errorf("%d HTTP/2 connections, want 0", n)
	}
}

// MeshLink: a bad value, in the field or the environment, names itself;
// "h2" from the environment sends http ports over HTTP/2.
func TestMeshLinkConfig(t *testing.T) {
	m := newMesh(t)
	cfg := OutboundConfig{SVID: m.web, Bundle: m.bundle, MeshLink: "spdy"}
	if _, err := NewOutbound(cfg); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), `MeshLink "spdy"`) {
		t.Errorf("MeshLink spdy: %v", err)
	}
	cfg.MeshLink = ""
	t.Setenv(EnvMeshLink, "http3")
	if _, err := NewOutbound(cfg); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), EnvMeshLink) {
		t.Errorf("$%s=http3: %v", EnvMeshLink, err)
	}
	cfg.MaxLinkConns = -1
	cfg.MeshLink = MeshLinkH2
	if _, err := NewOutbound(cfg); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "MaxLinkConns") {
		t.Errorf("MaxLinkConns -1: %v", err)
	}

	t.Setenv(EnvMeshLink, MeshLinkH2)
	checkLeaks(t)
	_, _, _, inLn, url, _ := h1Mesh(t, Limits{})
	c := plainClient(t)
	if errs := concurrently(c, 8, url+"/h2"); len(errs) > 0 {
		t.Fatal(errs)
	}
	if h1, h2 := inLn.h1.Load(), inLn.h2.Load(); h1 != 0 || h2 != 1 {
		t.Errorf("$%s=h2: %d HTTP/1.1 and %d HTTP/2 connections, want 0 and 1", EnvMeshLink, h1, h2)
	}
}
