package applink

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"minimesh/dataplane/internal/resphead"
)

// HeaderPeerID carries the caller's SPIFFE ID from the inbound to the app.
// Only the inbound sets it, from the verified peer certificate; any value a
// client sends is removed first.
const HeaderPeerID = "X-Mesh-Peer-Id"

// ForwardingHeaders are the forwarding fields ReverseProxy drops before
// Rewrite; a meshed caller's pass to the app as it sent them.
var ForwardingHeaders = [...]string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// Config bounds the link to the app. Zero fields take the defaults given
// beside them (WithDefaults).
type Config struct {
	Dial           time.Duration // TCP connect to the app; 5s
	Idle           time.Duration // an idle pooled connection is closed after; 120s
	ResponseHeader time.Duration // waiting for the app's response headers; 60s
	// MaxIdleConnsPerHost sizes the pool of idle connections per address
	// (net/http's default, 2, leaves thousands of sockets in TIME_WAIT
	// under load); 256.
	MaxIdleConnsPerHost int
}

// WithDefaults fills the zero fields of c.
func (c Config) WithDefaults() Config {
	if c.Dial <= 0 {
		c.Dial = 5 * time.Second
	}
	if c.Idle <= 0 {
		c.Idle = 120 * time.Second
	}
	if c.ResponseHeader <= 0 {
		c.ResponseHeader = 60 * time.Second
	}
	if c.MaxIdleConnsPerHost <= 0 {
		c.MaxIdleConnsPerHost = 256
	}
	return c
}

// Transport is net/http's pool towards the local app, for what Client does
// not carry (upgrades, Expect: 100-continue) and for h2c: plain HTTP/1.1
// on loopback, sized for load, never through a proxy from the environment,
// and without transparent compression (a proxy passes bodies through as
// they are). Zero fields of cfg take their defaults.
func Transport(cfg Config) *http.Transport {
	cfg = cfg.WithDefaults()
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            (&net.Dialer{Timeout: cfg.Dial, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:           4 * cfg.MaxIdleConnsPerHost,
		MaxIdleConnsPerHost:    cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:        cfg.Idle,
		ResponseHeaderTimeout:  cfg.ResponseHeader,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
		DisableCompression:     true,
	}
}

// What the app receives of a request is decided once, by the listener, as
// a Head: the app's address, the path the policy matched, the caller's
// identity, and whether the caller is outside the mesh. The direct path
// writes it (Client.Do, Head.Write); ReverseProxy's path applies the same
// Head (Head.Rewrite). The two give the app the same head
// (TestDirectPathHeadMatchesReverseProxy in dataplane/proxy).

// Rewrite is Head for ReverseProxy: pr.Out goes to h.Addr in plain HTTP,
// with h.Path (when set) and a clean query, without mesh headers; it
// carries X-Mesh-Peer-Id when h.Peer is set; at the public port
// (h.Public) it states this hop's X-Forwarded-For, -Host and -Proto,
// otherwise the caller's forwarding headers pass as it sent them.
func (h *Head) Rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = h.Addr
	pr.Out.URL.RawQuery = CleanQuery(pr.Out.URL.RawQuery)
	if h.Path != "" {
		SetPath(pr.Out.URL, h.Path)
	}
	StripMeshHeaders(pr.Out.Header)
	if h.Peer != nil {
		pr.Out.Header[HeaderPeerID] = h.Peer
	}
	if h.Public {
		// What the direct path writes: the client's address (its own
		// forwarding headers are gone), the Host it asked for and https,
		// the only scheme served there.
		if ip := ClientIP(pr.In.RemoteAddr); ip != "" {
			pr.Out.Header["X-Forwarded-For"] = []string{ip}
		}
		pr.Out.Header["X-Forwarded-Host"] = []string{pr.In.Host}
		pr.Out.Header["X-Forwarded-Proto"] = []string{"https"}
		return
	}
	// A caller in the mesh is authenticated: its forwarding headers (say,
	// a gateway's client address) reach the app as it sent them, as
	// Istio's sidecars pass them.
	for _, k := range ForwardingHeaders {
		if v, ok := pr.In.Header[k]; ok {
			pr.Out.Header[k] = v
		}
	}
}

// SetPath makes u's path the escaped p, so that the app receives exactly
// the form the policy matched.
func SetPath(u *url.URL, p string) {
	if dec, err := url.PathUnescape(p); err == nil {
		u.Path, u.RawPath = dec, p
	}
}

// StripMeshHeaders deletes every header a caller could use to impersonate
// the mesh: X-Mesh-* (the proxy alone sets X-Mesh-Peer-Id) and
// X-Forwarded-Client-Cert. Keys are compared case-insensitively because a
// non-token key is not canonicalised by net/http.
func StripMeshHeaders(h http.Header) {
	for k := range h {
		if HasPrefixFold(k, "X-Mesh-") || strings.EqualFold(k, "X-Forwarded-Client-Cert") {
			delete(h, k)
		}
	}
}

// HasPrefixFold reports whether s starts with prefix, ignoring ASCII case.
func HasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// Head says how a request's head is rewritten for the app.
type Head struct {
	Addr string // the app's host:port
	// Path is the escaped path sent (the normalized one the policy
	// matched); empty: the request's own.
	Path string
	// Peer is the X-Mesh-Peer-Id value (inbound); nil: none.
	Peer []string
	// Public replaces the caller's forwarding headers with this hop's
	// X-Forwarded-For, -Host and -Proto (a client outside the mesh is not
	// trusted; the public listener serves TLS only, so -Proto is https);
	// otherwise they pass as they are (a peer is authenticated;
	// sanitize.go).
	Public bool
	// W receives the app's 1xx answers on the direct path (Client.Do).
	W http.ResponseWriter
	// Affinity, when set, is the client connection's: the request goes
	// on the app connection it holds, and the answer's connection stays
	// with it (see Affinity).
	Affinity *Affinity
	// Fields, when set, are the request's header fields as lines
	// ("Name: value\r\n"), already as the app is to get them: Write
	// writes them before r.Header's (a request served from its head,
	// dataplane/h1's HeadServer, has no header map: they are all its
	// fields).
	Fields []byte
	// Raw, when set, takes the final answer's head when it is of the
	// common form (dataplane/internal/resphead): the response then has no
	// header map (Header nil), its fields are in Raw, as W passes them on
	// (h1.LinesWriter).
	Raw *resphead.Fields
}

// Directable reports whether r can take the direct path.
func Directable(r *http.Request) bool {
	return r.ContentLength == 0 && len(r.Trailer) == 0 && r.URL.Opaque == "" &&
		r.Method != http.MethodConnect && r.Header["Upgrade"] == nil && r.Header["Expect"] == nil
}

// Write writes r's head for the app to bw; bw's error, sticky, shows at
// Flush. It is what ReverseProxy with the listeners' Rewrite sends
// (TestDirectPathWireHeadMatchesReverseProxy in dataplane/proxy compares
// the two off the wire), fields of different names aside, which
// ReverseProxy sorts: the query cleaned (CleanQuery), and no "?" when
// nothing is left of it (unless the caller sent a bare "?"); the fields
// less those DropField names (hop-by-hop ones, those Connection names as
// http.Header.Del finds them, mesh headers, and on the public listener the
// caller's forwarding headers); Te: trailers when the caller's Te has that
// token (httpguts.HeaderValuesContainsToken, as ReverseProxy checks); then
// the fields the proxy sets.
func (h *Head) Write(bw *bufio.Writer, r *http.Request) {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	path := h.Path
	if path == "" {
		path = r.URL.EscapedPath()
	}
	if path == "" {
		path = "/"
	}
	bw.WriteString(path)
	// ReverseProxy sends the cleaned query as URL.RequestURI does: a
	// query that cleans to nothing ("a;b") leaves no "?".
	if q := CleanQuery(r.URL.RawQuery); q != "" || r.URL.ForceQuery {
		bw.WriteByte('?')
		bw.WriteString(q)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := r.Host
	if host == "" {
		host = h.Addr
	}
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if h.Fields != nil {
		bw.Write(h.Fields)
	}
	conn := r.Header["Connection"]
	for k, vv := range r.Header {
		if DropField(k, conn, h.Public) {
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
	if te := r.Header["Te"]; len(te) > 0 && httpguts.HeaderValuesContainsToken(te, "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	if h.Peer != nil {
		writeField(bw, HeaderPeerID, h.Peer[0])
	}
	if h.Public {
		if ip := ClientIP(r.RemoteAddr); ip != "" {
			writeField(bw, "X-Forwarded-For", ip)
		}
		writeField(bw, "X-Forwarded-Host", r.Host)
		writeField(bw, "X-Forwarded-Proto", "https")
	}
	bw.WriteString("\r\n")
}

// ClientIP is the address part of remoteAddr, "" when it has none: the
// X-Forwarded-For the public port states for its client.
func ClientIP(remoteAddr string) string {
	ip, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return ""
	}
	return ip
}

// CleanQuery returns a raw query with the bytes a request line cannot
// carry (space and other controls, non-ASCII) percent-encoded: an HTTP/2
// :path may hold a space in its query (url.Parse allows it), which written
// as is would split the app's request line. Without such bytes (always, for
// HTTP/1.1) q is returned as it is.
func CleanQuery(q string) string {
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

// DropField reports whether the field k of a request whose Connection
// field is conn is not passed to the app, as ReverseProxy with the
// listeners' Rewrite decides: DropFromRequest's fields, and those conn
// names (ListedIn), except the forwarding headers when they pass (not
// public): Rewrite puts them back from the incoming request, so a caller's
// Connection cannot remove them. (Removing them would be the unsafe side:
// a client behind a gateway in the mesh that passes Connection on could
// strip the gateway's X-Forwarded-For and look like the gateway itself.)
func DropField(k string, conn []string, public bool) bool {
	if DropFromRequest(k, public) {
		return true
	}
	switch k {
	case "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return false
	}
	return len(conn) > 0 && ListedIn(conn, k)
}

// DropFromRequest reports whether the header k is not passed to the app,
// whatever the request's Connection field names (DropField).
func DropFromRequest(k string, public bool) bool {
	switch k {
	case "Host", "Content-Length":
		return true
	case "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return public
	}
	return IsHopByHop(k) || HasPrefixFold(k, "X-Mesh-") || strings.EqualFold(k, "X-Forwarded-Client-Cert")
}

// IsHopByHop reports whether k is a hop-by-hop field (RFC 9110 section
// 7.6.1, and those of RFC 2616), which a proxy does not pass on.
func IsHopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// DropHopByHop deletes hop-by-hop fields and those Connection names.
func DropHopByHop(h http.Header) {
	conn := h["Connection"]
	for k := range h {
		if IsHopByHop(k) || ListedIn(conn, k) {
			delete(h, k)
		}
	}
}

// ListedIn reports whether the comma-separated values vv (Connection's)
// name the field k as ReverseProxy's http.Header.Del finds it: each name
// trimmed of spaces, tabs and line breaks only (textproto.TrimString; not
// a no-break space), then canonicalized (http.CanonicalHeaderKey: ASCII
// case folding of a token, a non-token as it is). Unicode case folding
// would let "X-\u212Aey" (a KELVIN SIGN) name X-Key, and the two paths
// differ.
func ListedIn(vv []string, k string) bool {
	for _, f := range vv {
		for f != "" {
			var name string
			name, f, _ = strings.Cut(f, ",")
			if name = textproto.TrimString(name); name != "" && canonicalIs(name, k) {
				return true
			}
		}
	}
	return false
}

// canonicalIs reports whether http.CanonicalHeaderKey(name) == k, without
// allocating.
func canonicalIs(name, k string) bool {
	if name == k {
		return true
	}
	if len(name) != len(k) {
		return false
	}
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !httpguts.IsTokenRune(rune(c)) {
			return false // not canonicalized: only the same string is k
		}
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != k[i] {
			return false
		}
		upper = c == '-'
	}
	return true
}

// informational passes a 1xx answer of the app on to the client, as
// ReverseProxy does.
func (h *Head) informational(code int, hdr http.Header) {
	dst := h.W.Header()
	for k, vv := range hdr {
		dst[k] = append(dst[k], vv...)
	}
	h.W.WriteHeader(code)
	clear(dst)
}
