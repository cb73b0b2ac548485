package h1

import (
	"bufio"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// statusError is a refused request: the status answered and why.
type statusError struct {
	code int
	why  string
}

func (e *statusError) Error() string { return "h1: " + strconv.Itoa(e.code) + " " + e.why }

func bad(why string) error { return &statusError{http.StatusBadRequest, why} }

var (
	errTooLarge  = &statusError{http.StatusRequestHeaderFieldsTooLarge, "request header too large"}
	errTooMany   = &statusError{http.StatusRequestHeaderFieldsTooLarge, "too many header fields"}
	errVersion   = &statusError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	errNotCRLF   = bad("line not ended by CRLF")
	errObsFold   = bad("obs-fold")
	errBadHeader = bad("malformed header field")
)

// readHead reads a request's head (request line to the empty line, CRLF
// ends) into c.head: at most limit bytes and fields+1 lines. Lines must
// end with CRLF and hold no other CR. io.EOF before the first byte is
// returned as is.
func readHead(br *bufio.Reader, buf []byte, limit, fields int) ([]byte, error) {
	buf = buf[:0]
	lines := 0
	for {
		line, err := br.ReadSlice('\n')
		if len(buf)+len(line) > limit {
			return buf, errTooLarge
		}
		if err != nil {
			if err == bufio.ErrBufferFull {
				buf = append(buf, line...)
				continue
			}
			if len(buf) == 0 && len(line) == 0 {
				return buf, err
			}
			return buf, errUnexpectedEOF(err)
		}
		start := len(buf)
		buf = append(buf, line...)
		// The whole line, across ErrBufferFull pieces.
		full := buf[lineStart(buf, start):]
		if len(full) < 2 || full[len(full)-2] != '\r' {
			return buf, errNotCRLF
		}
		if len(full) == 2 {
			return buf, nil // the empty line
		}
		lines++
		if lines > fields+1 {
			return buf, errTooMany
		}
	}
}

// lineStart is where the line ending at buf's end began, searching back
// from at most from.
func lineStart(buf []byte, from int) int {
	for i := from - 1; i >= 0; i-- {
		if buf[i] == '\n' {
			return i + 1
		}
	}
	return 0
}

var errEOFMidHead = errors.New("h1: connection closed mid-request")

func errUnexpectedEOF(err error) error {
	if err.Error() == "EOF" {
		return errEOFMidHead
	}
	return err
}

// parsed is a request head as read: what becomes an *http.Request.
type parsed struct {
	method, target, proto string
	major, minor          int
	url                   *url.URL
	header                http.Header
	host                  string
	contentLength         int64 // -1: chunked
	chunked               bool
	close                 bool
	expectContinue        bool
	trailer               http.Header
}

// room is where parseHead puts a request's URL and, when there are few,
// its header values, instead of allocations of their own; it lives in
// the request's requestState.
type room struct {
	url  url.URL
	vals [roomValues]string
}

// roomValues: a request with at most this many header fields keeps their
// values in its room: curl, load generators and a hop between proxies
// send fewer; browsers (10 to 15) get a slice of their own, as before.
const roomValues = 8

// parseHead parses head (read by readHead) into p, with net/http's rules
// and the framing checker's; it keeps substrings of one string of head,
// and the URL and header values in rm.
func parseHead(head []byte, p *parsed, rm *room) error {
	s := string(head)
	s = s[:len(s)-2] // the empty line's CRLF
	line, rest, _ := strings.Cut(s, "\r\n")
	// net/http's parseRequestLine: two single spaces.
	method, r2, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(r2, " ")
	if !ok1 || !ok2 {
		return bad("malformed request line")
	}
	if !validToken(method) {
		return bad("invalid method")
	}
	switch proto {
	case "HTTP/1.1":
		p.major, p.minor = 1, 1
	case "HTTP/1.0":
		p.major, p.minor = 1, 0
	default:
		if maj, _, ok := http.ParseHTTPVersion(proto); ok && maj != 1 {
			return errVersion
		}
		if _, _, ok := http.ParseHTTPVersion(proto); ok {
			return errVersion // HTTP/1.2 and such: net/http serves them, we do not
		}
		return bad("malformed HTTP version")
	}
	p.method, p.target, p.proto = method, target, proto
	raw := target
	justAuthority := method == http.MethodConnect && !strings.HasPrefix(raw, "/")
	if justAuthority {
		raw = "http://" + raw
	}
	u := &rm.url
	if !originForm(raw, u) {
		pu, err := url.ParseRequestURI(raw)
		if err != nil {
			return bad("malformed request target")
		}
		*u = *pu
	}
	if justAuthority {
		u.Scheme = ""
	}
	p.url = u

	n := strings.Count(rest, "\r\n") + 1
	if rest == "" {
		n = 0
	}
	var vals []string
	if n <= len(rm.vals) {
		vals = rm.vals[:n:n]
	} else {
		vals = make([]string, n)
	}
	h := make(http.Header, n)
	var cl, te []string
	for rest != "" {
		var fl string
		fl, rest, _ = strings.Cut(rest, "\r\n")
		k, v, err := splitField(fl)
		if err != nil {
			return err
		}
		k = http.CanonicalHeaderKey(k)
		if vv, ok := h[k]; ok {
			h[k] = append(vv, v)
		} else {
			vals[0] = v
			h[k], vals = vals[:1:1], vals[1:]
		}
		switch k {
		case "Content-Length":
			cl = h[k]
		case "Transfer-Encoding":
			te = h[k]
		}
	}
	p.header = h
	if hosts := h["Host"]; len(hosts) > 1 {
		return bad("too many Host headers")
	}
	p.host = u.Host
	if p.host == "" {
		if hv := h["Host"]; len(hv) > 0 {
			p.host = hv[0]
		}
	}
	// fixPragmaCacheControl
	if hp, ok := h["Pragma"]; ok && len(hp) > 0 && hp[0] == "no-cache" {
		if _, presentcc := h["Cache-Control"]; !presentcc {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	p.close = shouldClose(p.major, p.minor, h)

	// Framing: at most one Content-Length, at most one Transfer-Encoding
	// and only "chunked", never both, none on HTTP/1.0 (which net/http
	// ignores and the framing checker does not).
	switch {
	case len(cl) > 1 || len(te) > 1:
		return bad("more than one Content-Length or Transfer-Encoding")
	case len(cl) > 0 && len(te) > 0:
		return bad("Content-Length with Transfer-Encoding")
	case len(te) > 0:
		if p.minor == 0 {
			return bad("Transfer-Encoding in HTTP/1.0")
		}
		if !strings.EqualFold(te[0], "chunked") {
			return &statusError{http.StatusNotImplemented, "unsupported Transfer-Encoding"}
		}
		delete(h, "Transfer-Encoding")
		p.chunked, p.contentLength = true, -1
	case len(cl) > 0:
		n, ok := parseContentLength(cl[0])
		if !ok {
			return bad("bad Content-Length")
		}
		p.contentLength = n
	default:
		p.contentLength = 0
	}
	p.trailer = nil
	if tv, ok := h["Trailer"]; ok && p.chunked {
		delete(h, "Trailer")
		var t http.Header
		for _, v := range tv {
			for f := range strings.SplitSeq(v, ",") {
				f = strings.Trim(f, " \t")
				if f == "" {
					continue
				}
				k := http.CanonicalHeaderKey(f)
				switch k {
				case "Transfer-Encoding", "Trailer", "Content-Length":
					return bad("bad trailer key")
				}
				if t == nil {
					t = http.Header{}
				}
				t[k] = nil
			}
		}
		p.trailer = t
	}

	// The server's own checks (net/http's conn.readRequest).
	hosts, haveHost := h["Host"]
	if p.minor == 1 && (!haveHost || len(hosts) == 0) && method != http.MethodConnect {
		return bad("missing required Host header")
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return bad("malformed Host header")
	}
	delete(h, "Host")
	p.expectContinue = false
	if ev, ok := h["Expect"]; ok {
		if len(ev) > 0 && strings.EqualFold(ev[0], "100-continue") {
			p.expectContinue = p.minor == 1 && p.contentLength != 0
			delete(h, "Expect")
		} else if len(ev) > 0 && ev[0] != "" {
			return &statusError{http.StatusExpectationFailed, "unsupported Expect"}
		}
	}
	return nil
}

// splitField checks one field line as net/http's reader does (no
// obs-fold, a token name, a colon, value bytes of textproto's rule) and
// returns its name as sent and its value trimmed of spaces and tabs. The
// heads' fields, those offered as heads (scanHead) and trailers go through
// it alike.
func splitField(fl string) (k, v string, err error) {
	if fl == "" {
		return "", "", errBadHeader
	}
	if fl[0] == ' ' || fl[0] == '\t' {
		return "", "", errObsFold
	}
	k, v, ok := strings.Cut(fl, ":")
	if !ok || !validToken(k) {
		return "", "", errBadHeader
	}
	for i := 0; i < len(v); i++ {
		if !validValueByte(v[i]) {
			return "", "", errBadHeader
		}
	}
	return k, strings.Trim(v, " \t"), nil
}

// originForm parses the common request target: a path of characters that
// url.ParseRequestURI keeps as they are (letters, digits and
// "-_.~$&+,/:;=@"; no '%'), optionally a query of anything but control
// bytes, not ending in a lone '?'. Into u, and true, exactly as
// ParseRequestURI would (FuzzOriginForm); false for anything else, which
// ParseRequestURI then reads.
func originForm(target string, u *url.URL) bool {
	path, query, ok := splitOriginForm(target)
	if ok {
		*u = url.URL{Path: path, RawQuery: query}
	}
	return ok
}

// splitOriginForm is originForm's check: the target's path and query
// when it is of that form.
func splitOriginForm(target string) (path, query string, ok bool) {
	if target == "" || target[0] != '/' {
		return "", "", false
	}
	path = target
	hasQuery := false
	for i := 0; i < len(target); i++ {
		c := target[i]
		if c == '?' {
			path, query, hasQuery = target[:i], target[i+1:], true
			break
		}
		if !pathByte[c] {
			return "", "", false
		}
	}
	if hasQuery {
		if query == "" {
			return "", "", false // "?" alone: ForceQuery, left to net/url
		}
		for i := 0; i < len(query); i++ {
			if c := query[i]; c < 0x20 || c == 0x7f {
				return "", "", false
			}
		}
	}
	return path, query, true
}

// pathByte: the bytes a path keeps as they are in net/url (its
// shouldEscape(c, encodePath) is false), '%' excepted.
var pathByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-_.~$&+,/:;=@" {
		t[c] = true
	}
	return t
}()

// shouldClose is net/http's rule for a request: HTTP/1.0 closes unless
// asked to keep alive; HTTP/1.1 when Connection names close.
func shouldClose(major, minor int, h http.Header) bool {
	conv := h["Connection"]
	hasClose := httpguts.HeaderValuesContainsToken(conv, "close")
	if major == 1 && minor == 0 {
		return hasClose || !httpguts.HeaderValuesContainsToken(conv, "keep-alive")
	}
	return hasClose
}

// parseContentLength: digits only (after net/http's trim), at most 63 bits.
func parseContentLength(s string) (int64, bool) {
	s = strings.Trim(s, " \t")
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !httpguts.IsTokenRune(rune(s[i])) || s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// validValueByte: VCHAR, SP, HTAB, obs-text (textproto's rule).
func validValueByte(c byte) bool {
	return c == '\t' || c >= 0x20 && c != 0x7f
}
