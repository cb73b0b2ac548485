package applink

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"minimesh/dataplane/internal/cancelhook"
	"minimesh/dataplane/internal/deadline"
	"minimesh/dataplane/internal/resphead"
	"minimesh/dataplane/internal/turn"
	"minimesh/dataplane/route"
)

// Client is the HTTP/1.1 client towards the local app. net/http's
// Transport gives every connection a reader and a writer goroutine, so each
// request crosses three goroutines (handler → writeLoop → app → readLoop →
// handler); on loopback those handoffs, not the bytes, were most of a hop's
// cost. Client writes the request and reads the response on the
// handler's own goroutine over a pool of idle keep-alive connections. A
// request with a body is written by a second goroutine while the response is
// read, so an app that answers before reading it all does not deadlock.
//
// Upgrades (WebSocket) and Expect: 100-continue, rare and subtle, go
// through the fallback Transport.
type Client struct {
	dial           func(ctx context.Context, network, addr string) (net.Conn, error)
	fallback       *http.Transport
	maxIdle        int           // idle connections kept per address
	idleTimeout    time.Duration // an idle connection older than this is closed
	responseHeader time.Duration // wait for the response's headers; 0: none
	maxHeaderBytes int64         // response header size
	checkIdleAfter time.Duration // CheckIdleAfter (tests change it)

	mu     sync.Mutex
	idle   map[string][]*appConn // per address, most recently used last
	sweep  *time.Timer           // closes expired idle connections; nil when none are idle
	closed bool                  // CloseIdleConnections: nothing more is pooled
	// shut is closed, readable without mu: an Affinity does not keep its
	// connection past CloseIdleConnections.
	shut atomic.Bool
	// held counts the connections Affinities hold, at most maxIdle: idle
	// client connections do not keep more app connections open than the
	// pool would.
	held atomic.Int64
}

var _ http.RoundTripper = (*Client)(nil)

// appConn is one keep-alive connection to the app.
type appConn struct {
	net.Conn
	lr     headerLimit
	br     *bufio.Reader
	bw     *bufio.Writer
	addr   string
	idleAt time.Time
	peek   peeker // the liveness check of a pooled connection (alive_unix.go)
	abort  func() // ends the exchange in flight (a past deadline); made once
	rdl    deadline.Lazy
	// ambiguous: the last response's framing was doubtful (both
	// Transfer-Encoding and Content-Length, or Transfer-Encoding in
	// HTTP/1.0): the connection carries no other request.
	ambiguous bool
	hold      *turn.Conn // the TCP connection, when it can hold a request back
}

// alive reports whether a pooled connection can carry a request: the app
// has not closed it and sent nothing since its last response (an extra
// response, a HEAD answered with a body: bytes that would be read as the
// next request's answer). net/http's Transport finds the same from its
// reader goroutine and closes such connections.
func (ac *appConn) alive() bool {
	if ac.br.Buffered() > 0 {
		return false
	}
	if now := time.Now(); ac.rdl.Passed(now) {
		// The last answer's header deadline, left in force (readResponse),
		// would fail the check's read.
		ac.rdl.Forget()
		_ = ac.SetReadDeadline(time.Time{})
	}
	return ac.peek.alive(ac.Conn)
}

// headerLimit bounds what the bufio.Reader reads from the connection while
// a response's headers are parsed (n ≥ 0); n < 0 means no limit.
type headerLimit struct {
	c net.Conn
	n int64
}

func (l *headerLimit) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.c.Read(p)
	}
	if l.n == 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.c.Read(p)
	l.n -= int64(n)
	return n, err
}

var errHeaderTooLarge = errors.New("proxy: app's response headers exceed the limit")

// New builds a Client; zero fields of cfg take their defaults.
func New(cfg Config) *Client {
	cfg = cfg.WithDefaults()
	t := Transport(cfg)
	return &Client{
		dial:           t.DialContext,
		fallback:       t,
		maxIdle:        cfg.MaxIdleConnsPerHost,
		idleTimeout:    cfg.Idle,
		responseHeader: cfg.ResponseHeader,
		maxHeaderBytes: t.MaxResponseHeaderBytes,
		checkIdleAfter: CheckIdleAfter,
		idle:           map[string][]*appConn{},
	}
}

// Do sends req by the direct path: its head is written by head (see Head)
// to head.Addr, and req must carry no body (Directable). The response's
// Body must be read to its end or closed, as RoundTrip's.
func (c *Client) Do(req *http.Request, head *Head) (*http.Response, error) {
	return c.do(head.Addr, req, head)
}

// RoundTrip sends req to req.URL.Host and returns the app's response,
// whose Body must be read to its end (the connection then returns to the
// pool) or closed.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || req.Header.Get("Upgrade") != "" || req.Header.Get("Expect") != "" {
		return c.fallback.RoundTrip(req)
	}
	return c.do(req.URL.Host, req, nil)
}

// do sends req to addr: its head written by head (nil: req.Write, which
// also writes the body). A pooled connection is checked before use
// (appConn.alive: one non-blocking MSG_PEEK, outside the pool's lock;
// skipped for a replayable request within CheckIdleAfter); the app may
// still close one between that check and the request. An
// idempotent request without a body is then simply sent again on another
// connection, as the Transport does.
func (c *Client) do(addr string, req *http.Request, head *Head) (*http.Response, error) {
	hasBody := head == nil && req.Body != nil && req.Body != http.NoBody
	replayable := !hasBody && route.IsIdempotent(req.Method)
	var aff *Affinity
	if head != nil {
		aff = head.Affinity
	}
	for range c.maxIdle + 1 {
		ac, reused := aff.take(c, addr, replayable)
		if ac == nil {
			ac, reused = c.get(addr, replayable)
		}
		if ac == nil {
			var err error
			if ac, err = c.connect(req.Context(), addr); err != nil {
				if head == nil {
					closeBody(req)
				}
				return nil, err
			}
		}
		resp, err := c.exchange(ac, req, head, hasBody, replayable, aff)
		if err == nil || !reused || !replayable || !errors.Is(err, errStale) || req.Context().Err() != nil {
			return resp, err
		}
	}
	return nil, fmt.Errorf("proxy: app %s: every pooled connection had been closed", addr)
}

// errStale marks a connection found closed by the app before any byte of
// the response came: the request can go again on another connection.
var errStale = errors.New("connection closed by the app")

// staleErr wraps err with errStale when it says the peer closed the
// connection (not a timeout: that request may have reached the app).
func staleErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("%w: %w", errStale, err)
	}
	return err
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

func (c *Client) connect(ctx context.Context, addr string) (*appConn, error) {
	conn, err := c.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// A turn.Conn: a replayable request waits for its answer on the
	// poller (write).
	conn = turn.Wrap(conn)
	ac := &appConn{Conn: conn, addr: addr, hold: turn.Of(conn)}
	ac.lr = headerLimit{c: conn, n: -1}
	ac.br = bufio.NewReaderSize(&ac.lr, 4<<10)
	ac.bw = bufio.NewWriterSize(conn, 4<<10)
	return ac, nil
}

// exchange writes req on ac and reads the response's headers.
func (c *Client) exchange(ac *appConn, req *http.Request, head *Head, hasBody, replayable bool, aff *Affinity) (*http.Response, error) {
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		_ = ac.Close()
		closeBody(req)
		return nil, err
	}
	// The response header's deadline is set before the cancel hook is
	// registered: set after, it would replace the past deadline of a
	// cancellation that came in between, and the request would wait for
	// the whole timeout.
	if c.responseHeader > 0 {
		ac.rdl.Within(time.Now(), c.responseHeader, ac.SetReadDeadline)
	}
	// The client going away, or a route's timeout, ends the exchange.
	if ac.abort == nil {
		ac.abort = func() {
			ac.rdl.Forget()
			_ = ac.SetDeadline(aLongTimeAgo)
		}
	}
	stop := cancelhook.On(ctx, ac.abort)
	var wrote chan error
	if hasBody {
		wrote = make(chan error, 1)
		// A shallow copy carries the watched body: RoundTrip does not
		// modify its request.
		body := &bodyReader{rc: req.Body}
		out := req.WithContext(ctx)
		out.Body = body
		go func() {
			err := out.Write(ac.bw)
			if err == nil {
				err = ac.bw.Flush()
			}
			if body.failed {
				// The caller's body broke mid-way: the app waits for the
				// rest and will not answer. End the exchange now, as
				// net/http's Transport closes such a connection; an app
				// that cannot be written to any more may still have
				// answered, so only a failure of our own side ends it.
				ac.rdl.Forget()
				_ = ac.SetDeadline(aLongTimeAgo)
			}
			wrote <- err
		}()
	} else if err := c.write(ac, req, head, replayable); err != nil {
		stop.Stop()
		_ = ac.Close()
		return nil, fmt.Errorf("proxy: write to app %s: %w", ac.addr, staleErr(err))
	}
	if testHookWritten != nil {
		testHookWritten(ac.Conn)
	}
	// The answer's body, made first: the common answer is read into its
	// slot, one allocation for both.
	b := &appBody{c: c, ac: ac, stop: stop, wrote: wrote, aff: aff}
	resp, err := c.readResponse(ac, req, head, &b.slot)
	if err != nil {
		stop.Stop()
		_ = ac.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	// The direct path never asks the app to close (a client's
	// "Connection: close" is about the client's own connection).
	b.keep = !resp.Close && !ac.ambiguous && (head != nil || !req.Close)
	if resp.Body == http.NoBody {
		b.done(true)
		return resp, nil
	}
	b.rc = resp.Body
	resp.Body = b
	return resp, nil
}

// bodyReader notes whether the caller's request body failed (anything
// but io.EOF), so a failed write can tell the caller's fault from the
// app's.
type bodyReader struct {
	rc     io.ReadCloser
	failed bool // written by the writer goroutine, read by it only
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		b.failed = true
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.rc.Close() }

// write writes req on ac. A replayable request goes out with the read of
// its answer (turn.Conn.Hold): that read waits on the poller without a
// read that finds nothing, and a failed write shows as a failed read,
// after which the request is sent again as a stale connection's is.
func (c *Client) write(ac *appConn, req *http.Request, head *Head, replayable bool) error {
	if head != nil {
		head.Write(ac.bw, req)
	} else if err := req.Write(ac.bw); err != nil {
		return err
	}
	if replayable && ac.hold != nil {
		ac.hold.Hold()
	}
	return ac.bw.Flush()
}

// readResponse reads the status line and headers within the response
// header timeout (set by exchange) and size limit, passing 1xx answers on
// to head's client or else to the caller's trace (ReverseProxy sends them
// to its client), at most max1xx of them.
func (c *Client) readResponse(ac *appConn, req *http.Request, head *Head, slot *resphead.Slot) (*http.Response, error) {
	for informational := 0; ; informational++ {
		ac.lr.n = c.maxHeaderBytes
		if _, err := ac.br.Peek(1); err != nil {
			ac.lr.n = -1
			return nil, fmt.Errorf("proxy: read from app %s: %w", ac.addr, staleErr(err))
		}
		// The common head without net/http's reader (its framing is never
		// ambiguous); any other form, and a head not buffered whole, with
		// it, the raw head kept for ambiguousFraming.
		var raw *resphead.Fields
		if head != nil {
			raw = head.Raw
		}
		resp, ok := resphead.Parse(ac.br, req, raw, slot)
		if !ok {
			// The head as buffered, when it is there whole (its usual
			// case): parsing it does not refill the buffer, so it stays
			// readable.
			buffered, _ := ac.br.Peek(ac.br.Buffered())
			buffered = buffered[:headEnd(buffered)]
			var err error
			resp, err = http.ReadResponse(ac.br, req)
			ac.lr.n = -1
			if err != nil {
				return nil, fmt.Errorf("proxy: read from app %s: %w", ac.addr, err)
			}
			ac.ambiguous = ambiguousFraming(resp, buffered)
		} else {
			ac.lr.n = -1
			ac.ambiguous = false
		}
		code := resp.StatusCode
		if code >= 200 || code == http.StatusSwitchingProtocols {
			if code == http.StatusSwitchingProtocols {
				return nil, fmt.Errorf("proxy: app %s switched protocols on a request without Upgrade", ac.addr)
			}
			if c.responseHeader > 0 && !bodyBuffered(resp, ac.br) {
				// The body's reads are not bounded by the header's wait.
				// (A body already whole in the buffer reads nothing more:
				// the deadline stays, for the next exchange to keep or
				// move: dataplane/internal/deadline.)
				ac.rdl.Forget()
				_ = ac.SetReadDeadline(time.Time{})
				if req.Context().Err() != nil {
					// Cancelled before the reset: the cancel hook's
					// past deadline was just replaced.
					_ = ac.SetDeadline(aLongTimeAgo)
				}
			}
			return resp, nil
		}
		if informational >= max1xx {
			return nil, fmt.Errorf("proxy: app %s sent too many 1xx responses", ac.addr)
		}
		if head != nil {
			head.informational(code, resp.Header)
		} else if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, err
			}
		}
	}
}

// bodyBuffered reports whether resp's body (of known length) is whole in
// br, so that reading it reads nothing from the connection.
func bodyBuffered(resp *http.Response, br *bufio.Reader) bool {
	return resp.ContentLength >= 0 && int64(br.Buffered()) >= resp.ContentLength
}

// max1xx bounds the informational answers to one request: a storm of 1xx
// fails the request (502) rather than hold the handler. net/http's
// Transport bounds them by the header size limit, counted over all of
// them, when no trace takes them; here they are passed on, so counted.
const max1xx = 5

// headEnd returns the length of the response head at the start of b (up
// to and including its empty line), or 0 when b does not hold it whole.
func headEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 2
		}
		if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 3
		}
	}
	return 0
}

// ambiguousFraming reports whether resp's body length may be read
// differently by another parser (RFC 9112 section 6.3): chunked with a
// Content-Length field as well, or Transfer-Encoding in an HTTP/1.0
// response. net/http drops those fields as it parses, so head, the raw
// head, is looked at; an empty head (not buffered whole) is taken as
// doubtful. Either way the body is read as net/http reads it and the
// connection is not reused.
func ambiguousFraming(resp *http.Response, head []byte) bool {
	switch {
	case !resp.ProtoAtLeast(1, 1):
		return !resp.Close && (len(head) == 0 || resphead.HasField(head, "transfer-encoding:"))
	case len(resp.TransferEncoding) > 0:
		return len(head) == 0 || resphead.HasField(head, "content-length:")
	}
	return false
}

// appBody is a response body: at its end the connection returns to the
// pool when it can carry another request.
type appBody struct {
	slot  resphead.Slot // the answer, when resphead read it
	c     *Client
	ac    *appConn
	rc    io.ReadCloser
	stop  cancelhook.Watch
	wrote chan error // nil when the request had no body
	aff   *Affinity  // keeps the connection after the answer, if set
	keep  bool
	ended bool
}

func (b *appBody) Read(p []byte) (int, error) {
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

// Close ends the body; before its end the connection cannot be reused.
func (b *appBody) Close() error {
	if !b.ended {
		b.done(false)
	}
	return nil
}

// done releases the connection: to the pool if the response was read to
// its end with nothing after it, the request was written whole and nobody
// cut the exchange.
func (b *appBody) done(complete bool) {
	b.ended = true
	keep := complete && b.keep && b.ac.br.Buffered() == 0 && b.stop.Stop()
	if !keep {
		b.stop.Stop()
	}
	if b.wrote != nil {
		keep = keep && b.writeDone()
	}
	if !keep {
		_ = b.ac.Close()
		return
	}
	if b.aff.hold(b.c, b.ac) {
		return
	}
	b.c.put(b.ac)
}

// maxWriteWait is how long a finished response waits for its request's
// writer before giving up the connection (net/http's Transport waits as
// long): a writer that has sent the last byte may not have said so yet.
const maxWriteWait = 50 * time.Millisecond

// writeDone reports whether the request was written whole. A writer still
// busy after maxWriteWait (the app answered before taking the whole body)
// is not waited for: the connection is closed, and the writer ends on its
// own, at its next write or when the server closes the request body (it
// may be waiting on a slow client).
func (b *appBody) writeDone() bool {
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

// get returns the most recently used idle connection to addr that can
// carry a request, closing those idle for too long and those that are not
// alive (appConn.alive). The check is a system call: it runs outside the
// pool's lock, on a connection already taken out of the pool.
func (c *Client) get(addr string, replayable bool) (*appConn, bool) {
	for {
		ac, idleFor := c.pop(addr)
		if ac == nil {
			return nil, false
		}
		if c.usable(ac, idleFor, replayable) {
			return ac, true
		}
	}
}

// usable reports whether ac, idle for idleFor, can carry a request: a
// replayable one skips the liveness check within CheckIdleAfter, any
// other gets it. An ac that fails it is closed.
func (c *Client) usable(ac *appConn, idleFor time.Duration, replayable bool) bool {
	if replayable && idleFor < c.checkIdleAfter && ac.br.Buffered() == 0 {
		return true
	}
	if testHookChecked != nil {
		testHookChecked()
	}
	if ac.alive() {
		return true
	}
	_ = ac.Close()
	return false
}

// CheckIdleAfter: a request that can be sent again (replayable: an
// idempotent method, no body) skips the liveness check's system call
// (appConn.alive) on a connection idle for less than this. Under load a
// connection is back in use within a few milliseconds of its answer (64
// connections at 18,000 requests/s: every 3.5 ms), and apps close idle
// connections after seconds (Node.js 5 s, gunicorn 2 s, nginx 75 s); one
// closed sooner without saying so (Connection: close) fails the request
// before any byte of the answer, and it is sent again on another
// connection, as after the check's own race (the app closes it as the
// request goes out). Every other request is checked whatever the idle
// time: a stale connection would cost it a 502. Bytes the app sent late
// are found when they came with the answer (buffered: the connection is
// not pooled) and by the check after CheckIdleAfter; within it a GET may
// read them as its answer. That is the app's answer all the same (it
// answers every request on its own connections), so the check is
// robustness against a broken app, not isolation from a hostile one.
const CheckIdleAfter = 250 * time.Millisecond

// pop takes the most recently used idle connection to addr out of the
// pool, closing those idle for too long, and says how long it was idle.
func (c *Client) pop(addr string) (*appConn, time.Duration) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for conns := c.idle[addr]; len(conns) > 0; conns = c.idle[addr] {
		ac := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		c.idle[addr] = conns[:len(conns)-1]
		idleFor := now.Sub(ac.idleAt)
		if idleFor > c.idleTimeout {
			_ = ac.Close()
			continue
		}
		return ac, idleFor
	}
	return nil, 0
}

func (c *Client) put(ac *appConn) {
	ac.idleAt = time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	conns := c.idle[ac.addr]
	if c.closed || len(conns) >= c.maxIdle {
		_ = ac.Close()
		return
	}
	c.idle[ac.addr] = append(conns, ac)
	if c.sweep == nil {
		c.sweep = time.AfterFunc(c.idleTimeout, c.expire)
	}
}

// expire closes the connections idle for longer than the idle timeout (the
// oldest are first in each list) and runs again while any are left.
func (c *Client) expire() {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweep = nil
	next := time.Duration(-1)
	for addr, conns := range c.idle {
		n := 0
		for _, ac := range conns {
			if now.Sub(ac.idleAt) < c.idleTimeout {
				break
			}
			_ = ac.Close()
			n++
		}
		clear(conns[:n])
		conns = conns[n:]
		if len(conns) == 0 {
			delete(c.idle, addr)
			continue
		}
		c.idle[addr] = conns
		if left := c.idleTimeout - now.Sub(conns[0].idleAt); next < 0 || left < next {
			next = left
		}
	}
	if next >= 0 && !c.closed {
		c.sweep = time.AfterFunc(next, c.expire)
	}
}

// CloseIdleConnections closes every idle connection; connections in use
// are closed when their response ends. Nothing is pooled afterwards.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	c.closed = true
	c.shut.Store(true)
	if c.sweep != nil {
		c.sweep.Stop()
		c.sweep = nil
	}
	idle := c.idle
	c.idle = map[string][]*appConn{}
	c.mu.Unlock()
	for _, conns := range idle {
		for _, ac := range conns {
			_ = ac.Close()
		}
	}
	c.fallback.CloseIdleConnections()
}

// Affinity keeps one app connection for a client connection between its
// requests (Head.Affinity), as a proxy with an app connection per client
// connection does: a keep-alive client's next request goes out on the
// connection its last answer came in on, without the pool's lock. The
// connection gets the pool's checks when it is taken again (idle timeout,
// liveness after CheckIdleAfter), and goes back to the pool when the
// affinity holds another, is asked for another address, or is released.
// An Affinity is used by one goroutine at a time (the client connection's,
// which serves its requests one after the other). A nil *Affinity holds
// nothing.
type Affinity struct {
	c  *Client
	ac *appConn
}

// take returns the held connection when it is to addr on c and can carry
// the request (Client.get's checks); otherwise it hands it back to its
// pool, or closes it, and returns nil.
func (a *Affinity) take(c *Client, addr string, replayable bool) (*appConn, bool) {
	if a == nil || a.ac == nil {
		return nil, false
	}
	ac, from := a.ac, a.c
	a.ac, a.c = nil, nil
	from.held.Add(-1)
	if from != c || ac.addr != addr {
		from.put(ac)
		return nil, false
	}
	idleFor := time.Since(ac.idleAt)
	if c.shut.Load() || idleFor > c.idleTimeout {
		_ = ac.Close()
		return nil, false
	}
	if c.usable(ac, idleFor, replayable) {
		return ac, true
	}
	return nil, false
}

// hold keeps ac, when a holds nothing, c is open and holds fewer than
// its idle limit; false: the caller pools it.
func (a *Affinity) hold(c *Client, ac *appConn) bool {
	if a == nil || a.ac != nil || c.shut.Load() {
		return false
	}
	if c.held.Add(1) > int64(c.maxIdle) {
		c.held.Add(-1)
		return false
	}
	ac.idleAt = time.Now()
	a.c, a.ac = c, ac
	return true
}

// Release hands the held connection back to its pool: call it when the
// client connection ends (dataplane/h1 does, for a value in its Keeper
// slot).
func (a *Affinity) Release() {
	if a.ac != nil {
		a.c.held.Add(-1)
		a.c.put(a.ac)
		a.c, a.ac = nil, nil
	}
}

// testHookChecked, set by tests, runs before each liveness check of a
// pooled connection.
var testHookChecked func()

// testHookWritten, set by tests, runs once a request's head is written and
// before its response is read.
var testHookWritten func(net.Conn)

// aLongTimeAgo is a deadline in the past: setting it makes blocked reads
// and writes return at once.
var aLongTimeAgo = time.Unix(1, 0)
