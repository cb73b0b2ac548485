package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The kernel side (REDIRECT and SO_ORIGINAL_DST) is proven in
// dataplane/redirect's network-namespace test, which runs this listener as
// the proxy. These tests give it the original destination directly, so
// they run anywhere, and check the relay itself.

// echoUpper is a TCP server that reads until EOF, then answers with what it
// read, upper-cased, and closes: it only answers if half-close reached it.
func echoUpper(t *testing.T) net.Listener {
	t.Helper()
	ln := listenLocal(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				_, _ = c.Write([]byte(strings.ToUpper(string(b))))
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

func addrPort(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func newTransparent(t *testing.T, cfg TransparentConfig) (*Transparent, net.Listener, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.Listener == nil {
		cfg.Listener = listenLocal(t)
	}
	if cfg.Logger == nil {
		cfg.Logger, _ = newLogger()
	}
	tr, err := NewTransparent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tr, cfg.Listener, reg
}

func transparentCount(tr *Transparent, result string) float64 {
	var m dto.Metric
	if err := tr.results.WithLabelValues(result).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func TestTransparentRelaysToOriginalDestinationWithHalfClose(t *testing.T) {
	checkLeaks(t)
	backend := echoUpper(t)
	var asked netip.AddrPort
	tr, ln, _ := newTransparent(t, TransparentConfig{
		OriginalDst: func(c net.Conn) (netip.AddrPort, error) {
			asked = addrPort(t, c.LocalAddr())
			return addrPort(t, backend.Addr()), nil
		},
	})
	run(t, tr)

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello through the proxy")); err != nil {
		t.Fatal(err)
	}
	// The backend answers only after it saw EOF: the half-close must cross.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "HELLO THROUGH THE PROXY" {
		t.Fatalf("got %q", got)
	}
	if asked != addrPort(t, ln.Addr()) {
		t.Errorf("OriginalDst was asked about %v, want the accepted connection (local %v)", asked, ln.Addr())
	}
	if n := transparentCount(tr, TransparentRelayed); n != 1 {
		t.Errorf("relayed = %v, want 1", n)
	}
}

func TestTransparentRefusals(t *testing.T) {
	closed := listenLocal(t)
	closedAddr := closed.Addr()
	_ = closed.Close()

	tests := []struct {
		name   string
		dst    func(ln net.Listener) (netip.AddrPort, error)
		result string
	}{
		{
			name:   "no NAT record",
			dst:    func(net.Listener) (netip.AddrPort, error) { return netip.AddrPort{}, errors.New("ENOENT") },
			result: TransparentNotRedirected,
		},
		{
			// SO_ORIGINAL_DST of a connection made straight to the
			// listener is the listener itself: relaying would loop.
			name:   "original destination is the listener",
			dst:    func(ln net.Listener) (netip.AddrPort, error) { return netip.ParseAddrPort(ln.Addr().String()) },
			result: TransparentNotRedirected,
		},
		{
			name:   "destination refuses",
			dst:    func(net.Listener) (netip.AddrPort, error) { return netip.ParseAddrPort(closedAddr.String()) },
			result: TransparentDialFailed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			ln := listenLocal(t)
			tr, _, _ := newTransparent(t, TransparentConfig{
				Listener:    ln,
				OriginalDst: func(net.Conn) (netip.AddrPort, error) { return tt.dst(ln) },
			})
			run(t, tr)
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
				t.Fatalf("read %q, %v: want the connection closed without data", b, err)
			}
			if n := transparentCount(tr, tt.result); n != 1 {
				t.Errorf("%s = %v, want 1", tt.result, n)
			}
			if n := transparentCount(tr, TransparentRelayed); n != 0 {
				t.Errorf("relayed = %v, want 0", n)
			}
		})
	}
}

// With the real SO_ORIGINAL_DST and no REDIRECT rule, a direct connection
// is never relayed: conntrack either has no entry or names the listener.
func TestTransparentRefusesDirectConnectionWithKernelLookup(t *testing.T) {
	checkLeaks(t)
	tr, ln, _ := newTransparent(t, TransparentConfig{}) // default OriginalDst
	run(t, tr)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
		t.Fatalf("read %q, %v: want the connection closed", b, err)
	}
	if n := transparentCount(tr, TransparentNotRedirected); n != 1 {
		t.Errorf("not_redirected = %v, want 1", n)
	}
}

func TestTransparentMaxConns(t *testing.T) {
	checkLeaks(t)
	// A backend that holds every connection open until the test ends.
	hold := listenLocal(t)
	release := make(chan struct{})
	go func() {
		for {
			c, err := hold.Accept()
			if err != nil {
				return
			}
			go func() { <-release; _ = c.Close() }()
		}
	}()
	t.Cleanup(func() { _ = hold.Close() })
	defer close(release) // before the cleanups stop the listener, so it drains at once

	tr, ln, _ := newTransparent(t, TransparentConfig{
		MaxConns:    1,
		OriginalDst: func(net.Conn) (netip.AddrPort, error) { return netip.ParseAddrPort(hold.Addr().String()) },
	})
	run(t, tr)
	first, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	eventually(t, "first connection relayed", func() bool { return transparentCount(tr, TransparentRelayed) == 1 })

	second, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	_ = second.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(second); len(b) != 0 || err != nil {
		t.Fatalf("second connection: read %q, %v: want it closed", b, err)
	}
	if n := transparentCount(tr, TransparentOverLimit); n != 1 {
		t.Errorf("over_limit = %v, want 1", n)
	}
}

// Shutdown with a relay still open: Run returns after the drain and cuts
// both sides, leaving no goroutine behind.
func TestTransparentShutdownCutsRelaysAfterDrain(t *testing.T) {
	checkLeaks(t)
	hold := listenLocal(t)
	upstream := make(chan net.Conn, 1)
	go func() {
		c, err := hold.Accept()
		if err == nil {
			upstream <- c
		}
	}()
	defer hold.Close()
	tr, ln, _ := newTransparent(t, TransparentConfig{
		Limits:      Limits{Drain: 50 * time.Millisecond},
		OriginalDst: func(net.Conn) (netip.AddrPort, error) { return netip.ParseAddrPort(hold.Addr().String()) },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	up := <-upstream
	defer up.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	_ = up.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := up.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("upstream side after shutdown: %v, want EOF", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("client side still open after shutdown")
	}
}

func TestTransparentConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  TransparentConfig
		ok   bool
	}{
		{"zero value", TransparentConfig{}, true},
		{"address", TransparentConfig{Addr: "0.0.0.0:15001"}, true},
		{"bad address", TransparentConfig{Addr: "15001"}, false},
		{"negative MaxConns", TransparentConfig{MaxConns: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("%v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

// With an HTTP router, a captured connection carrying HTTP goes to the
// outbound's Host-routed server (and so over mTLS to the mesh service its
// Host names): to a port a Service declares http at once, to an undeclared
// port when its first bytes are a request line. Anything else, and a
// declared tcp port, is relayed to where it was going.
func TestTransparentHandsHTTPToTheOutbound(t *testing.T) {
	checkLeaks(t)
	m, a := newMesh(t), newApp(t)
	inLn := listenLocal(t)
	startInbound(t, m, a, newMetrics(t), inLn)
	_, appPort, _ := net.SplitHostPort(a.addr())
	hostLn := listenLocal(t)
	log, logs := newLogger()
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	out, err := NewOutbound(OutboundConfig{HTTPListener: hostLn, SVID: m.web, Bundle: m.bundle, Logger: log, Limits: Limits{Drain: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	tab, err := CompileTable(TableConfig{}, snapshot(t, `
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: `+appPort+`, protocol: http}, {name: db, port: 5432, protocol: tcp}]
  servingIdentities: ["`+apiID+`"]
`, "default/api "+inLn.Addr().String()+" "+apiID))
	if err != nil {
		t.Fatal(err)
	}
	out.Install(tab)
	run(t, out)
	backend := echoUpper(t) // the passthrough's destination
	_, backendPort, _ := net.SplitHostPort(backend.Addr().String())
	var dst atomic.Value
	tr, ln, _ := newTransparent(t, TransparentConfig{
		HTTP: out, SniffTimeout: 50 * time.Millisecond,
		OriginalDst: func(net.Conn) (netip.AddrPort, error) { return dst.Load().(netip.AddrPort), nil },
	})
	run(t, tr)
	eventually(t, "the outbound serving", func() bool { return out.hostConns.Load() != nil })

	send := func(to netip.AddrPort, payload string) string {
		t.Helper()
		dst.Store(to)
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, payload); err != nil {
			t.Fatal(err)
		}
		if !looksLikeHTTP([]byte(payload)) {
			// The echo answers at EOF; an HTTP server would take a
			// half-close for a client gone and cancel the request.
			_ = c.(*net.TCPConn).CloseWrite()
		}
		b, _ := io.ReadAll(c)
		return string(b)
	}
	port := func(p string) netip.AddrPort {
		n, _ := strconv.Atoi(p)
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(n))
	}
	get := "GET /captured HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"
	for _, tc := range []struct {
		name    string
		to      netip.AddrPort
		payload string
		want    string
	}{
		{"declared http port", port(appPort), get, webID},                                             // through the mesh: the app sees web's identity
		{"undeclared port, HTTP", port(backendPort), get, webID},                                      // sniffed
		{"undeclared port, other bytes", port(backendPort), "\x16\x03\x01hello", "\x16\x03\x01HELLO"}, // relayed
		{"declared tcp port", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 5432), get, ""},    // relayed: nothing listens there
	} {
		got := send(tc.to, tc.payload)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: got %.200q, want it to hold %q", tc.name, got, tc.want)
		}
	}
	// Counted once the outbound took the connection, which may be after
	// it answered the client.
	eventually(t, "two connections counted as handed to the outbound", func() bool {
		return transparentCount(tr, TransparentHTTP) == 2
	})
	if n := transparentCount(tr, TransparentHTTP); n != 2 {
		t.Errorf("handed to the outbound: %v, want 2", n)
	}
	if n := transparentCount(tr, TransparentRelayed); n != 1 {
		t.Errorf("relayed: %v, want 1", n)
	}
	if n := transparentCount(tr, TransparentDialFailed); n != 1 {
		t.Errorf("dial failed (the tcp port): %v, want 1", n)
	}
}
