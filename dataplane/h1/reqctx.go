package h1

import (
	"context"
	"slices"
	"sync"
)

// reqCtx is a request's context: the connection's, cancelled when the
// handler returns or when the connection's context ends (the client went
// away: watch.go; a failed read of the body; Close; the end of
// BaseContext). It is what context.WithCancel(the connection's context)
// would be, for less: one allocation per request instead of a cancelCtx
// and its cancel function, and — for the links to the app and to a remote
// proxy, which end a blocked read when the request is cancelled — without
// context.AfterFunc's context, closures, the parent's child map and done
// channel. Those links take the request's one cancel hook
// (SetCancelHook) with a function they made once per connection; other
// derived contexts (context.WithCancel, WithTimeout, AfterFunc) find its
// AfterFunc method, as they would a cancelCtx's children.
//
// Value and Deadline are the connection's context's (embedded). Done's
// channel is made on its first call.
type reqCtx struct {
	context.Context

	mu    sync.Mutex
	err   error
	done  chan struct{} // nil until Done; closedChan when cancelled first
	hook  func()        // SetCancelHook's, run by cancel
	gen   uint64        // counts SetCancelHook's calls
	after []*afterFunc  // AfterFunc's, run by cancel
}

type afterFunc struct{ f func() }

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func (r *reqCtx) Done() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done == nil {
		if r.err != nil {
			r.done = closedChan
		} else {
			r.done = make(chan struct{})
		}
	}
	return r.done
}

func (r *reqCtx) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *reqCtx) String() string { return "h1 request context" }

// cancel ends r with err (the first call only) and runs its hook and
// AfterFunc functions, on the caller's goroutine, outside r's lock.
func (r *reqCtx) cancel(err error) {
	r.mu.Lock()
	if r.err != nil {
		r.mu.Unlock()
		return
	}
	r.err = err
	if r.done == nil {
		r.done = closedChan
	} else {
		close(r.done)
	}
	hook, after := r.hook, r.after
	r.hook, r.after = nil, nil
	r.mu.Unlock()
	if hook != nil {
		hook()
	}
	for _, a := range after {
		a.f()
	}
}

// reset makes r, cancelled when its request ended, the context of the
// connection's next request served from its head (head.go), under r's
// lock: a cancel still running on another goroutine (Close's, which read
// r as the request in flight) finishes first; one that comes later finds
// the connection's context ended, which cancels the new request anyway
// (setRequest). gen goes on counting, so a stale ClearCancelHook matches
// nothing.
func (r *reqCtx) reset() {
	r.mu.Lock()
	r.err, r.done, r.hook, r.after = nil, nil, nil, nil
	r.mu.Unlock()
}

// SetCancelHook arranges for f to run once when r is cancelled, unless
// ClearCancelHook(the returned number) comes first; f runs on the
// goroutine that cancels, so it must not block (a deadline in the past).
// It returns 0 when r is cancelled already or holds a hook: the caller
// then uses context.AfterFunc.
func (r *reqCtx) SetCancelHook(f func()) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil || r.hook != nil {
		return 0
	}
	r.gen++
	r.hook = f
	return r.gen
}

// ClearCancelHook removes the hook SetCancelHook returned gen for, and
// reports whether it did so before the hook ran (context.AfterFunc's
// stop).
func (r *reqCtx) ClearCancelHook(gen uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hook == nil || r.gen != gen {
		return false
	}
	r.hook = nil
	return true
}

// AfterFunc is what the context package calls for a context derived from
// r (context.WithCancel, WithTimeout, AfterFunc: its afterFuncer
// interface), so that r's end reaches them without a goroutine each. f
// runs on the goroutine that cancels r; the context package's functions
// only cancel the derived context (context.AfterFunc's own f runs in a
// goroutine of its own, as documented).
func (r *reqCtx) AfterFunc(f func()) (stop func() bool) {
	a := &afterFunc{f: f}
	r.mu.Lock()
	if r.err != nil {
		r.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	r.after = append(r.after, a)
	r.mu.Unlock()
	return func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if i := slices.Index(r.after, a); i >= 0 {
			r.after = slices.Delete(r.after, i, i+1)
			return true
		}
		return false
	}
}

// setRequest makes rc the connection's current request context; a
// connection whose context has ended cancels it at once.
func (c *conn) setRequest(rc *reqCtx) {
	c.curMu.Lock()
	c.cur = rc
	c.curMu.Unlock()
	if err := c.ctx.Err(); err != nil {
		rc.cancel(err)
	}
}

// endRequest cancels rc as its handler has returned.
func (c *conn) endRequest(rc *reqCtx) {
	c.curMu.Lock()
	c.cur = nil
	c.curMu.Unlock()
	rc.cancel(context.Canceled)
}

// cancelCurrent cancels the request in flight, if any: the connection's
// context has ended.
func (c *conn) cancelCurrent() {
	c.curMu.Lock()
	rc := c.cur
	c.curMu.Unlock()
	if rc != nil {
		rc.cancel(context.Canceled)
	}
}
