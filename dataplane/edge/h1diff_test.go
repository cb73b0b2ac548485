package edge

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"

	"minimesh/dataplane/h1"
)

// seen is a request as a handler sees it, with its whole body.
type seen struct {
	Method, RequestURI, Proto, Host, URL string
	ProtoMinor                           int
	Header, Trailer                      http.Header
	ContentLength                        int64
	TransferEncoding                     []string
	Close                                bool
	Body                                 string
}

func record(r *http.Request) (seen, bool) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return seen{}, false
	}
	return seen{Method: r.Method, RequestURI: r.RequestURI, Proto: r.Proto, Host: r.Host, URL: r.URL.String(),
		ProtoMinor: r.ProtoMinor, Header: r.Header.Clone(), Trailer: r.Trailer.Clone(), ContentLength: r.ContentLength,
		TransferEncoding: r.TransferEncoding, Close: r.Close, Body: string(b)}, true
}

// byteConn is a net.Conn that reads b and discards what is written.
type byteConn struct{ r *bytes.Reader }

func (c byteConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c byteConn) Write(p []byte) (int, error)        { return len(p), nil }
func (c byteConn) Close() error                       { return nil }
func (c byteConn) LocalAddr() net.Addr                { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c byteConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }
func (c byteConn) SetDeadline(t time.Time) error      { return nil }
func (c byteConn) SetReadDeadline(t time.Time) error  { return nil }
func (c byteConn) SetWriteDeadline(t time.Time) error { return nil }

// ours serves b with dataplane/h1 (alone: not behind Strict) and returns
// the first request, if its handler got it and read its body whole.
func ours(b []byte) (seen, bool) {
	var got seen
	ok, first := false, true
	s := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if first {
			first = false
			got, ok = record(r)
		}
	})}
	s.ServeConn(byteConn{bytes.NewReader(b)})
	return got, ok
}

// reference reads b's first request as net/http's server does, behind the
// framing checker: http.ReadRequest, then the server's own checks
// (version, Host, field names and values, Expect), then the body whole;
// and Strict must not refuse a byte of it.
func reference(b []byte) (seen, bool) {
	rd := bytes.NewReader(b)
	br := bufio.NewReader(rd)
	r, err := http.ReadRequest(br)
	if err != nil || r.ProtoMajor != 1 {
		return seen{}, false
	}
	// ReadRequest drops the Host fields the server checks: read them
	// with the same textproto reader.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
	_, _ = tp.ReadLine()
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		return seen{}, false
	}
	hosts, haveHost := mh["Host"]
	if r.ProtoAtLeast(1, 1) && (!haveHost || len(hosts) == 0) && r.Method != http.MethodConnect {
		return seen{}, false
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return seen{}, false
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return seen{}, false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return seen{}, false
			}
		}
	}
	if e := r.Header.Get("Expect"); httpguts.HeaderValuesContainsToken([]string{e}, "100-continue") || strings.Contains(e, "100-continue") {
		r.Header.Del("Expect")
	} else if e != "" {
		return seen{}, false
	}
	got, ok := record(r)
	if !ok {
		return seen{}, false
	}
	consumed := len(b) - rd.Len() - br.Buffered()
	if sok, at := scanAll(b, len(b)); !sok && at < consumed {
		return seen{}, false
	}
	return got, true
}

// FuzzH1VsNetHTTP: dataplane/h1 never accepts a request that net/http's
// server behind Strict refuses, and when both accept it the handler sees
// the same request: method, target, version, Host, header fields (each
// field's values in order), framing, body bytes and trailers.
func FuzzH1VsNetHTTP(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /p?q=1 HTTP/1.0\r\n\r\n",
		"GET http://h/x HTTP/1.1\r\nHost: other\r\n\r\n",
		"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 03\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3;e=\"v\"\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nab",
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx",
		"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nx: 2\r\nX:  3 \t\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: \xff\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
		"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
		"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
		"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nPragma: no-cache\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 ;a\r\nx\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nno colon\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000001\r\nx\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nxGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := ours(b)
		if !ok {
			return
		}
		want, wok := reference(b)
		if !wok {
			t.Fatalf("accepted what net/http behind Strict refuses: %q\nas %+v", b, got)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\nours     %+v\nnet/http %+v", b, got, want)
		}
	})
}
