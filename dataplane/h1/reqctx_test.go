package h1_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"minimesh/dataplane/h1"
)

// hooker is the request context's cheap cancel hook, as the links to the
// app and to a remote proxy find it.
type hooker interface {
	SetCancelHook(f func()) uint64
	ClearCancelHook(gen uint64) bool
}

// ran is a hook that records that it ran.
func ran() (func(), <-chan struct{}) {
	ch := make(chan struct{})
	return func() { close(ch) }, ch
}

func closedWithin(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// A request's context ends when its handler returns, with everything
// derived from it: context.WithCancel, WithTimeout, context.AfterFunc and
// the cancel hook; a cleared hook does not run; values are the
// connection's. Derived contexts cost no goroutine each.
func TestRequestContextEndsWithHandler(t *testing.T) {
	type seen struct {
		ctx, derived, timed context.Context
		cancels             []context.CancelFunc
		after, hook         <-chan struct{}
		clearedRan          chan struct{}
		local               any
		hookable            bool
		secondHook, cleared uint64
		clearOK, clearAgain bool
		goroutines          int
	}
	got := make(chan *seen, 1)
	s := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sn := &seen{ctx: r.Context(), local: r.Context().Value(http.LocalAddrContextKey)}
		if err := sn.ctx.Err(); err != nil {
			t.Errorf("in the handler: Err %v", err)
		}
		before := runtime.NumGoroutine()
		var cancels []context.CancelFunc
		for range 50 {
			_, cancel := context.WithCancel(r.Context())
			cancels = append(cancels, cancel)
		}
		sn.goroutines = runtime.NumGoroutine() - before
		for _, c := range cancels {
			c() // removes them from the request's list
		}
		var cancelDerived, cancelTimed context.CancelFunc
		sn.derived, cancelDerived = context.WithCancel(r.Context())
		sn.timed, cancelTimed = context.WithTimeout(r.Context(), time.Hour)
		sn.cancels = []context.CancelFunc{cancelDerived, cancelTimed} // called once the test has seen them end
		f, ch := ran()
		context.AfterFunc(r.Context(), f)
		sn.after = ch
		h, ok := r.Context().(hooker)
		sn.hookable = ok
		if ok {
			// One hook at a time; a cleared one never runs.
			sn.clearedRan = make(chan struct{})
			first := h.SetCancelHook(func() { close(sn.clearedRan) })
			sn.secondHook = h.SetCancelHook(func() {})
			sn.clearOK = h.ClearCancelHook(first)
			sn.clearAgain = h.ClearCancelHook(first)
			hf, hch := ran()
			sn.cleared = h.SetCancelHook(hf)
			sn.hook = hch
		}
		got <- sn
		_, _ = w.Write([]byte("ok"))
	})}
	addr, cfg := serveH1(t, s)
	c, br, _ := dial(t, addr, cfg)
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if code, body := answer(t, br); code != 200 || body != "ok" {
		t.Fatalf("answer %d %q", code, body)
	}
	sn := <-got
	defer func() {
		for _, c := range sn.cancels {
			c()
		}
	}()
	if !sn.hookable {
		t.Fatal("the request's context has no cancel hook (SetCancelHook, ClearCancelHook)")
	}
	if sn.local == nil {
		t.Error("http.LocalAddrContextKey is not in the request's context")
	}
	if sn.goroutines >= 25 {
		t.Errorf("50 contexts derived from the request's started %d goroutines", sn.goroutines)
	}
	if sn.secondHook != 0 {
		t.Error("a second hook was taken while one was set")
	}
	if !sn.clearOK || sn.clearAgain {
		t.Errorf("ClearCancelHook: %v then %v, want true then false", sn.clearOK, sn.clearAgain)
	}
	// The answer is written before the handler returns: wait for its end.
	for name, ctx := range map[string]context.Context{"request": sn.ctx, "WithCancel": sn.derived, "WithTimeout": sn.timed} {
		if !closedWithin(ctx.Done(), 10*time.Second) {
			t.Fatalf("the %s context did not end with the handler", name)
		}
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Errorf("the %s context's Err: %v, want Canceled", name, ctx.Err())
		}
	}
	if !closedWithin(sn.after, 10*time.Second) {
		t.Error("context.AfterFunc did not run when the handler returned")
	}
	if !closedWithin(sn.hook, 10*time.Second) {
		t.Error("the cancel hook did not run when the handler returned")
	}
	if closedWithin(sn.clearedRan, 50*time.Millisecond) {
		t.Error("a cleared hook ran")
	}
	if h := sn.ctx.(hooker); h.SetCancelHook(func() {}) != 0 {
		t.Error("a hook was taken after the context ended")
	}
	if fmt.Sprint(sn.ctx) == "" {
		t.Error("the request's context has no name")
	}
}

// The request in flight is cancelled, and its hook run, when the client
// goes away (the watch), when the server closes, and when BaseContext
// ends.
func TestRequestContextCancelledMidRequest(t *testing.T) {
	for _, how := range []string{"client gone", "server Close", "BaseContext"} {
		t.Run(how, func(t *testing.T) {
			base, cancelBase := context.WithCancel(context.Background())
			defer cancelBase()
			hooked := make(chan (<-chan struct{}), 1)
			ended := make(chan error, 1)
			s := &h1.Server{BaseContext: base, WatchAfter: 10 * time.Millisecond,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					f, ch := ran()
					if r.Context().(hooker).SetCancelHook(f) == 0 {
						t.Error("no hook taken")
					}
					hooked <- ch
					ended <- waitCancel(r)
				})}
			addr, cfg := serveH1(t, s)
			c, _, _ := dial(t, addr, cfg)
			if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			hook := <-hooked
			switch how {
			case "client gone":
				_ = c.Close()
			case "server Close":
				_ = s.Close()
			case "BaseContext":
				cancelBase()
			}
			if !closedWithin(hook, 10*time.Second) {
				t.Fatal("the hook did not run")
			}
			if err := <-ended; !errors.Is(err, context.Canceled) {
				t.Errorf("the handler's context: %v, want Canceled", err)
			}
		})
	}
}
