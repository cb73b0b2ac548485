package proxy

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	meshv1 "minimesh/proto/mesh/v1"
)

// TestTransparentRegistryOnly: under RegistryOnly a connection that would
// be relayed to an undeclared destination is refused, counted and logged;
// a declared one is relayed; without RegistryOnly both pass through.
func TestTransparentRegistryOnly(t *testing.T) {
	checkLeaks(t)
	backend := echoUpper(t)
	dst := addrPort(t, backend.Addr())
	for _, tc := range []struct {
		name         string
		registryOnly bool
		declared     bool
		want         string
	}{
		{"allow any", false, false, "PING"},
		{"registry-only, undeclared", true, false, ""},
		{"registry-only, declared", true, true, "PING"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, logs := newLogger()
			tr, ln, _ := newTransparent(t, TransparentConfig{
				RegistryOnly: tc.registryOnly, Logger: log,
				Declared:    func(d netip.AddrPort) bool { return tc.declared && d == dst },
				OriginalDst: func(net.Conn) (netip.AddrPort, error) { return dst, nil },
			})
			run(t, tr)
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.WriteString(c, "ping")
			_ = c.(*net.TCPConn).CloseWrite()
			b, _ := io.ReadAll(c)
			if string(b) != tc.want {
				t.Fatalf("got %q, want %q", b, tc.want)
			}
			refused := tc.want == ""
			if n := transparentCount(tr, TransparentRefused); (n == 1) != refused {
				t.Errorf("refused counted %v", n)
			}
			if got := strings.Contains(logs.String(), "registry-only"); got != refused {
				t.Errorf("refusal logged: %v, want %v:\n%s", got, refused, logs.String())
			}
		})
	}
}

type routeFunc func(host string) http.Handler

func (f routeFunc) Route(host string) http.Handler { return f(host) }

// TestOutboundExternalSupersedesEgress: a Host that an ExternalService
// names goes to it, even where Egress lists the host; other Hosts keep
// their 502.
func TestOutboundExternalSupersedesEgress(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	hostLn := listenLocal(t)
	ext := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "external "+r.Host) })
	out, err := NewOutbound(OutboundConfig{HTTPListener: hostLn, SVID: m.web, Bundle: m.bundle, Limits: Limits{Drain: time.Second},
		Egress: []string{"api.partner.test"},
		External: routeFunc(func(host string) http.Handler {
			if host == "api.partner.test" {
				return ext
			}
			return nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	tab, err := CompileTable(TableConfig{}, &meshv1.Snapshot{Version: "v"})
	if err != nil {
		t.Fatal(err)
	}
	out.Install(tab)
	run(t, out)
	get := func(host string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+hostLn.Addr().String()+"/", nil)
		req.Host = host
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("api.partner.test"); code != 200 || body != "external api.partner.test" {
		t.Fatalf("external host: %d %q", code, body)
	}
	if code, body := get("undeclared.test"); code != http.StatusBadGateway {
		t.Fatalf("undeclared host: %d %q", code, body)
	}
}
