package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

const (
	// announceEvery is how often a replica re-announces itself (its cache
	// lag, a heartbeat) under replicas/NAME: a leased key, no store commit.
	announceEvery = 5 * time.Second
	// heartbeatStale: a live key whose heartbeat is older is a replica
	// that holds its lease but does not run its loop.
	heartbeatStale = 6 * announceEvery
	// goneReported is how long a replica that had an intermediate and has
	// no live key any more is reported as not answering (a rolling restart
	// shows for this long: the new process is another replica).
	goneReported = 5 * time.Minute
)

func (s *Server) replicaInfo() ReplicaInfo {
	info := ReplicaInfo{Version: Version, Schema: store.SchemaVersion,
		CacheLagSeconds: s.store.CacheLag().Seconds(), At: s.cfg.Clock.Now()}
	if a := s.advertise.Load(); a != nil {
		info.Address = *a
	}
	return info
}

// announce re-puts this replica's replicas/NAME value, at most every
// announceEvery.
func (s *Server) announce() {
	if !s.perReplicaCA() || s.cfg.Clock.Now().Sub(s.announced) < announceEvery {
		return
	}
	s.announced = s.cfg.Clock.Now()
	info, err := json.Marshal(s.replicaInfo())
	if err == nil {
		err = s.store.SetReplicaInfo(string(info))
	}
	if err != nil {
		s.cfg.Logger.Warn("could not announce this replica", "replica", s.store.Replica(), "error", err)
	}
}

// replicaStatus is Version's view of the replicas (etcd): each live one
// (its leased replicas/NAME key) with its announced cache lag, answering
// when its heartbeat is recent; each replica that signed with an
// intermediate and whose key is gone (stopped, killed, cut off) within
// goneReported, not answering; and the leader.
func (s *Server) replicaStatus() (string, []*meshv1.ReplicaStatus, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := s.cfg.Clock.Now()
	live, err := s.store.Replicas(ctx)
	if err != nil {
		return "etcd", []*meshv1.ReplicaStatus{{Name: s.store.Replica(), Answering: false, Error: err.Error()}}, ""
	}
	var out []*meshv1.ReplicaStatus
	for name, v := range live {
		st := &meshv1.ReplicaStatus{Name: name, Answering: true}
		var info ReplicaInfo
		switch {
		case json.Unmarshal([]byte(v), &info) != nil:
			st.Answering, st.Error = false, "its replicas/ value does not decode"
		case !info.At.IsZero() && now.Sub(info.At) > heartbeatStale:
			st.Answering, st.Error = false, fmt.Sprintf("holds its lease but last announced itself %s ago", now.Sub(info.At).Round(time.Second))
		default:
			st.CacheLag = durationpb.New(time.Duration(info.CacheLagSeconds * float64(time.Second)))
		}
		out = append(out, st)
	}
	gone := map[string]time.Time{}
	_ = s.store.View(func(r *store.Reader) error {
		recs, err := r.List(store.TableIntermediates, "id")
		for _, x := range recs {
			in := x.(*store.Intermediate)
			if _, ok := live[in.Replica]; ok {
				continue
			}
			last := in.RetiredAt
			if last.IsZero() {
				last = now // never retired: it did not stop cleanly
			}
			if now.Sub(last) < goneReported && last.After(gone[in.Replica]) {
				gone[in.Replica] = last
			}
		}
		return err
	})
	for name, last := range gone {
		out = append(out, &meshv1.ReplicaStatus{Name: name, Error: fmt.Sprintf("no live replicas/%s key (lease expired or stopped; last signed %s ago)", name, now.Sub(last).Round(time.Second))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	leader, err := s.store.Leader(ctx)
	if err != nil {
		leader = ""
	}
	return "etcd", out, leader
}

// replicasFunc is admin.Config.Replicas: nil on bbolt (one replica).
func (s *Server) replicasFunc() func() (string, []*meshv1.ReplicaStatus, string) {
	if !s.perReplicaCA() {
		return nil
	}
	return s.replicaStatus
}
