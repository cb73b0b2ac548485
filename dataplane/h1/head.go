package h1

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Requests served from their heads. Most requests a proxy forwards are a
// GET with a handful of fields; building an *http.Request for one (a
// header map with canonical keys, a URL, a context of its own) costs more
// than forwarding it. A Handler that also implements HeadServer is offered
// each such request's Head first: the request line and fields as they
// came, checked, with no map. It serves the request on the ResponseWriter
// it is given, or declines, having written nothing, and the request is
// served the usual way (ServeHTTP) from the same bytes.
//
// A head is offered only when the usual way would accept it with nothing
// to add or take away: an HTTP/1.1 request line with a token method (not
// CONNECT) and an origin-form target (splitOriginForm), fields that
// parseHead takes as they are (token names, no obs-fold, valid value
// bytes), exactly one Host field, valid, and none of the fields that
// change how the request is read or answered (Content-Length,
// Transfer-Encoding, Expect, Connection, Trailer, Upgrade, Pragma), at
// most MaxHeadFields of them. So what is offered carries no body, keeps
// its connection open, and means to the HeadServer what it would mean as
// an *http.Request (FuzzHeadVsParse holds this).

// MaxHeadFields bounds the fields (Host aside) of an offered head.
const MaxHeadFields = 16

// HeadServer serves requests from their heads (see above). ServeHead
// answers h on w and returns true, or returns false having written
// nothing. w is this package's ResponseWriter (it implements LinesWriter
// and Keeper), which the connection reuses for its next head: keep it no
// more than h. ServeHead runs on the connection's goroutine, as ServeHTTP
// does, and may panic with http.ErrAbortHandler to cut the answer.
type HeadServer interface {
	ServeHead(w http.ResponseWriter, h *Head) bool
}

// Head is a request as its head says, checked (see above). Its strings
// are valid until ServeHead returns; Fields is reused by the next
// request.
type Head struct {
	Method string
	Target string // as sent: Path, and "?" Query if there is one
	Path   string // escaped, as sent
	Query  string // raw, without "?"
	Host   string // the Host field's value
	// Fields are the header fields other than Host, in order, names as
	// sent (tokens, not canonicalized), values trimmed of spaces and tabs.
	Fields     []Field
	RemoteAddr string
	TLS        *tls.ConnectionState // nil on a plain connection
	ctx        context.Context
}

// Field is one header field of a Head.
type Field struct{ Name, Value string }

// Context is the request's context, as an *http.Request's: it ends when
// ServeHead returns, when the client goes away mid-request (the watch), at
// Close, and with the Server's BaseContext. The connection reuses it for
// its next request served from its head, so it is valid until ServeHead
// returns, as h's strings are: keep neither past that.
func (h *Head) Context() context.Context { return h.ctx }

// scanHead reads head (from readHead) into h when it is of the form
// offered to a HeadServer; fields is the room for h.Fields.
func scanHead(head []byte, h *Head, fields *[MaxHeadFields]Field) bool {
	s := string(head[:len(head)-2]) // one copy; the empty line's CRLF off
	line, rest, _ := strings.Cut(s, "\r\n")
	method, r2, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(r2, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" || !validToken(method) || method == http.MethodConnect {
		return false
	}
	path, query, ok := splitOriginForm(target)
	if !ok {
		return false
	}
	n, hosts := 0, 0
	var host string
	for rest != "" {
		var fl string
		fl, rest, _ = strings.Cut(rest, "\r\n")
		k, v, err := splitField(fl)
		if err != nil {
			return false // the usual way refuses it
		}
		if strings.EqualFold(k, "Host") {
			hosts++
			host = v
			continue
		}
		if changesReading(k) || n == len(fields) {
			return false
		}
		fields[n] = Field{Name: k, Value: v}
		n++
	}
	if hosts != 1 || !httpguts.ValidHostHeader(host) {
		return false
	}
	*h = Head{Method: method, Target: target, Path: path, Query: query, Host: host, Fields: fields[:n]}
	return true
}

// changesReading reports whether the field k changes how a request is
// read or answered, or what its handler sees of it (parseHead).
func changesReading(k string) bool {
	switch len(k) {
	case 6:
		return strings.EqualFold(k, "Expect") || strings.EqualFold(k, "Pragma")
	case 7:
		return strings.EqualFold(k, "Trailer") || strings.EqualFold(k, "Upgrade")
	case 10:
		return strings.EqualFold(k, "Connection")
	case 14:
		return strings.EqualFold(k, "Content-Length")
	case 17:
		return strings.EqualFold(k, "Transfer-Encoding")
	}
	return false
}

// serveHead offers head to the HeadServer; served: it answered, and keep:
// the connection goes on.
func (c *conn) serveHead(head []byte) (done, keep bool) {
	h := &c.offered
	if !scanHead(head, h, &c.offeredFields) {
		return false, false
	}
	// The request's context: the connection's one for heads, made anew
	// (reset: its last request's cancel ran when that one ended).
	rc := &c.headCtx
	if rc.Context == nil {
		rc.Context = c.ctx
	} else {
		rc.reset()
	}
	h.RemoteAddr, h.TLS, h.ctx = c.remote, c.tls, rc
	c.setRequest(rc)
	defer c.endRequest(rc)
	if c.resHdr == nil {
		c.resHdr = make(http.Header)
	}
	w := &c.headW
	*w = response{c: c, header: c.resHdr, cl: -1, isHEAD: h.Method == http.MethodHead, is11: true}
	defer func() {
		*h = Head{}
		c.answered()
	}()
	c.canContinue, c.sentContinue = false, false
	c.armWatch(true)
	served, ok := c.runHandler(w, nil, h)
	c.stopWatch()
	if ok && !served && !w.wrote && !w.committed && !c.hijacked {
		return false, false
	}
	if !ok {
		if !c.hijacked && w.committed {
			_ = c.bw.Flush()
		}
		return true, false
	}
	if c.hijacked {
		return true, false
	}
	err := w.finish()
	return true, !w.closeAfter && err == nil
}
