package sidecar

import (
	"sync"

	"minimesh/dataplane/proxy"
	meshv1 "minimesh/proto/mesh/v1"
)

// traffic is the Part that routes: from each snapshot it compiles the
// proxy's traffic table (services, their ports, allowed endpoints and
// routes) and, at commit, installs it in the inbound (the ports it serves)
// and the outbound (where the app's calls go). Requests already in flight
// finish on the table they started with; the next request, also on a
// connection already open, uses the new one.
type traffic struct {
	cfg proxy.TableConfig
	in  *proxy.Inbound
	out *proxy.Outbound // nil without outbound ports

	mu  sync.Mutex
	cur *proxy.Table // the table in force: its retry budgets carry over
}

var _ Part = (*traffic)(nil)

// Prepare implements Part.
func (t *traffic) Prepare(snap *meshv1.Snapshot) (func(), error) {
	t.mu.Lock()
	prev := t.cur
	t.mu.Unlock()
	cfg := t.cfg
	cfg.Previous = prev
	tab, err := proxy.CompileTable(cfg, snap)
	if err != nil {
		return nil, err
	}
	return func() {
		t.mu.Lock()
		t.cur = tab
		t.mu.Unlock()
		t.in.SetTable(tab)
		if t.out != nil {
			t.out.Install(tab)
		}
	}, nil
}
