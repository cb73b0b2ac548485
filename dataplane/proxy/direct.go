package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// The direct path forwards a request without a body to the app on the
// handler's goroutine: its head is written to the app straight from the
// incoming request, filtered as it goes, and the app's answer is copied
// back. It is what httputil.ReverseProxy does for such a request, without
// cloning the request and its header map, building the outgoing header and
// sorting it: about a third of a hop's allocations. Requests with a body,
// upgrades, Expect: 100-continue, request trailers and HTTP/2 to the app
// keep ReverseProxy.

// appHead says how a request's head is rewritten for the app.
type appHead struct {
	addr string // the app's host:port
	// path is the escaped path sent (the inbound's normalized one); empty:
	// the request's own.
	path string
	// peer is the X-Mesh-Peer-Id value (inbound); nil: none.
	peer []string
	// public replaces the caller's forwarding headers with this hop's
	// X-Forwarded-For, -Host and -Proto (a client outside the mesh is not
	// trusted; the public listener serves TLS only, so -Proto is https);
	// otherwise they pass as they are (a peer is authenticated;
	// sanitize.go).
	public bool
	// w receives the app's 1xx answers.
	w http.ResponseWriter
}

// directable reports whether r can take the direct path.
func directable(r *http.Request) bool {
	return r.ContentLength == 0 && len(r.Trailer) == 0 && r.URL.Opaque == "" &&
		r.Method != http.MethodConnect && r.Header["Upgrade"] == nil && r.Header["Expect"] == nil
}

// write writes r's head for the app to bw; bw's error, sticky, shows at
// Flush. Hop-by-hop headers (and those Connection names), mesh headers and,
// on the public listener, the caller's forwarding headers are dropped, as
// ReverseProxy with the listeners' Rewrite would.
func (h *appHead) write(bw *bufio.Writer, r *http.Request) {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	path := h.path
	if path == "" {
		path = r.URL.EscapedPath()
	}
	if path == "" {
		path = "/"
	}
	bw.WriteString(path)
	if r.URL.ForceQuery || r.URL.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(cleanQuery(r.URL.RawQuery))
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := r.Host
	if host == "" {
		host = h.addr
	}
	bw.WriteString(host)
	bw.WriteString("\r\n")
	conn := r.Header["Connection"]
	for k, vv := range r.Header {
		if dropFromRequest(k, h.public) || (len(conn) > 0 && listedIn(conn, k)) {
			continue
		}
		if k == "Cookie" && len(vv) > 1 {
			// HTTP/2 may split cookies into fields; an HTTP/1.1 app gets
			// them joined (RFC 9113 section 8.2.3).
			writeField(bw, k, strings.Join(vv, "; "))
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	if listedIn(r.Header["Te"], "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	if h.peer != nil {
		writeField(bw, HeaderPeerID, h.peer[0])
	}
	if h.public {
		if ip := clientIP(r.RemoteAddr); ip != "" {
			writeField(bw, "X-Forwarded-For", ip)
		}
		writeField(bw, "X-Forwarded-Host", r.Host)
		writeField(bw, "X-Forwarded-Proto", "https")
	}
	bw.WriteString("\r\n")
}

// clientIP is the address part of remoteAddr, "" when it has none: the
// X-Forwarded-For the public port states for its client.
func clientIP(remoteAddr string) string {
	ip, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return ""
	}
	return ip
}

// cleanQuery returns a raw query with the bytes a request line cannot
// carry (space and other controls, non-ASCII) percent-encoded: an HTTP/2
// :path may hold a space in its query (url.Parse allows it), which written
// as is would split the app's request line. Without such bytes (always, for
// HTTP/1.1) q is returned as it is.
func cleanQuery(q string) string {
	if ambiguousQuery(q) {
		// As ReverseProxy does: a query that servers may split
		// differently (";" as a separator, a bad escape) is re-encoded
		// from what Go parses, dropping the parameters it cannot.
		v, _ := url.ParseQuery(q)
		q = v.Encode()
	}
	i := 0
	for i < len(q) && q[i] > ' ' && q[i] < 0x7f {
		i++
	}
	if i == len(q) {
		return q
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.WriteString(q[:i])
	for ; i < len(q); i++ {
		if c := q[i]; c <= ' ' || c >= 0x7f {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// ambiguousQuery reports whether q holds ";" or a "%" not followed by two
// hex digits.
func ambiguousQuery(q string) bool {
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case ';':
			return true
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return true
			}
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// writeField writes one header field; a value with a line break (which
// net/http's servers refuse to parse, so only code could put it there) has
// it replaced by a space, as http.Header.Write does.
func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	writeValue(bw, v)
	bw.WriteString("\r\n")
}

func writeValue(bw *bufio.Writer, v string) {
	if strings.ContainsAny(v, "\r\n") {
		v = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(v)
	}
	bw.WriteString(v)
}

// dropFromRequest reports whether the header k is not passed to the app.
func dropFromRequest(k string, public bool) bool {
	switch k {
	case "Host", "Content-Length":
		return true
	case "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return public
	}
	return isHopByHop(k) || hasPrefixFold(k, "X-Mesh-") || strings.EqualFold(k, "X-Forwarded-Client-Cert")
}

// isHopByHop reports whether k is a hop-by-hop field (RFC 9110 section
// 7.6.1, and those of RFC 2616), which a proxy does not pass on.
func isHopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// dropHopByHop deletes hop-by-hop fields and those Connection names.
func dropHopByHop(h http.Header) {
	conn := h["Connection"]
	for k := range h {
		if isHopByHop(k) || listedIn(conn, k) {
			delete(h, k)
		}
	}
}

// listedIn reports whether the comma-separated values vv (Connection's,
// Te's) name k.
func listedIn(vv []string, k string) bool {
	for _, f := range vv {
		for f != "" {
			var tok string
			tok, f, _ = strings.Cut(f, ",")
			if strings.EqualFold(strings.TrimSpace(tok), k) {
				return true
			}
		}
	}
	return false
}

// informational passes a 1xx answer of the app on to the client, as
// ReverseProxy does.
func (h *appHead) informational(code int, hdr http.Header) {
	dst := h.w.Header()
	for k, vv := range hdr {
		dst[k] = append(dst[k], vv...)
	}
	h.w.WriteHeader(code)
	clear(dst)
}

// forwardDirect sends r to the app by the direct path and copies the answer
// to w. Errors are answered by errorHandler; a body cut midway aborts the
// handler (http.ErrAbortHandler), so the client sees the response fail.
func (f *forwarder) forwardDirect(w http.ResponseWriter, r *http.Request, head *appHead) {
	head.w = w
	resp, err := f.direct.do(head.addr, r, head)
	if err != nil {
		f.errorHandler(w, r, err)
		return
	}
	dropHopByHop(resp.Header)
	dst := w.Header()
	for k, vv := range resp.Header {
		if cur := dst[k]; len(cur) > 0 {
			dst[k] = append(cur, vv...)
		} else {
			dst[k] = vv // the response is ours: no copy
		}
	}
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		dst.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(resp.StatusCode)
	// A body of unknown length (a stream) or server-sent events go to
	// the client as they come.
	stream := resp.ContentLength < 0 || hasPrefixFold(resp.Header.Get("Content-Type"), "text/event-stream")
	if err := copyBody(w, resp.Body, stream); err != nil {
		_ = resp.Body.Close()
		panic(http.ErrAbortHandler)
	}
	_ = resp.Body.Close() // fills resp.Trailer
	if len(resp.Trailer) == 0 {
		return
	}
	// Force chunking, so net/http does not compute a length for a short
	// body and drop the trailers; then trailers the app announced go by
	// their names, any others with http.TrailerPrefix.
	_ = http.NewResponseController(w).Flush()
	for k, vv := range resp.Trailer {
		if len(resp.Trailer) != announced {
			k = http.TrailerPrefix + k
		}
		dst[k] = vv
	}
}

// copyBody copies the app's body to the client through a pooled buffer,
// flushing after every read when stream is set.
func copyBody(w http.ResponseWriter, body io.Reader, stream bool) error {
	buf := bufferPool{}.Get()
	defer bufferPool{}.Put(buf)
	var flush func() error
	if stream {
		flush = http.NewResponseController(w).Flush
	}
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush != nil {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
