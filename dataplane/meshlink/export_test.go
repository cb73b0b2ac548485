package meshlink

import "time"

// SetCheckHook sets the hook run before each liveness check of a pooled
// connection, until the returned function restores it.
func SetCheckHook(f func()) (restore func()) {
	testHookChecked = f
	return func() { testHookChecked = nil }
}

// SetCheckIdleAfter changes p's CheckIdleAfter.
func (p *Pool) SetCheckIdleAfter(d time.Duration) { p.checkIdleAfter = d }

// HeldExchanges sums the held exchanges (turn.Conn) of p's idle
// connections.
func (p *Pool) HeldExchanges() (n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pc := range p.idle {
		if pc.hold != nil {
			n += pc.hold.Exchanges()
		}
	}
	return n
}
