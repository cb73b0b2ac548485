package applink

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// do sends a GET by the direct path with aff and returns the body.
func doWith(t *testing.T, c *Client, addr, path string, aff *Affinity) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req, &Head{Addr: addr, Affinity: aff})
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
	}
	return string(b)
}

func (c *Client) pooled(addr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.idle[addr])
}

// TestAffinityKeepsTheConnection: a client connection's requests go on the
// app connection its Affinity holds, outside the pool, and Release hands it
// to the pool, where another client connection finds it.
func TestAffinityKeepsTheConnection(t *testing.T) {
	checkLeaks(t)
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.URL.Path) })
	addr := a.Listener.Addr().String()
	c := newTestAppClient(t, Config{})
	var one, two Affinity
	for i := range 3 {
		if got := doWith(t, c, addr, "/one", &one); got != "/one" {
			t.Fatalf("request %d: %q", i, got)
		}
		if one.ac == nil || c.pooled(addr) != 0 {
			t.Fatalf("request %d: held %v, %d pooled; want held, none pooled", i, one.ac != nil, c.pooled(addr))
		}
	}
	// A second client connection meanwhile: the first's connection is
	// not the pool's to give, so the app sees a second.
	doWith(t, c, addr, "/two", &two)
	if n := a.conns.Load(); n != 2 {
		t.Fatalf("the app saw %d connections, want 2 (one per client connection)", n)
	}
	held := one.ac
	one.Release()
	two.Release()
	if one.ac != nil || c.pooled(addr) != 2 || c.held.Load() != 0 {
		t.Fatalf("after Release: held %v, %d pooled, count %d; want none held, 2 pooled", one.ac != nil, c.pooled(addr), c.held.Load())
	}
	// A third client connection takes a pooled one (the most recently
	// used: two's), and keeps it.
	var three Affinity
	doWith(t, c, addr, "/three", &three)
	if n := a.conns.Load(); n != 2 || three.ac == nil || three.ac == held {
		t.Fatalf("the app saw %d connections, want 2; held %v", n, three.ac != nil)
	}
	three.Release()
}

// TestAffinityChecksAsThePool: a held connection the app closed is found
// before use (past CheckIdleAfter, by the liveness check; within it, by the
// failed request sent again), and an Affinity asked for another address
// gives its connection back to the pool.
func TestAffinityChecksAsThePool(t *testing.T) {
	checkLeaks(t)
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "a") })
	b := newConnApp(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "b") })
	addrA, addrB := a.Listener.Addr().String(), b.Listener.Addr().String()
	c := newTestAppClient(t, Config{})
	c.checkIdleAfter = time.Millisecond
	var aff Affinity
	doWith(t, c, addrA, "/", &aff)
	a.CloseClientConnections()
	eventually(t, "the app to close its side", func() bool { return a.open.Load() == 0 })
	time.Sleep(5 * time.Millisecond) // past checkIdleAfter
	checked := 0
	testHookChecked = func() { checked++ }
	t.Cleanup(func() { testHookChecked = nil })
	if got := doWith(t, c, addrA, "/", &aff); got != "a" || checked != 1 || a.conns.Load() != 2 {
		t.Fatalf("after the app closed the held connection: %q, %d checks, %d connections; want a, 1, 2", got, checked, a.conns.Load())
	}
	// Within checkIdleAfter the check is skipped: the GET fails on the
	// closed connection and goes again on a new one.
	c.checkIdleAfter = time.Hour
	a.CloseClientConnections()
	eventually(t, "the app to close its side", func() bool { return a.open.Load() == 0 })
	if got := doWith(t, c, addrA, "/", &aff); got != "a" || a.conns.Load() != 3 {
		t.Fatalf("a GET on a closed held connection: %q, %d connections; want a, 3", got, a.conns.Load())
	}
	held := aff.ac
	if got := doWith(t, c, addrB, "/", &aff); got != "b" {
		t.Fatalf("to B: %q", got)
	}
	if c.pooled(addrA) != 1 || aff.ac == held || aff.ac.addr != addrB {
		t.Fatalf("after a request to B: %d pooled to A, holding A's %v; want A's pooled, B's held", c.pooled(addrA), aff.ac == held)
	}
	aff.Release()
}

// TestAffinityBounded: Affinities hold at most the pool's idle limit, and
// nothing after CloseIdleConnections: a held connection is then closed
// when next taken, not used.
func TestAffinityBounded(t *testing.T) {
	checkLeaks(t)
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	addr := a.Listener.Addr().String()
	c := newTestAppClient(t, Config{MaxIdleConnsPerHost: 2})
	affs := make([]Affinity, 3)
	for i := range affs {
		// Each holds its connection while the next request goes: three
		// app connections, two of them held.
		doWith(t, c, addr, "/", &affs[i])
	}
	if c.held.Load() != 2 || affs[2].ac != nil || c.pooled(addr) != 1 {
		t.Fatalf("held %d (third %v), %d pooled; want 2 held, the third pooled", c.held.Load(), affs[2].ac != nil, c.pooled(addr))
	}
	c.CloseIdleConnections()
	doWith(t, c, addr, "/", &affs[0])
	if n := a.conns.Load(); n != 4 || affs[0].ac != nil {
		t.Fatalf("after CloseIdleConnections: %d connections, held %v; want a new one, not held", n, affs[0].ac != nil)
	}
	eventually(t, "the app to see the closed ones", func() bool { return a.open.Load() == 1 })
	affs[1].Release() // closed by the closed pool
	eventually(t, "the app to see every connection closed", func() bool { return a.open.Load() == 0 })
}
