package h1

import (
	"sync/atomic"
	"time"
)

// Deadlines without a timer change per request. Setting a connection's
// deadline moves a runtime timer (a lock and a heap operation), and the
// loop used to set three per request: the idle wait's, the head's and each
// write's. Instead the connection remembers the deadline it set last (in
// Unix nanoseconds; 0: unknown, or none) and moves it only when the one in
// force would end too soon or too late: a wait "bounded by d" is bounded by
// between 7/8 d and d, and a busy keep-alive connection sets its deadlines
// about once per d/8 rather than per request. Anything that sets a
// deadline other than through these (the watch, a hijack, a body's abort)
// forgets the remembered one.
type deadline struct{ at atomic.Int64 }

// within arranges for a deadline d from now, unless the one in force ends
// between 7/8 d and d from now; set is the connection's setter.
func (dl *deadline) within(now time.Time, d time.Duration, set func(time.Time) error) {
	n := now.UnixNano()
	if at := dl.at.Load(); at != 0 {
		if left := time.Duration(at - n); left <= d && left >= d-d/8 {
			return
		}
	}
	t := now.Add(d)
	dl.at.Store(t.UnixNano())
	_ = set(t)
}

// forget: a deadline was set some other way.
func (dl *deadline) forget() { dl.at.Store(0) }
