package cancelhook

import (
	"context"
	"testing"
	"time"
)

// fakeHooked is a context with the hook, as dataplane/h1's request
// context offers it (that one is tested in h1; this checks the choice).
type fakeHooked struct {
	context.Context
	hook func()
	gen  uint64
	full bool
}

func (f *fakeHooked) SetCancelHook(fn func()) uint64 {
	if f.full || f.hook != nil {
		return 0
	}
	f.gen++
	f.hook = fn
	return f.gen
}

func (f *fakeHooked) ClearCancelHook(gen uint64) bool {
	if f.hook == nil || gen != f.gen {
		return false
	}
	f.hook = nil
	return true
}

func TestOnTakesTheHookElseAfterFunc(t *testing.T) {
	// A context with a free hook: the hook, not AfterFunc.
	h := &fakeHooked{Context: context.Background()}
	w := On(h, func() {})
	if h.hook == nil {
		t.Fatal("the context's hook was not taken")
	}
	if !w.Stop() || h.hook != nil || w.Stop() {
		t.Fatal("Stop: want true once, the hook cleared, then false")
	}

	// A plain context, and one whose hook is taken: context.AfterFunc,
	// which runs abort when the context ends.
	for _, name := range []string{"plain", "hook taken"} {
		ctx, cancel := context.WithCancel(context.Background())
		var c context.Context = ctx
		if name == "hook taken" {
			c = &fakeHooked{Context: ctx, full: true}
		}
		ran := make(chan struct{})
		On(c, func() { close(ran) })
		cancel()
		select {
		case <-ran:
		case <-time.After(10 * time.Second): // bounds a broken test only
			t.Fatalf("%s: abort did not run when the context ended", name)
		}
	}
}
