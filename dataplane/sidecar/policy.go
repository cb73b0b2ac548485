package sidecar

import (
	"sync"

	"minimesh/dataplane/proxy"
	meshv1 "minimesh/proto/mesh/v1"
)

// policy is the Part that enforces: from each snapshot it compiles the
// inbound's policy for this proxy's service (authorization, rate limits,
// access log) and the snapshot's revoked identities and serials, and at
// commit swaps them into the inbound, the public listener and the
// outbound. The next request, also on a connection already open, is
// decided by them; connections of revoked peers, and TCP streams no longer
// allowed, are closed.
type policy struct {
	cfg proxy.PolicyConfig
	in  *proxy.Inbound
	pub *proxy.Public   // nil without a public listener
	out *proxy.Outbound // nil without outbound ports

	mu  sync.Mutex
	cur *proxy.Policy
}

var _ Part = (*policy)(nil)

// Prepare implements Part.
func (p *policy) Prepare(snap *meshv1.Snapshot) (func(), error) {
	p.mu.Lock()
	prev := p.cur
	p.mu.Unlock()
	pol, err := proxy.CompilePolicy(p.cfg, snap, prev)
	if err != nil {
		return nil, err
	}
	return func() {
		p.mu.Lock()
		p.cur = pol
		p.mu.Unlock()
		p.in.SetPolicy(pol)
		if p.pub != nil {
			p.pub.SetPolicy(pol)
		}
		if p.out != nil {
			p.out.SetRevocations(pol.Revocations())
		}
	}, nil
}
