// Package cancelhook runs a connection's abort function when a request's
// context ends, for the links to the app (dataplane/applink) and to a
// remote proxy (dataplane/meshlink): through the context's own cancel
// hook when it has one free (dataplane/h1's request context, matched by
// shape so the links import no h1), else context.AfterFunc.
package cancelhook

import "context"

// hooker is a request context with one cancel hook that costs no
// allocation.
type hooker interface {
	SetCancelHook(f func()) uint64
	ClearCancelHook(gen uint64) bool
}

// Watch is one registration of an abort function.
type Watch struct {
	h    hooker
	gen  uint64
	stop func() bool
}

// On arranges for abort (which must not block: a past deadline) to run
// once when ctx ends, until Stop.
func On(ctx context.Context, abort func()) Watch {
	if h, ok := ctx.(hooker); ok {
		if gen := h.SetCancelHook(abort); gen != 0 {
			return Watch{h: h, gen: gen}
		}
	}
	return Watch{stop: context.AfterFunc(ctx, abort)}
}

// Stop is context.AfterFunc's stop: true when abort had not run and now
// will not.
func (w Watch) Stop() bool {
	if w.h != nil {
		return w.h.ClearCancelHook(w.gen)
	}
	return w.stop()
}
