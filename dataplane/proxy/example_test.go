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

	"minimesh/certs"
	"minimesh/dataplane/proxy"
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
