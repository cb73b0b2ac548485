package proxy

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// The side-by-side numbers: the app directly, through the inbound (mTLS
// terminated, HTTP/1.1 and HTTP/2 from the peer), and the whole mesh path
// app → outbound → mTLS HTTP/2 → inbound → app (with a static endpoint,
// and with a table: routes matched, endpoint balanced). Compare ns/op and
// allocs/op between them, not absolute values.
func BenchmarkForwarding(b *testing.B) {
	m, a := newMesh(b), newApp(b)
	inLn := listenLocal(b)
	startInbound(b, m, a, newMetrics(b), inLn)
	outLn, _ := startOutbound(b, m, inLn.Addr().String(), apiID, newMetrics(b))
	// The same path, with the endpoint from a table and a route to match.
	routedLn := listenLocal(b)
	log, _ := newLogger()
	routed, err := NewOutbound(OutboundConfig{Upstreams: []Upstream{{Name: "api", Listener: routedLn}},
		SVID: m.web, Bundle: m.bundle, Logger: log, Limits: Limits{Drain: 5 * time.Second}})
	if err != nil {
		b.Fatal(err)
	}
	tab, err := CompileTable(TableConfig{}, snapshot(b, `
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: 10-other}
spec:
  service: api
  matches: [{path: {prefix: /other/}}, {headers: [{name: x-canary, exact: "yes"}]}]
  backends: [{service: api}]
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: 90-api}
spec:
  service: api
  matches: [{path: {prefix: /bench}, methods: [GET]}]
  backends: [{service: api}]
  timeout: 10s
`, "default/api "+inLn.Addr().String()+" "+apiID))
	if err != nil {
		b.Fatal(err)
	}
	routed.Install(tab)
	run(b, routed)
	// The public listener: TLS from any client, HTTP/1.1, to the app.
	pubLn, pubTLS := startPublic(b, a.addr())

	for _, bc := range []struct {
		name   string
		client *http.Client
		url    string
	}{
		{"direct", plainClient(b), a.URL},
		{"public-http1", tlsClient(b, pubTLS, false), "https://" + pubLn.Addr().String()},
		{"inbound-http1", mtlsClient(b, m.web, m.bundle, apiID, false), "https://" + inLn.Addr().String()},
		{"inbound-http2", mtlsClient(b, m.web, m.bundle, apiID, true), "https://" + inLn.Addr().String()},
		{"outbound-inbound", plainClient(b), "http://" + outLn.Addr().String()},
		{"outbound-routed-inbound", plainClient(b), "http://" + routedLn.Addr().String()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := bc.client.Get(bc.url + "/bench")
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
