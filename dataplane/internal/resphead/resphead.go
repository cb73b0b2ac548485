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
	"strings"
)

// maxCLDigits bounds a Content-Length: 18 digits fit an int64 (net/http
// parses up to 63 bits; longer values are left to it).
const maxCLDigits = 18

// Parse reads the response head buffered in br, if it is of the common
// form, and returns the response with a body reading its Content-Length
// bytes from br. ok false: nothing was consumed; read the response with
// http.ReadResponse.
func Parse(br *bufio.Reader, req *http.Request) (resp *http.Response, ok bool) {
	if req != nil && req.Method == http.MethodHead {
		return nil, false
	}
	buf, _ := br.Peek(br.Buffered())
	end := headEnd(buf)
	if end < 0 {
		return nil, false
	}
	resp, ok = parse(buf[:end])
	if !ok {
		return nil, false
	}
	_, _ = br.Discard(end)
	resp.Request = req
	if resp.ContentLength == 0 {
		resp.Body = http.NoBody
	} else {
		resp.Body = &body{br: br, n: resp.ContentLength}
	}
	return resp, true
}

// headEnd is the length of the head through its empty line, when the
// head's lines all end in CRLF; -1 when there is no such end in b or a
// bare LF comes first (net/http takes a bare LF as a line end; Parse
// declines).
func headEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		if i == 0 || b[i-1] != '\r' {
			return -1
		}
		if i >= 3 && b[i-2] == '\n' && b[i-3] == '\r' {
			return i + 1
		}
	}
	return -1
}

// declinedFields are the fields net/http reads into framing, Close or
// Cache-Control: a head with any of them is left to it.
var declinedFields = []string{"transfer-encoding:", "connection:", "trailer:", "pragma:"}

// parse reads head (through its empty line, every line ending in CRLF).
// The status line and the fields that send a response to net/http are
// looked at in head's bytes first, so a declined head (a chunked answer,
// the commonest) costs no allocation.
func parse(head []byte) (*http.Response, bool) {
	code, ok := statusLine(head)
	if !ok {
		return nil, false
	}
	for _, name := range declinedFields {
		if HasField(head, name) {
			return nil, false
		}
	}
	s := string(head[:len(head)-2])
	line, rest, _ := strings.Cut(s, "\r\n")
	status := line[9:]
	if rest == "" {
		return nil, false // no Content-Length
	}
	fields := strings.Count(rest, "\r\n") + 1
	h := make(http.Header, fields)
	values := make([]string, fields)
	cl := int64(-1)
	for rest != "" {
		var kv string
		kv, rest, _ = strings.Cut(rest, "\r\n")
		k, v, found := strings.Cut(kv, ":")
		if !found || !token(k) {
			return nil, false
		}
		v = strings.Trim(v, " \t")
		if !visible(v, true) {
			return nil, false
		}
		k = http.CanonicalHeaderKey(k)
		if k == "Content-Length" {
			if cl >= 0 || len(v) == 0 || len(v) > maxCLDigits {
				return nil, false
			}
			cl = 0
			for _, c := range []byte(v) {
				if c < '0' || c > '9' {
					return nil, false
				}
				cl = cl*10 + int64(c-'0')
			}
		}
		if vv := h[k]; vv != nil {
			h[k] = append(vv, v)
		} else { // a first value shares the one backing array
			values[0] = v
			h[k] = values[:1:1]
			values = values[1:]
		}
	}
	if cl < 0 {
		return nil, false
	}
	return &http.Response{
		Status:        status,
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		ContentLength: cl,
	}, true
}

// statusLine is the code of head's status line, "HTTP/1.1 DDD" and an
// optional reason of visible ASCII and spaces (net/http's Status is what
// follows the first space, the code its first three characters), when it
// is a final status Parse takes: 200–599 but 204 and 304.
func statusLine(head []byte) (int, bool) {
	eol := bytes.Index(head, []byte("\r\n"))
	if eol < 12 || string(head[:9]) != "HTTP/1.1 " || (eol > 12 && head[12] != ' ') {
		return 0, false
	}
	code := 0
	for i, c := range head[9:12] {
		if c < '0' || c > '9' || (i == 0 && (c < '2' || c > '5')) {
			return 0, false
		}
		code = code*10 + int(c-'0')
	}
	if code == http.StatusNoContent || code == http.StatusNotModified || !visible(head[9:eol], false) {
		return 0, false
	}
	return code, true
}

// HasField reports whether a line of head starts with name (lower case,
// with its colon), compared case-insensitively.
func HasField(head []byte, name string) bool {
	for i := 0; i+1+len(name) <= len(head); i++ {
		if head[i] != '\n' {
			continue
		}
		line := head[i+1:]
		j := 0
		for j < len(name) && lower(line[j]) == name[j] {
			j++
		}
		if j == len(name) {
			return true
		}
	}
	return false
}

func lower(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}

// token reports whether s is a non-empty field name of RFC 9110's token
// characters.
func token(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

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
