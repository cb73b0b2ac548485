package edge

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"

	"minimesh/dataplane/h1"
)

// ErrFraming is what a strictConn's Read returns once a request's framing
// is ambiguous; net/http answers it with 400 and closes the connection.
var ErrFraming = errors.New("proxy: ambiguous HTTP/1.1 request framing")

// strictConn checks the framing of the HTTP/1.1 requests a client sends,
// before net/http parses them, and refuses what two servers could read as
// different requests (request smuggling): net/http itself accepts a bare
// LF as a line end, joins obs-folded header lines, and lets
// Transfer-Encoding override Content-Length. Refused here: a line not
// ended by CRLF, a lone CR, a header line starting with a space or tab
// (obs-fold), more than one Content-Length field (even equal), more than
// one Transfer-Encoding field or one that is not exactly "chunked",
// Content-Length together with Transfer-Encoding, a malformed chunk size,
// a chunk extension outside RFC 9112's grammar (h1.ValidChunkExt), a trailer
// line that is not a field (a token, then ":"). Bodies are
// skipped by their framing (Content-Length or chunks) so that every
// request of a keep-alive connection is checked. After a 101 response to a
// WebSocket upgrade (the only one forwarded, sanitize.go), the connection
// carries another protocol and is no longer checked. The bytes before a violation reach net/http; the
// Read that meets it returns ErrFraming, to which net/http answers 400
// and closes.
type strictConn struct {
	*tls.Conn
	st       frameState
	err      error
	upgraded atomic.Bool
	wantUp   atomic.Bool // the request just read asked to upgrade
	bytewise bool        // take lines byte by byte (the tests' reference for runs)
}

type framePhase uint8

const (
	phaseHeaders framePhase = iota
	phaseBody
	phaseChunkSize
	phaseChunkData
	phaseChunkCRLF
	phaseTrailers
	phasePass // upgraded: not HTTP any more
)

type frameState struct {
	phase     framePhase
	lineStart bool   // at the start of a line
	lines     int    // lines of this header block so far
	cr        bool   // the previous byte was CR
	line      []byte // the current line, up to maxFrameLine bytes
	long      bool   // the current line was longer than maxFrameLine
	cl, te    int    // Content-Length and Transfer-Encoding fields seen
	clValue   int64
	chunked   bool
	upgrade   bool
	http10    bool  // the request line says HTTP/1.0
	remaining int64 // body or chunk bytes left
	crlfSeen  int   // of the CRLF after a chunk's data
}

const maxFrameLine = 256

// wrapStrict returns c wrapped for HTTP/1.1 checks, or c as it is when it
// speaks HTTP/2 (whose frames have no such ambiguity).
func wrapStrict(c net.Conn) net.Conn {
	tc, ok := c.(*tls.Conn)
	if !ok || tc.ConnectionState().NegotiatedProtocol == "h2" {
		return c
	}
	sc := &strictConn{Conn: tc}
	sc.st.lineStart = true
	return sc
}

// TLSConnOf returns the *tls.Conn of a connection a TLSListener and
// Strict handed out.
func TLSConnOf(c net.Conn) (*tls.Conn, bool) {
	switch c := c.(type) {
	case *tls.Conn:
		return c, true
	case *strictConn:
		return c.Conn, true
	}
	return nil, false
}

func (c *strictConn) Write(p []byte) (int, error) {
	if c.wantUp.Load() && bytes.HasPrefix(p, []byte("HTTP/1.1 101 ")) {
		c.upgraded.Store(true)
	}
	return c.Conn.Write(p)
}

func (c *strictConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(p)
	if c.st.phase == phasePass {
		return n, err
	}
	if ok, at := c.scan(p[:n]); !ok {
		c.err = ErrFraming
		if at == 0 {
			return 0, c.err
		}
		return at, nil
	}
	return n, err
}

// scan advances the state over b; false and the offset of the offending
// byte on a violation.
func (c *strictConn) scan(b []byte) (bool, int) {
	s := &c.st
	for i := 0; i < len(b); {
		switch s.phase {
		case phasePass:
			return true, 0
		case phaseBody, phaseChunkData:
			k := int64(len(b) - i)
			if k > s.remaining {
				k = s.remaining
			}
			i += int(k)
			s.remaining -= k
			if s.remaining == 0 {
				if s.phase == phaseBody {
					c.endMessage()
				} else {
					s.phase, s.crlfSeen = phaseChunkCRLF, 0
				}
			}
		case phaseChunkCRLF:
			want := byte('\r')
			if s.crlfSeen == 1 {
				want = '\n'
			}
			if b[i] != want {
				return false, i
			}
			i++
			if s.crlfSeen++; s.crlfSeen == 2 {
				s.phase, s.lineStart = phaseChunkSize, true
				s.line, s.long, s.cr = s.line[:0], false, false
			}
		default: // lines: headers, chunk sizes, trailers
			if !s.cr && !s.lineStart && !c.bytewise {
				// Inside a line, only CR and LF decide anything: the run
				// before the next one is taken at once, as lineByte would
				// take it byte by byte.
				run := b[i:]
				if j := bytes.IndexByte(run, '\r'); j >= 0 {
					run = run[:j]
				}
				if j := bytes.IndexByte(run, '\n'); j >= 0 {
					run = run[:j]
				}
				if len(run) > 0 {
					s.takeRun(run)
					i += len(run)
					continue
				}
			}
			if !c.lineByte(b[i]) {
				return false, i
			}
			i++
		}
	}
	return true, 0
}

// lineByte takes one byte of a line-based phase.
func (c *strictConn) lineByte(ch byte) bool {
	s := &c.st
	if s.phase == phaseHeaders && s.lines == 0 && s.lineStart && c.wantUp.Load() && c.upgraded.Load() {
		s.phase = phasePass
		return true
	}
	switch {
	case s.cr:
		if ch != '\n' {
			return false // lone CR
		}
		s.cr = false
		return c.endLine()
	case ch == '\r':
		s.cr = true
		return true
	case ch == '\n':
		return false // bare LF
	}
	if s.lineStart {
		if (ch == ' ' || ch == '\t') && (s.phase == phaseHeaders && s.lines > 0 || s.phase == phaseTrailers) {
			return false // obs-fold
		}
		s.lineStart = false
	}
	if len(s.line) < maxFrameLine {
		s.line = append(s.line, ch)
	} else {
		s.long = true
	}
	return true
}

// takeRun takes bytes inside a line that are neither CR nor LF: kept up
// to maxFrameLine, the rest marking the line long.
func (s *frameState) takeRun(run []byte) {
	if room := maxFrameLine - len(s.line); len(run) > room {
		s.line = append(s.line, run[:room]...)
		s.long = true
		return
	}
	s.line = append(s.line, run...)
}

// endLine is called at each CRLF.
func (c *strictConn) endLine() bool {
	s := &c.st
	line := s.line
	empty := s.lineStart
	defer func() { s.line, s.long, s.lineStart = s.line[:0], false, true }()
	switch s.phase {
	case phaseHeaders:
		if empty {
			if s.lines == 0 {
				return true // an empty line before a request is ignored (RFC 9112 2.2)
			}
			return c.endHeaders()
		}
		s.lines++
		if s.lines == 1 {
			// The request line: net/http checks it. An HTTP/1.0 request's
			// Transfer-Encoding is ignored by net/http (RFC 9112 6.1: a
			// 1.0 recipient may not understand it) but would frame the
			// body here: two readings of one message, refused below.
			s.http10 = bytes.HasSuffix(line, []byte(" HTTP/1.0"))
			return true
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return true // net/http refuses it
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			s.cl++
			v, err := strconv.ParseInt(string(bytes.Trim(value, " \t")), 10, 64)
			if err != nil || v < 0 || s.long {
				return false
			}
			s.clValue = v
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			s.te++
			if s.long || !bytes.EqualFold(bytes.Trim(value, " \t"), []byte("chunked")) {
				return false
			}
			s.chunked = true
		case bytes.EqualFold(name, []byte("Upgrade")):
			// Only a WebSocket upgrade is forwarded (sanitize.go): a 101
			// to anything else is not a switch this connection made.
			s.upgrade = s.upgrade || hasToken(value, "websocket")
		}
		return true
	case phaseChunkSize:
		if empty || s.long {
			return false
		}
		digits := 0
		for digits < len(line) && isHex(line[digits]) {
			digits++
		}
		if digits == 0 || digits > 15 || !h1.ValidChunkExt(line[digits:]) {
			return false
		}
		n, err := strconv.ParseInt(string(line[:digits]), 16, 64)
		if err != nil {
			return false
		}
		if n == 0 {
			s.phase = phaseTrailers
			return true
		}
		s.phase, s.remaining = phaseChunkData, n
		return true
	case phaseTrailers:
		if empty {
			c.endMessage()
			return true
		}
		// A field net/http cannot parse would fail the body only after
		// the request went on to the app, which then waits for the rest.
		name, _, ok := bytes.Cut(line, []byte(":"))
		return ok && validToken(name)
	}
	return true
}

// endHeaders decides the body's framing at the end of a header block.
func (c *strictConn) endHeaders() bool {
	s := &c.st
	if s.cl > 1 || s.te > 1 || s.cl > 0 && s.te > 0 || s.te > 0 && s.http10 {
		return false
	}
	c.wantUp.Store(s.upgrade)
	switch {
	case s.chunked:
		s.phase = phaseChunkSize
	case s.cl > 0 && s.clValue > 0:
		s.phase, s.remaining = phaseBody, s.clValue
	default:
		c.endMessage()
	}
	return true
}

// endMessage readies the state for the next request.
func (c *strictConn) endMessage() {
	s := &c.st
	up := s.upgrade
	*s = frameState{line: s.line[:0], lineStart: true}
	if !up {
		c.wantUp.Store(false)
	}
}

// hasToken reports whether the comma-separated list v holds tok (ASCII
// case-insensitive).
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var f []byte
		f, v, _ = bytes.Cut(v, []byte(","))
		if bytes.EqualFold(bytes.Trim(f, " \t"), []byte(tok)) {
			return true
		}
	}
	return false
}

func validToken(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 || !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return len(b) > 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Strict wraps ln so that the HTTP/1.1 connections it hands out (*tls.Conn
// not speaking h2) have their request framing checked (strictConn).
func Strict(ln net.Listener) net.Listener { return strictListener{ln} }

// strictListener checks the framing of HTTP/1.1 requests (strictConn).
type strictListener struct{ net.Listener }

func (l strictListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return wrapStrict(c), nil
}
