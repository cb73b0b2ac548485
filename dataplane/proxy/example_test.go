package proxy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/api"
	"minimesh/certs"
	"minimesh/dataplane/proxy"
	meshv1 "minimesh/proto/mesh/v1"
)

func ExampleParseUpstream() {
	up, err := proxy.ParseUpstream("api=127.0.0.1:15001=10.0.0.7:15006=spiffe://minimesh.local/ns/default/sa/api")
	if err != nil {
		panic(err)
	}
	fmt.Println(up.Service, up.Listen, up.Remote, up.ID)

	_, err = proxy.ParseUpstream("api=0.0.0.0:15001=10.0.0.7:15006=spiffe://minimesh.local/ns/default/sa/api")
	fmt.Println(err)
	// Output:
	// api 127.0.0.1:15001 10.0.0.7:15006 spiffe://minimesh.local/ns/default/sa/api
	// proxy: invalid config: upstream api: Listen "0.0.0.0:15001" is not a loopback address
}

// An app behind an Inbound learns who called it from X-Mesh-Peer-Id; the
// caller reaches it through its own Outbound on a local port.
func Example() {
	td := spiffeid.RequireTrustDomainFromString("minimesh.local")
	ca, _ := certs.NewCA(certs.CAConfig{TrustDomain: td})
	bundle := certs.NewBundleSource(ca.Bundle())
	web, api := certs.NewSVIDSource(nil), certs.NewSVIDSource(nil)
	webSVID, _ := ca.IssueSVID(spiffeid.RequireFromPath(td, "/ns/default/sa/web"), time.Hour)
	apiSVID, _ := ca.IssueSVID(spiffeid.RequireFromPath(td, "/ns/default/sa/api"), time.Hour)
	web.Set(webSVID)
	api.Set(apiSVID)
	quiet := slog.New(slog.DiscardHandler)

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Header.Get(proxy.HeaderPeerID))
	}))
	defer app.Close()

	inLn, _ := net.Listen("tcp", "127.0.0.1:0")
	in, _ := proxy.NewInbound(proxy.InboundConfig{Listener: inLn, App: app.Listener.Addr().String(),
		SVID: api, Bundle: bundle, Logger: quiet})
	outLn, _ := net.Listen("tcp", "127.0.0.1:0")
	out, _ := proxy.NewOutbound(proxy.OutboundConfig{
		Upstreams: []proxy.Upstream{{Name: "api", Listener: outLn, Remote: inLn.Addr().String(), ID: apiSVID.ID}},
		SVID:      web, Bundle: bundle, Logger: quiet,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- in.Run(ctx) }()
	go func() { done <- out.Run(ctx) }()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + outLn.Addr().String() + "/")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))

	cancel()
	<-done
	<-done
	// Output: hello spiffe://minimesh.local/ns/default/sa/web
}

// The inbound learns the app port and protocol of each request from the
// X-Mesh-Target header the outbound sets.
func ExampleParseTarget() {
	t, err := proxy.ParseTarget("grpc/9090")
	fmt.Println(t.Protocol, t.Port, err)
	_, err = proxy.ParseTarget("ssh/22")
	fmt.Println(err)
	// Output:
	// PROTOCOL_GRPC 9090 <nil>
	// proxy: invalid target: "ssh/22": unknown protocol
}

// A table keeps the endpoints whose identity may serve their service.
func ExampleCompileTable() {
	svc := &api.Service{Metadata: api.Metadata{Name: "api", Namespace: "default"}, Spec: &meshv1.ServiceSpec{
		Ports:             []*meshv1.ServicePort{{Name: "http", Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
		ServingIdentities: []string{"spiffe://minimesh.local/ns/default/sa/api"},
	}}
	snap := &meshv1.Snapshot{
		Version:   "v1",
		Resources: []*meshv1.Resource{api.ToProto(svc)},
		Endpoints: []*meshv1.Endpoint{
			{Namespace: "default", Service: "api", Address: "10.0.0.7:15006", SpiffeId: "spiffe://minimesh.local/ns/default/sa/api"},
			{Namespace: "default", Service: "api", Address: "10.0.0.9:15006", SpiffeId: "spiffe://minimesh.local/ns/default/sa/web"},
		},
	}
	table, err := proxy.CompileTable(proxy.TableConfig{Namespace: "default", Service: "web"}, snap)
	if err != nil {
		panic(err)
	}
	fmt.Println(table.Services(), table.Endpoints())
	fmt.Println(table.Rejected())
	// Output:
	// [api.default] 1
	// [spiffe://minimesh.local/ns/default/sa/web at 10.0.0.9:15006 may not serve api.default]
}
