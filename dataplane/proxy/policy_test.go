package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
	"minimesh/certs/certstest"
	meshv1 "minimesh/proto/mesh/v1"
)

// startPolicyInbound runs an Inbound for api in front of a (a new app
// when nil) that rechecks the bundle often.
func startPolicyInbound(t *testing.T, m *mesh, bundle *certs.BundleSource, metrics *Metrics, a *app) (*Inbound, string) {
	t.Helper()
	log, _ := newLogger()
	ln := listenLocal(t)
	if a == nil {
		a = newApp(t)
	}
	in, err := NewInbound(InboundConfig{Listener: ln, App: a.addr(), SVID: m.api, Bundle: bundle,
		Metrics: metrics, Logger: log, Limits: Limits{Drain: 5 * time.Second}, RecheckEvery: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	run(t, in)
	return in, ln.Addr().String()
}

// secondRoot makes another root CA of the trust domain and returns it
// with a bundle holding both roots (the mesh's own stays as it was).
func (m *mesh) secondRoot(t *testing.T) (*certs.CA, *x509bundle.Bundle) {
	t.Helper()
	ca2, err := certs.NewCA(certs.CAConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("minimesh.local")})
	if err != nil {
		t.Fatal(err)
	}
	both := m.ca.Bundle()
	both.AddX509Authority(ca2.Root())
	return ca2, both
}

// closedByPeer reports whether the server closed c: a read ends with EOF
// (or a reset) rather than the deadline.
func closedByPeer(c *tls.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestBundleDropClosesUnverifiedConnections: when the root that verified
// a peer leaves the trust bundle, its open (idle) connection is closed;
// a peer of the root that stays keeps its connection.
func TestBundleDropClosesUnverifiedConnections(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	ca2, both := m.secondRoot(t)
	bundle := certs.NewBundleSource(both)
	metrics := newMetrics(t)
	_, addr := startPolicyInbound(t, m, bundle, metrics, nil)

	web2 := certs.NewSVIDSource(nil)
	web2.Set(certstest.SVID(t, ca2, webID))
	clientBundle := certs.NewBundleSource(both)
	old := dialKeepAlive(t, addr, certs.MTLSClientConfig(m.web, clientBundle, certs.AuthorizeID(spiffeid.RequireFromString(apiID)), certs.TLSOptions{}))
	kept := dialKeepAlive(t, addr, certs.MTLSClientConfig(web2, clientBundle, certs.AuthorizeID(spiffeid.RequireFromString(apiID)), certs.TLSOptions{}))
	if code, _ := old.do(t, "/a"); code != 200 {
		t.Fatalf("old root's peer: %d", code)
	}
	if code, _ := kept.do(t, "/a"); code != 200 {
		t.Fatalf("new root's peer: %d", code)
	}
	bundle.Set(ca2.Bundle()) // the old root is dropped
	if !closedByPeer(old.conn) {
		t.Fatal("the connection verified by the dropped root is still open")
	}
	if code, _ := kept.do(t, "/b"); code != 200 {
		t.Fatalf("new root's peer after the drop: %d", code)
	}
	if n := counterValue(t, metrics.revokedConns.WithLabelValues(ListenerInbound, closeUntrusted)); n != 1 {
		t.Errorf("untrusted closes counted: %v", n)
	}
}

// TestRevokedSerialRefusedAndClosed: a policy whose snapshot revokes
// web's certificate serial closes web's open connection and refuses its
// new handshakes; another peer is unaffected.
func TestRevokedSerialRefusedAndClosed(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	metrics := newMetrics(t)
	in, addr := startPolicyInbound(t, m, m.bundle, metrics, nil)
	cfg := certs.MTLSClientConfig(m.web, m.bundle, certs.AuthorizeID(spiffeid.RequireFromString(apiID)), certs.TLSOptions{})
	k := dialKeepAlive(t, addr, cfg)
	if code, _ := k.do(t, "/a"); code != 200 {
		t.Fatalf("before: %d", code)
	}
	other := certs.NewSVIDSource(nil)
	other.Set(certstest.SVID(t, m.ca, "spiffe://minimesh.local/ns/default/sa/other"))
	ok := dialKeepAlive(t, addr, certs.MTLSClientConfig(other, m.bundle, certs.AuthorizeID(spiffeid.RequireFromString(apiID)), certs.TLSOptions{}))

	// Upper case and a leading zero: serials compare as numbers.
	serial := "0" + strings.ToUpper(serialOf(m.web.Current()))
	pol, err := CompilePolicy(PolicyConfig{Service: "api"}, &meshv1.Snapshot{Version: "1", RevokedSerials: []string{serial}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	in.SetPolicy(pol)
	if !closedByPeer(k.conn) {
		t.Fatal("the revoked peer's connection is still open")
	}
	if err := exchange(addr, cfg.Clone()); err == nil {
		t.Fatal("a new connection of the revoked certificate was served")
	}
	if code, _ := ok.do(t, "/b"); code != 200 {
		t.Fatalf("another peer: %d", code)
	}
	if n := handshakeFailures(t, metrics, ListenerInbound, ReasonRevoked); n < 1 {
		t.Errorf("refused handshakes counted: %v", n)
	}
}

// TestSourceServicesBounded: a flood of distinct service accounts cannot
// grow the label space past MaxSourceServices (+ "other").
func TestSourceServicesBounded(t *testing.T) {
	s := newSourceSet(newMetrics(t), "api", "default")
	for i := 0; i < 3*MaxSourceServices; i++ {
		s.get(fmt.Sprintf("default/sa-%d", i)).observe(200, 0.001)
	}
	if n := len(s.m); n > MaxSourceServices+1 {
		t.Fatalf("%d source series", n)
	}
	for _, tc := range []struct{ path, want, sa, ns string }{
		{"/ns/default/sa/web", "default/web", "web", "default"}, {"/ns/a/sa/", "other", "other", ""}, {"/x/y", "other", "other", ""},
		{"/ns/a/sa/b/c", "other", "other", ""}, {"/ns//sa/web", "other", "other", ""}, {"/ns/a/b/sa/web", "other", "other", ""},
	} {
		got := sourceKey(tc.path)
		if sa, ns := splitSourceKey(got); got != tc.want || sa != tc.sa || ns != tc.ns {
			t.Errorf("sourceKey(%q) = %q (%q, %q), want %q (%q, %q)", tc.path, got, sa, ns, tc.want, tc.sa, tc.ns)
		}
	}
}

// TestStrictConnAnswers400 runs a real server behind strictConn: a smuggled
// request gets 400 and the connection ends; the request before it is
// served.
func TestStrictConnAnswers400(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	_, addr := startPolicyInbound(t, m, m.bundle, newMetrics(t), nil)
	cfg := certs.MTLSClientConfig(m.web, m.bundle, certs.AuthorizeID(spiffeid.RequireFromString(apiID)), certs.TLSOptions{})
	cfg.NextProtos = []string{"http/1.1"}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	// (Pipelined behind a request in flight, the refusal would also cut
	// that request: net/http reads ahead while a handler runs.)
	br := bufio.NewReader(c)
	_, _ = io.WriteString(c, "GET /first HTTP/1.1\r\nHost: api\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_, _ = io.WriteString(c, "GET /x HTTP/1.1\r\nHost: api\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n")
	all, _ := io.ReadAll(br)
	all = append([]byte("HTTP/1.1 200 first\n"), all...)
	if !bytes.HasPrefix(all, []byte("HTTP/1.1 200")) || !bytes.Contains(all, []byte("HTTP/1.1 400")) {
		t.Fatalf("answers: %q", all)
	}
	if strings.Count(string(all), "HTTP/1.1 ") != 2 {
		t.Fatalf("answers: %q", all)
	}
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// TestBundleDropGoAwayAfterStreamInFlight: an HTTP/2 connection of a peer
// that the new bundle no longer verifies, busy with a request, is not
// cut: the request completes, and its answer tells the client to go away
// (GOAWAY), so the next request dials a new connection.
func TestBundleDropGoAwayAfterStreamInFlight(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	ca2, both := m.secondRoot(t)
	bundle := certs.NewBundleSource(both)
	a := newApp(t)
	metrics := newMetrics(t)
	_, addr := startPolicyInbound(t, m, bundle, metrics, a)

	cfg := certs.MTLSClientConfig(m.web, certs.NewBundleSource(both), certs.AuthorizeID(spiffeid.RequireFromString(apiID)), certs.TLSOptions{})
	var dials atomic.Int32
	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: cfg,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			c := cfg.Clone()
			c.NextProtos = []string{"h2"}
			return (&tls.Dialer{Config: c}).DialContext(ctx, network, addr)
		}}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	url := "https://" + addr + "/stream"

	pr, pw := io.Pipe()
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, url, pr)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- result{resp, err}
	}()
	_, _ = pw.Write([]byte("part one"))
	eventually(t, "the request reaches the app", func() bool { return a.hits.Load() == 1 })
	bundle.Set(ca2.Bundle())
	eventually(t, "the connection is retired", func() bool {
		return counterValue(t, metrics.revokedConns.WithLabelValues(ListenerInbound, closeUntrusted)) == 1
	})
	_, _ = pw.Write([]byte("part two"))
	_ = pw.Close()
	r := <-done
	if r.err != nil || r.resp.StatusCode != 200 || r.resp.ProtoMajor != 2 {
		t.Fatalf("the request in flight: %v %v", r.resp, r.err)
	}
	// The connection was told to go away: the next request dials anew,
	// and that handshake fails (the old root's SVID).
	resp, err := client.Get(url)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("the old root's peer was served again: %d", resp.StatusCode)
	}
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2 (the retired connection reused?)", n)
	}
}

// The bundle in force when the watch starts is its baseline: a change
// right after (before any tick of the recheck loop) is still a change.
func TestBundleWatchBaseline(t *testing.T) {
	m := newMesh(t)
	ca2, _ := m.secondRoot(t)
	src := certs.NewBundleSource(m.ca.Bundle())
	td := func() (spiffeid.TrustDomain, bool) {
		return spiffeid.RequireTrustDomainFromString("minimesh.local"), true
	}
	changed := bundleWatch(src, td)
	src.Set(ca2.Bundle())
	if !changed() {
		t.Fatal("a change right after the start was taken for the baseline")
	}
	if changed() {
		t.Error("the same bundle reported as changed twice")
	}
	none := bundleWatch(certs.NewBundleSource(nil), td)
	if none() {
		t.Error("no bundle at the start, then none: a change")
	}
}

// TestRevokedInstanceRefusedAndClosed: a snapshot that revokes an instance
// refuses every certificate bound to it, whatever its serial (a revoked
// proxy's key cannot come back with a fresh SVID), and leaves another
// instance of the same identity alone.
func TestRevokedInstanceRefusedAndClosed(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	metrics := newMetrics(t)
	in, addr := startPolicyInbound(t, m, m.bundle, metrics, nil)
	issue := func(instance string) *certs.SVIDSource {
		svid, err := m.ca.IssueSVID(spiffeid.RequireFromString(webID), 0, certs.WithInstance(instance))
		if err != nil {
			t.Fatal(err)
		}
		src := certs.NewSVIDSource(nil)
		src.Set(svid)
		return src
	}
	authz := certs.AuthorizeID(spiffeid.RequireFromString(apiID))
	revoked, fresh, other := issue("web-aaaaaaaaaaaa"), issue("web-aaaaaaaaaaaa"), issue("web-bbbbbbbbbbbb")
	k := dialKeepAlive(t, addr, certs.MTLSClientConfig(revoked, m.bundle, authz, certs.TLSOptions{}))
	if code, _ := k.do(t, "/a"); code != 200 {
		t.Fatalf("before: %d", code)
	}
	ok := dialKeepAlive(t, addr, certs.MTLSClientConfig(other, m.bundle, authz, certs.TLSOptions{}))

	pol, err := CompilePolicy(PolicyConfig{Service: "api"}, &meshv1.Snapshot{Version: "1", RevokedInstances: []string{"web-aaaaaaaaaaaa"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	in.SetPolicy(pol)
	if !closedByPeer(k.conn) {
		t.Fatal("the revoked instance's connection is still open")
	}
	// Another certificate (another serial) of the same instance: refused.
	if err := exchange(addr, certs.MTLSClientConfig(fresh, m.bundle, authz, certs.TLSOptions{})); err == nil {
		t.Fatal("a new certificate of the revoked instance was served")
	}
	if code, _ := ok.do(t, "/b"); code != 200 {
		t.Fatalf("another instance of the same identity: %d", code)
	}
	if n := handshakeFailures(t, metrics, ListenerInbound, ReasonRevoked); n < 1 {
		t.Errorf("refused handshakes counted: %v", n)
	}
	// The same rule decides the outbound's dials.
	if err := pol.Revocations().Refused(webID, fresh.Current().Certificates); err == nil || !strings.Contains(err.Error(), "instance web-aaaaaaaaaaaa is revoked") {
		t.Errorf("Refused = %v", err)
	}
	if err := pol.Revocations().Refused(webID, other.Current().Certificates); err != nil {
		t.Errorf("Refused(other instance) = %v", err)
	}
}

// TestInboundRefusesReservedIdentities: the operator credential (and
// meshd's) is for meshd's admin API; a proxy's inbound admits workloads
// only, whatever the policy says.
func TestInboundRefusesReservedIdentities(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	metrics := newMetrics(t)
	_, addr := startPolicyInbound(t, m, m.bundle, metrics, nil)
	td := spiffeid.RequireTrustDomainFromString("minimesh.local")
	authz := certs.AuthorizeID(spiffeid.RequireFromString(apiID))
	for _, id := range []spiffeid.ID{certs.OperatorID(td), certs.MeshdID(td)} {
		svid, err := m.ca.IssueSVID(id, 0)
		if err != nil {
			t.Fatal(err)
		}
		src := certs.NewSVIDSource(nil)
		src.Set(svid)
		if err := exchange(addr, certs.MTLSClientConfig(src, m.bundle, authz, certs.TLSOptions{})); err == nil {
			t.Errorf("%s was served by a proxy's inbound", id)
		}
	}
	if err := exchange(addr, certs.MTLSClientConfig(m.web, m.bundle, authz, certs.TLSOptions{})); err != nil {
		t.Errorf("a workload was refused: %v", err)
	}
}
