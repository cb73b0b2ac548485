package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"minimesh/dataplane/internal/deadline"
	"minimesh/dataplane/internal/turn"
)

// Server serves HTTP/1.1 connections (ServeConn) with Handler. Set its
// fields before the first ServeConn and do not change them after.
type Server struct {
	Handler http.Handler
	// ReadHeaderTimeout bounds reading a request's head, from its first
	// byte (the first request: from ServeConn); 10s if zero.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request, and each read of
	// a body and each write of an answer; 120s if zero.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header fields (the request line
	// may take 4 KiB more, as net/http allows); 1 MiB if zero.
	MaxHeaderBytes int
	// MaxHeaderFields bounds a request's header fields; 100 if zero.
	MaxHeaderFields int
	// BaseContext is the parent of every request's context (it gets
	// http.LocalAddrContextKey, and http.ServerContextKey when HTTPServer
	// is set); Background if nil.
	BaseContext context.Context
	// HTTPServer, when set, is the value of http.ServerContextKey.
	HTTPServer *http.Server
	// ConnContext and ConnState are as http.Server's.
	ConnContext func(context.Context, net.Conn) context.Context
	ConnState   func(net.Conn, http.ConnState)
	Logger      *slog.Logger // slog.Default() if nil
	// WatchAfter is how long a handler runs before its connection is
	// watched for the client going away (a one-byte read in the
	// background, once the request's body is read): the client gone, the
	// request's context is cancelled, as net/http's server does. 1s if
	// zero; negative: never watched (noticed when the answer is written).
	WatchAfter time.Duration

	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutting atomic.Bool
}

const (
	stateActive int32 = iota
	stateIdle
	stateClosing
)

// conn is one connection's state, reused across its requests.
type conn struct {
	srv    *Server
	rwc    net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	ctx    context.Context
	cancel func() // ends ctx and the request in flight

	curMu  sync.Mutex
	cur    *reqCtx // the request in flight (reqctx.go)
	state  atomic.Int32
	tls    *tls.ConnectionState
	remote string

	readIdle atomic.Bool   // reads of a body: each bounded by IdleTimeout
	rdl, wdl deadline.Lazy // the read and write deadlines set last
	head     []byte        // the request head being read
	hbuf     []byte        // the answer's header fields, as written
	pre      []byte        // the start of an answer of unknown length
	resHdr   http.Header   // the answer's header map, cleared per request
	tmpl     http.Request
	trailers []string
	hijacked bool
	kept     any // a handler's value for the connection (Keeper)

	// Requests served from their heads (head.go).
	heads         HeadServer // the Handler, when it is one
	offered       Head
	offeredFields [MaxHeadFields]Field
	headW         response
	headCtx       reqCtx

	// 100-continue: wmu orders the 100 written by a body read against the
	// answer's head written by the handler.
	wmu          sync.Mutex
	canContinue  bool
	sentContinue bool

	idle, readHeader time.Duration
	headLimit        int
	fields           int

	// The watch for a client gone mid-request (watch.go).
	watchAfter                              time.Duration
	watchTimer                              *time.Timer
	watchDone                               chan struct{}
	watchMu                                 sync.Mutex
	armed, due, bodyDone, running, stopping bool
	timing                                  bool      // the timer runs
	armedAt                                 time.Time // when the armed request began
	held                                    bool
	heldByte                                [1]byte
	watchErr                                error

	// hold, when the connection is a *turn.Conn (the inbound's: its peer
	// is a proxy's pool, one request at a time), sends each kept answer
	// with the read of the next request, which then waits for it on the
	// poller without a read that finds nothing (response.finish).
	hold *turn.Conn
}

var (
	brPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	bwPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}
)

// ServeConn serves rwc until it closes, a request asks to close it, an
// error, or a shutdown; it closes rwc unless a handler hijacked it.
func (s *Server) ServeConn(rwc net.Conn) {
	c := &conn{srv: s, rwc: rwc, remote: rwc.RemoteAddr().String()}
	c.heads, _ = s.Handler.(HeadServer)
	c.idle = orDefault(s.IdleTimeout, 120*time.Second)
	c.readHeader = orDefault(s.ReadHeaderTimeout, 10*time.Second)
	c.watchAfter = s.WatchAfter
	if c.watchAfter == 0 {
		c.watchAfter = defaultWatchAfter
	}
	mhb := s.MaxHeaderBytes
	if mhb <= 0 {
		mhb = http.DefaultMaxHeaderBytes
	}
	c.headLimit = mhb + 4096
	c.fields = s.MaxHeaderFields
	if c.fields <= 0 {
		c.fields = 100
	}
	if tc, ok := rwc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		st := tc.ConnectionState()
		c.tls = &st
	}
	c.hold = turn.Of(rwc)
	ctx := s.BaseContext
	if ctx == nil {
		ctx = context.Background()
	}
	if s.HTTPServer != nil {
		ctx = context.WithValue(ctx, http.ServerContextKey, s.HTTPServer)
	}
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, rwc.LocalAddr())
	if s.ConnContext != nil {
		ctx = s.ConnContext(ctx, rwc)
	}
	connCtx, cancelConn := context.WithCancel(ctx)
	c.ctx = connCtx
	c.cancel = func() {
		cancelConn()
		c.cancelCurrent()
	}
	defer c.cancel()
	// The end of BaseContext reaches the request in flight too.
	defer context.AfterFunc(connCtx, c.cancelCurrent)()
	c.state.Store(stateIdle)
	if !s.track(c) {
		_ = rwc.Close()
		return
	}
	c.setState(http.StateNew)
	c.br = brPool.Get().(*bufio.Reader)
	c.br.Reset(connReader{c})
	c.bw = bwPool.Get().(*bufio.Writer)
	c.bw.Reset(connWriter{c})
	defer func() {
		s.untrack(c)
		if r, ok := c.kept.(interface{ Release() }); ok {
			c.kept = nil
			r.Release()
		}
		if c.hijacked {
			return
		}
		_ = rwc.Close()
		c.br.Reset(nil)
		brPool.Put(c.br)
		c.bw.Reset(nil)
		bwPool.Put(c.bw)
		c.setState(http.StateClosed)
	}()
	defer c.endWatch()
	c.serve()
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (c *conn) setState(st http.ConnState) {
	if c.srv.ConnState != nil {
		c.srv.ConnState(c.rwc, st)
	}
}

func (c *conn) log() *slog.Logger {
	if c.srv.Logger != nil {
		return c.srv.Logger
	}
	return slog.Default()
}

// serve is the connection's loop: wait for a request's first byte, read
// its head, answer it, and again.
func (c *conn) serve() {
	first := true
	lastPOST := false
	for {
		wait := c.idle
		if first {
			wait = c.readHeader
		}
		if !first {
			c.setState(http.StateIdle)
		}
		if c.srv.shutting.Load() && !first {
			return
		}
		if c.br.Buffered() == 0 {
			c.rdl.Within(time.Now(), wait, c.rwc.SetReadDeadline)
			if _, err := c.br.Peek(1); err != nil {
				return
			}
		}
		if !c.state.CompareAndSwap(stateIdle, stateActive) {
			return // Shutdown closed it
		}
		if !first && !headBuffered(c.br) {
			// The rest of the head is yet to come: ReadHeaderTimeout for
			// it. A head already whole in the buffer is read without a
			// read on the connection, so the idle wait's deadline stays
			// (see dataplane/internal/deadline).
			c.rdl.Within(time.Now(), c.readHeader, c.rwc.SetReadDeadline)
		}
		if lastPOST {
			// RFC 9112 section 2.2's tolerance, as net/http: CRLFs after a POST's body.
			for range 2 {
				if p, err := c.br.Peek(2); err == nil && p[0] == '\r' && p[1] == '\n' {
					_, _ = c.br.Discard(2)
				}
			}
		}
		first = false
		head, err := readHead(c.br, c.head, c.headLimit, c.fields)
		c.head = head
		if err != nil {
			c.refuse(err)
			return
		}
		if cap(c.head) > 16<<10 {
			c.head = nil // a large head once does not stay with the connection
		}
		if c.heads != nil {
			c.setState(http.StateActive)
			served, keep := c.serveHead(head)
			if served {
				lastPOST = false
				if !keep {
					return
				}
				c.state.Store(stateIdle)
				continue
			}
		}
		// The request's state, one allocation: its context, its answer,
		// its URL and its header values (room).
		st := new(requestState)
		var p parsed
		if err := parseHead(head, &p, &st.room); err != nil {
			c.refuse(err)
			return
		}
		if c.heads == nil {
			c.setState(http.StateActive)
		}
		lastPOST = p.method == http.MethodPost
		if !c.serveRequest(&p, st) {
			return
		}
		c.state.Store(stateIdle)
	}
}

// setReadDeadline sets the read deadline and forgets the remembered one.
func (c *conn) setReadDeadline(t time.Time) {
	c.rdl.Forget()
	_ = c.rwc.SetReadDeadline(t)
}

// headBuffered reports whether br holds a whole request head (through an
// empty line), so that reading it reads nothing from the connection. The
// CRLFs a client may send after a POST's body come before the head and
// do not end it.
func headBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	for len(b) >= 2 && b[0] == '\r' && b[1] == '\n' {
		b = b[2:]
	}
	return bytes.Contains(b, []byte("\r\n\r\n"))
}

// refuse answers a request that could not be read, unless the peer went
// away or was too slow, and lets the peer read the answer before closing.
func (c *conn) refuse(err error) {
	var se *statusError
	if !errors.As(err, &se) {
		var ne net.Error
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) || err == errEOFMidHead ||
			errors.As(err, &ne) && ne.Timeout() || errors.Is(err, net.ErrClosed) {
			return
		}
		// The framing checker's refusal, and any other read error.
		se = &statusError{http.StatusBadRequest, "bad request"}
	}
	text := http.StatusText(se.code)
	msg := strconv.Itoa(se.code) + " " + text + ": " + se.why
	c.wdl.Forget()
	_ = c.rwc.SetWriteDeadline(time.Now().Add(c.readHeader))
	_, _ = io.WriteString(c.rwc, "HTTP/1.1 "+strconv.Itoa(se.code)+" "+text+
		"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "+
		strconv.Itoa(len(msg))+"\r\n\r\n"+msg)
	c.closeWriteAndWait()
}

// closeWriteAndWait half-closes and waits briefly, so that the peer reads
// the answer before a close with its unread bytes turns into a reset (as
// net/http does).
func (c *conn) closeWriteAndWait() {
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		time.Sleep(rstAvoidanceDelay)
	}
}

const rstAvoidanceDelay = 500 * time.Millisecond

// requestState is what a request needs for as long as anyone holds it, in
// one allocation: its context, its answer, and room for its parsed URL
// and header values.
type requestState struct {
	rc   reqCtx
	w    response
	room room
}

// serveRequest runs the handler for p and finishes its answer; false: the
// connection ends (closed, or hijacked).
func (c *conn) serveRequest(p *parsed, pr *requestState) (keep bool) {
	pr.rc = reqCtx{Context: c.ctx}
	rc := &pr.rc
	c.setRequest(rc)
	defer c.endRequest(rc)
	c.tmpl = http.Request{
		Method: p.method, URL: p.url, Proto: p.proto, ProtoMajor: p.major, ProtoMinor: p.minor,
		Header: p.header, Body: http.NoBody, ContentLength: p.contentLength, Close: p.close,
		Host: p.host, Trailer: p.trailer, RemoteAddr: c.remote, RequestURI: p.target, TLS: c.tls,
	}
	if p.chunked {
		c.tmpl.TransferEncoding = []string{"chunked"}
	}
	req := c.tmpl.WithContext(rc)
	c.tmpl = http.Request{}
	var b *body
	if p.contentLength != 0 {
		b = &body{c: c, req: req, remaining: p.contentLength, chunked: p.chunked, expect: p.expectContinue}
		if p.chunked {
			b.remaining = 0
		}
		req.Body = b
		c.setReadDeadline(time.Time{}) // each body read sets its own
	}
	c.canContinue, c.sentContinue = p.expectContinue, false
	if c.resHdr == nil {
		c.resHdr = make(http.Header)
	}
	w := &pr.w
	*w = response{c: c, req: req, header: c.resHdr, cl: -1, isHEAD: p.method == http.MethodHead,
		closeAfter: p.close, is11: p.minor == 1}
	defer c.answered()
	c.armWatch(b == nil)
	_, ok := c.runHandler(w, req, nil)
	c.stopWatch()
	if !ok {
		if b != nil {
			b.finish()
		}
		if !c.hijacked {
			if w.committed {
				_ = c.bw.Flush()
			}
		}
		return false
	}
	if c.hijacked {
		return false
	}
	if b != nil && !b.finish() {
		w.closeAfter = true
	}
	if p.expectContinue && !c.sentContinue && b != nil {
		w.closeAfter = true
	}
	err := w.finish()
	return !w.closeAfter && err == nil
}

// answered readies the connection's answer state for the next request:
// the header map emptied, the start of an answer of unknown length
// dropped when it grew large.
func (c *conn) answered() {
	if len(c.resHdr) > 0 {
		clear(c.resHdr) // not free on an empty map
	}
	if cap(c.pre) > 64<<10 {
		c.pre = nil
	}
	c.pre = c.pre[:0]
}

// runHandler calls the handler with r, or its ServeHead with h when h is
// set (served: what ServeHead returned); ok is false when it panicked
// (logged unless http.ErrAbortHandler).
func (c *conn) runHandler(w *response, r *http.Request, h *Head) (served, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			ok = false
			if p != http.ErrAbortHandler {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.log().Error("h1: panic serving a request", slog.String("remote", c.remote),
					slog.Any("panic", p), slog.String("stack", string(buf)))
			}
		}
	}()
	if h != nil {
		return c.heads.ServeHead(w, h), true
	}
	c.srv.Handler.ServeHTTP(w, r)
	return true, true
}

// sendContinue writes the 100 Continue a body read owes, unless the answer
// began.
func (c *conn) sendContinue() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.canContinue {
		return nil
	}
	c.canContinue, c.sentContinue = false, true
	_, _ = c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	return c.bw.Flush()
}

// noContinue: the answer begins; no 100 Continue after it.
func (c *conn) noContinue() {
	c.wmu.Lock()
	c.canContinue = false
	c.wmu.Unlock()
}

// connReader is the connection as its bufio.Reader reads it: first what
// a watch read (watch.go); while a body is read, each read is bounded by
// IdleTimeout.
type connReader struct{ c *conn }

func (r connReader) Read(p []byte) (int, error) {
	if r.c.held || r.c.watchErr != nil {
		return r.c.readHeld(p)
	}
	if r.c.readIdle.Load() {
		r.c.rdl.Within(time.Now(), r.c.idle, r.c.rwc.SetReadDeadline)
	}
	return r.c.rwc.Read(p)
}

// connWriter: each write of an answer is bounded by IdleTimeout.
type connWriter struct{ c *conn }

func (w connWriter) Write(p []byte) (int, error) {
	w.c.wdl.Within(time.Now(), w.c.idle, w.c.rwc.SetWriteDeadline)
	return w.c.rwc.Write(p)
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return false
	}
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops new connections, closes idle ones, and waits for the
// others to finish their answer (each then closes) until ctx ends, when
// it returns ctx's error and leaves them to Close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutting.Store(true)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		for c := range s.conns {
			if c.state.CompareAndSwap(stateIdle, stateClosing) {
				_ = c.rwc.Close()
			}
		}
		left := len(s.conns)
		s.mu.Unlock()
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close cuts every connection and cancels the requests in flight.
func (s *Server) Close() error {
	s.shutting.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.state.Store(stateClosing)
		// Cut first: a handler whose context ends answers nobody.
		_ = c.rwc.Close()
		c.cancel()
	}
	return nil
}
