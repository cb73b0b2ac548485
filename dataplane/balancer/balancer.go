package balancer

import (
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"minimesh/certs"
)

// Defaults of Config.
const (
	DefaultConsecutiveFailures = 5
	DefaultBaseEjection        = 30 * time.Second
	DefaultMaxEjection         = 5 * time.Minute
	DefaultMaxEjectedPercent   = 50
)

// Config tunes a Balancer; the zero value takes every default.
type Config struct {
	// ConsecutiveFailures ejects an endpoint after this many failures in
	// a row. Default 5.
	ConsecutiveFailures int
	// BaseEjection is how long a first ejection lasts; the n-th lasts n
	// times as long, up to MaxEjection. Default 30s.
	BaseEjection time.Duration
	// MaxEjection caps an ejection. It is also the time an endpoint must
	// stay in after its last ejection for its count to start over.
	// Default 5m.
	MaxEjection time.Duration
	// MaxEjectedPercent of the endpoints may be ejected at once, rounded
	// down, 0 to 50: never more than half. Default 50.
	MaxEjectedPercent int
	// Clock tells the time of ejections. Default certs.SystemClock.
	Clock certs.Clock
	// Logger reports ejections and returns (at Info). Default
	// slog.Default().
	Logger *slog.Logger
}

// Validate reports a Config that does not make sense (after defaults).
func (c Config) Validate() error {
	switch {
	case c.ConsecutiveFailures < 0:
		return fmt.Errorf("%w: ConsecutiveFailures %d is negative", ErrInvalidConfig, c.ConsecutiveFailures)
	case c.BaseEjection < 0 || c.MaxEjection < 0:
		return fmt.Errorf("%w: negative ejection time", ErrInvalidConfig)
	case c.MaxEjection > 0 && c.BaseEjection > c.MaxEjection:
		return fmt.Errorf("%w: BaseEjection %v exceeds MaxEjection %v", ErrInvalidConfig, c.BaseEjection, c.MaxEjection)
	case c.MaxEjectedPercent < 0 || c.MaxEjectedPercent > 50:
		return fmt.Errorf("%w: MaxEjectedPercent %d is not between 0 and 50", ErrInvalidConfig, c.MaxEjectedPercent)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if c.BaseEjection == 0 {
		c.BaseEjection = DefaultBaseEjection
	}
	if c.MaxEjection == 0 {
		c.MaxEjection = max(DefaultMaxEjection, c.BaseEjection)
	}
	if c.MaxEjectedPercent == 0 {
		c.MaxEjectedPercent = DefaultMaxEjectedPercent
	}
	if c.Clock == nil {
		c.Clock = certs.SystemClock
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Target is an endpoint as discovery gives it.
type Target struct {
	// Addr is the endpoint's address, host:port; it identifies the
	// endpoint across SetTargets.
	Addr string
	// Identity is the SPIFFE ID the endpoint must present.
	Identity string
}

// Endpoint is a Target with its load and health. Pick hands out
// *Endpoint; give each back to Done.
type Endpoint struct {
	Target

	outstanding atomic.Int64
	failures    atomic.Int64 // consecutive

	// Guarded by Balancer.mu.
	ejectedUntil time.Time // zero: in
	ejections    int       // times ejected, the multiplier
	returnedAt   time.Time // end of the last ejection
}

// Outstanding returns the requests picked and not yet Done.
func (e *Endpoint) Outstanding() int64 { return e.outstanding.Load() }

// state is one immutable view of the endpoints.
type state struct {
	all   []*Endpoint
	avail []*Endpoint // not ejected
	// nextReturn is the UnixNano when the first ejected endpoint returns;
	// math.MaxInt64 when none is ejected.
	nextReturn int64
}

// Balancer spreads requests over a set of endpoints by the power of two
// choices over least outstanding requests: two endpoints are drawn at
// random and the one with fewer requests in flight gets the request. It
// ejects endpoints that fail too often (outlier detection). Pick and Done
// are safe for concurrent use and do not allocate.
type Balancer struct {
	cfg   Config
	mu    sync.Mutex // serializes changes of state and of ejection fields
	state atomic.Pointer[state]
}

// New returns a Balancer without endpoints; see SetTargets.
func New(cfg Config) (*Balancer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	b := &Balancer{cfg: cfg}
	b.state.Store(&state{nextReturn: math.MaxInt64})
	return b, nil
}

// SetTargets replaces the set of endpoints. Endpoints whose Addr stays
// keep their load and ejection state (an update never returns an ejected
// endpoint early); an endpoint whose Identity changed is a new endpoint.
func (b *Balancer) SetTargets(targets []Target) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.state.Load()
	byAddr := make(map[string]*Endpoint, len(old.all))
	for _, e := range old.all {
		byAddr[e.Addr] = e
	}
	all := make([]*Endpoint, 0, len(targets))
	seen := make(map[string]bool, len(targets))
	for _, t := range targets {
		if seen[t.Addr] {
			continue
		}
		seen[t.Addr] = true
		e := byAddr[t.Addr]
		if e == nil || e.Identity != t.Identity {
			e = &Endpoint{Target: t}
		}
		all = append(all, e)
	}
	b.publish(all, b.cfg.Clock.Now())
}

// publish stores a new state for all, returning endpoints whose ejection
// has ended. Called with mu held.
func (b *Balancer) publish(all []*Endpoint, now time.Time) *state {
	s := &state{all: all, avail: make([]*Endpoint, 0, len(all)), nextReturn: math.MaxInt64}
	for _, e := range all {
		if !e.ejectedUntil.IsZero() && !now.Before(e.ejectedUntil) {
			e.returnedAt, e.ejectedUntil = e.ejectedUntil, time.Time{}
			e.failures.Store(0)
			b.cfg.Logger.Info("endpoint returned after ejection", "addr", e.Addr, "identity", e.Identity)
		}
		if e.ejectedUntil.IsZero() {
			s.avail = append(s.avail, e)
		} else {
			s.nextReturn = min(s.nextReturn, e.ejectedUntil.UnixNano())
		}
	}
	b.state.Store(s)
	return s
}

// Pick chooses an endpoint for a request and counts it as outstanding;
// call Done with it when the request ends. It returns ErrNoEndpoints when
// there are none.
func (b *Balancer) Pick() (*Endpoint, error) {
	s := b.state.Load()
	if s.nextReturn != math.MaxInt64 {
		if now := b.cfg.Clock.Now(); now.UnixNano() >= s.nextReturn {
			b.mu.Lock()
			s = b.publish(b.state.Load().all, now)
			b.mu.Unlock()
		}
	}
	n := len(s.avail)
	var e *Endpoint
	switch n {
	case 0:
		return nil, ErrNoEndpoints
	case 1:
		e = s.avail[0]
	default:
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		e = s.avail[i]
		if o := s.avail[j]; o.outstanding.Load() < e.outstanding.Load() {
			e = o
		}
	}
	e.outstanding.Add(1)
	return e, nil
}

// Done ends a request picked with Pick. ok reports whether the endpoint
// served it (any answer counts as success unless the caller's policy says
// otherwise; a connection failure, reset or 5xx is a failure). After
// ConsecutiveFailures failures in a row the endpoint is ejected, unless
// that would eject more than MaxEjectedPercent of the endpoints.
func (b *Balancer) Done(e *Endpoint, ok bool) {
	e.outstanding.Add(-1)
	if ok {
		if e.failures.Load() != 0 {
			e.failures.Store(0)
		}
		return
	}
	if e.failures.Add(1) >= int64(b.cfg.ConsecutiveFailures) {
		b.eject(e)
	}
}

func (b *Balancer) eject(e *Endpoint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.cfg.Clock.Now()
	s := b.state.Load()
	if now.UnixNano() >= s.nextReturn {
		s = b.publish(s.all, now) // whoever is due is back first
	}
	if !e.ejectedUntil.IsZero() || !slices.Contains(s.all, e) {
		return // already out, or no longer a member
	}
	if e.failures.Load() < int64(b.cfg.ConsecutiveFailures) {
		return // a success came in between
	}
	ejected := len(s.all) - len(s.avail)
	if (ejected+1)*100 > len(s.all)*b.cfg.MaxEjectedPercent {
		return // too many out already; it stays in
	}
	if e.ejections > 0 && now.Sub(e.returnedAt) > b.cfg.MaxEjection {
		e.ejections = 0 // healthy long enough: start over
	}
	e.ejections++
	d := b.cfg.BaseEjection * time.Duration(e.ejections)
	if d > b.cfg.MaxEjection || d/time.Duration(e.ejections) != b.cfg.BaseEjection {
		d = b.cfg.MaxEjection
	}
	e.ejectedUntil = now.Add(d)
	b.cfg.Logger.Info("endpoint ejected", "addr", e.Addr, "identity", e.Identity,
		"consecutive_failures", e.failures.Load(), "for", d, "ejections", e.ejections)
	b.publish(s.all, now)
}

// Status describes one endpoint, for admin pages and tests.
type Status struct {
	Target
	Outstanding         int64
	ConsecutiveFailures int64
	Ejected             bool
	EjectedUntil        time.Time // zero when in
	Ejections           int
}

// Status returns every endpoint's state, in SetTargets order.
func (b *Balancer) Status() []Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.publish(b.state.Load().all, b.cfg.Clock.Now())
	out := make([]Status, len(s.all))
	for i, e := range s.all {
		out[i] = Status{
			Target: e.Target, Outstanding: e.outstanding.Load(), ConsecutiveFailures: e.failures.Load(),
			Ejected: !e.ejectedUntil.IsZero(), EjectedUntil: e.ejectedUntil, Ejections: e.ejections,
		}
	}
	return out
}
