package push

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	"minimesh/certs"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// TestHelloInstanceComesFromCertificate: the instance a stream registers
// is the one its certificate is bound to (the Subject's serialNumber, or
// meshd's record of the serial for an older certificate); a Hello naming
// another is InvalidArgument and registers nothing, and a certificate
// bound to none is refused.
func TestHelloInstanceComesFromCertificate(t *testing.T) {
	m := startMeshd(t, nil, nil, 0)
	refusedBefore := m.counter("minimesh_meshd_stream_refused_total", "reason", "instance_mismatch")

	// Bootstrapped as web-a (in its Subject), registering as web-b.
	a := m.svid("web", "web-a", true)
	err := m.open(a, hello("web", "web-b")).refused(t, codes.InvalidArgument)
	if !strings.Contains(err.Error(), `"web-a"`) || !strings.Contains(err.Error(), "instance_id") {
		t.Errorf("refusal %q does not name the field and the bound instance", err)
	}
	if _, err := m.proxy("web-b"); !isNotFound(err) {
		t.Fatalf("web-b is registered after a refused hello: %v", err)
	}
	if got := m.counter("minimesh_meshd_stream_refused_total", "reason", "instance_mismatch") - refusedBefore; got != 1 {
		t.Errorf("refusals counted: %v, want 1", got)
	}
	// Without an instance_id (or with the bound one) it is listed under web-a.
	c := m.open(a, hello("web", ""))
	c.registered(t)
	if p, err := m.proxy("web-a"); err != nil || !p.Connected {
		t.Fatalf("web-a: %+v, %v; want connected", p, err)
	}
	c.cancel()
	m.open(a, hello("web", "web-a")).registered(t)

	// A certificate from before instances were written into it: meshd's
	// record of its serial decides.
	old := m.svid("web", "web-c", false)
	m.open(old, hello("web", "web-d")).refused(t, codes.InvalidArgument)
	m.open(old, hello("web", "")).registered(t)
	if _, err := m.proxy("web-c"); err != nil {
		t.Fatalf("web-c: %v", err)
	}
	if _, err := m.proxy("web-d"); !isNotFound(err) {
		t.Fatalf("web-d registered: %v", err)
	}

	// Bound to nothing: neither in the certificate nor in meshd's records.
	none := m.svid("web", "", false)
	m.open(none, hello("web", "web-e")).refused(t, codes.PermissionDenied)
	if _, err := m.proxy("web-e"); !isNotFound(err) {
		t.Fatalf("web-e registered: %v", err)
	}
	if got := m.counter("minimesh_meshd_stream_refused_total", "reason", "unbound"); got != 1 {
		t.Errorf("unbound refusals counted: %v, want 1", got)
	}
}

// TestRevokedCallerGetsNoSnapshot: a revoked instance's certificate is
// refused whatever instance its Hello names and gets no snapshot (not its
// service's ConfigFiles either); a certificate revoked by serial is
// refused too, and an open stream of either ends at the next recompute.
// Every snapshot lists the revoked instances and serials.
func TestRevokedCallerGetsNoSnapshot(t *testing.T) {
	m := startMeshd(t, nil, nil, time.Hour)
	web := m.svid("web", "web-a", true)
	c := m.open(web, hello("web", ""))
	c.registered(t)
	c.snapshotWith(t, "web's first snapshot", func(*meshv1.Snapshot) bool { return true })
	api := m.open(m.svid("api", "api-1", true), hello("api", ""))
	api.registered(t)

	// The operator revokes web-a (as AdminService.RevokeProxy does).
	if err := m.store.Update(func(tx *store.Txn) error {
		rec, err := tx.Get(store.TableProxies, "web-a")
		if err != nil {
			return err
		}
		p := *rec.(*store.Proxy)
		p.Revoked = true
		return tx.Put(store.TableProxies, &p)
	}); err != nil {
		t.Fatal(err)
	}
	m.srv.Trigger()
	if err := c.ended(t); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked proxy's stream ended with %v", err)
	}
	webSerial := web.Certificates[0].SerialNumber.Text(16)
	api.snapshotWith(t, "api's snapshot lists web-a and its serial as revoked", func(s *meshv1.Snapshot) bool {
		return slices.Contains(s.GetRevokedInstances(), "web-a") && slices.Contains(s.GetRevokedSerials(), webSerial) && !hasEndpoint(s, "web-a")
	})

	// The same certificate re-registering: under a new instance ID, under
	// none, under its own. No snapshot comes back.
	m.open(web, hello("web", "web-new")).refused(t, codes.InvalidArgument)
	m.open(web, hello("web", "")).refused(t, codes.PermissionDenied)
	m.open(web, hello("web", "web-a")).refused(t, codes.PermissionDenied)
	if _, err := m.proxy("web-new"); !isNotFound(err) {
		t.Fatalf("the revoked certificate registered web-new: %v", err)
	}
	// An older certificate of web-a (bound by meshd's record only).
	m.open(m.svid("web", "web-a", false), hello("web", "")).refused(t, codes.PermissionDenied)

	// Revoked by serial: another of web's certificates, of another
	// instance, with an open stream; then a fresh Hello.
	web2 := m.svid("web", "web-b", true)
	c2 := m.open(web2, hello("web", ""))
	c2.registered(t)
	serial2 := web2.Certificates[0].SerialNumber.Text(16)
	if err := m.store.Update(func(tx *store.Txn) error {
		return tx.Put(store.TableRevocations, &store.Revocation{Serial: serial2, SPIFFEID: "spiffe://minimesh.local/ns/default/sa/web",
			NotAfter: web2.Certificates[0].NotAfter, CreatedAt: time.Now(), Reason: "test"})
	}); err != nil {
		t.Fatal(err)
	}
	m.srv.Trigger()
	if err := c2.ended(t); err == nil {
		t.Fatal("the stream of a certificate revoked by serial did not end with an error")
	}
	m.open(web2, hello("web", "")).refused(t, codes.PermissionDenied)
	api.snapshotWith(t, "api's snapshot lists the serial from the revocations table", func(s *meshv1.Snapshot) bool {
		return slices.Contains(s.GetRevokedSerials(), serial2)
	})
	if p, err := m.proxy("web-b"); err != nil || p.GraceUntil.After(time.Now()) {
		t.Errorf("web-b, ended for a revoked serial, is held in grace: %+v, %v", p, err)
	}
	if got := m.counter("minimesh_meshd_stream_refused_total", "reason", "revoked"); got != 4 {
		t.Errorf("revoked refusals counted: %v, want 4", got)
	}
	if got := m.counter("minimesh_meshd_stream_refused_total", "reason", "revoked_on_stream"); got != 2 {
		t.Errorf("streams ended for revocation counted: %v, want 2", got)
	}

	// A denied identity: refused at Hello, whatever the instance.
	if err := m.store.Update(func(tx *store.Txn) error {
		return tx.Put(store.TableDenials, &store.Denial{SPIFFEID: "spiffe://minimesh.local/ns/default/sa/api", CreatedAt: time.Now()})
	}); err != nil {
		t.Fatal(err)
	}
	m.srv.Trigger()
	api.ended(t)
	m.open(m.svid("api", "api-2", true), hello("api", "")).refused(t, codes.PermissionDenied)
}

// TestRevocationsSkipExpired: a revocation by serial whose certificate has
// expired leaves the snapshots (the certificate fails verification anyway).
func TestRevocationsSkipExpired(t *testing.T) {
	m := startMeshd(t, nil, nil, time.Hour)
	now := time.Now()
	if err := m.store.Update(func(tx *store.Txn) error {
		for serial, notAfter := range map[string]time.Time{"aa": now.Add(time.Hour), "bb": now.Add(-time.Minute)} {
			if err := tx.Put(store.TableRevocations, &store.Revocation{Serial: serial, NotAfter: notAfter}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c := m.open(m.svid("web", "web-a", true), hello("web", ""))
	c.registered(t)
	s := c.snapshotWith(t, "a snapshot", func(*meshv1.Snapshot) bool { return true })
	if got := s.GetRevokedSerials(); !slices.Equal(got, []string{"aa"}) {
		t.Fatalf("revoked serials %v, want [aa]", got)
	}
}

// TestPodMayNotAdvertiseLoopback: a proxy Kubernetes attested (its
// certificate names its pod) that advertises a loopback address is
// refused and counted, since other pods dialing it would reach
// themselves; the same proxy advertising its pod IP registers, and a
// proxy on one machine (no pod) may advertise loopback.
func TestPodMayNotAdvertiseLoopback(t *testing.T) {
	m := startMeshd(t, nil, nil, 0)
	id := spiffeid.RequireFromPath(td, "/ns/default/sa/web")
	pod, err := m.ca.IssueSVID(id, time.Hour, certs.WithInstance("web-7d9f-0f3c5a9e"), certs.WithPodUID("0f3c5a9e-1111-2222-3333-444455556666"))
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"127.0.0.1:15006", "[::1]:15006", "LOCALHOST:15006"} {
		h := hello("web", "")
		h.AdvertiseAddress = addr
		err := m.open(pod, h).refused(t, codes.PermissionDenied)
		if !strings.Contains(err.Error(), "loopback address from a pod") {
			t.Errorf("%s: %v", addr, err)
		}
	}
	if n := m.counter("minimesh_meshd_stream_refused_total", "reason", "bad_address"); n != 3 {
		t.Errorf("refusals counted: %v, want 3", n)
	}
	if _, err := m.proxy("web-7d9f-0f3c5a9e"); !isNotFound(err) {
		t.Fatalf("registered after a refused hello: %v", err)
	}
	h := hello("web", "")
	h.AdvertiseAddress = "10.244.1.7:15006"
	m.open(pod, h).registered(t)
	m.open(m.svid("web", "web-vm", true), hello("web", "")).registered(t) // 127.0.0.1, no pod
}
