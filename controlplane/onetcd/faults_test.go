package onetcd_test

import (
	"context"
	"testing"
	"time"

	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/store"
	"minimesh/controlplane/store/storetest"
	meshv1 "minimesh/proto/mesh/v1"
)

// TestStopWithEtcdUnreachable: a replica cut off from etcd, leader or
// follower, still stops when asked (SIGTERM in meshd): etcd's election,
// cancelled, resigns with its client's context, which would otherwise
// wait for etcd forever. The bound below only tells a hang from a stop.
func TestStopWithEtcdUnreachable(t *testing.T) {
	ec := testEtcd(t)
	keyFile, _ := writeCAKey(t)
	var ms []*controlplanetest.Meshd
	var relays []*storetest.Relay
	for _, name := range []string{"r0", "r1"} {
		rl := storetest.NewRelay(t, etcdSrv.Endpoints[0])
		cfg := replicaConfig(ec, keyFile, name)
		e := *cfg.Etcd
		e.Endpoints = []string{"http://" + rl.Addr()}
		e.RequestTimeout, e.DialTimeout = time.Second, 2*time.Second
		cfg.Etcd = &e
		ms = append(ms, controlplanetest.Start(t, cfg))
		relays = append(relays, rl)
	}
	var leader string
	eventually(t, "a leader elected", func() bool {
		ver, err := ms[0].Operator(t).Version(context.Background(), &meshv1.VersionRequest{})
		leader = ver.GetLeader()
		return err == nil && leader != ""
	})
	// The follower first, so the leader is still the leader when cut.
	order := []int{1, 0}
	if leader == "r1" {
		order = []int{0, 1}
	}
	for n, i := range order {
		role := []string{"follower", "leader"}[n]
		relays[i].Cut(true)
		stopped := make(chan struct{})
		start := time.Now()
		go func() { ms[i].Stop(); close(stopped) }()
		select {
		case <-stopped:
			t.Logf("the %s stopped %v after the request, etcd unreachable", role, time.Since(start).Round(time.Millisecond))
		case <-time.After(time.Minute):
			t.Fatalf("the %s, cut off from etcd, did not stop within a minute", role)
		}
	}
}

// TestIntermediateRetiredByAnotherIsReplaced: a live replica whose
// intermediate another replica recorded as retired (the leader does so
// for replicas it did not see live, e.g. after this one's etcd session
// expired) signs with a new one at its next check, since the retired
// serial is revoked an SVID lifetime later.
func TestIntermediateRetiredByAnotherIsReplaced(t *testing.T) {
	ec := testEtcd(t)
	keyFile, _ := writeCAKey(t)
	m := controlplanetest.Start(t, replicaConfig(ec, keyFile, "r0"))
	old := serial(m.CA().Intermediate())
	st := openStore(t, ec)
	if err := st.Update(func(tx *store.Txn) error {
		rec, err := tx.Get(store.TableIntermediates, old)
		if err != nil {
			return err
		}
		in := *rec.(*store.Intermediate)
		in.RetiredAt, in.RevokeAt = time.Now(), time.Now().Add(time.Minute)
		return tx.Put(store.TableIntermediates, &in)
	}); err != nil {
		t.Fatalf("retire r0's intermediate as the leader would: %v", err)
	}
	eventually(t, "r0 signs with a new intermediate", func() bool { return serial(m.CA().Intermediate()) != old })
	now := m.CA().Intermediate()
	if err := now.CheckSignatureFrom(m.CA().Root()); err != nil {
		t.Fatalf("the new intermediate: %v", err)
	}
	svid := bootstrap(t, m, "default", "web")
	if got := serial(svid.Certificates[1]); got == old || got != serial(now) {
		t.Fatalf("an SVID signed after the retirement chains to %s (retired %s, current %s)", got, old, serial(now))
	}
}

// TestAnotherReplicasApplyIsPushedAtOnce: an Apply through one replica
// reaches a proxy whose stream is on another by that replica's etcd watch,
// not at its periodic check (made an hour here, so only the watch can
// bring it).
func TestAnotherReplicasApplyIsPushedAtOnce(t *testing.T) {
	ec := testEtcd(t)
	keyFile, _ := writeCAKey(t)
	var ms []*controlplanetest.Meshd
	for _, name := range []string{"r0", "r1"} {
		cfg := replicaConfig(ec, keyFile, name)
		cfg.AckFlush = time.Hour
		ms = append(ms, controlplanetest.Start(t, cfg))
	}
	svid := bootstrap(t, ms[1], "default", "web")
	stream, err := meshv1.NewConfigServiceClient(ms[1].DialAs(t, svid)).Stream(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Hello{Hello: &meshv1.Hello{Service: "web", AdvertiseAddress: "127.0.0.1:1"}}}); err != nil {
		t.Fatal(err)
	}
	snapshots := make(chan *meshv1.Snapshot, 16)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				close(snapshots)
				return
			}
			if s := resp.GetSnapshot(); s != nil {
				snapshots <- s
			}
		}
	}()
	first, ok := <-snapshots
	if !ok {
		t.Fatal("the stream on r1 ended before its first snapshot")
	}
	if _, err := ms[0].Operator(t).Apply(ctx(t), &meshv1.ApplyRequest{Resources: []*meshv1.Resource{serviceResource("api")}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case s, ok := <-snapshots:
		if !ok {
			t.Fatal("the stream on r1 ended")
		}
		if s.GetVersion() == first.GetVersion() {
			t.Fatalf("a second snapshot of the same version %s", s.GetVersion())
		}
		t.Logf("r1 pushed r0's Apply %v after it returned", time.Since(start).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("an Apply through r0 never reached the proxy on r1 (its periodic check is an hour)")
	}
}
