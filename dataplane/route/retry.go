package route

import (
	"math"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"minimesh/api"
	"minimesh/certs"
	meshv1 "minimesh/proto/mesh/v1"
)

// RetryOn is a set of conditions to retry on.
type RetryOn uint8

// The conditions, as in resources.proto.
const (
	// RetryOn5xx: any 5xx response, and what connect-failure and reset cover.
	RetryOn5xx RetryOn = 1 << iota
	// RetryOnGatewayError: 502, 503 or 504, and what connect-failure and
	// reset cover.
	RetryOnGatewayError
	// RetryOnReset: the upstream reset or closed the connection or stream
	// before response headers arrived.
	RetryOnReset
	// RetryOnConnectFailure: connecting to the upstream failed, TLS
	// handshake included.
	RetryOnConnectFailure
	// RetryOnRetriable4xx: 409 Conflict.
	RetryOnRetriable4xx
)

// Failure is how a try ended.
type Failure uint8

// The ways a try ends.
const (
	// FailureNone: response headers arrived; see Attempt.Status.
	FailureNone Failure = iota
	// FailureConnect: no connection (or stream) could be opened.
	FailureConnect
	// FailureReset: the connection or stream ended before response headers.
	FailureReset
)

// RetryPolicy is a route's retry policy with its defaults applied.
type RetryPolicy struct {
	// Attempts is the number of retries after the first try.
	Attempts int
	// PerTryTimeout bounds each try; 0: each try may use what is left of
	// the route timeout.
	PerTryTimeout time.Duration
	// On is the set of conditions retried.
	On RetryOn
	// NonIdempotent: retry POST, PATCH and other non-idempotent methods too.
	NonIdempotent bool
	// MaxBodyBytes: a request whose body is larger is not retried (the
	// proxy buffers at most this much of a body for retries).
	MaxBodyBytes int64
	// Budget limits retries across the route's requests; nil (only when
	// Attempts is 0) limits nothing.
	Budget *Budget
}

// Attempt describes a try that just ended, for Retryable.
type Attempt struct {
	// Method of the request.
	Method string
	// Retries already made (0 after the first try).
	Retries int
	// Failure and, when it is FailureNone, the response Status.
	Failure Failure
	Status  int
	// BodyBytes is the size of the request body; -1 when it is unknown
	// or was not kept whole for a retry.
	BodyBytes int64
}

func compileRetry(cfg Config, rp *meshv1.RetryPolicy) *RetryPolicy {
	p := &RetryPolicy{
		Attempts:      int(rp.GetAttempts()),
		NonIdempotent: rp.GetRetryNonIdempotent(),
		MaxBodyBytes:  int64(rp.GetMaxBodyBytes()),
	}
	if rp.GetPerTryTimeout() != nil {
		p.PerTryTimeout = rp.GetPerTryTimeout().AsDuration()
	}
	if p.MaxBodyBytes == 0 {
		p.MaxBodyBytes = api.DefaultRetryBodyBytes
	}
	on := rp.GetRetryOn()
	if len(on) == 0 {
		on = api.DefaultRetryOn()
	}
	for _, o := range on {
		switch o {
		case meshv1.RetryOn_RETRY_ON_5XX:
			p.On |= RetryOn5xx
		case meshv1.RetryOn_RETRY_ON_GATEWAY_ERROR:
			p.On |= RetryOnGatewayError
		case meshv1.RetryOn_RETRY_ON_RESET:
			p.On |= RetryOnReset
		case meshv1.RetryOn_RETRY_ON_CONNECT_FAILURE:
			p.On |= RetryOnConnectFailure
		case meshv1.RetryOn_RETRY_ON_RETRIABLE_4XX:
			p.On |= RetryOnRetriable4xx
		}
	}
	percent, floor := api.DefaultRetryBudgetPercent, api.DefaultMinRetriesPerSecond
	if b := rp.GetBudget(); b != nil {
		percent, floor = b.GetPercent(), int(b.GetMinRetriesPerSecond())
	}
	p.Budget = NewBudget(BudgetConfig{Percent: percent, MinPerSecond: floor, Clock: cfg.Clock})
	return p
}

// IsIdempotent reports whether RFC 9110 makes method idempotent: GET,
// HEAD, OPTIONS, TRACE, PUT and DELETE.
func IsIdempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// Matches reports whether the set covers how a try ended.
func (on RetryOn) Matches(f Failure, status int) bool {
	switch f {
	case FailureConnect:
		return on&(RetryOnConnectFailure|RetryOn5xx|RetryOnGatewayError) != 0
	case FailureReset:
		return on&(RetryOnReset|RetryOn5xx|RetryOnGatewayError) != 0
	}
	switch {
	case status >= 500 && status <= 599 && on&RetryOn5xx != 0:
		return true
	case (status == 502 || status == 503 || status == 504) && on&RetryOnGatewayError != 0:
		return true
	case status == 409 && on&RetryOnRetriable4xx != 0:
		return true
	}
	return false
}

// Retryable reports whether the policy allows another try after a: tries
// are left, the method is idempotent (or NonIdempotent is set), the body
// was kept whole and fits MaxBodyBytes, and the way the try ended is one
// the policy retries on. It does not consult the budget; see Retry. A nil
// policy retries nothing.
func (p *RetryPolicy) Retryable(a Attempt) bool {
	if p == nil || a.Retries >= p.Attempts {
		return false
	}
	if !p.NonIdempotent && !IsIdempotent(a.Method) {
		return false
	}
	if a.BodyBytes < 0 || a.BodyBytes > p.MaxBodyBytes {
		return false
	}
	return p.On.Matches(a.Failure, a.Status)
}

// Retry is Retryable and, if so, takes one retry from the budget: true
// means retry now.
func (p *RetryPolicy) Retry(a Attempt) bool {
	return p.Retryable(a) && p.Budget.Withdraw()
}

// BudgetConfig configures a retry Budget.
type BudgetConfig struct {
	// Percent of requests that may be retried, greater than 0, at most 100.
	Percent float64
	// MinPerSecond retries are always allowed per second, whatever the
	// percentage (so a quiet route can still retry); 0: no floor.
	MinPerSecond int
	// Capacity is how many requests' worth of deposits the budget keeps,
	// bounding a burst of retries after a calm period. 0: 100.
	Capacity int
	// Clock paces the floor. Default certs.SystemClock.
	Clock certs.Clock
}

// Budget is a token bucket of retries shared by a route's requests: each
// request deposits Percent/100 of a retry (Request), each retry withdraws
// one (Withdraw); on top of that MinPerSecond retries per second are always
// allowed. So retries stay near Percent of the traffic, and a failing
// upstream does not get every request several times over. It is safe for
// concurrent use; Request and Withdraw do not allocate.
type Budget struct {
	cfg     BudgetConfig // as given, to tell an unchanged budget on a push
	deposit int64        // milli-retries each request deposits
	max     int64        // cap of balance, in milli-retries
	balance atomic.Int64 // milli-retries
	floor   *rate.Limiter
	clock   certs.Clock
}

// NewBudget returns a Budget; see BudgetConfig.
func NewBudget(cfg BudgetConfig) *Budget {
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Capacity <= 0 {
		cfg.Capacity = 100
	}
	pct := min(max(cfg.Percent, 0), 100)
	b := &Budget{cfg: cfg, deposit: int64(math.Round(pct * 10)), clock: cfg.Clock}
	b.max = max(b.deposit*int64(cfg.Capacity), 1000)
	if cfg.MinPerSecond > 0 {
		b.floor = rate.NewLimiter(rate.Limit(cfg.MinPerSecond), cfg.MinPerSecond)
	}
	return b
}

// keepBudget is the Budget r's route had in t (the Table r replaces) when
// its settings are the same, else r's own.
func (t *Table) keepBudget(r *Route) *Budget {
	nb := r.Retry.Budget
	if t == nil || nb == nil {
		return nb
	}
	for _, old := range t.routes {
		if old.Namespace != r.Namespace || old.Name != r.Name {
			continue
		}
		ob := old.Retry.Budget
		if ob != nil && ob.cfg.Percent == nb.cfg.Percent && ob.cfg.MinPerSecond == nb.cfg.MinPerSecond &&
			ob.cfg.Capacity == nb.cfg.Capacity && ob.cfg.Clock == nb.cfg.Clock {
			return ob
		}
		break
	}
	return nb
}

// Request records a request (call it once per request, not per try).
func (b *Budget) Request() {
	if b == nil || b.deposit == 0 {
		return
	}
	for {
		cur := b.balance.Load()
		next := min(cur+b.deposit, b.max)
		if next == cur || b.balance.CompareAndSwap(cur, next) {
			return
		}
	}
}

// Withdraw takes one retry from the budget, reporting whether there was
// one: first from the per-second floor, then from the deposits. A nil
// Budget allows every retry.
func (b *Budget) Withdraw() bool {
	if b == nil {
		return true
	}
	if b.floor != nil && b.floor.AllowN(b.clock.Now(), 1) {
		return true
	}
	for {
		cur := b.balance.Load()
		if cur < 1000 {
			return false
		}
		if b.balance.CompareAndSwap(cur, cur-1000) {
			return true
		}
	}
}
