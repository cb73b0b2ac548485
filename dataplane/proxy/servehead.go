package proxy

import (
	"net/http"
	"net/url"
	"strings"

	"minimesh/api/authz"
	"minimesh/api/pathnorm"
	"minimesh/dataplane/applink"
	"minimesh/dataplane/h1"
	meshv1 "minimesh/proto/mesh/v1"
)

// Requests served from their heads. dataplane/h1 offers each common
// request's head (h1.HeadServer) before it builds an *http.Request. The
// public port serves it from the head when the usual way would do nothing
// to it but what is done here:
//
//   - a GET whose fields are all of passFields, once each: fields the
//     sanitizer (sanitize.go) keeps as they are and the policy does not
//     read. Anything else (X-Request-Id, forwarding headers, underscores,
//     routing overrides, a field twice) goes the usual way, which drops,
//     checks or joins it.
//   - a policy whose decision needs the method and the path only, and
//     allows this request with nothing to log: no rate limits, no access
//     log, no dry-run denial or audit; a denied request goes the usual way
//     too, which answers, counts and logs it.
//
// The app then gets what the usual way sends (applink.Head.Write): the
// request line with the normalized path and the cleaned query, Host, the
// fields with canonical names, a new X-Request-Id, and this hop's
// X-Forwarded-For, -Host and -Proto; the answer goes back by the same
// forwarder (forwarder.forward), with the same metrics, errors and app
// connection. TestHeadServedMatchesUsualWay holds the two equal off the
// wire.
//
// The inbound serves the same requests from their heads, from a peer whose
// connection is not retiring and not revoked by the policy in force,
// decided with the peer's identity; they may also carry the fields a
// peer's outbound adds: one valid X-Request-Id (kept, as the usual way
// keeps it) and one X-Mesh-Target naming an HTTP/1.1 port of the app
// (which picks the port, and does not reach the app). The per-source
// metrics count them as the usual way does (Inbound.logExchange).
// TestInboundHeadServedMatchesUsualWay holds the two ways equal.

// At the outbound, the app's common GET for a service of the mesh is
// served from its head with passFields and one valid X-Request-Id (kept,
// as the usual way keeps it): the route, balancer, retries, timeouts and
// metrics are the usual way's (Outbound.serveHTTP), and the direct path
// writes the fields (outHead.WriteHead). A step that reads a header map
// (routes matching a header other than Host, a try over HTTP/2,
// ReverseProxy) gets one made from the fields (headerOf), as h1 would have
// made it. TestOutboundHeadServedMatchesUsualWay holds the two ways equal.

// passFields are the fields a request served from its head may carry,
// with their canonical names.
var passFields = [...]string{
	"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization",
	"Cache-Control", "Cookie", "If-Match", "If-Modified-Since", "If-None-Match",
	"If-Unmodified-Since", "Origin", "Range", "Referer", "User-Agent",
}

// passField is k's index in passFields, -1 when it is not there.
func passField(k string) int {
	for i, n := range passFields {
		if len(n) == len(k) && strings.EqualFold(n, k) {
			return i
		}
	}
	return -1
}

// headFields reports whether fs are all of passFields, once each, but for
// one valid X-Request-Id when id is set and one X-Mesh-Target when target
// is set; it returns those two ("" when absent).
func headFields(fs []h1.Field, id, target bool) (reqID, tgt string, ok bool) {
	var seen uint32
	for _, f := range fs {
		i := passField(f.Name)
		switch {
		case i >= 0 && seen&(1<<i) == 0:
			seen |= 1 << i
		case i < 0 && id && reqID == "" && strings.EqualFold(f.Name, HeaderRequestID) && validRequestID(f.Value):
			reqID = f.Value
		case i < 0 && target && tgt == "" && strings.EqualFold(f.Name, HeaderTarget) && f.Value != "":
			tgt = f.Value
		default:
			return "", "", false
		}
	}
	return reqID, tgt, true
}

// appendPassFields appends the passFields of fs (checked by headFields)
// to b as the app gets them, with canonical names.
func appendPassFields(b []byte, fs []h1.Field) []byte {
	for _, f := range fs {
		if i := passField(f.Name); i >= 0 {
			b = appendField(b, passFields[i], f.Value)
		}
	}
	return b
}

// appendField appends the field k: v.
func appendField(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	b = append(b, v...)
	return append(b, "\r\n"...)
}

// appendRequestID appends a new X-Request-Id field to b.
func appendRequestID(b []byte) []byte {
	var id [36]byte
	newRequestID(&id)
	b = append(b, HeaderRequestID+": "...)
	b = append(b, id[:]...)
	return append(b, "\r\n"...)
}

// allows reports whether pol allows req with nothing but the allow to
// count: no dry-run denial, no audit. A request served from its head takes
// only that decision; any other goes the usual way, which counts it
// (authorize).
func (e enforcer) allows(pol *Policy, req authz.Request) bool {
	d := pol.Authz().Check(req)
	if !d.Allowed || d.DryRun || d.Audit {
		return false
	}
	e.decisions.allow.Inc()
	return true
}

// limited reports whether p has rate limits.
func (p *Policy) limited() bool { return p != nil && len(p.limits) > 0 }

// keep keeps fields, grown by the request just built, for the next one
// unless they grew large.
func (k *kept) keep(fields []byte) {
	if cap(fields) <= 16<<10 {
		k.fields = fields
	}
}

// request is the connection's request, filled anew from h: no header map
// (the fields go to the app as lines), no body. Its template, made once
// per connection, carries h's context (the connection's one for heads),
// so that nothing is allocated per request; a step that changed the last
// one (headerOf) leaves nothing behind.
func (k *kept) request(h *h1.Head) *http.Request {
	if k.tmpl == nil {
		k.tmpl = (&http.Request{Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Body: http.NoBody}).WithContext(h.Context())
		k.req = new(http.Request)
	}
	r := k.req
	*r = *k.tmpl
	k.url = url.URL{Path: h.Path, RawQuery: h.Query}
	r.Method, r.URL, r.Host, r.RequestURI, r.RemoteAddr, r.TLS = h.Method, &k.url, h.Host, h.Target, h.RemoteAddr, h.TLS
	return r
}

// ServeHead serves h from its head when it can (see above): h1's
// HeadServer.
func (p *Public) ServeHead(w http.ResponseWriter, h *h1.Head) bool {
	if h.Method != http.MethodGet {
		return false
	}
	pol := p.policy.Load()
	if al := p.cfg.AccessLog; pol.limited() || al != nil && al.Enabled() {
		return false
	}
	k := keptOf(w)
	if k == nil {
		return false
	}
	if _, _, ok := headFields(h.Fields, false, false); !ok {
		return false
	}
	path, err := pathnorm.Normalize(h.Path)
	if err != nil || !p.enf.allows(pol, authz.Request{Method: h.Method, Path: path}) {
		return false
	}
	fields := appendRequestID(appendPassFields(k.fields[:0], h.Fields))
	// This hop's forwarding headers, as applink.Head.Write writes them
	// for a Public head, the client's address found once per connection.
	if k.clientIP == "" {
		k.clientIP = applink.ClientIP(h.RemoteAddr)
	}
	if k.clientIP != "" {
		fields = appendField(fields, "X-Forwarded-For", k.clientIP)
	}
	fields = appendField(fields, "X-Forwarded-Host", h.Host)
	fields = appendField(fields, "X-Forwarded-Proto", "https")
	k.keep(fields)
	r := k.request(h)
	d := decisionPool.Get().(*decision)
	d.app = applink.Head{Addr: p.cfg.App, Fields: fields}
	if path != h.Path {
		d.app.Path = path
	}
	d.proto, d.upstream, d.path = meshv1.Protocol_PROTOCOL_HTTP, p.cfg.App, path
	p.fwd.metrics.fromHead.Inc()
	p.fwd.serve(w, r, d)
	*d = decision{}
	decisionPool.Put(d)
	return true
}

// ServeHead serves h from its head when it can (see above): h1's
// HeadServer.
func (in *Inbound) ServeHead(w http.ResponseWriter, h *h1.Head) bool {
	if h.Method != http.MethodGet {
		return false
	}
	pe, ok := peerFrom(h.Context())
	if !ok || pe.retiring.Load() {
		return false
	}
	pol := in.policy.Load()
	if pol.limited() || in.accessLog.Enabled() || pol.Revocations().Refused(pe.header[0], pe.chain) != nil {
		return false
	}
	k := keptOf(w)
	if k == nil {
		return false
	}
	id, target, ok := headFields(h.Fields, true, true)
	if !ok {
		return false
	}
	port := in.appDefault()
	if target != "" {
		p, ok, err := in.targetOf(target)
		if err != nil || !ok {
			return false
		}
		port = p
	}
	if port.proto != meshv1.Protocol_PROTOCOL_HTTP {
		return false
	}
	path, err := pathnorm.Normalize(h.Path)
	if err != nil || !in.enf.allows(pol, authz.Request{Peer: pe.header[0], Method: h.Method, Path: path}) {
		return false
	}
	// The caller's X-Request-Id as the usual way keeps it, else a new one.
	fields := appendPassFields(k.fields[:0], h.Fields)
	if id != "" {
		fields = appendField(fields, HeaderRequestID, id)
	} else {
		fields = appendRequestID(fields)
	}
	k.keep(fields)
	r := k.request(h)
	start := in.cfg.Clock.Now()
	ex := newExchange(w, r, pe)
	pe.begin()
	defer pe.end()
	defer loggedAbort(r, ex, func(ex *inExchange) { in.logExchange(r, pe, ex, start) })
	d := &ex.d
	d.app = applink.Head{Addr: port.addr, Peer: pe.header, Fields: fields}
	if path != h.Path {
		d.app.Path = path
	}
	d.proto, d.peer, d.upstream, d.path = port.proto, pe, port.addr, path
	in.fwd.metrics.fromHead.Inc()
	in.fwd.serve(ex, r, d)
	in.logExchange(r, pe, ex, start)
	ex.release()
	return true
}

// headerOf is the header map h1 makes of fs (canonical keys, values in
// order); nil for no fields.
func headerOf(fs []h1.Field) http.Header {
	if fs == nil {
		return nil
	}
	h := make(http.Header, len(fs))
	for _, f := range fs {
		h.Add(f.Name, f.Value)
	}
	return h
}

// ServeHead serves h from its head when it can (see above): h1's
// HeadServer.
func (o *Outbound) ServeHead(w http.ResponseWriter, h *h1.Head) bool {
	if h.Method != http.MethodGet {
		return false
	}
	if _, _, ok := headFields(h.Fields, true, false); !ok {
		return false
	}
	k := keptOf(w)
	if k == nil {
		return false
	}
	fields := h.Fields
	if fields == nil {
		fields = []h1.Field{} // not nil: served from its head
	}
	if !o.serveHTTP(w, k.request(h), fields) {
		return false
	}
	o.fwd.metrics.fromHead.Inc()
	return true
}
