package meshlink

import "context"

// cancelHooker is a request context with one cancel hook that costs no
// allocation (dataplane/h1's request context). The interface is matched
// by shape: meshlink does not import dataplane/h1.
type cancelHooker interface {
	SetCancelHook(f func()) uint64
	ClearCancelHook(gen uint64) bool
}

// cancelWatch runs a connection's abort function when a request's
// context ends: the context's own hook when it has one free, else
// context.AfterFunc.
type cancelWatch struct {
	h    cancelHooker
	gen  uint64
	stop func() bool
}

func watchCancel(ctx context.Context, abort func()) cancelWatch {
	if h, ok := ctx.(cancelHooker); ok {
		if gen := h.SetCancelHook(abort); gen != 0 {
			return cancelWatch{h: h, gen: gen}
		}
	}
	return cancelWatch{stop: context.AfterFunc(ctx, abort)}
}

// Stop is context.AfterFunc's stop: true when abort had not run and now
// will not.
func (w cancelWatch) Stop() bool {
	if w.h != nil {
		return w.h.ClearCancelHook(w.gen)
	}
	return w.stop()
}
