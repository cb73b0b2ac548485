// Package deadline moves a connection's deadline only when it must.
// Setting a deadline moves a runtime timer (a lock and a heap operation),
// and the data path used to set several per request: the idle wait's and
// the head's on the client's connection (dataplane/h1), each answer's
// write, the response header's wait on the links to the app and to a
// remote proxy (dataplane/applink, dataplane/meshlink) and its clearing.
//
// A Lazy remembers the deadline set last and moves it only when the one in
// force would end too soon or too late: a wait "bounded by d" is bounded by
// between 7/8 d and d, and a busy keep-alive connection sets a deadline
// about once per d/8 rather than once per request. Whatever sets the
// connection's deadline other than through Within must call Forget.
package deadline

import (
	"sync/atomic"
	"time"
)

// Lazy is the deadline set last, in Unix nanoseconds; 0: unknown or none.
// Its zero value is ready. Safe for concurrent use (a racing Within and
// Forget leave it unknown or right).
type Lazy struct{ at atomic.Int64 }

// Within arranges, with set (the connection's SetReadDeadline or
// SetWriteDeadline), for a deadline d from now, unless the one in force
// already ends between 7/8 d and d from now.
func (l *Lazy) Within(now time.Time, d time.Duration, set func(time.Time) error) {
	n := now.UnixNano()
	if at := l.at.Load(); at != 0 {
		if left := time.Duration(at - n); left <= d && left >= d-d/8 {
			return
		}
	}
	t := now.Add(d)
	l.at.Store(t.UnixNano())
	_ = set(t)
}

// Forget: the deadline was set some other way.
func (l *Lazy) Forget() { l.at.Store(0) }

// Passed reports whether the deadline set last by Within has passed: a
// read on the connection would fail at once.
func (l *Lazy) Passed(now time.Time) bool {
	at := l.at.Load()
	return at != 0 && at <= now.UnixNano()
}
