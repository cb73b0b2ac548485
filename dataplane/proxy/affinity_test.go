package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestClientConnectionKeepsItsAppConnection: through the public port, each
// keep-alive client connection's requests reach the app on one app
// connection of its own (applink.Affinity in the h1 connection's Keeper
// slot), even when two clients take turns; when a client connection ends,
// its app connection goes back to the pool and the next client connection
// gets it.
func TestClientConnectionKeepsItsAppConnection(t *testing.T) {
	checkLeaks(t)
	var conns atomic.Int64
	a := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.RemoteAddr)
	}))
	a.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	a.Start()
	t.Cleanup(a.Close)
	ln, cfg := startPublic(t, a.Listener.Addr().String())

	one, two := dialKeepAlive(t, ln.Addr().String(), cfg), dialKeepAlive(t, ln.Addr().String(), cfg)
	fromOne, fromTwo := one.text(t), two.text(t)
	for i := range 3 {
		if got := one.text(t); got != fromOne {
			t.Fatalf("round %d: client one's request came from %s, before from %s", i, got, fromOne)
		}
		if got := two.text(t); got != fromTwo {
			t.Fatalf("round %d: client two's request came from %s, before from %s", i, got, fromTwo)
		}
	}
	if fromOne == fromTwo || conns.Load() != 2 {
		t.Fatalf("clients one and two reached the app from %s and %s on %d connections; want two of their own", fromOne, fromTwo, conns.Load())
	}
	_ = one.conn.Close()
	// The proxy sees the close at its next read, then releases the app
	// connection; the next client connection takes it from the pool.
	eventually(t, "client one's app connection to go back to the pool", func() bool {
		three := dialKeepAlive(t, ln.Addr().String(), cfg)
		defer three.conn.Close()
		return three.text(t) == fromOne
	})
	if n := conns.Load(); n != 2 {
		t.Errorf("the app saw %d connections, want 2", n)
	}
}

// text sends GET / on k's connection and returns the answer's body.
func (k *keepAlive) text(t *testing.T) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://app/", nil)
	if err := req.Write(k.conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(k.r, req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: %d %v", resp.StatusCode, err)
	}
	return string(b)
}
