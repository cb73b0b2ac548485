package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/dataplane/applink"
	"minimesh/dataplane/balancer"
)

func TestParseUpstream(t *testing.T) {
	api := spiffeid.RequireFromString(apiID)
	for _, tc := range []struct {
		in   string
		want Upstream
		err  string
	}{
		{in: "api=127.0.0.1:15001",
			want: Upstream{Name: "api", Service: "api", Listen: "127.0.0.1:15001"}},
		{in: "api.prod=127.0.0.1:15001",
			want: Upstream{Name: "api.prod", Service: "api", Namespace: "prod", Listen: "127.0.0.1:15001"}},
		{in: "db:5432=127.0.0.1:15432",
			want: Upstream{Name: "db:5432", Service: "db", Port: 5432, Listen: "127.0.0.1:15432"}},
		{in: "db.prod:5432=localhost:15432",
			want: Upstream{Name: "db.prod:5432", Service: "db", Namespace: "prod", Port: 5432, Listen: "localhost:15432"}},
		{in: "api=127.0.0.1:15001=10.0.0.7:15006=" + apiID,
			want: Upstream{Name: "api", Service: "api", Listen: "127.0.0.1:15001", Remote: "10.0.0.7:15006", ID: api}},
		{in: "api=localhost:15001=api.default.svc:15006=" + apiID,
			want: Upstream{Name: "api", Service: "api", Listen: "localhost:15001", Remote: "api.default.svc:15006", ID: api}},
		{in: "api=[::1]:15001=[fd00::7]:15006=" + apiID,
			want: Upstream{Name: "api", Service: "api", Listen: "[::1]:15001", Remote: "[fd00::7]:15006", ID: api}},
		{in: "api=127.0.0.1:15001=10.0.0.7:15006", err: "want NAME=LISTEN or NAME=LISTEN=REMOTE=SPIFFEID"},
		{in: "api", err: "want NAME=LISTEN or NAME=LISTEN=REMOTE=SPIFFEID"},
		{in: "api=127.0.0.1:15001=10.0.0.7:15006=" + apiID + "=x", err: "want NAME=LISTEN or NAME=LISTEN=REMOTE=SPIFFEID"},
		{in: "=127.0.0.1:15001=10.0.0.7:15006=" + apiID, err: "name is required"},
		{in: "=127.0.0.1:15001", err: "name is required"},
		{in: "API=127.0.0.1:15001", err: "DNS labels"},
		{in: "api.prod.svc=127.0.0.1:15001", err: "DNS labels"},
		{in: "api:0=127.0.0.1:15001", err: "port must be"},
		{in: "api:65536=127.0.0.1:15001", err: "port must be"},
		{in: "api:http=127.0.0.1:15001", err: "port must be"},
		{in: "api=0.0.0.0:15001", err: "not a loopback address"},
		{in: "api=0.0.0.0:15001=10.0.0.7:15006=" + apiID, err: "not a loopback address"},
		{in: "api=10.0.0.8:15001=10.0.0.7:15006=" + apiID, err: "not a loopback address"},
		{in: "api=127.0.0.1=10.0.0.7:15006=" + apiID, err: "Listen"},
		{in: "api=127.0.0.1:15001=10.0.0.7=" + apiID, err: "Remote"},
		{in: "api=127.0.0.1:15001=10.0.0.7:15006=http://minimesh.local/x", err: "scheme"},
		{in: "api=127.0.0.1:15001=10.0.0.7:15006=", err: "upstream"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseUpstream(tc.in)
			if tc.err != "" {
				if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want ErrInvalidConfig mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func FuzzParseUpstream(f *testing.F) {
	f.Add("api=127.0.0.1:15001=10.0.0.7:15006=" + apiID)
	f.Add("api.prod:8080=127.0.0.1:15001")
	f.Add("a=localhost:1=h:2=spiffe://td/p")
	f.Add("===")
	f.Add("api=[::1]:1=[::1]:2=spiffe://x/y=")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUpstream(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		if err := u.Validate(); err != nil {
			t.Fatalf("parsed %q but Validate: %v", s, err)
		}
		// The parts round-trip.
		parts := []string{u.Name, u.Listen}
		if u.Remote != "" {
			parts = append(parts, u.Remote, u.ID.String())
		}
		again, err := ParseUpstream(strings.Join(parts, "="))
		if err != nil || again != u {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
	})
}

func TestStripMeshHeaders(t *testing.T) {
	h := http.Header{
		"X-Mesh-Peer-Id":          {"spoof"},
		"X-Mesh-":                 {"empty suffix"},
		"x-mesh-raw":              {"non-canonical"},
		"X-MESH-UPPER":            {"upper"},
		"X-Forwarded-Client-Cert": {"xfcc"},
		"x-forwarded-client-cert": {"xfcc raw"},
		"X-Meshy":                 {"not ours"},
		"X-Mes":                   {"short"},
		"Content-Type":            {"text/plain"},
	}
	applink.StripMeshHeaders(h)
	want := map[string]bool{"X-Meshy": true, "X-Mes": true, "Content-Type": true}
	for k := range h {
		if !want[k] {
			t.Errorf("%s kept", k)
		}
		delete(want, k)
	}
	for k := range want {
		t.Errorf("%s removed", k)
	}
}

func TestConfigValidate(t *testing.T) {
	m := newMesh(t)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"inbound without listener", func() error {
			_, err := NewInbound(InboundConfig{App: "127.0.0.1:1", SVID: m.api, Bundle: m.bundle})
			return err
		}()},
		{"inbound without app port", func() error {
			_, err := NewInbound(InboundConfig{Addr: "127.0.0.1:0", App: "127.0.0.1", SVID: m.api, Bundle: m.bundle})
			return err
		}()},
		{"inbound without sources", func() error {
			_, err := NewInbound(InboundConfig{Addr: "127.0.0.1:0", App: "127.0.0.1:1"})
			return err
		}()},
		{"public without certificate", func() error {
			_, err := NewPublic(PublicConfig{Addr: "127.0.0.1:0", App: "127.0.0.1:1"})
			return err
		}()},
		{"outbound without sources", func() error {
			_, err := NewOutbound(OutboundConfig{})
			return err
		}()},
		{"outbound with one local port for two upstreams", func() error {
			u := Upstream{Name: "api", Listen: "127.0.0.1:15001", Remote: "h:1", ID: spiffeid.RequireFromString(apiID)}
			v := Upstream{Name: "web", Listen: "127.0.0.1:15001"}
			_, err := NewOutbound(OutboundConfig{Upstreams: []Upstream{u, v}, SVID: m.web, Bundle: m.bundle})
			return err
		}()},
		{"outbound with a remote but no ID", func() error {
			u := Upstream{Name: "api", Listen: "127.0.0.1:0", Remote: "h:1"}
			_, err := NewOutbound(OutboundConfig{Upstreams: []Upstream{u}, SVID: m.web, Bundle: m.bundle})
			return err
		}()},
		{"outbound HTTP port beyond loopback", func() error {
			_, err := NewOutbound(OutboundConfig{HTTPAddr: "0.0.0.0:15080", SVID: m.web, Bundle: m.bundle})
			return err
		}()},
		{"outbound with more than half ejectable", func() error {
			_, err := NewOutbound(OutboundConfig{SVID: m.web, Bundle: m.bundle, Outlier: balancer.Config{MaxEjectedPercent: 60}})
			return err
		}()},
	} {
		if !errors.Is(tc.err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", tc.name, tc.err)
		}
	}
}

func TestHandshakeTimeoutIsCounted(t *testing.T) {
	checkLeaks(t)
	m, a, metrics := newMesh(t), newApp(t), newMetrics(t)
	ln := listenLocal(t)
	log, _ := newLogger()
	in, err := NewInbound(InboundConfig{Listener: ln, App: a.addr(), SVID: m.api, Bundle: m.bundle,
		Metrics: metrics, Logger: log, Limits: Limits{Handshake: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, in)
	// A client that connects and says nothing is dropped once the
	// handshake limit passes.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("silent client got data")
	}
	eventually(t, "timeout counted", func() bool {
		return handshakeFailures(t, metrics, ListenerInbound, ReasonTimeout) == 1
	})
}

func TestRunFailsOnBusyAddress(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	busy := listenLocal(t)
	defer busy.Close()
	in, err := NewInbound(InboundConfig{Addr: busy.Addr().String(), App: "127.0.0.1:1", SVID: m.api, Bundle: m.bundle})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Run(context.Background()); err == nil || !strings.HasPrefix(err.Error(), "proxy: ") {
		t.Fatalf("Run on a busy address: %v", err)
	}
}

func TestInboundRefusesRequestWithoutPeerIdentity(t *testing.T) {
	checkLeaks(t)
	m, a := newMesh(t), newApp(t)
	log, _ := newLogger()
	in, err := NewInbound(InboundConfig{Addr: "127.0.0.1:0", App: a.addr(), SVID: m.api, Bundle: m.bundle, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// Served outside its TLS listener (no verified peer), the handler
	// must not forward.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set(HeaderPeerID, webID)
	in.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden || a.hits.Load() != 0 {
		t.Fatalf("got %d with %d app hits, want 403 and none", rec.Code, a.hits.Load())
	}
}
