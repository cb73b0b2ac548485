package h1

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// bufferBeforeChunking is how much of an answer of unknown length is held
// to send it with a Content-Length (net/http's size).
const bufferBeforeChunking = 2048

// response is the ResponseWriter of one request. Its head is taken from
// the header map when the handler calls WriteHeader (later changes count
// only for trailers), and written with the first bytes of the body, at a
// Flush, or when the handler returns.
type response struct {
	c      *conn
	req    *http.Request // nil for a request served from its head (Head)
	header http.Header
	is11   bool // the request's version is HTTP/1.1 (else 1.0)

	status      int
	wrote       bool // WriteHeader(>=200) called
	committed   bool // the head is in the connection's writer
	chunked     bool
	cl          int64 // declared Content-Length, or -1
	written     int64
	closeAfter  bool
	isHEAD      bool
	hasCT       bool
	hasDate     bool
	teIdentity  bool
	trailerKeys bool // "Trailer:" declared or http.TrailerPrefix used at WriteHeader
	err         error
}

var (
	_ http.ResponseWriter = (*response)(nil)
	_ http.Flusher        = (*response)(nil)
	_ http.Hijacker       = (*response)(nil)
)

func (w *response) Header() http.Header { return w.header }

// Keeper is what this package's ResponseWriter offers a handler that keeps
// something on the client connection between its requests (a proxy its
// connection to the app): Kept is the connection's one slot for it. Every
// request of a connection is served on the connection's goroutine, one
// after the other, so the slot needs no lock. When the connection ends
// (closed or hijacked), the Server calls the value's Release method, if it
// has one, once the last handler returned.
type Keeper interface {
	Kept() *any
}

var _ Keeper = (*response)(nil)

// Kept returns the connection's slot for a handler's own value.
func (w *response) Kept() *any { return &w.c.kept }

func bodyAllowed(code int) bool {
	return !(code >= 100 && code <= 199 || code == 204 || code == 304)
}

func (w *response) WriteHeader(code int) {
	if w.c.hijacked || w.wrote {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.informational(code)
		return
	}
	w.c.noContinue()
	w.wrote, w.status = true, code
	w.snapshot()
}

// LinesWriter is implemented by this package's http.ResponseWriter: a
// proxy passes an answer's head on without a header map
// (dataplane/internal/resphead's Fields).
type LinesWriter interface {
	// WriteHeaderLines is WriteHeader for a final status of 200–599 but
	// 204 and 304, with the header fields given as lines ("Name: value"
	// and CRLF each: valid names, values without CR, LF or NUL, trimmed)
	// instead of the header map's, which must be empty, and the body's
	// length (≥ 0) instead of a Content-Length field; hasType and hasDate
	// say whether the lines hold a Content-Type and a Date (the server
	// adds neither then, as for a map that has them). lines is copied.
	WriteHeaderLines(code int, lines []byte, contentLength int64, hasType, hasDate bool)
}

var _ LinesWriter = (*response)(nil)

func (w *response) WriteHeaderLines(code int, lines []byte, contentLength int64, hasType, hasDate bool) {
	if w.c.hijacked || w.wrote {
		return
	}
	if code < 200 || code > 599 || !bodyAllowed(code) || contentLength < 0 || len(w.header) != 0 {
		panic(fmt.Sprintf("h1: WriteHeaderLines(%d, length %d) with %d header fields", code, contentLength, len(w.header)))
	}
	w.c.noContinue()
	w.wrote, w.status = true, code
	w.c.trailers = w.c.trailers[:0]
	w.c.hbuf = append(w.c.hbuf[:0], lines...)
	w.cl, w.hasCT, w.hasDate = contentLength, hasType, hasDate
}

// informational writes a 1xx answer at once (never Content-Length or
// Transfer-Encoding).
func (w *response) informational(code int) {
	c := w.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if code == http.StatusContinue {
		if !c.canContinue && c.sentContinue {
			return
		}
		c.canContinue, c.sentContinue = false, true
	}
	buf := appendStatusLine(c.hbuf[:0], w.is11, code)
	for k, vv := range w.header {
		if k == "Content-Length" || k == "Transfer-Encoding" || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			buf = appendField(buf, k, v)
		}
	}
	buf = append(buf, "\r\n"...)
	c.hbuf = buf[:0]
	if _, err := c.bw.Write(buf); err == nil {
		_ = c.bw.Flush()
	}
}

// snapshot writes the header map's fields into c.hbuf as they will go out,
// noting what the server must add or decide.
func (w *response) snapshot() {
	buf := w.c.hbuf[:0]
	c304 := w.status == 304
	noBody := !bodyAllowed(w.status)
	w.c.trailers = w.c.trailers[:0]
	for k, vv := range w.header {
		switch k {
		case "Content-Length":
			if noBody {
				continue
			}
			if len(vv) > 0 {
				if n, err := strconv.ParseInt(vv[0], 10, 64); err == nil && n >= 0 {
					w.cl = n
				}
			}
			continue
		case "Transfer-Encoding":
			if len(vv) > 0 && vv[0] == "identity" && !noBody {
				w.teIdentity = true
			}
			continue
		case "Connection":
			if httpguts.HeaderValuesContainsToken(vv, "close") {
				w.closeAfter = true
			}
			continue
		case "Content-Type":
			w.hasCT = true
			if c304 {
				continue
			}
		case "Date":
			w.hasDate = true
		case "Trailer":
			for _, v := range vv {
				for f := range strings.SplitSeq(v, ",") {
					f = http.CanonicalHeaderKey(strings.TrimSpace(f))
					switch f {
					case "", "Transfer-Encoding", "Trailer", "Content-Length":
						continue
					}
					w.trailerKeys = true
					w.c.trailers = append(w.c.trailers, f)
				}
			}
		}
		if strings.HasPrefix(k, http.TrailerPrefix) {
			w.trailerKeys = true
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			buf = appendField(buf, k, v)
		}
	}
	w.c.hbuf = buf
}

// appendField appends "k: v\r\n" with v's CR and LF made spaces and its
// ends trimmed (net/http's rule), so no value can start a field of its own.
func appendField(buf []byte, k, v string) []byte {
	buf = append(buf, k...)
	buf = append(buf, ": "...)
	v = strings.Trim(v, " \t\r\n")
	for i := 0; i < len(v); i++ {
		ch := v[i]
		if ch == '\r' || ch == '\n' {
			ch = ' '
		}
		buf = append(buf, ch)
	}
	return append(buf, "\r\n"...)
}

func appendStatusLine(buf []byte, is11 bool, code int) []byte {
	if is11 {
		buf = append(buf, "HTTP/1.1 "...)
	} else {
		buf = append(buf, "HTTP/1.0 "...)
	}
	buf = strconv.AppendInt(buf, int64(code), 10)
	buf = append(buf, ' ')
	if t := http.StatusText(code); t != "" {
		buf = append(buf, t...)
	} else {
		buf = append(buf, "status code "...)
		buf = strconv.AppendInt(buf, int64(code), 10)
	}
	return append(buf, "\r\n"...)
}

// commit writes the head: the status line, the snapshot, and the framing
// the server decides. first is the start of the body (for a Content-Length
// when done, and Content-Type sniffing).
func (w *response) commit(first []byte, done bool) {
	c := w.c
	w.committed = true
	is11 := w.is11
	bw := c.bw
	// Appended in the writer's free space (AvailableBuffer), so the
	// status line and the length cost no allocation.
	_, _ = bw.Write(appendStatusLine(bw.AvailableBuffer(), is11, w.status))
	_, _ = bw.Write(c.hbuf)
	allowed := bodyAllowed(w.status)
	switch {
	case !allowed:
	case w.cl >= 0:
		_, _ = bw.WriteString("Content-Length: ")
		_, _ = bw.Write(strconv.AppendInt(bw.AvailableBuffer(), w.cl, 10))
		_, _ = bw.WriteString("\r\n")
	case done && !w.trailerKeys && !w.teIdentity && (!w.isHEAD || w.written > 0):
		w.cl = w.written
		_, _ = bw.WriteString("Content-Length: ")
		_, _ = bw.Write(strconv.AppendInt(bw.AvailableBuffer(), w.cl, 10))
		_, _ = bw.WriteString("\r\n")
	case w.isHEAD:
	case w.teIdentity || !is11:
		w.closeAfter = true
	default:
		w.chunked = true
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if allowed && !w.hasCT && len(first) > 0 && !w.isHEAD {
		_, _ = bw.WriteString("Content-Type: ")
		_, _ = bw.WriteString(http.DetectContentType(first))
		_, _ = bw.WriteString("\r\n")
	}
	if !w.hasDate {
		_, _ = bw.WriteString("Date: ")
		_, _ = bw.Write(httpDate())
		_, _ = bw.WriteString("\r\n")
	}
	if c.srv.shutting.Load() {
		w.closeAfter = true
	}
	switch {
	case w.closeAfter:
		_, _ = bw.WriteString("Connection: close\r\n")
	case !is11:
		_, _ = bw.WriteString("Connection: keep-alive\r\n")
	}
	_, _ = bw.WriteString("\r\n")
}

func (w *response) Write(p []byte) (int, error) {
	if w.c.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.isHEAD {
		w.written += int64(len(p))
		if !w.committed && w.written > bufferBeforeChunking {
			w.commit(nil, false)
		}
		return len(p), nil
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	c := w.c
	if !w.committed {
		if w.cl < 0 && len(c.pre)+len(p) <= bufferBeforeChunking {
			c.pre = append(c.pre, p...)
			return len(p), nil
		}
		if w.cl >= 0 {
			w.commit(p, false)
		} else {
			first := c.pre
			if len(first) == 0 {
				first = p
			}
			w.commit(first, false)
			w.body(c.pre)
			c.pre = c.pre[:0]
		}
	}
	w.body(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// body writes p after the head, as a chunk when chunked.
func (w *response) body(p []byte) {
	if len(p) == 0 || w.err != nil {
		return
	}
	bw := w.c.bw
	if w.chunked {
		var tmp [20]byte
		_, _ = bw.Write(strconv.AppendInt(tmp[:0], int64(len(p)), 16))
		_, _ = bw.WriteString("\r\n")
		_, _ = bw.Write(p)
		_, w.err = bw.WriteString("\r\n")
		return
	}
	_, w.err = bw.Write(p)
}

func (w *response) Flush() { _ = w.FlushError() }

// FlushError sends the head (chunked when the length is not known yet)
// and what is buffered; http.ResponseController calls it.
func (w *response) FlushError() error {
	if w.c.hijacked {
		return http.ErrHijacked
	}
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(w.c.pre, false)
		w.body(w.c.pre)
		w.c.pre = w.c.pre[:0]
	}
	if w.err != nil {
		return w.err
	}
	w.err = w.c.bw.Flush()
	return w.err
}

// finish ends the answer once the handler returned: the head if not sent,
// the last chunk and trailers, and a flush.
func (w *response) finish() error {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	c := w.c
	if !w.committed {
		w.commit(c.pre, true)
		w.body(c.pre)
	}
	if w.chunked && w.err == nil {
		bw := c.bw
		_, _ = bw.WriteString("0\r\n")
		for k, vv := range w.header {
			if kk, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidHeaderFieldName(kk) {
				for _, v := range vv {
					_, _ = bw.Write(appendField(c.hbuf[:0], kk, v))
				}
			}
		}
		for _, k := range c.trailers {
			for _, v := range w.header[k] {
				_, _ = bw.Write(appendField(c.hbuf[:0], k, v))
			}
		}
		_, w.err = bw.WriteString("\r\n")
	}
	if w.cl >= 0 && w.written != w.cl && !w.isHEAD && bodyAllowed(w.status) {
		w.closeAfter = true // too short: the peer waits for the rest
	}
	if w.err == nil {
		if c.hold != nil && !w.closeAfter && c.br.Buffered() == 0 && !c.held && c.watchErr == nil {
			// The connection's next act is reading the next request
			// (serve), and nothing of it is here yet (not in the buffer,
			// not a byte the watch kept): the answer goes out with that
			// read (turn.Conn.Hold).
			c.hold.Hold()
		}
		w.err = c.bw.Flush()
	}
	return w.err
}

// Hijack hands the connection to the handler (a WebSocket after a 101
// from the app): its deadlines cleared, with what is buffered to read.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := w.c
	if c.hijacked {
		return nil, nil, http.ErrHijacked
	}
	c.stopWatch() // the handler reads the connection from here on
	if w.wrote && !w.committed {
		w.commit(c.pre, false)
		w.body(c.pre)
		c.pre = c.pre[:0]
	}
	if err := c.bw.Flush(); err != nil {
		return nil, nil, err
	}
	c.hijacked = true
	c.srv.untrack(c)
	c.rdl.Forget()
	c.wdl.Forget()
	_ = c.rwc.SetDeadline(time.Time{})
	c.setState(http.StateHijacked)
	return c.rwc, bufio.NewReadWriter(c.br, bufio.NewWriter(c.rwc)), nil
}

// SetReadDeadline and SetWriteDeadline are http.ResponseController's.
func (w *response) SetReadDeadline(t time.Time) error {
	w.c.rdl.Forget()
	return w.c.rwc.SetReadDeadline(t)
}

func (w *response) SetWriteDeadline(t time.Time) error {
	w.c.wdl.Forget()
	return w.c.rwc.SetWriteDeadline(t)
}

// EnableFullDuplex: the body may always be read while answering here.
func (w *response) EnableFullDuplex() error { return nil }

// The Date field, formatted once a second.
type dateEntry struct {
	sec int64
	b   []byte
}

var dateCache atomic.Pointer[dateEntry]

func httpDate() []byte {
	now := time.Now()
	if e := dateCache.Load(); e != nil && e.sec == now.Unix() {
		return e.b
	}
	e := &dateEntry{sec: now.Unix(), b: now.UTC().AppendFormat(nil, http.TimeFormat)}
	dateCache.Store(e)
	return e.b
}
