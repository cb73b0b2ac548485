package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"minimesh/dataplane/balancer"
	"minimesh/dataplane/meshlink"
	"minimesh/dataplane/route"
	meshv1 "minimesh/proto/mesh/v1"
)

// roundTripper is the Outbound's http.RoundTripper under its ReverseProxy:
// it picks an endpoint for each try, sends the request over that
// endpoint's connection, and retries as the route's policy says.
type roundTripper struct{ o *Outbound }

// RoundTrip implements http.RoundTripper.
func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	return rt.o.roundTrip(req)
}

// maxDrain bounds what is read from a failed try's response before its
// stream is reset, to keep the connection for the next request.
const maxDrain = 4 << 10

// roundTrip sends req, retrying per the route's policy. A try that fails
// counts against its endpoint; the endpoint of the try before is held
// (counted as outstanding) until the next pick, so the power of two
// choices turns the retry away from it when another is there.
func (o *Outbound) roundTrip(req *http.Request) (*http.Response, error) {
	c := decisionFrom(req.Context())
	if c == nil || c.bal == nil {
		return nil, fmt.Errorf("%w: request without a destination", ErrUnknownService)
	}
	return o.send(req, c, nil)
}

// send is roundTrip for the request c decided. With head (the direct
// path, outdirect.go), req is the request the app sent (without a body,
// or with one of known length): each try goes over the remote's HTTP/1.1
// pool with its head written by head; everything else (endpoint picks, retries, try timeouts, outlier
// accounting) is as for ReverseProxy's request.
func (o *Outbound) send(req *http.Request, c *decision, head meshlink.Head) (*http.Response, error) {
	upgrade := head == nil && req.Header.Get("Upgrade") != ""
	pooled := head != nil || (!upgrade && o.overPool(c, req))
	noBody := req.Body == nil || req.Body == http.NoBody || (head != nil && req.ContentLength == 0)
	var policy *route.RetryPolicy
	if c.route != nil && !upgrade {
		policy = c.route.Retry
		policy.Budget.Request() // nil-safe
	}
	// The body is kept for retries only when the policy may retry this
	// method and its length is known and within the cap: a body of
	// unknown length (a stream, such as gRPC's) is sent as it comes, and
	// never retried, rather than held back until it ends.
	bodyBytes := int64(-1)
	var body []byte
	if policy != nil && policy.Attempts > 0 && (policy.NonIdempotent || route.IsIdempotent(req.Method)) {
		switch {
		case noBody:
			bodyBytes = 0
		case req.ContentLength > 0 && req.ContentLength <= policy.MaxBodyBytes:
			body = make([]byte, req.ContentLength)
			if _, err := io.ReadFull(req.Body, body); err != nil {
				return nil, fmt.Errorf("proxy: read request body: %w", err)
			}
			bodyBytes = req.ContentLength
		}
	}
	var prev *balancer.Endpoint
	prevOK := false
	for retries := 0; ; retries++ {
		ep, err := c.bal.Pick()
		if prev != nil {
			c.bal.Done(prev, prevOK)
			prev = nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrNoEndpoint, c.dst.label, err)
		}
		rm, err := o.remoteFor(ep.Target)
		if err != nil {
			c.bal.Done(ep, false)
			return nil, err
		}
		// req's context is the call's (route timeout included) with
		// ReverseProxy's own on top.
		try := req
		tctx, cancel := req.Context(), context.CancelFunc(nop)
		if policy != nil && policy.PerTryTimeout > 0 {
			tctx, cancel = context.WithTimeout(req.Context(), policy.PerTryTimeout)
		}
		if tctx != req.Context() || body != nil || retries > 0 {
			try = req.WithContext(tctx)
			if body != nil {
				try.Body = io.NopCloser(bytes.NewReader(body))
				try.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			}
		}
		var resp *http.Response
		switch {
		case upgrade:
			resp, err = rm.H1.RoundTrip(try)
		case head != nil:
			resp, err = rm.Pool.Do(try, head)
		case pooled:
			resp, err = rm.Pool.RoundTrip(try)
		default:
			resp, err = rm.H2.RoundTrip(try)
		}
		a := route.Attempt{Method: req.Method, Retries: retries, BodyBytes: bodyBytes}
		switch {
		case err == nil:
			a.Status = resp.StatusCode
		case tctx.Err() != nil && c.ctx.Err() == nil:
			a.Status = http.StatusGatewayTimeout // the try's own timeout
		case errors.Is(err, meshlink.ErrConnect):
			a.Failure = route.FailureConnect
		default:
			a.Failure = route.FailureReset
		}
		served := err == nil && resp.StatusCode < 500
		if c.ctx.Err() == nil && policy.Retry(a) {
			if resp != nil {
				_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
				_ = resp.Body.Close()
			}
			cancel()
			o.fwd.metrics.retried()
			prev, prevOK = ep, served
			continue
		}
		if err != nil && retries == 0 && !upgrade && a.Failure == route.FailureReset && c.ctx.Err() == nil &&
			route.IsIdempotent(req.Method) && noBody {
			// Whatever the route says, an idempotent request without a body
			// that failed on its connection (the peer closed it: a retired
			// connection, a restart) is tried once more, as net/http's own
			// transport does; the remote then dials a fresh connection.
			cancel()
			o.fwd.metrics.retried()
			prev, prevOK = ep, false
			continue
		}
		if err != nil {
			cancel()
			c.bal.Done(ep, false)
			return nil, fmt.Errorf("proxy: %s at %s: %w", c.dst.label, ep.Addr, err)
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			// The body is the upgraded connection (an io.ReadWriteCloser
			// that ReverseProxy needs as it is); the endpoint has served.
			// Upgrades have no retry policy, so no try timeout to cancel.
			cancel()
			c.bal.Done(ep, true)
			return resp, nil
		}
		resp.Body = &doneBody{ReadCloser: resp.Body, bal: c.bal, ep: ep, ok: served, cancel: cancel}
		return resp, nil
	}
}

func nop() {}

// overPool reports whether req goes over the remote's HTTP/1.1 pool
// (OutboundConfig.MeshLink): a plain HTTP port (or a service that declares
// none: the remote's app port, HTTP/1.1), not gRPC (its trailers and
// streams keep HTTP/2), not Expect: 100-continue.
func (o *Outbound) overPool(c *decision, req *http.Request) bool {
	if o.cfg.MeshLink != MeshLinkHTTP1 {
		return false
	}
	if c.port != nil && c.port.proto != meshv1.Protocol_PROTOCOL_HTTP {
		return false
	}
	if _, ok := req.Header["Expect"]; ok {
		return false
	}
	return !strings.HasPrefix(req.Header.Get("Content-Type"), "application/grpc")
}

// doneBody ends a try when the response body is closed: the endpoint's
// request is Done (so least-outstanding counts streams until they end)
// and the try's timeout is released.
type doneBody struct {
	io.ReadCloser
	bal    *balancer.Balancer
	ep     *balancer.Endpoint
	ok     bool
	cancel context.CancelFunc
	once   sync.Once
}

func (d *doneBody) Close() error {
	err := d.ReadCloser.Close()
	d.once.Do(func() {
		d.cancel()
		d.bal.Done(d.ep, d.ok)
	})
	return err
}
