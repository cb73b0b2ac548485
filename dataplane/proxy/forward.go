package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"minimesh/dataplane/applink"
	"minimesh/dataplane/edge"
	"minimesh/dataplane/meshlink"
	meshv1 "minimesh/proto/mesh/v1"
)

// Limits bound every phase of a proxied exchange. Zero fields take the
// defaults given beside them.
type Limits struct {
	Handshake      time.Duration // TLS handshake on accept or dial; 10s
	ReadHeader     time.Duration // reading a request's headers; 10s
	Idle           time.Duration // keep-alive idle time, both sides; 120s
	Dial           time.Duration // TCP connect to the app or remote proxy; 5s
	ResponseHeader time.Duration // waiting for the upstream's response headers; 60s
	Drain          time.Duration // graceful shutdown before connections are cut; 10s
	MaxHeaderBytes int           // request header size; 64 KiB
	// MaxRequestBodyBytes bounds an HTTP request body: a larger
	// Content-Length is answered 413 at once, a body of unknown length is
	// cut at the limit. gRPC streams are exempt (their messages are
	// bounded by gRPC itself). 64 MiB; negative: no limit.
	MaxRequestBodyBytes int64
	// MaxIdleConnsPerHost sizes the pool of idle connections to the app
	// (the default of net/http, 2, leaves thousands of sockets in
	// TIME_WAIT under load); 256.
	MaxIdleConnsPerHost int
	// MaxPendingHandshakes bounds TLS handshakes in flight per listener;
	// further connections wait in the kernel's accept queue; 1024.
	MaxPendingHandshakes int
}

func (l Limits) withDefaults() Limits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.Handshake, 10*time.Second)
	def(&l.ReadHeader, 10*time.Second)
	def(&l.Idle, 120*time.Second)
	def(&l.Dial, 5*time.Second)
	def(&l.ResponseHeader, 60*time.Second)
	def(&l.Drain, 10*time.Second)
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 64 << 10
	}
	if l.MaxRequestBodyBytes == 0 {
		l.MaxRequestBodyBytes = 64 << 20
	}
	if l.MaxIdleConnsPerHost <= 0 {
		l.MaxIdleConnsPerHost = 256
	}
	if l.MaxPendingHandshakes <= 0 {
		l.MaxPendingHandshakes = 1024
	}
	return l
}

// app is the link to the local app as these limits bound it.
func (l Limits) app() applink.Config {
	return applink.Config{Dial: l.Dial, Idle: l.Idle, ResponseHeader: l.ResponseHeader, MaxIdleConnsPerHost: l.MaxIdleConnsPerHost}
}

// forwarder is a ReverseProxy plus the per-listener bookkeeping every part
// shares: metrics, the status recorder and error responses.
type forwarder struct {
	name    string
	log     *slog.Logger
	now     func() time.Time
	metrics *listenerMetrics
	rp      *httputil.ReverseProxy
	// direct, when set, forwards requests without a body by the direct
	// path (direct.go), as the request's decision says (decision.app).
	direct *applink.Client
	// done, when set, is told the status and duration of every request
	// forwarded (the outbound's per-destination metrics).
	done    func(d *decision, code int, seconds float64)
	maxBody int64 // Limits.MaxRequestBodyBytes
	// inflight lets Run wait for handlers cut by a drain timeout before it
	// closes the idle pool, so no connection returns to it afterwards.
	inflight sync.WaitGroup
}

// forwarderConfig is everything a forwarder is built from; the optional
// hooks (direct, done) are given here, never set afterwards.
type forwarderConfig struct {
	name      string
	log       *slog.Logger
	now       func() time.Time
	metrics   *Metrics
	transport http.RoundTripper
	// rewrite prepares ReverseProxy's request; nil: what the decision's
	// applink.Head says (rewriteToApp).
	rewrite func(*httputil.ProxyRequest)
	direct  *applink.Client
	done    func(d *decision, code int, seconds float64)
	maxBody int64
}

func newForwarder(cfg forwarderConfig) *forwarder {
	f := &forwarder{name: cfg.name, log: cfg.log, now: cfg.now, metrics: cfg.metrics.listener(cfg.name),
		direct: cfg.direct, done: cfg.done, maxBody: cfg.maxBody}
	rewrite := cfg.rewrite
	if rewrite == nil {
		rewrite = rewriteToApp
	}
	f.rp = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    cfg.transport,
		BufferPool:   meshlink.BufferPool{},
		ErrorHandler: f.errorHandler,
		ErrorLog:     slog.NewLogLogger(cfg.log.Handler(), slog.LevelWarn),
	}
	return f
}

// rewriteToApp is ReverseProxy's Rewrite towards the app: the request's
// decision says what the app receives (applink.Head), as on the direct
// path.
func rewriteToApp(pr *httputil.ProxyRequest) {
	decisionFrom(pr.In.Context()).app.Rewrite(pr)
}

// serve forwards one request as d decides and records its class and
// latency. A request without a body goes by the direct path when the
// forwarder has one; the others through ReverseProxy, which finds d under
// the request's one context key (decisionKey).
func (f *forwarder) serve(w http.ResponseWriter, r *http.Request, d *decision) {
	f.forward(w, r, d, nil)
}

// forward is serve, the request forwarded by by when it is set (the
// outbound's direct path), with the same bookkeeping.
func (f *forwarder) forward(w http.ResponseWriter, r *http.Request, d *decision, by func(http.ResponseWriter, *http.Request, *decision)) {
	f.inflight.Add(1)
	defer f.inflight.Done()
	start := f.now()
	rec := recorderPool.Get().(*recorder)
	rec.ResponseWriter, rec.code = w, 0
	defer f.finish(d, rec, start)
	if by != nil {
		by(rec, r, d)
		return
	}
	if f.direct != nil && applink.Directable(r) {
		f.forwardDirect(rec, r, &d.app)
		return
	}
	if decisionFrom(r.Context()) != d {
		r = r.WithContext(context.WithValue(r.Context(), decisionKey{}, d))
	}
	f.rp.ServeHTTP(rec, r)
}

// finish records a request's class and latency, deferred by ServeHTTP: a
// response aborted midway (http.ErrAbortHandler, from the direct path or
// ReverseProxy) counts in the class "aborted", and the panic goes on so
// that the client sees the response fail. Other panics go on unrecorded.
func (f *forwarder) finish(d *decision, rec *recorder, start time.Time) {
	code := rec.code
	if code == 0 {
		code = http.StatusOK // a handler that wrote nothing answered 200
	}
	p := recover()
	if p != nil {
		if p != http.ErrAbortHandler {
			panic(p)
		}
		code = codeAborted
	}
	rec.ResponseWriter = nil
	recorderPool.Put(rec)
	secs := f.now().Sub(start).Seconds()
	f.metrics.observe(code, secs)
	if f.done != nil {
		f.done(d, code, secs)
	}
	if p != nil {
		panic(p)
	}
}

// errorHandler answers 502 (504 on an upstream timeout, 503 when there is
// no endpoint) with a short body and logs why. A client that went away is
// logged at debug level only.
func (f *forwarder) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	code, body := http.StatusBadGateway, "bad gateway\n"
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		code, body = http.StatusGatewayTimeout, "gateway timeout\n"
	case errors.Is(err, ErrNoEndpoint):
		code, body = http.StatusServiceUnavailable, "no endpoint available\n"
	}
	level := slog.LevelWarn
	if r.Context().Err() != nil {
		level = slog.LevelDebug
	}
	f.log.LogAttrs(r.Context(), level, "proxy: upstream failed",
		slog.String("method", r.Method), // the logger names the listener
		slog.String("host", r.Host), slog.Int("status", code), slog.String("error", err.Error()))
	writePlain(w, code, body)
}

// writePlain answers code with a short plain-text body.
func writePlain(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

// refuse answers a request the proxy will not forward, counts it and logs
// why (at debug level when the client went away).
func (f *forwarder) refuse(w http.ResponseWriter, r *http.Request, code int, body string, why error) {
	level := slog.LevelWarn
	if code < 500 || r.Context().Err() != nil {
		level = slog.LevelInfo
	}
	f.log.LogAttrs(r.Context(), level, "proxy: request refused",
		slog.String("method", r.Method), // the logger names the listener
		slog.String("host", r.Host), slog.Int("status", code), slog.String("error", why.Error()))
	writePlain(w, code, body)
	f.metrics.observe(code, 0)
}

// admitBody enforces Limits.MaxRequestBodyBytes: false means the request
// was answered 413. A gRPC stream is exempt.
func (f *forwarder) admitBody(w http.ResponseWriter, r *http.Request, proto meshv1.Protocol) bool {
	if f.maxBody < 0 || r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return true
	}
	if r.ContentLength > f.maxBody {
		f.refuse(w, r, http.StatusRequestEntityTooLarge, "request body too large\n",
			fmt.Errorf("proxy: Content-Length %d over the limit of %d", r.ContentLength, f.maxBody))
		return false
	}
	if r.ContentLength < 0 && proto != meshv1.Protocol_PROTOCOL_GRPC &&
		!strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		r.Body = http.MaxBytesReader(w, r.Body, f.maxBody)
	}
	return true
}

// recorder remembers the final status code. It unwraps so that
// http.ResponseController (used by ReverseProxy to flush and hijack for
// upgrades) reaches the real writer.
type recorder struct {
	http.ResponseWriter
	code int
}

var recorderPool = sync.Pool{New: func() any { return new(recorder) }}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 && code >= 200 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// closeIdle waits for handlers still running after a shutdown and then
// closes the transport's idle connections, ending their goroutines.
func (f *forwarder) closeIdle(t interface{ CloseIdleConnections() }) {
	f.inflight.Wait()
	t.CloseIdleConnections()
}

// newServer is edge's http.Server with these limits.
func newServer(h http.Handler, lim Limits, log *slog.Logger) *http.Server {
	return edge.NewServer(h, edge.ServerLimits{ReadHeader: lim.ReadHeader, Idle: lim.Idle, MaxHeaderBytes: lim.MaxHeaderBytes}, log)
}
