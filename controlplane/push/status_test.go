package push

import (
	"slices"
	"testing"
	"time"

	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// A proxy that ACKed its snapshot is not SYNCED when its own SVID chains
// to a root that is not in the bundle it ACKed (UNTRUSTED), nor when an
// endpoint in its snapshot holds such an SVID (UNTRUSTED_PEERS), as meshd
// records the roots at issuance; once the records agree with the bundle,
// both are SYNCED.
func TestSyncStatesFromRecordedRoots(t *testing.T) {
	m := startMeshd(t, nil, nil, time.Hour)
	setRoot := func(serial, pin string) {
		t.Helper()
		err := m.store.Update(func(tx *store.Txn) error {
			rec, err := tx.Get(store.TableCertificates, serial)
			if err != nil {
				return err
			}
			c := *rec.(*store.Certificate)
			c.RootPin = pin
			return tx.Put(store.TableCertificates, &c)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	webSVID, apiSVID := m.svid("web", "web-1", true), m.svid("api", "api-1", true)
	setRoot(webSVID.Certificates[0].SerialNumber.Text(16), m.ca.RootPin())
	apiSerial := apiSVID.Certificates[0].SerialNumber.Text(16)
	setRoot(apiSerial, "sha256:0000000000000000000000000000000000000000000000000000000000000000")
	web, api := m.open(webSVID, hello("web", "web-1")), m.open(apiSVID, hello("api", "api-1"))
	web.registered(t)
	api.registered(t)
	ack := func(c *client, what string) {
		t.Helper()
		s := c.snapshotWith(t, what, func(s *meshv1.Snapshot) bool { return hasEndpoint(s, "api-1") && hasEndpoint(s, "web-1") })
		if err := c.st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Ack{Ack: &meshv1.Ack{Version: s.GetVersion()}}}); err != nil {
			t.Fatal(err)
		}
	}
	ack(web, "web's snapshot with both endpoints")
	ack(api, "api's snapshot with both endpoints")
	m.waitState("api-1", meshv1.SyncState_SYNC_STATE_UNTRUSTED)
	m.waitState("web-1", meshv1.SyncState_SYNC_STATE_UNTRUSTED_PEERS)
	all, err := m.srv.Sync()
	if err != nil {
		t.Fatal(err)
	}
	for _, ps := range all {
		switch ps.GetProxy().GetInstanceId() {
		case "web-1":
			if !slices.Equal(ps.GetUntrustedPeers(), []string{"api-1"}) || ps.GetSvidRoot() != m.ca.RootPin() {
				t.Errorf("web-1: untrusted peers %v, svid root %s", ps.GetUntrustedPeers(), ps.GetSvidRoot())
			}
		case "api-1":
			if ps.GetSvidRoot() == m.ca.RootPin() || !slices.Equal(ps.GetAckedRoots(), []string{m.ca.RootPin()}) {
				t.Errorf("api-1: svid root %s, acked %v", ps.GetSvidRoot(), ps.GetAckedRoots())
			}
		}
	}
	setRoot(apiSerial, m.ca.RootPin())
	m.waitState("api-1", meshv1.SyncState_SYNC_STATE_SYNCED)
	m.waitState("web-1", meshv1.SyncState_SYNC_STATE_SYNCED)
}
