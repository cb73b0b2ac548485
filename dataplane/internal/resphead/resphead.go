// Package resphead reads the common HTTP/1.1 response head — the app's
// and a remote proxy's answers to the links (dataplane/applink,
// dataplane/meshlink) — without net/http's reader: one string for the
// whole head, field names and values substrings of it, one backing slice
// for the values, and a body that reads Content-Length bytes from the
// connection's buffer.
//
// It takes only a strict subset of what net/http's ReadResponse accepts
// and declines everything else, which the caller then reads with
// ReadResponse, so the accepted set can never grow past net/http's:
// HTTP/1.1; a final status 200–599 other than 204 and 304; a request
// other than HEAD; CRLF line ends; field names of token characters;
// values of visible ASCII, space and tab; exactly one Content-Length of
// digits; no Transfer-Encoding, Connection, Trailer or Pragma field (the
// ones net/http reads into framing, Close or Cache-Control); the whole
// head already buffered. FuzzParseVsNetHTTP holds it to that: whatever
// Parse accepts, ReadResponse accepts with the same status, header
// fields, length, Close and body bytes.
package resphead

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// maxCLDigits bounds a Content-Length: 18 digits fit an int64 (net/http
// parses up to 63 bits; longer values are left to it).
const maxCLDigits = 18

// Parse reads the response head buffered in br, if it is of the common
// form, and returns the response with a body reading its Content-Length
// bytes from br. ok false: nothing was consumed; read the response with
// http.ReadResponse.
//
// With raw set (a proxy's direct path, whose writer takes a head as
// lines: dataplane/h1), a head Parse takes is not built into a map: its
// fields go into raw as a proxy passes them on, and resp.Header is nil.
// raw.Taken says which happened.
//
// The response and its body are built in slot; a nil slot costs Parse
// one allocation, which a caller saves by lending a Slot that lives in
// its own per-exchange struct.
func Parse(br *bufio.Reader, req *http.Request, raw *Fields, slot *Slot) (resp *http.Response, ok bool) {
	if raw != nil {
		raw.Taken = false
	}
	if req != nil && req.Method == http.MethodHead {
		return nil, false
	}
	buf, _ := br.Peek(br.Buffered())
	end := headEnd(buf)
	if end < 0 {
		return nil, false
	}
	h, ok := parse(buf[:end], raw)
	if !ok {
		return nil, false
	}
	_, _ = br.Discard(end)
	if slot == nil {
		slot = new(Slot)
	}
	resp = &slot.resp
	*resp = http.Response{Status: h.status, StatusCode: h.code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h.header, ContentLength: h.length, Request: req}
	if resp.ContentLength == 0 {
		resp.Body = http.NoBody
	} else {
		slot.body = body{br: br, n: resp.ContentLength}
		resp.Body = &slot.body
	}
	return resp, true
}

// Slot is room for the response Parse reads and its body. A caller puts
// one in its own per-exchange struct and passes it, so the response
// lives in that allocation; a slot holds one response, for as long as
// the caller keeps it.
type Slot struct {
	resp http.Response
	body body
}

// headEnd is the length of the head through its empty line, when the
// head's lines all end in CRLF; -1 when there is no such end in b or a
// bare LF comes first (net/http takes a bare LF as a line end; Parse
// declines).
func headEnd(b []byte) int {
	i := bytes.Index(b, crlfcrlf)
	if i < 0 {
		return -1
	}
	end := i + len(crlfcrlf)
	for j := 0; ; {
		k := bytes.IndexByte(b[j:end], '\n')
		if k < 0 {
			return end
		}
		if j+k == 0 || b[j+k-1] != '\r' {
			return -1
		}
		j += k + 1
	}
}

var (
	crlf     = []byte("\r\n")
	crlfcrlf = []byte("\r\n\r\n")
)

// maxFields bounds the fields of a head Parse takes (their places are
// noted on the stack before anything is allocated); a head with more is
// left to net/http.
const maxFields = 32

// field is where a field's name and value are in the head.
type field struct{ k0, k1, v0, v1 int }

// parse reads head (through its empty line, every line ending in CRLF)
// in one pass over its bytes: the status line, then each field's name
// (a token, and not one of the fields that send a response to net/http:
// Transfer-Encoding, Connection, Trailer, Pragma), its value (visible
// ASCII, space and tab, ends trimmed) and the one Content-Length. Only a
// head it takes is copied into a string and a map, so a declined head (a
// chunked answer, the commonest) costs no allocation.
func parse(head []byte, raw *Fields) (h parsedHead, ok bool) {
	code, eol, ok := statusLine(head)
	if !ok {
		return h, false
	}
	var fields [maxFields]field
	n := 0
	cl := int64(-1)
	last := len(head) - 2 // the empty line
	for pos := eol + 2; pos < last; {
		e := pos + bytes.Index(head[pos:], crlf) // found: head ends in CRLFCRLF
		colon := pos + bytes.IndexByte(head[pos:e], ':')
		if colon < pos || n == maxFields {
			return h, false
		}
		name := head[pos:colon]
		if !token(name) || declined(name) {
			return h, false
		}
		v0, v1 := colon+1, e
		for v0 < v1 && (head[v0] == ' ' || head[v0] == '\t') {
			v0++
		}
		for v1 > v0 && (head[v1-1] == ' ' || head[v1-1] == '\t') {
			v1--
		}
		if !visible(head[v0:v1], true) {
			return h, false
		}
		if equalFold(name, "content-length") {
			if cl >= 0 || v1 == v0 || v1-v0 > maxCLDigits {
				return h, false
			}
			cl = 0
			for _, c := range head[v0:v1] {
				if c < '0' || c > '9' {
					return h, false
				}
				cl = cl*10 + int64(c-'0')
			}
		}
		fields[n] = field{pos, colon, v0, v1}
		n++
		pos = e + 2
	}
	if cl < 0 {
		return h, false
	}
	h.code, h.length = code, cl
	if raw != nil {
		raw.fill(head, fields[:n])
		h.status = status(head[9:eol])
		return h, true
	}
	s := string(head[:last])
	h.status = s[9:eol]
	h.header = make(http.Header, n)
	values := make([]string, n)
	for _, f := range fields[:n] {
		k, v := http.CanonicalHeaderKey(s[f.k0:f.k1]), s[f.v0:f.v1]
		if vv := h.header[k]; vv != nil {
			h.header[k] = append(vv, v)
		} else { // a first value shares the one backing array
			values[0] = v
			h.header[k] = values[:1:1]
			values = values[1:]
		}
	}
	return h, true
}

// parsedHead is what parse read: the status, the header map (nil when the
// fields went into raw) and the Content-Length.
type parsedHead struct {
	code   int
	status string
	header http.Header
	length int64
}

// Fields is a response head's fields as a proxy passes them on, for a
// writer that takes them as they are (dataplane/h1's WriteHeaderLines):
// each a line "Name: value\r\n", the name as http.CanonicalHeaderKey
// spells it and the value trimmed (net/http's header map, written back),
// in the order they came; without Content-Length (the response's
// ContentLength) and the hop-by-hop fields a proxy drops (RFC 9110
// section 7.6.1, as ReverseProxy: Keep-Alive, Proxy-Connection,
// Proxy-Authenticate, Proxy-Authorization, Te, Upgrade; Connection,
// Trailer and Transfer-Encoding send a head to net/http). Its buffer is
// reused from one response to the next: read it before the next Parse.
type Fields struct {
	Lines []byte
	// ContentType is the Content-Type value (in Lines), nil without one.
	ContentType []byte
	HasDate     bool
	// Taken: Parse read the head into these fields (false: the response
	// has a header map).
	Taken bool
}

func (f *Fields) fill(head []byte, fields []field) {
	f.Taken, f.HasDate, f.ContentType = true, false, nil
	b := f.Lines[:0]
	ct0, ct1 := -1, -1 // the first Content-Type value, in b
	for _, fl := range fields {
		name := head[fl.k0:fl.k1]
		if equalFold(name, "content-length") || hopByHop(name) {
			continue
		}
		upper := true
		for _, c := range name {
			switch {
			case upper && 'a' <= c && c <= 'z':
				c -= 'a' - 'A'
			case !upper && 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			}
			b = append(b, c)
			upper = c == '-'
		}
		b = append(b, ": "...)
		if ct0 < 0 && equalFold(name, "content-type") {
			ct0, ct1 = len(b), len(b)+fl.v1-fl.v0
		}
		f.HasDate = f.HasDate || equalFold(name, "date")
		b = append(b, head[fl.v0:fl.v1]...)
		b = append(b, "\r\n"...)
	}
	if ct0 >= 0 {
		f.ContentType = b[ct0:ct1:ct1]
	}
	f.Lines = b
}

// hopByHop reports whether name is a hop-by-hop field Parse takes (the
// others are declined).
func hopByHop(name []byte) bool {
	switch len(name) {
	case len("te"):
		return equalFold(name, "te")
	case len("upgrade"):
		return equalFold(name, "upgrade")
	case len("keep-alive"):
		return equalFold(name, "keep-alive")
	case len("proxy-connection"):
		return equalFold(name, "proxy-connection")
	case len("proxy-authenticate"):
		return equalFold(name, "proxy-authenticate")
	case len("proxy-authorization"):
		return equalFold(name, "proxy-authorization")
	}
	return false
}

// status is line's Status string, without an allocation for the
// commonest.
func status(b []byte) string {
	if string(b) == "200 OK" {
		return "200 OK"
	}
	return string(b)
}

// declined reports whether name is one of the fields net/http reads into
// framing, Close or Cache-Control: a head with any of them is left to it.
func declined(name []byte) bool {
	switch len(name) {
	case len("transfer-encoding"):
		return equalFold(name, "transfer-encoding")
	case len("connection"):
		return equalFold(name, "connection")
	case len("trailer"):
		return equalFold(name, "trailer")
	case len("pragma"):
		return equalFold(name, "pragma")
	}
	return false
}

// equalFold reports whether b is lower, ASCII case ignored.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// statusLine is the code of head's status line, "HTTP/1.1 DDD" and an
// optional reason of visible ASCII and spaces (net/http's Status is what
// follows the first space, the code its first three characters), when it
// is a final status Parse takes: 200–599 but 204 and 304; and where the
// line ends.
func statusLine(head []byte) (code, eol int, ok bool) {
	eol = bytes.Index(head, crlf)
	if eol < 12 || string(head[:9]) != "HTTP/1.1 " || (eol > 12 && head[12] != ' ') {
		return 0, 0, false
	}
	for i, c := range head[9:12] {
		if c < '0' || c > '9' || (i == 0 && (c < '2' || c > '5')) {
			return 0, 0, false
		}
		code = code*10 + int(c-'0')
	}
	if code == http.StatusNoContent || code == http.StatusNotModified || !visible(head[9:eol], false) {
		return 0, 0, false
	}
	return code, eol, true
}

// HasField reports whether a line of head starts with name (lower case,
// with its colon), compared case-insensitively.
func HasField(head []byte, name string) bool {
	for i := 0; ; {
		k := bytes.IndexByte(head[i:], '\n')
		if k < 0 {
			return false
		}
		i += k + 1
		if len(head)-i < len(name) {
			return false
		}
		if equalFold(head[i:i+len(name)], name) {
			return true
		}
	}
}

// token reports whether s is a non-empty field name of RFC 9110's token
// characters.
func token(s []byte) bool {
	if len(s) == 0 {
		return false
	}
	for _, c := range s {
		if !tokenChar[c] {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", byte(c)) >= 0
	}
	return t
}()

// visible reports whether s holds only visible ASCII and spaces (and tabs
// when tab is set).
func visible[T string | []byte](s T, tab bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < ' ' && !(tab && c == '\t')) || c > '~' {
			return false
		}
	}
	return true
}

// body reads a response body of n bytes from br. Like net/http's, it
// returns io.EOF with the last bytes, and io.ErrUnexpectedEOF when the
// connection ends first.
type body struct {
	br *bufio.Reader
	n  int64
}

func (b *body) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.br.Read(p)
	b.n -= int64(n)
	switch {
	case b.n == 0:
		err = io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close does nothing: the links decide what becomes of the connection.
func (b *body) Close() error { return nil }

// Header is the header map of the fields, with Content-Length n: what
// Parse builds without Fields, hop-by-hop fields aside.
func (f *Fields) Header(n int64) http.Header {
	h := http.Header{"Content-Length": {strconv.FormatInt(n, 10)}}
	AddLines(h, f.Lines)
	return h
}

// AddLines adds the fields of lines (as in Fields.Lines) to h.
func AddLines(h http.Header, lines []byte) {
	for rest := string(lines); rest != ""; {
		var line string
		line, rest, _ = strings.Cut(rest, "\r\n")
		k, v, _ := strings.Cut(line, ": ")
		h[k] = append(h[k], v)
	}
}
