package applink_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"minimesh/dataplane/applink"
	"minimesh/dataplane/applink/applinktest"
)

// The exported contract: a Client reuses one keep-alive connection for
// sequential requests, never one an app poisoned with an unasked answer,
// and the direct path (Do with a Head) gives the app the same head as
// ReverseProxy with Head.Rewrite.
func TestContractClientReusesAndNeverCrossTalks(t *testing.T) {
	var conns atomic.Int64
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok "+r.URL.Query().Get("id"))
	}))
	app.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	app.Start()
	defer app.Close()
	c := applink.New(applink.Config{})
	defer c.CloseIdleConnections()
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodGet, app.URL+"/?id="+string(rune('0'+i)), nil)
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "ok " + string(rune('0'+i)); string(b) != want {
			t.Fatalf("got %q, want %q", b, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 3 sequential requests, want 1", n)
	}

	h := applinktest.NewHostileApp(t)
	for i, path := range []string{"/extra", "/ok?id=1", "/te-cl", "/ok?id=2"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+h.Addr()+path, nil)
		resp, err := c.Do(req, &applink.Head{Addr: h.Addr()})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "forged") {
			t.Fatalf("request %d (%s) read another answer: %q", i, path, b)
		}
	}
}

// Head.Write (the direct path) and Head.Rewrite (ReverseProxy) give the
// app the same request: address, path, peer header, forwarding headers,
// and no mesh or hop-by-hop field.
func TestContractHeadBothPathsAgree(t *testing.T) {
	for _, public := range []bool{false, true} {
		in := httptest.NewRequest(http.MethodGet, "http://api.local/a%2Fb?q=1", nil)
		in.RemoteAddr = "10.0.0.9:4000"
		in.Header.Set("X-Mesh-Peer-Id", "spiffe://forged")
		in.Header.Set("X-Forwarded-For", "1.2.3.4")
		in.Header.Set("Connection", "X-Hop")
		in.Header.Set("X-Hop", "1")
		in.Header.Set("Accept", "text/plain")
		head := &applink.Head{Addr: "127.0.0.1:8080", Path: "/a%2Fb", Public: public}
		if !public {
			head.Peer = []string{"spiffe://minimesh.local/ns/default/sa/web"}
		}

		var buf strings.Builder
		bw := bufio.NewWriter(&buf)
		head.Write(bw, in)
		_ = bw.Flush()
		direct, err := http.ReadRequest(bufio.NewReader(strings.NewReader(buf.String())))
		if err != nil {
			t.Fatal(err)
		}

		out := in.Clone(context.Background())
		out.URL = &url.URL{Path: in.URL.Path, RawPath: in.URL.RawPath, RawQuery: in.URL.RawQuery}
		// ReverseProxy removes hop-by-hop and forwarding fields before
		// Rewrite.
		for _, k := range []string{"Connection", "X-Hop", "X-Forwarded-For"} {
			out.Header.Del(k)
		}
		head.Rewrite(&httputil.ProxyRequest{In: in, Out: out})

		if out.URL.Host != head.Addr || out.URL.EscapedPath() != direct.URL.EscapedPath() || out.URL.RawQuery != direct.URL.RawQuery {
			t.Errorf("public=%v: rewrite to %s %s?%s, direct %s?%s", public, out.URL.Host, out.URL.EscapedPath(), out.URL.RawQuery,
				direct.URL.EscapedPath(), direct.URL.RawQuery)
		}
		for _, k := range []string{"X-Mesh-Peer-Id", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Accept", "X-Hop", "Connection"} {
			if got, want := out.Header.Get(k), direct.Header.Get(k); got != want {
				t.Errorf("public=%v: %s: rewrite %q, direct %q", public, k, got, want)
			}
		}
		if got := direct.Header.Get("X-Mesh-Peer-Id"); public && got != "" || !public && got != head.Peer[0] {
			t.Errorf("public=%v: X-Mesh-Peer-Id %q", public, got)
		}
		if got := direct.Header.Get("X-Forwarded-For"); public && got != "10.0.0.9" || !public && got != "1.2.3.4" {
			t.Errorf("public=%v: X-Forwarded-For %q", public, got)
		}
	}
}

// A response's headers are bounded in time: an app that never answers
// fails the request within Config.ResponseHeader, and its connection is
// not reused.
func TestContractResponseHeaderTimeout(t *testing.T) {
	h := applinktest.NewHostileApp(t)
	c := applink.New(applink.Config{ResponseHeader: 200 * time.Millisecond})
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://"+h.Addr()+"/slow-headers", nil)
	if _, err := c.RoundTrip(req); err == nil {
		t.Fatal("an app that never answers: no error")
	}
	<-h.Wrote
	<-h.Cut // the connection was given up
}
