package ratelimit

import (
	"net/http"
	"strconv"
	"time"
)

// Header names, as in the IETF draft "RateLimit header fields for HTTP"
// (draft-ietf-httpapi-ratelimit-headers, the RateLimit-Limit/-Remaining/
// -Reset form) and RFC 9110 for Retry-After. They are written in Go's
// canonical form, so http.Header.Get finds them; field names are
// case-insensitive on the wire.
const (
	HeaderLimit      = "Ratelimit-Limit"
	HeaderRemaining  = "Ratelimit-Remaining"
	HeaderReset      = "Ratelimit-Reset"
	HeaderPolicy     = "Ratelimit-Policy"
	HeaderRetryAfter = "Retry-After"
)

// SetHeaders writes the RateLimit-* fields of r into h (and Retry-After
// when r refused the request); it writes nothing when no RateLimit
// applied. Times are whole seconds, rounded up. RateLimit-Policy is
// "<limit>;w=<seconds to fill the bucket>".
func (r Result) SetHeaders(h http.Header) {
	if r.Policy == "" {
		return
	}
	h[HeaderLimit] = []string{strconv.Itoa(r.Limit)}
	h[HeaderRemaining] = []string{strconv.Itoa(r.Remaining)}
	h[HeaderReset] = []string{strconv.FormatInt(ceilSeconds(r.Reset), 10)}
	h[HeaderPolicy] = []string{r.policyHeader}
	if !r.Allowed {
		h[HeaderRetryAfter] = []string{strconv.FormatInt(max(1, ceilSeconds(r.RetryAfter)), 10)}
	}
}

func ceilSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// WriteTooManyRequests answers a request that r refused: 429 with
// Retry-After and the RateLimit-* fields, and a short plain-text body.
func WriteTooManyRequests(w http.ResponseWriter, r Result) {
	h := w.Header()
	r.SetHeaders(h)
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = w.Write([]byte("rate limit exceeded\n"))
}
