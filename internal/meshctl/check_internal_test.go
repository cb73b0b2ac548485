package meshctl

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"minimesh/certs"
	"minimesh/certs/certstest"
	"minimesh/internal/version"
	meshv1 "minimesh/proto/mesh/v1"
)

// healthyEnv is what a fresh mesh answers: every check passes on it.
func healthyEnv(t *testing.T) *checkEnv {
	ca := certstest.NewCA(t, "minimesh.local")
	op, err := ca.IssueSVID(certs.OperatorID(ca.TrustDomain()), 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := op.Certificates[0].NotBefore.Add(time.Minute)
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(d)) }
	proxy := func(id string) *meshv1.ProxySync {
		return &meshv1.ProxySync{Proxy: &meshv1.Proxy{InstanceId: id, Connected: true, Version: version.Version}, State: meshv1.SyncState_SYNC_STATE_SYNCED}
	}
	return &checkEnv{
		now: now, server: "meshd:15010",
		cred: op.Certificates, bundle: ca.Bundle().X509Authorities(),
		version: &meshv1.VersionResponse{Version: version.Version, Store: "bbolt"},
		health:  healthpb.HealthCheckResponse_SERVING,
		ca: &meshv1.CAStatusResponse{
			Phase: "idle", Active: &meshv1.CARoot{Pin: ca.RootPin(), NotAfter: ts(9 * 365 * 24 * time.Hour)}, IntermediateNotAfter: ts(300 * 24 * time.Hour),
			Proxies: []*meshv1.ProxyRoots{{InstanceId: "web-1", Connected: true, SvidRoot: ca.RootPin(), SvidNotBefore: ts(-time.Minute), SvidExpiresAt: ts(59 * time.Minute)}},
		},
		proxies: []*meshv1.ProxySync{proxy("web-1"), proxy("api-1")},
		tokens:  []*meshv1.JoinToken{{Id: "t1", UsesLeft: 1, ExpiresAt: ts(time.Hour)}},
	}
}

func results(e *checkEnv) map[string]CheckResult {
	out := map[string]CheckResult{}
	for _, r := range runChecks(e) {
		out[r.Name] = r
	}
	return out
}

// Each check, made to fail (or warn) by one change to a healthy mesh's
// answers; on the healthy answers every check is ok or skipped.
func TestEachCheckFails(t *testing.T) {
	for name, r := range results(healthyEnv(t)) {
		if r.Status != checkOK && r.Status != checkSkipped {
			t.Errorf("healthy mesh: %s: %s %s", name, r.Status, r.Message)
		}
	}
	cases := []struct {
		check, status string
		mutate        func(e *checkEnv)
	}{
		{"meshd is reachable", checkFail, func(e *checkEnv) { e.versionErr = errors.New("connection refused") }},
		{"meshd's version matches meshctl's", checkWarn, func(e *checkEnv) { e.version.Version = "v0.0.1" }},
		{"meshd is serving (grpc.health.v1)", checkFail, func(e *checkEnv) { e.health = healthpb.HealthCheckResponse_NOT_SERVING }},
		{"meshd is serving (grpc.health.v1)", checkFail, func(e *checkEnv) { e.healthErr = errors.New("unimplemented") }},
		{"every replica answers", checkFail, func(e *checkEnv) {
			e.version.Store, e.version.Leader = "etcd", "meshd-0"
			e.version.Replicas = []*meshv1.ReplicaStatus{{Name: "meshd-0", Answering: true}, {Name: "meshd-1", Error: "timeout"}}
		}},
		{"a leader is known", checkFail, func(e *checkEnv) {
			e.version.Store = "etcd"
			e.version.Replicas = []*meshv1.ReplicaStatus{{Name: "meshd-0", Answering: true}}
		}},
		{"replica caches are current", checkWarn, func(e *checkEnv) {
			e.version.Store, e.version.Leader = "etcd", "meshd-0"
			e.version.Replicas = []*meshv1.ReplicaStatus{{Name: "meshd-0", Answering: true, CacheLag: durationpb.New(time.Minute)}}
		}},
		{"the operator credential is valid", checkFail, func(e *checkEnv) { e.now = e.cred[0].NotAfter.Add(time.Second) }},
		{"the operator credential is valid", checkWarn, func(e *checkEnv) { e.now = e.cred[0].NotAfter.Add(-time.Hour) }},
		{"the operator credential is readable", checkFail, func(e *checkEnv) { e.credErr = errors.New("no such file") }},
		{"the operator credential chains to meshd's active root", checkWarn, func(e *checkEnv) {
			e.ca.Retired = []*meshv1.CARoot{{Pin: e.ca.Active.Pin}}
			e.ca.Active = &meshv1.CARoot{Pin: "sha256:new", NotAfter: e.ca.Active.NotAfter}
		}},
		{"the operator credential chains to meshd's active root", checkFail, func(e *checkEnv) { e.ca.Active.Pin = "sha256:other" }},
		{"the root is valid", checkFail, func(e *checkEnv) { e.ca.Active.NotAfter = timestamppb.New(e.now.Add(-time.Hour)) }},
		{"the root is valid", checkWarn, func(e *checkEnv) { e.ca.Active.NotAfter = timestamppb.New(e.now.Add(100 * 24 * time.Hour)) }},
		{"the intermediate is valid", checkFail, func(e *checkEnv) { e.ca.IntermediateNotAfter = timestamppb.New(e.now.Add(-time.Hour)) }},
		{"the intermediate is valid", checkWarn, func(e *checkEnv) { e.ca.IntermediateNotAfter = timestamppb.New(e.now.Add(24 * time.Hour)) }},
		{"no root rotation is blocked", checkWarn, func(e *checkEnv) {
			e.ca.Phase, e.ca.WaitingFor, e.ca.WaitingDisconnected = "prepared", "1 proxies to ACK", []string{"web-1"}
		}},
		{"every proxy's SVID chains to a root it trusts", checkFail, func(e *checkEnv) { e.ca.Untrusted = []string{"web-1"} }},
		{"clients trust meshd's certificate", checkFail, func(e *checkEnv) { e.ca.RefusedByClients, e.ca.RefusedByClientAddrs = 3, []string{"10.0.0.7"} }},
		{"proxies are connected", checkWarn, func(e *checkEnv) { e.proxies[0].State = meshv1.SyncState_SYNC_STATE_DISCONNECTED }},
		{"proxies accept their config", checkFail, func(e *checkEnv) {
			e.proxies[0].State, e.proxies[0].NackReason = meshv1.SyncState_SYNC_STATE_NACKED, "bad route"
		}},
		{"proxies ACKed their current config", checkWarn, func(e *checkEnv) { e.proxies[0].State = meshv1.SyncState_SYNC_STATE_STALE }},
		{"proxies' SVIDs chain to their bundle", checkFail, func(e *checkEnv) { e.proxies[0].State = meshv1.SyncState_SYNC_STATE_UNTRUSTED }},
		{"proxies can verify their endpoints", checkFail, func(e *checkEnv) {
			e.proxies[0].State, e.proxies[0].UntrustedPeers = meshv1.SyncState_SYNC_STATE_UNTRUSTED_PEERS, []string{"api-1"}
		}},
		{"no proxy is revoked", checkWarn, func(e *checkEnv) { e.proxies[0].State = meshv1.SyncState_SYNC_STATE_REVOKED }},
		{"SVIDs renew before they expire", checkFail, func(e *checkEnv) { e.ca.Proxies[0].SvidExpiresAt = timestamppb.New(e.now.Add(30 * time.Second)) }},
		{"SVIDs renew before they expire", checkWarn, func(e *checkEnv) { e.ca.Proxies[0].SvidNotBefore = timestamppb.New(e.now.Add(-2 * time.Hour)) }},
		{"proxies run meshd's version", checkWarn, func(e *checkEnv) { e.proxies[1].Proxy.Version = "v0.9" }},
		{"join tokens carry the active root's pin", checkWarn, func(e *checkEnv) { e.tokens[0].StalePin = true }},
	}
	for _, c := range cases {
		e := healthyEnv(t)
		c.mutate(e)
		got, found := results(e)[c.check]
		if !found || got.Status != c.status || got.Hint == "" {
			t.Errorf("%s: got %+v, want %s with a hint", c.check, got, c.status)
		}
	}
}

// --proxy checks meshd and that proxy only; an unknown one fails.
func TestCheckOneProxy(t *testing.T) {
	e := healthyEnv(t)
	e.proxies[1].State = meshv1.SyncState_SYNC_STATE_NACKED
	e.proxy = "web-1"
	for _, r := range runChecks(e) {
		if r.Status == checkFail {
			t.Errorf("--proxy web-1 fails on another proxy: %+v", r)
		}
		if r.Category != "meshd" && r.Category != "proxies" {
			t.Errorf("--proxy ran %s", r.Category)
		}
	}
	e.proxy = "nope"
	if r := results(e)["the proxy is registered"]; r.Status != checkFail {
		t.Errorf("--proxy of an unknown instance: %+v", r)
	}
}

// A credential from before a rotation and a meshd restored from an older
// backup are told apart by the age of meshd's CA against the credential's
// roots, and both are explained instead of a raw unknown authority.
func TestExplainChain(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("minimesh.local")
	older, err := certs.NewCA(certs.CAConfig{TrustDomain: td, Clock: certstest.NewClock(time.Now().Add(-24 * time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	newer := certstest.NewCA(t, "minimesh.local")
	chainOf := func(ca *certs.CA) []*x509.Certificate {
		s, err := ca.IssueSVID(certs.MeshdID(td), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return s.Certificates
	}
	now := time.Now()
	if msg := explainChain(chainOf(newer), newer.Bundle().X509Authorities(), now); msg != "" {
		t.Errorf("a chain that verifies: %q", msg)
	}
	if msg := explainChain(chainOf(newer), older.Bundle().X509Authorities(), now); !strings.Contains(msg, "issued before a root rotation") || !strings.Contains(msg, "meshd operator issue") {
		t.Errorf("stale credential: %q", msg)
	}
	if msg := explainChain(chainOf(older), newer.Bundle().X509Authorities(), now); !strings.Contains(msg, "restored from a backup taken before a root rotation") {
		t.Errorf("old meshd: %q", msg)
	}
}
