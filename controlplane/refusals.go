package controlplane

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
)

// A client that does not trust meshd's root aborts the TLS handshake
// with an alert (bad certificate, unknown CA): that is how a meshd
// restored from a backup older than a root rotation looks from its side,
// since its proxies hold bundles and SVIDs of a root it never had and
// refuse it before any call. meshd counts such refusals by client address
// for ca status and meshctl check.

// refusalWindow is how far back ca status counts refusals.
const refusalWindow = 10 * time.Minute

// maxRefusals bounds the refusals kept (the newest).
const maxRefusals = 1024

type refusal struct {
	at   time.Time
	addr string
}

type clientRefusals struct {
	mu      sync.Mutex
	events  []refusal
	counter prometheus.Counter
	logger  *slog.Logger
	now     func() time.Time
}

func newClientRefusals(reg prometheus.Registerer, logger *slog.Logger, now func() time.Time) *clientRefusals {
	r := &clientRefusals{
		counter: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "minimesh_meshd_tls_refused_by_client_total",
			Help: "TLS handshakes the client aborted because it does not trust meshd's certificate (alert bad certificate or unknown CA).",
		}),
		logger: logger,
		now:    now,
	}
	if reg != nil {
		reg.MustRegister(r.counter)
	}
	return r
}

// refusedByClient reports whether a server handshake error is the
// client's alert that it does not trust meshd's certificate.
func refusedByClient(err error) bool {
	s := err.Error()
	return strings.Contains(s, "remote error: tls: bad certificate") || strings.Contains(s, "remote error: tls: unknown certificate authority")
}

func (r *clientRefusals) add(addr string) {
	r.counter.Inc()
	r.logger.Warn("a client refused meshd's certificate: it does not trust meshd's root (a bundle of another root; was meshd restored from a backup older than a root rotation?)", "peer", addr)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) >= maxRefusals {
		r.events = slices.Delete(r.events, 0, len(r.events)-maxRefusals+1)
	}
	r.events = append(r.events, refusal{at: r.now(), addr: addr})
}

// recent is the number of refusals in the last refusalWindow and their
// client addresses (at most 10, newest first).
func (r *clientRefusals) recent() (uint32, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	since := r.now().Add(-refusalWindow)
	var n uint32
	var addrs []string
	for i := len(r.events) - 1; i >= 0; i-- {
		e := r.events[i]
		if e.at.Before(since) {
			break
		}
		n++
		if len(addrs) < 10 && !slices.Contains(addrs, e.addr) {
			addrs = append(addrs, e.addr)
		}
	}
	return n, addrs
}

// wrap counts the refusals of c's server handshakes.
func (r *clientRefusals) wrap(c credentials.TransportCredentials) credentials.TransportCredentials {
	return &refusalCreds{TransportCredentials: c, r: r}
}

type refusalCreds struct {
	credentials.TransportCredentials
	r *clientRefusals
}

func (c *refusalCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, ai, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil && refusedByClient(err) {
		host, _, herr := net.SplitHostPort(conn.RemoteAddr().String())
		if herr != nil {
			host = conn.RemoteAddr().String()
		}
		c.r.add(host)
	}
	return nc, ai, err
}

func (c *refusalCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.TransportCredentials.ClientHandshake(ctx, authority, conn)
}

func (c *refusalCreds) Clone() credentials.TransportCredentials {
	return &refusalCreds{TransportCredentials: c.TransportCredentials.Clone(), r: c.r}
}
