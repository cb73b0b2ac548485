package meshlink

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"minimesh/dataplane/internal/cancelhook"
	"minimesh/dataplane/internal/deadline"
	"minimesh/dataplane/internal/resphead"
	"minimesh/dataplane/internal/turn"
)

// Defaults of Config's pool fields.
const (
	DefaultMaxConns = 64
	DefaultPoolWait = time.Second
)

// maxResponseHeader bounds a response's head (status line and fields), as
// the H1 transport's MaxResponseHeaderBytes; max1xx bounds the
// informational answers to one request (net/http's Transport takes 5).
const (
	maxResponseHeader = 1 << 20
	max1xx            = 5
)

// Pool is the HTTP/1.1 way to a remote proxy: at most Config.MaxConns
// keep-alive mTLS connections (idle and in use), each carrying one request
// at a time, written and answered on the caller's goroutine. net/http's
// Transport (and HTTP/2's) hand each request to reader and writer
// goroutines; between two proxies on one machine those handoffs cost more
// than the bytes.
//
//   - A connection is dialed by the Link's dial (Config.Addr only, ALPN
//     http/1.1, Config.Admit and Config.OnHandshakeFail as for H2, failures
//     wrapped in ErrConnect).
//   - It goes back to the pool only when its response was read to the end
//     with nothing after it, the request was written whole, neither side
//     asked to close, and the request was not cancelled. A body closed
//     before its end closes the connection.
//   - Before reuse a connection is checked without blocking: the remote
//     closed it (its idle timeout), or sent bytes nobody asked for, and it
//     is dropped. A reused connection that fails before any byte of the
//     answer (the remote closed it as the request went out) is replaced
//     by a new one, and the request sent again when that is safe: no body
//     was written, or its body can be had again (GetBody), and the method
//     is idempotent (or the request has an Idempotency-Key), net/http's
//     rule.
//   - Idle connections are closed after Config.Idle, and all of them by
//     CloseIdleConnections; connections in use then are closed when their
//     request ends (they were made under certificates or a bundle that
//     may be gone).
//   - When all MaxConns connections are busy a request waits up to
//     Config.PoolWait for one; then it goes over the overflow transport
//     (the Link's HTTP/2 connection). So does every request to a remote
//     that does not agree to http/1.1 in ALPN.
type Pool struct {
	dial           func(ctx context.Context) (net.Conn, error)
	overflow       http.RoundTripper
	addr           string
	max            int
	wait           time.Duration // < 0: no overflow
	idleTimeout    time.Duration
	responseHeader time.Duration
	checkIdleAfter time.Duration // CheckIdleAfter (tests change it)

	mu      sync.Mutex
	idle    []*poolConn // most recently used last
	open    int         // connections open: idle and in use
	gen     uint64      // bumped by CloseIdleConnections
	waiters []chan struct{}
	sweep   *time.Timer // closes expired idle connections; nil when none are idle
	// noHTTP1: the remote did not agree to http/1.1 in ALPN (a server of
	// HTTP/2 only); its requests take the overflow transport until
	// CloseIdleConnections.
	noHTTP1 atomic.Bool
}

func newPool(cfg Config, dial func(ctx context.Context) (net.Conn, error), overflow http.RoundTripper) *Pool {
	p := &Pool{dial: dial, overflow: overflow, addr: cfg.Addr, max: cfg.MaxConns, wait: cfg.PoolWait,
		idleTimeout: cfg.Idle, responseHeader: cfg.ResponseHeader, checkIdleAfter: CheckIdleAfter}
	if p.max <= 0 {
		p.max = DefaultMaxConns
	}
	if p.wait == 0 {
		p.wait = DefaultPoolWait
	}
	if p.idleTimeout <= 0 {
		p.idleTimeout = 90 * time.Second
	}
	return p
}

// poolConn is one keep-alive connection of a Pool.
type poolConn struct {
	net.Conn
	raw    net.Conn // the TCP connection under TLS, for the liveness check
	lr     headerLimit
	br     *bufio.Reader
	bw     *bufio.Writer
	gen    uint64
	idleAt time.Time
	peek   peeker
	abort  func() // ends the exchange in flight (a past deadline); made once
	rdl    deadline.Lazy
	hold   *turn.Conn // the TCP connection, when it can hold a request back
}

// headerLimit bounds what the bufio.Reader reads while a response's head
// is parsed (n ≥ 0); n < 0: no limit.
type headerLimit struct {
	c net.Conn
	n int64
}

func (l *headerLimit) Read(b []byte) (int, error) {
	if l.n < 0 {
		return l.c.Read(b)
	}
	if l.n == 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(b)) > l.n {
		b = b[:l.n]
	}
	n, err := l.c.Read(b)
	l.n -= int64(n)
	return n, err
}

var (
	errHeaderTooLarge = errors.New("proxy: remote proxy's response headers exceed the limit")
	// errStale marks a reused connection found closed by the remote
	// before any byte of the answer came.
	errStale = errors.New("connection closed by the remote proxy")
	// errPoolBusy: every connection stayed busy for PoolWait.
	errPoolBusy = errors.New("proxy: every HTTP/1.1 connection to the remote is busy")
	errNoHTTP1  = errors.New("proxy: the remote proxy did not agree to http/1.1")
)

// aLongTimeAgo is a past deadline: blocked reads and writes return at once.
var aLongTimeAgo = time.Unix(1, 0)

// testHookChecked, set by tests, runs before each liveness check of a
// pooled connection.
var testHookChecked func()

// CheckIdleAfter: a replayable request (sent again on a stale
// connection: send's rule) skips the liveness check's system call on a
// connection idle for less than this. Under load a connection is back in
// use within a few milliseconds of its answer; a remote proxy closes an
// idle connection at its idle timeout (minutes), or a retiring one after
// Connection: close, so a check so soon after an answer finds it quiet.
// When it does not, the request fails before any byte of the answer and
// goes again on another connection, as after the check's own race.
// Every other request is checked whatever the idle time.
const CheckIdleAfter = 250 * time.Millisecond

// alive reports whether an idle connection can carry a request: one
// non-blocking MSG_PEEK on the TCP connection finds nothing to read. Bytes
// waiting there are the remote's close_notify and end of stream (its idle
// timeout, a retirement) or something nobody asked for: either way the
// connection is dropped. (TLS 1.3's session tickets come before the first
// answer and are read with it; a read through TLS cannot look without
// blocking: a past deadline fails it before it reads.)
func (pc *poolConn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	if now := time.Now(); pc.rdl.Passed(now) {
		// The last answer's header deadline, left in force (readResponse),
		// would fail the check's read.
		pc.rdl.Forget()
		_ = pc.SetReadDeadline(time.Time{})
	}
	return pc.peek.state(pc.raw) == peekEmpty
}

// RoundTrip sends req over a connection of the pool (or, when every one
// stays busy for PoolWait, over the overflow transport) and returns the
// answer, whose Body must be read to its end (the connection then goes
// back to the pool) or closed.
func (p *Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	return p.send(req, nil)
}

// Head writes a request's head in place of Request.Write (Pool.Do): a
// proxy writes the head it forwards straight from the request it received,
// without building the outgoing request and its header map.
type Head interface {
	// WriteHead writes the request line and the header fields of req,
	// through the empty line, to bw; bw's error, sticky, shows at Flush.
	WriteHead(bw *bufio.Writer, req *http.Request)
	// Got1xx takes each informational answer (at most 5 per request).
	Got1xx(code int, header http.Header)
	// Fields, when not nil, takes the final answer's head when it is of
	// the common form (dataplane/internal/resphead): the response then has
	// no header map (Header nil), its fields are in Fields.
	Fields() *resphead.Fields
	// Request returns the request the head describes, for the overflow
	// transport (HTTP/2): when every connection stays busy for PoolWait,
	// or the remote does not agree to http/1.1. Its 1xx answers are
	// Request's to pass on (a trace in its context).
	Request(req *http.Request) *http.Request
}

// Do sends req as RoundTrip does, with its head written by head; a body
// (req.ContentLength > 0: head states that length; a body of length 0 is
// not read) follows it, written as RoundTrip writes one. What goes out is head's alone: req.Close (the
// caller's own connection) does not close the pooled one. Sent again on a
// stale connection under RoundTrip's rule (isIdempotent on req, a body
// from GetBody).
func (p *Pool) Do(req *http.Request, head Head) (*http.Response, error) {
	if req.ContentLength < 0 {
		return nil, errors.New("proxy: Pool.Do needs a request body of known length")
	}
	return p.send(req, head)
}

// send is RoundTrip (head nil) and Do.
func (p *Pool) send(req *http.Request, head Head) (*http.Response, error) {
	hasBody := req.Body != nil && req.Body != http.NoBody && (head == nil || req.ContentLength > 0)
	replayable := (!hasBody || req.GetBody != nil) && isIdempotent(req)
	for tries := 0; ; tries++ {
		out := req
		if tries > 0 && hasBody {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			out = req.Clone(req.Context())
			out.Body = body
		}
		if p.noHTTP1.Load() && p.overflow != nil {
			return p.overflow.RoundTrip(overflowRequest(out, head))
		}
		pc, reused, err := p.get(req.Context(), replayable)
		if (errors.Is(err, errPoolBusy) || errors.Is(err, errNoHTTP1)) && p.overflow != nil {
			return p.overflow.RoundTrip(overflowRequest(out, head))
		}
		if err != nil {
			if head == nil {
				closeBody(out)
			}
			return nil, err
		}
		resp, written, err := p.exchange(pc, out, head, hasBody, replayable)
		if err == nil {
			return resp, nil
		}
		// A reused connection the remote closed before answering: the
		// request goes again on another when nothing of it was sent, or
		// when sending it twice is safe. A new connection's failure is
		// the remote's answer.
		if !reused || !errors.Is(err, errStale) || req.Context().Err() != nil || tries >= p.max ||
			(written && !replayable) {
			return nil, err
		}
	}
}

// overflowRequest is req as the overflow transport takes it.
func overflowRequest(req *http.Request, head Head) *http.Request {
	if head == nil {
		return req
	}
	return head.Request(req)
}

// isIdempotent is net/http's rule for sending a request again.
func isIdempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// get returns an idle connection that is alive (reused), or a new one
// while fewer than max are open, or waits for either. A replayable
// request takes a connection idle for less than CheckIdleAfter without
// the liveness check (see CheckIdleAfter).
func (p *Pool) get(ctx context.Context, replayable bool) (pc *poolConn, reused bool, err error) {
	var expired <-chan time.Time
	for {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		p.mu.Lock()
		now := time.Now()
		pc, stale := p.popLocked(now)
		if pc == nil && stale == nil && p.open < p.max {
			p.open++
			p.mu.Unlock()
			pc, err := p.connect(ctx)
			if err != nil {
				p.release()
				return nil, false, err
			}
			return pc, false, nil
		}
		var w chan struct{}
		if pc == nil && stale == nil {
			w = make(chan struct{}, 1)
			p.waiters = append(p.waiters, w)
		}
		p.mu.Unlock()
		if stale != nil {
			p.discard(stale)
			continue
		}
		if pc != nil {
			if replayable && now.Sub(pc.idleAt) < p.checkIdleAfter && pc.br.Buffered() == 0 {
				return pc, true, nil
			}
			if testHookChecked != nil {
				testHookChecked()
			}
			if pc.alive() {
				return pc, true, nil
			}
			p.discard(pc)
			continue
		}
		if expired == nil && p.wait > 0 {
			t := time.NewTimer(p.wait)
			defer t.Stop()
			expired = t.C
		}
		select {
		case <-w:
		case <-ctx.Done():
			p.leave(w)
			return nil, false, ctx.Err()
		case <-expired:
			p.leave(w)
			return nil, false, errPoolBusy
		}
	}
}

// popLocked takes the most recently used idle connection; one idle for too
// long is returned as stale, to be discarded outside the lock.
func (p *Pool) popLocked(now time.Time) (pc, stale *poolConn) {
	n := len(p.idle)
	if n == 0 {
		return nil, nil
	}
	pc = p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	if now.Sub(pc.idleAt) >= p.idleTimeout {
		return nil, pc
	}
	return pc, nil
}

// leave takes a waiter out of the queue; one already woken passes its turn
// to the next.
func (p *Pool) leave(w chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := slices.Index(p.waiters, w); i >= 0 {
		p.waiters = slices.Delete(p.waiters, i, i+1)
		return
	}
	p.wakeLocked()
}

// wakeLocked wakes the longest waiting request: a connection came free, or
// room for one.
func (p *Pool) wakeLocked() {
	if len(p.waiters) == 0 {
		return
	}
	w := p.waiters[0]
	p.waiters = slices.Delete(p.waiters, 0, 1)
	w <- struct{}{}
}

// release gives up the place of a connection that is closed or was never
// made.
func (p *Pool) release() {
	p.mu.Lock()
	p.open--
	p.wakeLocked()
	p.mu.Unlock()
}

// discard closes a connection of the pool and gives up its place.
func (p *Pool) discard(pc *poolConn) {
	_ = pc.Close()
	p.release()
}

// put returns a connection to the pool; one of an earlier generation
// (CloseIdleConnections since it was made) is closed instead.
func (p *Pool) put(pc *poolConn) {
	pc.idleAt = time.Now()
	p.mu.Lock()
	if pc.gen != p.gen {
		p.mu.Unlock()
		p.discard(pc)
		return
	}
	p.idle = append(p.idle, pc)
	if p.sweep == nil {
		p.sweep = time.AfterFunc(p.idleTimeout, p.expire)
	}
	p.wakeLocked()
	p.mu.Unlock()
}

// expire closes the connections idle for longer than the idle timeout (the
// oldest first) and runs again while any are left.
func (p *Pool) expire() {
	now := time.Now()
	p.mu.Lock()
	p.sweep = nil
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleAt) >= p.idleTimeout {
		n++
	}
	old := slices.Clone(p.idle[:n])
	clear(p.idle[:n])
	p.idle = p.idle[n:]
	if len(p.idle) > 0 {
		p.sweep = time.AfterFunc(p.idleTimeout-now.Sub(p.idle[0].idleAt), p.expire)
	}
	p.mu.Unlock()
	for _, pc := range old {
		p.discard(pc)
	}
}

// CloseIdleConnections closes the idle connections; those in use are
// closed when their request ends. The pool goes on: the next request dials
// a new connection.
func (p *Pool) CloseIdleConnections() {
	p.mu.Lock()
	p.gen++
	p.noHTTP1.Store(false)
	idle := p.idle
	p.idle = nil
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
	p.mu.Unlock()
	for _, pc := range idle {
		p.discard(pc)
	}
}

func (p *Pool) connect(ctx context.Context) (*poolConn, error) {
	c, err := p.dial(ctx)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok && tc.ConnectionState().NegotiatedProtocol != "http/1.1" {
		_ = c.Close()
		p.noHTTP1.Store(true)
		return nil, fmt.Errorf("%w: %s", errNoHTTP1, p.addr)
	}
	pc := &poolConn{Conn: c, raw: c}
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		pc.raw = nc.NetConn()
	}
	pc.hold = turn.Of(c)
	pc.lr = headerLimit{c: c, n: -1}
	pc.br = bufio.NewReaderSize(&pc.lr, 4<<10)
	pc.bw = bufio.NewWriterSize(c, 4<<10)
	p.mu.Lock()
	pc.gen = p.gen
	p.mu.Unlock()
	return pc, nil
}

// staleErr wraps err with errStale when it says the remote closed the
// connection (not a timeout: that request may have reached it).
func staleErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("%w: %w", errStale, err)
	}
	return err
}

// exchange writes req on pc and reads the answer's head. written reports
// whether any of the request may have been sent (a failed write of a
// request without body sent nothing usable). On error the connection is
// closed and its place given up. A replayable request without a body is
// sent with the read of its answer (turn.Conn.Hold): a failed write then
// shows as a failed read, after which it is sent again as a stale
// connection's request is.
func (p *Pool) exchange(pc *poolConn, req *http.Request, head Head, hasBody, replayable bool) (resp *http.Response, written bool, err error) {
	ctx := req.Context()
	// The response header's deadline is set before the cancel hook is
	// registered: set after, it would replace the past deadline of a
	// cancellation that came in between.
	if p.responseHeader > 0 {
		pc.rdl.Within(time.Now(), p.responseHeader, pc.SetReadDeadline)
	}
	if pc.abort == nil {
		pc.abort = func() {
			pc.rdl.Forget()
			_ = pc.SetDeadline(aLongTimeAgo)
		}
	}
	stop := cancelhook.On(ctx, pc.abort)
	fail := func(err error) (*http.Response, bool, error) {
		stop.Stop()
		p.discard(pc)
		if ctx.Err() != nil {
			return nil, true, ctx.Err()
		}
		return nil, true, err
	}
	var wrote chan error
	if hasBody {
		// The body is written by a goroutine of its own while the answer
		// is read: a remote that answers before reading it all (an early
		// 413, a 403) must not deadlock the exchange.
		wrote = make(chan error, 1)
		body := &bodyReader{rc: req.Body}
		write := func() error {
			out := *req
			out.Body = body
			return out.Write(pc.bw)
		}
		if head != nil {
			// Do's head is written here, on the caller's goroutine; its
			// body of ContentLength bytes by the writer.
			head.WriteHead(pc.bw, req)
			write = func() error {
				n, err := io.Copy(pc.bw, io.LimitReader(body, req.ContentLength))
				if err == nil && n < req.ContentLength {
					body.failed = true // the caller's body ended short
					err = fmt.Errorf("proxy: request body ended after %d of %d bytes: %w", n, req.ContentLength, io.ErrUnexpectedEOF)
				}
				return err
			}
		}
		go func() {
			err := write()
			if err == nil {
				err = pc.bw.Flush()
			}
			if body.failed {
				// The caller's body broke: the remote waits for the rest
				// and will not answer.
				pc.rdl.Forget()
				_ = pc.SetDeadline(aLongTimeAgo)
			}
			wrote <- err
		}()
	} else {
		var err error
		if head != nil {
			head.WriteHead(pc.bw, req)
		} else {
			err = req.Write(pc.bw)
		}
		if err == nil {
			if replayable && pc.hold != nil {
				pc.hold.Hold()
			}
			err = pc.bw.Flush()
		}
		if err != nil {
			stop.Stop()
			p.discard(pc)
			return nil, false, fmt.Errorf("proxy: write to %s: %w", p.addr, staleErr(err))
		}
	}
	// The answer's body, made first: the common answer is read into its
	// slot, one allocation for both.
	b := &poolBody{p: p, pc: pc, stop: stop, wrote: wrote}
	resp, err = p.readResponse(pc, req, head, &b.slot)
	if err != nil {
		return fail(err)
	}
	// A head of Do's never asks to close (req.Close is the caller's own
	// connection).
	b.keep = !resp.Close && (head != nil || !req.Close)
	if resp.Body == http.NoBody {
		b.done(true)
		return resp, true, nil
	}
	b.rc = resp.Body
	resp.Body = b
	return resp, true, nil
}

// readResponse reads the answer's head within the response header timeout
// and size limit, passing 1xx answers to head, else to the caller's trace
// (ReverseProxy sends them on), at most max1xx of them.
func (p *Pool) readResponse(pc *poolConn, req *http.Request, head Head, slot *resphead.Slot) (*http.Response, error) {
	var trace *httptrace.ClientTrace
	if head == nil {
		trace = httptrace.ContextClientTrace(req.Context())
	}
	for informational := 0; ; informational++ {
		pc.lr.n = maxResponseHeader
		if _, err := pc.br.Peek(1); err != nil {
			pc.lr.n = -1
			if informational > 0 {
				return nil, fmt.Errorf("proxy: read from %s: %w", p.addr, err)
			}
			return nil, fmt.Errorf("proxy: read from %s: %w", p.addr, staleErr(err))
		}
		var raw *resphead.Fields
		if head != nil {
			raw = head.Fields()
		}
		resp, ok := resphead.Parse(pc.br, req, raw, slot) // the common head; any other with net/http
		var err error
		if !ok {
			resp, err = http.ReadResponse(pc.br, req)
		}
		pc.lr.n = -1
		if err != nil {
			return nil, fmt.Errorf("proxy: read from %s: %w", p.addr, err)
		}
		code := resp.StatusCode
		if code >= 200 {
			if p.responseHeader > 0 && (resp.ContentLength < 0 || int64(pc.br.Buffered()) < resp.ContentLength) {
				// The body's reads are not bounded by the header's wait; a
				// body whole in the buffer reads nothing more, and the
				// deadline stays (see applink's readResponse).
				pc.rdl.Forget()
				_ = pc.SetReadDeadline(time.Time{})
				if req.Context().Err() != nil {
					_ = pc.SetDeadline(aLongTimeAgo) // the cancel hook's, just replaced
				}
			}
			return resp, nil
		}
		if code == http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("proxy: %s switched protocols on a request without Upgrade", p.addr)
		}
		if informational >= max1xx {
			return nil, fmt.Errorf("proxy: %s sent too many 1xx responses", p.addr)
		}
		if head != nil {
			head.Got1xx(code, resp.Header)
		} else if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, err
			}
		}
	}
}

// bodyReader notes whether the caller's request body failed (anything but
// io.EOF).
type bodyReader struct {
	rc     io.ReadCloser
	failed bool // written and read by the writer goroutine only
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		b.failed = true
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.rc.Close() }

// poolBody is an answer's body: at its end the connection goes back to the
// pool when it can carry another request.
type poolBody struct {
	slot  resphead.Slot // the answer, when resphead read it
	p     *Pool
	pc    *poolConn
	rc    io.ReadCloser
	stop  cancelhook.Watch
	wrote chan error // nil when the request had no body
	keep  bool
	ended bool
}

func (b *poolBody) Read(p []byte) (int, error) {
	if b.ended {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.done(true)
	} else if err != nil {
		b.done(false)
	}
	return n, err
}

// Close ends the body; before its end the connection is not reused.
func (b *poolBody) Close() error {
	if !b.ended {
		b.done(false)
	}
	return nil
}

// done releases the connection: to the pool if the answer was read to its
// end with nothing after it, the request was written whole and nobody cut
// the exchange.
func (b *poolBody) done(complete bool) {
	b.ended = true
	keep := complete && b.keep && b.pc.br.Buffered() == 0 && b.stop.Stop()
	if !keep {
		b.stop.Stop()
	}
	if b.wrote != nil {
		keep = keep && b.writeDone()
	}
	if !keep {
		b.p.discard(b.pc)
		return
	}
	b.p.put(b.pc)
}

// maxWriteWait is how long a finished answer waits for its request's
// writer before giving up the connection (net/http's Transport waits as
// long).
const maxWriteWait = 50 * time.Millisecond

// writeDone reports whether the request was written whole; a writer still
// busy after maxWriteWait is not waited for (the connection is closed and
// the writer ends at its next write).
func (b *poolBody) writeDone() bool {
	select {
	case err := <-b.wrote:
		return err == nil
	default:
	}
	t := time.NewTimer(maxWriteWait)
	defer t.Stop()
	select {
	case err := <-b.wrote:
		return err == nil
	case <-t.C:
		return false
	}
}
