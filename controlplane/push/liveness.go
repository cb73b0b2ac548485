package push

import (
	"sort"
	"time"

	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// A proxy's stream is on one replica. Its record says Connected from its
// register to its disconnect, both written by that replica; a replica that
// dies (SIGKILL, cut off from etcd) writes no disconnect, and its records
// would say Connected forever. What goes with the replica is its lease,
// and with it the presence keys of its streams. So a proxy counts as
// connected only when its stream is on this replica or it has a presence
// key (liveness.connected), for snapshots, proxy-status and the proxy list
// alike; a record marked connected without either is a stream that ended
// without a Drain: an endpoint for the endpoint grace, measured from when
// the leader first saw its presence gone, which it then writes.

// endedStream is one registration (instance and its ConnectedAt) seen
// connected in its record with no live stream.
type endedStream struct {
	id string
	at time.Time
}

// liveness is which proxies have a stream now. When the presence keys
// cannot be read (etcd unreachable) the records are trusted.
func (s *Server) liveness() liveness {
	present, err := s.presence()
	if err != nil {
		s.cfg.Logger.Warn("proxy presence unreadable; trusting the stored connected flags", "error", err)
		present = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	local := make(map[string]bool, len(s.active))
	for id := range s.active {
		local[id] = true
	}
	return liveness{local: local, present: present}
}

// noticeEnded is the leader's, every flush tick: a registration seen
// connected with no live stream on two passes in a row (a register writes
// its record just before its presence key; the second look rules that
// out) gets Connected false and GraceUntil from when it was first seen,
// in transactions of at most MaxWrites fenced on the election. A proxy
// that reconnected meanwhile has a new ConnectedAt and is left alone.
func (s *Server) noticeEnded() {
	if !s.cfg.Store.IsLeader() {
		s.mu.Lock()
		s.ended = nil
		s.mu.Unlock()
		return
	}
	live := s.liveness()
	if live.present == nil {
		return // etcd unreachable: nothing is decided now
	}
	now := s.cfg.Clock.Now()
	var seen []endedStream
	err := s.cfg.Store.View(func(r *store.Reader) error {
		recs, err := r.List(store.TableProxies, "id")
		for _, rec := range recs {
			p := rec.(*store.Proxy)
			if p.Connected && !p.Revoked && !live.connected(p) {
				seen = append(seen, endedStream{p.InstanceID, p.ConnectedAt})
			}
		}
		return err
	})
	if err != nil {
		return
	}
	type confirmed struct {
		endedStream
		since time.Time
	}
	var todo []confirmed
	s.mu.Lock()
	next := make(map[endedStream]time.Time, len(seen))
	for _, e := range seen {
		if first, ok := s.ended[e]; ok {
			next[e] = first
			todo = append(todo, confirmed{e, first})
		} else {
			next[e] = now
		}
	}
	s.ended = next
	s.mu.Unlock()
	sort.Slice(todo, func(i, j int) bool { return todo[i].id < todo[j].id })
	for len(todo) > 0 {
		chunk := todo[:min(len(todo), s.cfg.Store.MaxWrites())]
		todo = todo[len(chunk):]
		var marked []string
		err := s.cfg.Store.UpdateAsLeader(func(tx *store.Txn) error {
			marked = marked[:0]
			for _, e := range chunk {
				rec, err := tx.Get(store.TableProxies, e.id)
				if err != nil {
					continue // forgotten since
				}
				p := *rec.(*store.Proxy)
				if !p.Connected || !p.ConnectedAt.Equal(e.at) {
					continue // disconnected or reconnected since
				}
				p.Connected = false
				p.GraceUntil = time.Time{}
				if !p.Revoked {
					p.GraceUntil = e.since.Add(s.cfg.EndpointGrace)
				}
				if err := tx.Put(store.TableProxies, &p); err != nil {
					return err
				}
				marked = append(marked, e.id)
			}
			return nil
		})
		if err != nil {
			s.cfg.Logger.Warn("could not record the streams of a gone replica as ended", "error", err)
			return
		}
		s.mu.Lock()
		for _, e := range chunk {
			delete(s.ended, e.endedStream)
		}
		s.mu.Unlock()
		if len(marked) > 0 {
			s.cfg.Logger.Info("proxy streams ended with their replica (presence gone); endpoints for the grace", "instances", marked, "grace", s.cfg.EndpointGrace)
		}
	}
	if len(seen) > 0 {
		s.Trigger()
	}
}

// Proxies is every stored proxy, connected by the rule proxy-status uses
// (its stream on this replica, or a presence key), by service and
// instance.
func (s *Server) Proxies() ([]*meshv1.Proxy, error) {
	var proxies []*store.Proxy
	err := s.cfg.Store.View(func(r *store.Reader) error {
		recs, err := r.List(store.TableProxies, "id")
		for _, rec := range recs {
			proxies = append(proxies, rec.(*store.Proxy))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	present, err := s.presence()
	if err != nil {
		return nil, err
	}
	sort.Slice(proxies, func(i, j int) bool {
		if proxies[i].Service != proxies[j].Service {
			return proxies[i].Service < proxies[j].Service
		}
		return proxies[i].InstanceID < proxies[j].InstanceID
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*meshv1.Proxy, 0, len(proxies))
	for _, p := range proxies {
		pp := ProxyProto(p)
		pp.Connected = s.connectedLocked(p, present)
		out = append(out, pp)
	}
	return out, nil
}

// connectedLocked is liveness.connected with this replica's streams.
func (s *Server) connectedLocked(p *store.Proxy, present map[string]string) bool {
	_, local := s.active[p.InstanceID]
	return local || present[p.InstanceID] != ""
}
