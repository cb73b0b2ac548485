package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"minimesh/api/authz"
	"minimesh/certs"
)

// connSet is the inbound's open connections, with their peers, so that a
// push that revokes a peer, or a bundle that no longer verifies it, closes
// them.
type connSet struct {
	mu sync.Mutex
	m  map[net.Conn]*peer
}

func (s *connSet) add(c net.Conn, p *peer) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[net.Conn]*peer{}
	}
	s.m[c] = p
	s.mu.Unlock()
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

func (s *connSet) snapshot() map[net.Conn]*peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[net.Conn]*peer, len(s.m))
	for c, p := range s.m {
		out[c] = p
	}
	return out
}

// tunnelReg is the inbound's TCP streams, each with its peer and the
// cancel that ends it.
type tunnelReg struct {
	mu sync.Mutex
	m  map[*tunnelEntry]struct{}
}

type tunnelEntry struct {
	pe     *peer
	cancel context.CancelFunc
}

// add registers a stream and returns its removal.
func (t *tunnelReg) add(pe *peer, cancel context.CancelFunc) func() {
	e := &tunnelEntry{pe: pe, cancel: cancel}
	t.mu.Lock()
	if t.m == nil {
		t.m = map[*tunnelEntry]struct{}{}
	}
	t.m[e] = struct{}{}
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		delete(t.m, e)
		t.mu.Unlock()
	}
}

// connState tracks the inbound's connections (http.Server.ConnState).
func (in *Inbound) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateClosed, http.StateHijacked:
		in.conns.remove(c)
	}
}

// withPeer is the http.Server's ConnContext: the handshake is already done
// (tlsListener), so the peer's SPIFFE ID is read once per connection, and
// the connection is remembered for revocation.
func (in *Inbound) withPeer(ctx context.Context, c net.Conn) context.Context {
	ctx = withPeer(ctx, c)
	if p, ok := peerFrom(ctx); ok {
		p.conn = c
		in.conns.add(c, p)
	}
	return ctx
}

// enforceOnOpen applies a new policy to what is already open: connections
// of revoked peers are retired (closed at once when idle; else their
// answers in flight carry "Connection: close", a GOAWAY on HTTP/2, new
// requests on them are refused, and whatever is left is cut after
// Limits.Drain), and TCP streams that the policy no longer authorizes are
// ended.
func (in *Inbound) enforceOnOpen(p *Policy) {
	rev := p.Revocations()
	if rev.Len() > 0 {
		for c, pe := range in.conns.snapshot() {
			if err := rev.Refused(pe.header[0], pe.chain); err != nil {
				in.log.Info("proxy: closing connection of a revoked peer", slog.String("peer", pe.header[0]),
					slog.String("remote", c.RemoteAddr().String()), slog.String("reason", err.Error()))
				in.decisions.closed[closeRevoked].Inc()
				pe.retire()
				cut := pe.conn
				time.AfterFunc(in.cfg.Limits.Drain, func() { _ = cut.Close() })
			}
		}
	}
	in.tunnels.mu.Lock()
	var cut []*tunnelEntry
	for e := range in.tunnels.m {
		if rev.Refused(e.pe.header[0], e.pe.chain) != nil ||
			!p.Authz().Check(authzTCP(e.pe)).Allowed {
			cut = append(cut, e)
		}
	}
	in.tunnels.mu.Unlock()
	for _, e := range cut {
		in.log.Info("proxy: closing a TCP stream the policy no longer allows", slog.String("peer", e.pe.header[0]))
		in.decisions.closed[closeUnauthorized].Inc()
		e.cancel()
	}
}

// bundleWatch reports, at each call of the function it returns, whether
// the trust bundle of td has changed since the call before. The bundle in
// force when bundleWatch is called is the baseline: call it before
// serving, so that a change right after the start is not taken for it.
func bundleWatch(src x509bundle.Source, td func() (spiffeid.TrustDomain, bool)) func() bool {
	current := func() *x509bundle.Bundle {
		d, ok := td()
		if !ok {
			return nil
		}
		b, err := src.GetX509BundleForTrustDomain(d)
		if err != nil {
			return nil
		}
		return b
	}
	last := current()
	return func() bool {
		b := current()
		if b == nil || b == last {
			return false
		}
		first := last == nil
		last = b
		return !first
	}
}

// recheckLoop closes, gracefully, the connections whose peer chain no
// longer verifies against the trust bundle when it changes (the old root
// dropped at the end of a rotation), until ctx ends.
func (in *Inbound) recheckLoop(ctx context.Context, changed func() bool) {
	tick := time.NewTicker(in.cfg.RecheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if changed() {
			in.recheck()
		}
	}
}

// recheck verifies every open connection's peer chain against the bundle
// in force, at a time within the leaf's validity (an expired SVID on an
// open connection is not the question here), and ends those that fail.
func (in *Inbound) recheck() {
	for c, pe := range in.conns.snapshot() {
		if err := verifiesNow(pe.chain, in.cfg.Bundle, in.cfg.Clock.Now()); err != nil {
			in.log.Info("proxy: peer no longer verifies against the trust bundle, closing its connection",
				slog.String("peer", pe.header[0]), slog.String("remote", c.RemoteAddr().String()), slog.String("error", err.Error()))
			in.decisions.closed[closeUntrusted].Inc()
			pe.retire()
		}
	}
}

func verifiesNow(chain []*x509.Certificate, b x509bundle.Source, now time.Time) error {
	if len(chain) == 0 {
		return ErrNoPeerID
	}
	leaf := chain[0]
	if now.After(leaf.NotAfter) {
		now = leaf.NotAfter
	}
	if now.Before(leaf.NotBefore) {
		now = leaf.NotBefore
	}
	_, _, err := certs.VerifyPeerCertificates(chain, b, now)
	return err
}

// retire ends a connection without cutting a request: at once when it has
// none in flight; else every answer from now on carries "Connection:
// close", which net/http turns into a close after that answer (HTTP/1.1)
// or a graceful GOAWAY (HTTP/2: streams in flight finish, the client opens
// a new connection for the next ones). A connection whose requests all
// ended without a new answer (a stream whose headers went out before) is
// closed a second after its last request, once its answers are flushed.
func (p *peer) retire() {
	p.retiring.Store(true)
	if p.inflight.Load() == 0 && p.conn != nil {
		_ = p.conn.Close()
	}
}

// retireGrace is how long a retiring connection left idle by its last
// request is kept, so that the server flushes that request's answer.
const retireGrace = time.Second

// begin and end count a connection's requests in flight.
func (p *peer) begin() { p.inflight.Add(1) }

func (p *peer) end() {
	if p.inflight.Add(-1) == 0 && p.retiring.Load() && p.conn != nil {
		time.AfterFunc(retireGrace, func() {
			if p.inflight.Load() == 0 {
				_ = p.conn.Close()
			}
		})
	}
}

// peerState is the mutable part of a peer.
type peerState struct {
	conn     net.Conn
	inflight atomic.Int64
	retiring atomic.Bool
}

// outboundConns tracks the outbound's connections to remote proxies, to
// close those whose peer is revoked or no longer verifies.
type outboundConns struct {
	mu sync.Mutex
	m  map[*tls.Conn]string // conn -> peer SPIFFE ID
}

func (o *outboundConns) add(c *tls.Conn) {
	st := c.ConnectionState()
	id := ""
	if len(st.PeerCertificates) > 0 {
		if v, err := x509svid.IDFromCert(st.PeerCertificates[0]); err == nil {
			id = v.String()
		}
	}
	o.mu.Lock()
	if o.m == nil {
		o.m = map[*tls.Conn]string{}
	}
	o.m[c] = id
	o.mu.Unlock()
}

func (o *outboundConns) remove(c *tls.Conn) {
	o.mu.Lock()
	delete(o.m, c)
	o.mu.Unlock()
}

// closeIf closes the connections for which refuse returns an error.
func (o *outboundConns) closeIf(refuse func(id string, chain []*x509.Certificate) error, log *slog.Logger, count func()) {
	o.mu.Lock()
	var cut []*tls.Conn
	for c, id := range o.m {
		if err := refuse(id, c.ConnectionState().PeerCertificates); err != nil {
			log.Info("proxy: closing connection to an upstream no longer admitted", slog.String("peer", id), slog.String("reason", err.Error()))
			cut = append(cut, c)
		}
	}
	for _, c := range cut {
		delete(o.m, c)
	}
	o.mu.Unlock()
	for _, c := range cut {
		count()
		_ = c.Close()
	}
}

// trackedConn removes itself from an outboundConns when closed.
type trackedConn struct {
	*tls.Conn
	set  *outboundConns
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.set.remove(c.Conn) })
	return c.Conn.Close()
}

// authzTCP is how a TCP stream is authorized: method CONNECT and no path,
// so a rule that names paths never matches one (an ALLOW rule with paths
// does not let a TCP stream in; a DENY rule with paths does not keep one
// out), and a rule of identities (and method CONNECT) does.
func authzTCP(pe *peer) authz.Request {
	return authz.Request{Peer: pe.header[0], Method: http.MethodConnect}
}

// remoteGuard is what the outbound's dials check after each handshake,
// and the connections they made.
type remoteGuard struct {
	revoked atomic.Pointer[Revocations]
	conns   outboundConns
}

// SetRevocations refuses, from now on, handshakes with remote proxies
// whose identity or certificate r revokes, and closes the connections to
// them that are open (requests in flight on them fail; the next goes to
// another endpoint, as the snapshot with the revocation has also removed
// the revoked endpoint).
func (o *Outbound) SetRevocations(r *Revocations) {
	o.guard.revoked.Store(r)
	if r.Len() == 0 {
		return
	}
	c := o.cfg.Metrics.revokedConns.WithLabelValues(ListenerOutbound, closeRevoked)
	o.guard.conns.closeIf(r.Refused, o.log, c.Inc)
}

// recheckLoop, when the trust bundle changes, closes the idle connections
// to remotes whose chain no longer verifies against it (the next request
// dials anew, with today's certificates). A busy one is left to the remote
// inbound, which retires it once its requests are done: closing it here
// would fail them.
func (o *Outbound) recheckLoop(ctx context.Context, every time.Duration, changed func() bool) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !changed() {
			continue
		}
		now := o.cfg.Clock.Now()
		stale := false
		o.guard.conns.mu.Lock()
		for c := range o.guard.conns.m {
			if verifiesNow(c.ConnectionState().PeerCertificates, o.cfg.Bundle, now) != nil {
				stale = true
				break
			}
		}
		o.guard.conns.mu.Unlock()
		if stale {
			o.log.Info("proxy: trust bundle changed; closing idle connections to remotes it no longer verifies")
			o.closeRemotes()
		}
	}
}
