package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
)

// linesApp answers with a Content-Length body and the fields a proxy must
// pass on or drop: a field name in lower case, a repeated field, the
// app's own Date and Content-Type, and hop-by-hop fields (Keep-Alive,
// Upgrade, Proxy-Authenticate). /sniff has no Content-Type.
func linesApp(t *testing.T) *app {
	t.Helper()
	a := &app{Server: httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["x-lower"] = []string{"v"}
		h["X-Multi"] = []string{"a", "b"}
		h.Set("Date", "Sat, 05 Dec 2026 12:00:00 GMT")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Upgrade", "h2c")
		h.Set("Proxy-Authenticate", "Basic")
		body := "hello"
		if r.URL.Path == "/sniff" {
			body = "<html>x</html>"
		} else {
			h.Set("Content-Type", "text/plain")
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = io.WriteString(w, body)
	}))}
	t.Cleanup(a.Close)
	return a
}

// The direct path's answer as lines (direct.go: the app's head read into
// resphead.Fields, handed to h1 without a header map): on the wire of the
// public port, the app's fields with canonical names, repeated ones kept,
// the app's Date and Content-Type, the length, no hop-by-hop field; a
// body without a Content-Type sniffed as net/http would. Through two
// hops (outbound → inbound → app, each proxy passing lines on) the client
// reads the same.
func TestDirectPathAnswerAsLines(t *testing.T) {
	checkLeaks(t)
	a := linesApp(t)
	want := []string{"Content-Length: 5", "Content-Type: text/plain", "Date: Sat, 05 Dec 2026 12:00:00 GMT",
		"X-Lower: v", "X-Multi: a", "X-Multi: b"}

	pubLn, pubTLS := startPublic(t, a.addr())
	conn, err := tls.Dial("tcp", pubLn.Addr().String(), pubTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for range 2 { // a second request on the same connections too
		_, _ = io.WriteString(conn, "GET /fields HTTP/1.1\r\nHost: a\r\n\r\n")
		status, _ := br.ReadString('\n')
		var got []string
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if l == "\r\n" {
				break
			}
			got = append(got, strings.TrimSuffix(l, "\r\n"))
		}
		slices.Sort(got)
		body := make([]byte, 5)
		_, _ = io.ReadFull(br, body)
		if status != "HTTP/1.1 200 OK\r\n" || !slices.Equal(got, want) || string(body) != "hello" {
			t.Fatalf("one hop, on the wire:\n%q\n%q %q\nwant %q", status, got, body, want)
		}
	}
	c := tlsClient(t, pubTLS.Clone(), false)
	resp, err := c.Get("https://" + pubLn.Addr().String() + "/sniff")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("a body without Content-Type: %q, want it sniffed", ct)
	}

	m := newMesh(t)
	inLn := listenLocal(t)
	startInbound(t, m, a, newMetrics(t), inLn)
	outLn, _ := startOutbound(t, m, inLn.Addr().String(), apiID, newMetrics(t))
	pc := plainClient(t)
	for range 2 {
		resp, err := pc.Get("http://" + outLn.Addr().String() + "/fields")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got []string
		for k, vv := range resp.Header {
			for _, v := range vv {
				got = append(got, k+": "+v)
			}
		}
		slices.Sort(got)
		if resp.StatusCode != 200 || !slices.Equal(got, want) || string(b) != "hello" {
			t.Fatalf("two hops: %d %q %q\nwant %q", resp.StatusCode, got, b, want)
		}
	}
}

// An HTTP/1.1 connection whose peer the new bundle no longer verifies,
// busy with a request answered by the direct path as lines: the answer
// still asks to close (through the header map: inExchange's
// WriteHeaderLines), so the client does not send another request on it.
func TestRetiringConnectionAnswerAsLinesAsksToClose(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	ca2, both := m.secondRoot(t)
	bundle := certs.NewBundleSource(both)
	release := make(chan struct{})
	var hits atomic.Int64
	a := &app{Server: httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.Header().Set("X-App", "1")
		_, _ = io.WriteString(w, "done")
	}))}
	t.Cleanup(a.Close)
	metrics := newMetrics(t)
	_, addr := startPolicyInbound(t, m, bundle, metrics, a)
	cfg := certs.MTLSClientConfig(m.web, certs.NewBundleSource(both), certs.AuthorizeID(spiffeid.RequireFromString(apiID)), certs.TLSOptions{})
	cfg.NextProtos = []string{"http/1.1"}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get("https://" + addr + "/slow")
		if err != nil {
			t.Error(err)
			done <- nil
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- resp
	}()
	eventually(t, "the request reaches the app", func() bool { return hits.Load() == 1 })
	bundle.Set(ca2.Bundle())
	eventually(t, "the connection is retired", func() bool {
		return counterValue(t, metrics.revokedConns.WithLabelValues(ListenerInbound, closeUntrusted)) == 1
	})
	close(release)
	resp := <-done
	if resp == nil || resp.StatusCode != 200 || !resp.Close || resp.Header.Get("X-App") != "1" || resp.ContentLength != 4 {
		t.Fatalf("the answer on a retiring connection: %+v", resp)
	}
}
