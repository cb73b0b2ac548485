package proxy

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"

	"minimesh/dataplane/applink"
	"minimesh/dataplane/h1"
	"minimesh/dataplane/internal/resphead"
	"minimesh/dataplane/meshlink"
)

// The outbound's direct path: a request for an http port without a body
// or with one of known length, going over the remote's HTTP/1.1 pool
// (meshlink.Pool.Do), has its head written to the remote inbound straight
// from the request the app sent (outHead), on the handler's goroutine, and
// the answer handed back as on the inbound's direct path
// (forwarder.answer). It is what ReverseProxy with the
// outbound's Rewrite (rewriteOut) and the pool's Request.Write send,
// without cloning the request and its header map, ReverseProxy's context,
// trace and sorting. The route, the timeouts, the retries and the
// balancer's accounting are the same code (Outbound.send).
// TestOutboundDirectHeadMatchesReverseProxy holds the two to the same head
// as the remote reads it.

// directable reports whether the outbound sends r by its direct path: a
// request without a body or with one of known length (Content-Length; not
// chunked), no upgrade, no Expect, no trailers, that goes over the
// HTTP/1.1 pool (overPool). Two rare shapes keep ReverseProxy, so that
// both paths send the same: a Host that Request.Write rewrites
// (non-ASCII: punycode; "%": an IPv6 zone), and a Connection field naming
// an idempotency key (the pool's replay rule reads the key from the
// request; ReverseProxy's copy would not have it).
func (o *Outbound) directable(r *http.Request, c *decision) bool {
	if o.noDirect || r.ContentLength < 0 || len(r.Trailer) != 0 || r.URL.Opaque != "" || r.Method == http.MethodConnect ||
		r.Header["Upgrade"] != nil || r.Header["Expect"] != nil || !o.overPool(c, r) {
		return false
	}
	for i := 0; i < len(r.Host); i++ {
		if b := r.Host[i]; b >= 0x80 || b == '%' {
			return false
		}
	}
	if conn := r.Header["Connection"]; len(conn) > 0 &&
		(applink.ListedIn(conn, "Idempotency-Key") || applink.ListedIn(conn, "X-Idempotency-Key")) {
		return false
	}
	return true
}

// forwardDirect forwards r by the direct path and answers w.
func (o *Outbound) forwardDirect(w http.ResponseWriter, r *http.Request, d *decision) {
	if o.directs != nil {
		o.directs.Add(1)
	}
	d.w = w
	d.raw = getFields(w)
	defer func() {
		putFields(d.raw)
		d.raw = nil
	}()
	resp, err := o.send(r, d, (*outHead)(d))
	if d.early != nil {
		d.early.end()
	}
	if err != nil {
		o.fwd.errorHandler(w, r, err)
		return
	}
	o.fwd.answer(w, resp, d.raw)
}

// Fields is where the remote's answer head goes as lines (direct.go's
// getFields); nil: a header map.
func (h *outHead) Fields() *resphead.Fields { return h.raw.fields() }

// outHead is a request's decision as the head the outbound writes for it
// (meshlink.Head): a pointer conversion, nothing allocated.
type outHead decision

var _ meshlink.Head = (*outHead)(nil)

// WriteHead writes r's head as ReverseProxy, rewriteOut and Request.Write
// would: the path as the app spelled it (keepRawPath) with its query
// cleaned (CleanQuery); Host as sent (the service's name without one,
// empty when invalid); User-Agent only when the app sent one; the body's
// Content-Length (0 for POST, PUT and PATCH without one); then the app's fields less hop-by-hop
// ones, those its Connection field names (with RFC 7230's trimming and
// ASCII case folding, as http.Header.Del matches them), the mesh headers
// (X-Mesh-*, X-Forwarded-Client-Cert) and invalid names, each value with
// line breaks turned to spaces and trimmed; the forwarding headers as the
// app sent them, whatever Connection says (ReverseProxy's Rewrite puts
// them back from the incoming request); Te: trailers when the app's Te
// names trailers; X-Mesh-Target; and X-Request-Id, the app's when it sent
// one valid value, else a new one. Only the order of fields of different
// names differs (ReverseProxy sorts them).
func (h *outHead) WriteHead(bw *bufio.Writer, r *http.Request) {
	d := (*decision)(h)
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	u := *r.URL
	keepRawPath(r, &u)
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	bw.WriteString(path)
	// ReverseProxy cleans the query before Rewrite (the same rule as
	// CleanQuery's first step), then rewriteOut cleans it.
	if q := applink.CleanQuery(r.URL.RawQuery); q != "" || r.URL.ForceQuery {
		bw.WriteByte('?')
		bw.WriteString(q)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := r.Host
	if host == "" {
		host = d.dst.label
	}
	if httpguts.ValidHostHeader(host) { // Request.Write sends an invalid one empty
		bw.WriteString(host)
	}
	bw.WriteString("\r\n")

	hdr := r.Header
	var id string // the X-Request-Id kept; "": a new one
	if hdr == nil && d.fields != nil {
		id = writeHeadFields(bw, d.fields)
	} else {
		id = writeHeaderFields(bw, r)
	}
	if d.port != nil {
		for _, v := range d.port.header {
			writeOutField(bw, HeaderTarget, v)
		}
	}
	if id != "" {
		writeOutField(bw, HeaderRequestID, id)
	} else {
		var nid [36]byte
		newRequestID(&nid)
		bw.WriteString(HeaderRequestID + ": ")
		bw.Write(nid[:])
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
}

// writeHeadFields writes the fields of a request served from its head
// (Outbound.ServeHead: passFields, and an X-Request-Id, returned) as
// writeHeaderFields writes the same fields from h1's header map: canonical
// names, an empty User-Agent left out.
func writeHeadFields(bw *bufio.Writer, fs []h1.Field) (id string) {
	for _, f := range fs {
		i := passField(f.Name)
		switch {
		case i < 0:
			id = f.Value // X-Request-Id, valid (headFields)
		case f.Value == "" && passFields[i] == "User-Agent":
		default:
			writeOutField(bw, passFields[i], f.Value)
		}
	}
	return id
}

// writeHeaderFields writes r's header fields for the remote (WriteHead)
// and returns the X-Request-Id kept ("": a new one).
func writeHeaderFields(bw *bufio.Writer, r *http.Request) string {
	hdr := r.Header
	conn := hdr["Connection"]
	listed := func(k string) bool { return len(conn) > 0 && applink.ListedIn(conn, k) }
	if ua := hdr["User-Agent"]; len(ua) > 0 && ua[0] != "" && !listed("User-Agent") {
		writeOutField(bw, "User-Agent", ua[0])
	}
	if r.ContentLength > 0 {
		var n [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(n[:0], r.ContentLength, 10))
		bw.WriteString("\r\n")
	} else {
		switch r.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			bw.WriteString("Content-Length: 0\r\n")
		}
	}
	ids := hdr[HeaderRequestID]
	if listed(HeaderRequestID) {
		ids = nil
	}
	keepID := len(ids) == 1 && validRequestID(ids[0])
	for k, vv := range hdr {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer", HeaderRequestID:
			continue // written above or below, or never
		case "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
			// Put back from the incoming request after the hop-by-hop
			// fields went: Connection cannot remove them.
		default:
			if applink.IsHopByHop(k) || listed(k) ||
				applink.HasPrefixFold(k, "X-Mesh-") || strings.EqualFold(k, "X-Forwarded-Client-Cert") ||
				!httpguts.ValidHeaderFieldName(k) {
				continue
			}
			if !keepID && len(k) == len(HeaderRequestID) && applink.HasPrefixFold(k, HeaderRequestID) {
				continue // ensureRequestID drops other spellings when it makes an ID
			}
		}
		for _, v := range vv {
			writeOutField(bw, k, v)
		}
	}
	if headerHasToken(hdr["Te"], "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	if keepID {
		return ids[0]
	}
	return ""
}

// Got1xx passes a 1xx answer of the remote on to the app, as ReverseProxy
// does.
func (h *outHead) Got1xx(code int, hdr http.Header) {
	write1xx((*decision)(h).w, code, hdr)
}

// Request returns what ReverseProxy would send for r (its request clone,
// hop-by-hop fields dropped, Te: trailers, forwarding fields dropped,
// rewriteOut, no default User-Agent), for a try that goes over HTTP/2.
// Its 1xx answers reach the app until the direct path's round trip
// returns, as ReverseProxy's trace does.
func (h *outHead) Request(r *http.Request) *http.Request {
	d := (*decision)(h)
	if r.Header == nil && d.fields != nil {
		r.Header = headerOf(d.fields) // served from its head: the map h1 would have made
	}
	if d.early == nil {
		d.early = &early1xx{w: d.w}
	}
	early := d.early
	ctx := httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
			early.pass(code, http.Header(hdr))
			return nil
		},
	})
	out := r.Clone(ctx)
	if r.ContentLength == 0 {
		out.Body = nil
	} else {
		out.Body = io.NopCloser(r.Body) // the transport closes it; the server owns it (ReverseProxy's noopCloseReader)
	}
	out.Close = false
	for _, f := range out.Header["Connection"] {
		for _, sf := range strings.Split(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				out.Header.Del(sf)
			}
		}
	}
	for k := range out.Header {
		if applink.IsHopByHop(k) {
			delete(out.Header, k)
		}
	}
	if headerHasToken(r.Header["Te"], "trailers") {
		out.Header.Set("Te", "trailers")
	}
	for _, k := range applink.ForwardingHeaders {
		delete(out.Header, k)
	}
	rewriteOut(d, r, out)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "")
	}
	return out
}

// early1xx passes the 1xx answers of tries over HTTP/2 (whose transport
// calls from its own goroutine) until the round trip has returned.
type early1xx struct {
	mu   sync.Mutex
	w    http.ResponseWriter
	done bool
}

func (e *early1xx) pass(code int, hdr http.Header) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.done {
		write1xx(e.w, code, hdr)
	}
}

func (e *early1xx) end() {
	e.mu.Lock()
	e.done = true
	e.mu.Unlock()
}

// write1xx sends an informational answer to w (ReverseProxy's way: the
// fields set for it, then cleared).
func write1xx(w http.ResponseWriter, code int, hdr http.Header) {
	dst := w.Header()
	for k, vv := range hdr {
		dst[k] = append(dst[k], vv...)
	}
	w.WriteHeader(code)
	clear(dst)
}

// writeOutField writes one field as http.Header.Write does: line breaks
// in the value become spaces, and it is trimmed.
func writeOutField(bw *bufio.Writer, k, v string) {
	if strings.ContainsAny(v, "\r\n") {
		v = strings.NewReplacer("\n", " ", "\r", " ").Replace(v)
	}
	if v != "" && (isOWS(v[0]) || isOWS(v[len(v)-1])) {
		v = textproto.TrimString(v)
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

func isOWS(b byte) bool { return b == ' ' || b == '\t' || b == '\r' || b == '\n' }

// headerHasToken is httpguts.HeaderValuesContainsToken (ReverseProxy's Te
// check).
func headerHasToken(vv []string, token string) bool {
	return len(vv) > 0 && httpguts.HeaderValuesContainsToken(vv, token)
}
