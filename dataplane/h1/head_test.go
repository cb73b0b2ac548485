package h1

import (
	"bufio"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// headSeeds: the first offeredSeeds are offered as heads.
const offeredSeeds = 5

var headSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a/b?x=1 HTTP/1.1\r\nHost: a:80\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
	"GET /a HTTP/1.1\r\nhost:a\r\naccept:\t x \t\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n", // obs-text
	"get /a HTTP/1.1\r\nHost: a\r\n\r\n",                   // a token: the HeadServer judges it
	"HEAD /a HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n",
	"GET /a HTTP/1.0\r\nHost: a\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET /a HTTP/1.1\r\nX: 1\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: a b\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: a\r\n X: 1\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: a\r\nX Y: 1\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: a\r\nX-\xff: 1\r\n\r\n",
	"CONNECT /a HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET  /a HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a%20b HTTP/1.1\r\nHost: a\r\n\r\n",
}

// FuzzHeadVsParse: whatever scanHead offers, parseHead (the usual way)
// accepts, and reads as the same request: method, target, path, query,
// Host, the fields (canonical names, values in order), no body, the
// connection kept. So a HeadServer sees what a Handler would.
func FuzzHeadVsParse(f *testing.F) {
	for _, s := range headSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		head, err := readHead(bufio.NewReader(strings.NewReader(s)), nil, 1<<20, 100)
		if err != nil {
			return
		}
		var h Head
		var fields [MaxHeadFields]Field
		if !scanHead(head, &h, &fields) {
			return
		}
		var p parsed
		var rm room
		if err := parseHead(head, &p, &rm); err != nil {
			t.Fatalf("scanHead offered %q, which parseHead refuses: %v", head, err)
		}
		hdr := http.Header{}
		for _, f := range h.Fields {
			hdr.Add(f.Name, f.Value)
		}
		switch {
		case p.method != h.Method || p.target != h.Target || p.url.Path != h.Path || p.url.RawQuery != h.Query ||
			p.url.RawPath != "" || p.host != h.Host:
			t.Fatalf("%q: parseHead read %s %s (path %q query %q) Host %q, scanHead %s %s (%q %q) %q",
				head, p.method, p.target, p.url.Path, p.url.RawQuery, p.host, h.Method, h.Target, h.Path, h.Query, h.Host)
		case !reflect.DeepEqual(p.header, hdr):
			t.Fatalf("%q: fields %q, scanHead's %q", head, p.header, hdr)
		case p.contentLength != 0 || p.chunked || p.close || p.expectContinue || p.trailer != nil || p.minor != 1:
			t.Fatalf("%q: parseHead reads a body, a close or a version: %+v", head, p)
		}
	})
}

// TestScanHeadOffersCommonRequests: what clients send most is offered;
// the rest is left to the usual way.
func TestScanHeadOffersCommonRequests(t *testing.T) {
	var room [MaxHeadFields]Field
	for _, s := range headSeeds[:offeredSeeds] {
		var h Head
		if !scanHead([]byte(s), &h, &room) {
			t.Errorf("scanHead declined %q", s)
		}
	}
	for _, s := range headSeeds[offeredSeeds:] {
		var h Head
		if scanHead([]byte(s), &h, &room) {
			t.Errorf("scanHead offered %q", s)
		}
	}
	many := "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: 1\r\n", MaxHeadFields+1) + "\r\n"
	var h Head
	if scanHead([]byte(many), &h, &room) {
		t.Errorf("scanHead offered %d fields", MaxHeadFields+1)
	}
}
