package main

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

// The request heads the app gets from each proxy in the benchmark (wrk
// sends only Host): nginx's (proxy_pass http://app; Connection ""), one
// mesh-proxy's public port (this hop's X-Forwarded-* and an X-Request-Id)
// and the pair's inbound (X-Mesh-Peer-Id and the X-Request-Id the
// outbound made). BenchmarkAppReadsRequest measures what parsing each
// costs the app's net/http server, the part of "app ×" (bench/RESULTS.md)
// that is the head's, not the timing's.
var appHeads = []struct{ name, head string }{
	{"nginx", "GET / HTTP/1.1\r\nHost: app\r\n\r\n"},
	{"mesh-proxy-public", "GET / HTTP/1.1\r\nHost: 127.0.0.1:40123\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Host: 127.0.0.1:40123\r\nX-Forwarded-Proto: https\r\nX-Request-Id: 4bf92f35-77b3-4da6-a3ce-929d0e0e4736\r\n\r\n"},
	{"mesh-proxy-inbound", "GET / HTTP/1.1\r\nHost: 127.0.0.1:40124\r\nX-Mesh-Peer-Id: spiffe://minimesh.local/ns/default/sa/web-1\r\nX-Request-Id: 4bf92f35-77b3-4da6-a3ce-929d0e0e4736\r\n\r\n"},
}

func BenchmarkAppReadsRequest(b *testing.B) {
	for _, h := range appHeads {
		b.Run(h.name, func(b *testing.B) {
			src := bytes.NewReader(nil)
			br := bufio.NewReader(src)
			b.ReportAllocs()
			for b.Loop() {
				src.Reset([]byte(h.head))
				br.Reset(src)
				r, err := http.ReadRequest(br)
				if err != nil {
					b.Fatal(err)
				}
				_ = r
			}
		})
	}
}

func TestAppHeadsParse(t *testing.T) {
	for _, h := range appHeads {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader([]byte(h.head))))
		if err != nil || r.Method != http.MethodGet || r.Host == "" {
			t.Fatalf("%s: %v %+v", h.name, err, r)
		}
	}
}
