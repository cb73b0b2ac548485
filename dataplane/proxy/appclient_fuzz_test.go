package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	"minimesh/dataplane/applink"
)

// FuzzAppClientHead writes a request head for the app (the direct path's
// applink.Head.Write) and parses it back as the app would (http.ReadRequest):
// the bytes must be exactly one request, with the method, target, Host and
// headers the proxy received, less the documented filtering (hop-by-hop
// fields and those Connection names, mesh headers, Content-Length, and at
// the public port the caller's forwarding headers, after the listeners'
// sanitize), plus only the fields the proxy sets itself; nothing may be
// left over. The request is built as net/http's HTTP/2 server builds one
// (it checks less than an HTTP/1.1 parse), so :path, :authority and field
// values an HTTP/1.1 client could not send are covered. make test runs the
// seeds (testdata/fuzz/FuzzAppClientHead); make soak fuzzes.
func FuzzAppClientHead(f *testing.F) {
	for _, s := range []struct {
		method, target, host, fields string
		public                       bool
	}{
		{"GET", "/a/b?x=1&y=2", "api.default", "Accept: */*\nUser-Agent: curl/8\n", false},
		{"POST", "/p", "example.com", "Cookie: a=1\nCookie: b=2\nTe: trailers, gzip\n", true},
		{"GET", "/q?a b&c=%zz;d", "h:8080", "Connection: X-Secret, keep-alive\nX-Secret: 1\nX-Mesh-Peer-Id: forged\n", false},
		{"DELETE", "/%2F..%2f?", "", "X-Forwarded-For: 1.2.3.4\nForwarded: for=evil\nX_Forwarded_For: 9.9.9.9\n", true},
		{"OPTIONS", "/x", "[::1]:80", "Transfer-Encoding: chunked\nContent-Length: 5\nUpgrade: h2c\n", false},
		{"GET", "/é?ü=1", "a", "X-Long: " + strings.Repeat("v", 300) + "\nX-Obs: caf\xe9\n", false},
	} {
		f.Add(s.method, s.target, s.host, s.fields, s.public)
	}
	san := map[bool]*sanitizer{}
	m, err := NewMetrics(nil)
	if err != nil {
		f.Fatal(err)
	}
	san[false], san[true] = newSanitizer(m, ListenerInbound), newSanitizer(m, ListenerPublic)
	const peer = "spiffe://minimesh.local/ns/default/sa/web"
	f.Fuzz(func(t *testing.T, method, target, host, fields string, public bool) {
		r, ok := fuzzH2Request(method, target, host, fields)
		if !ok || san[public].sanitize(r) != nil || !applink.Directable(r) {
			return // refused before the app (or not the direct path)
		}
		sent := r.Header.Clone()
		h := &applink.Head{Addr: "127.0.0.1:8080", Public: public}
		if !public {
			h.Peer = []string{peer}
		}
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		h.Write(bw, r)
		if err := bw.Flush(); err != nil {
			t.Fatal(err)
		}
		head := buf.String()
		br := bufio.NewReader(&buf)
		got, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("the app cannot parse the head: %v\n%q", err, head)
		}
		if n, _ := io.Copy(io.Discard, got.Body); n != 0 || got.ContentLength > 0 || len(got.TransferEncoding) > 0 {
			t.Fatalf("the head announces a body:\n%q", head)
		}
		if rest, _ := io.ReadAll(br); len(rest) > 0 {
			t.Fatalf("%d bytes after the request (a second request?): %q\nhead %q", len(rest), rest, head)
		}
		if got.Method != r.Method {
			t.Errorf("method %q, sent %q", got.Method, r.Method)
		}
		path := r.URL.EscapedPath()
		if path == "" {
			path = "/"
		}
		wantTarget := path
		if q := applink.CleanQuery(r.URL.RawQuery); q != "" || r.URL.ForceQuery {
			wantTarget += "?" + q // as ReverseProxy: no "?" when the query cleans to nothing
		}
		if got.RequestURI != wantTarget || got.URL.Path != r.URL.Path && r.URL.Path != "" {
			t.Errorf("target %q (path %q), want %q (path %q)", got.RequestURI, got.URL.Path, wantTarget, r.URL.Path)
		}
		wantHost := r.Host
		if wantHost == "" {
			wantHost = h.Addr
		}
		if got.Host != wantHost {
			t.Errorf("Host %q, want %q", got.Host, wantHost)
		}
		// The proxy's own fields.
		own := map[string][]string{}
		switch r.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			own["Content-Length"] = []string{"0"}
		}
		if applink.ListedIn(sent["Te"], "trailers") {
			own["Te"] = []string{"trailers"}
		}
		if !public {
			own[HeaderPeerID] = []string{peer}
		} else {
			own["X-Forwarded-Host"] = []string{r.Host}
			own["X-Forwarded-Proto"] = []string{"https"}
		}
		want := http.Header{}
		for k, vv := range sent {
			if applink.DropField(k, sent["Connection"], public) {
				continue
			}
			for _, v := range vv {
				want[k] = append(want[k], textproto.TrimString(v))
			}
			if k == "Cookie" && len(vv) > 1 {
				want[k] = []string{textproto.TrimString(strings.Join(vv, "; "))}
			}
		}
		for k, v := range own {
			want[k] = v
		}
		if public {
			xff := got.Header["X-Forwarded-For"]
			delete(got.Header, "X-Forwarded-For")
			if len(xff) != 1 || xff[0] != "192.0.2.1" {
				t.Errorf("X-Forwarded-For %q: want only the client's address at the public port", xff)
			}
		}
		for k, vv := range want {
			if !slices.Equal(got.Header[k], vv) {
				t.Errorf("header %s: the app got %q, want %q", k, got.Header[k], vv)
			}
		}
		for k := range got.Header {
			if _, ok := want[k]; !ok {
				t.Errorf("header %s %q reached the app, unsent or filtered", k, got.Header[k])
			}
		}
		if t.Failed() {
			t.Logf("head:\n%q", head)
		}
	})
}

// fuzzH2Request builds the request net/http's HTTP/2 server would hand a
// handler for these pseudo-headers and fields ("name: value" lines), or
// false when that server would refuse them.
func fuzzH2Request(method, target, host, fields string) (*http.Request, bool) {
	if method == "" || !strings.HasPrefix(target, "/") || !httpguts.ValidHeaderFieldValue(host) {
		return nil, false
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, false
	}
	r := &http.Request{Method: method, URL: u, RequestURI: target, Host: host, Proto: "HTTP/2.0",
		ProtoMajor: 2, Header: http.Header{}, Body: http.NoBody, RemoteAddr: "192.0.2.1:4321"}
	for line := range strings.SplitSeq(fields, "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
			return nil, false
		}
		k = http.CanonicalHeaderKey(k)
		if k == "Content-Length" {
			continue // the HTTP/2 server keeps its own framing
		}
		r.Header[k] = append(r.Header[k], strings.TrimSpace(v))
	}
	return r, true
}
