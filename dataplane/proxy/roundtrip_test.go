//lint:file-ignore SA1019 the remote here serves HTTP/2 with x/net/http2's Server, as the outbound's pool dials it

package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"minimesh/certs"
	"minimesh/dataplane/edge"
)

// breakingRemote is a remote proxy (mTLS, HTTP/2, api's SVID) whose first
// request finds its connection closed under it before any answer, as when
// the remote retires the connection at that instant; later connections
// answer "ok".
type breakingRemote struct {
	ln       net.Listener
	accepted atomic.Int64
	hits     sync.Map // method → *atomic.Int64
	wg       sync.WaitGroup
}

func startBreakingRemote(t *testing.T, m *mesh) *breakingRemote {
	t.Helper()
	r := &breakingRemote{ln: listenLocal(t)}
	cfg := certs.MTLSServerConfig(edge.OwnSource(m.api), m.bundle, certs.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString("minimesh.local")), certs.TLSOptions{})
	cfg.MinVersion, cfg.NextProtos = tls.VersionTLS13, []string{"h2"}
	srv := &http2.Server{}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			raw, err := r.ln.Accept()
			if err != nil {
				return
			}
			n := r.accepted.Add(1)
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				defer raw.Close()
				tc := tls.Server(raw, cfg)
				if tc.Handshake() != nil {
					return
				}
				srv.ServeConn(tc, &http2.ServeConnOpts{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
					c, _ := r.hits.LoadOrStore(req.Method, new(atomic.Int64))
					c.(*atomic.Int64).Add(1)
					_, _ = io.Copy(io.Discard, req.Body)
					if n == 1 {
						_ = raw.Close() // the connection ends; no answer
						return
					}
					_, _ = io.WriteString(w, "ok")
				})})
			}()
		}
	}()
	t.Cleanup(func() { r.ln.Close(); r.wg.Wait() })
	return r
}

func (r *breakingRemote) hitsOf(method string) int64 {
	c, ok := r.hits.Load(method)
	if !ok {
		return 0
	}
	return c.(*atomic.Int64).Load()
}

// An idempotent request without a body whose connection broke before any
// answer is tried once more on a fresh connection, whatever the route
// says (net/http's own rule); a request with a body is not.
func TestOutboundRetriesBrokenConnection(t *testing.T) {
	t.Setenv(EnvMeshLink, MeshLinkH2) // the remote speaks HTTP/2 only; HTTP/1.1: h1link_test.go
	checkLeaks(t)
	m, metrics := newMesh(t), newMetrics(t)

	t.Run("GET", func(t *testing.T) {
		remote := startBreakingRemote(t, m)
		outLn, _ := startOutbound(t, m, remote.ln.Addr().String(), apiID, metrics)
		before := counterValue(t, metrics.retries.WithLabelValues(ListenerOutbound))
		code, body, err := roundTrip(t, plainClient(t).Transport, http.MethodGet, "http://"+outLn.Addr().String()+"/", nil)
		if err != nil || code != http.StatusOK || body != "ok" {
			t.Fatalf("GET: %d %q %v, want 200 ok", code, body, err)
		}
		if n := remote.accepted.Load(); n != 2 {
			t.Errorf("the remote accepted %d connections, want 2 (the broken one, then a fresh one)", n)
		}
		if got := counterValue(t, metrics.retries.WithLabelValues(ListenerOutbound)) - before; got != 1 {
			t.Errorf("%v retries counted, want 1", got)
		}
	})
	t.Run("POST with a body", func(t *testing.T) {
		remote := startBreakingRemote(t, m)
		outLn, _ := startOutbound(t, m, remote.ln.Addr().String(), apiID, metrics)
		code, _, err := roundTrip(t, plainClient(t).Transport, http.MethodPost, "http://"+outLn.Addr().String()+"/", strings.NewReader("order"))
		if err != nil || code != http.StatusBadGateway {
			t.Fatalf("POST: %d %v, want 502", code, err)
		}
		if n := remote.hitsOf(http.MethodPost); n != 1 {
			t.Errorf("the remote saw the POST %d times, want once", n)
		}
	})
}
