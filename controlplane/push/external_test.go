package push

import (
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"minimesh/api"
	"minimesh/certs"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// svidIn is svid for a service account of namespace ns.
func (m *meshd) svidIn(ns, sa, instance string) *x509svid.SVID {
	m.t.Helper()
	id := spiffeid.RequireFromPath(td, "/ns/"+ns+"/sa/"+sa)
	svid, err := m.ca.IssueSVID(id, time.Hour, certs.WithInstance(instance))
	if err != nil {
		m.t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	rec := &store.Certificate{Serial: leaf.SerialNumber.Text(16), SPIFFEID: id.String(), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
		IssuedBy: "bootstrap", InstanceID: instance}
	if err := m.store.Update(func(tx *store.Txn) error { return tx.Put(store.TableCertificates, rec) }); err != nil {
		m.t.Fatal(err)
	}
	return svid
}

// externalNames are the ExternalServices of a snapshot, "ns/name".
func externalNames(s *meshv1.Snapshot) []string {
	var out []string
	for _, r := range s.GetResources() {
		if r.GetKind() == string(api.KindExternalService) {
			out = append(out, r.GetNamespace()+"/"+r.GetName())
		}
	}
	slices.Sort(out)
	return out
}

// TestExternalServiceScoping: an ExternalService reaches the proxies of
// the services its allowedServices names, all of its namespace's when the
// list is empty, and never another namespace's.
func TestExternalServiceScoping(t *testing.T) {
	m := startMeshd(t, nil, nil, time.Hour)
	ext := func(ns, name string, allowed ...string) api.Object {
		return &api.ExternalService{Metadata: api.Metadata{Name: name, Namespace: ns}, Spec: &meshv1.ExternalServiceSpec{
			Hosts: []string{"api.partner.example"}, Port: 443, Protocol: meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_HTTPS, AllowedServices: allowed}}
	}
	objs := []api.Object{ext("default", "partner", "web"), ext("default", "everyone"), ext("shop", "shop-partner"), ext("default", "db-only", "db")}
	if err := m.store.Update(func(tx *store.Txn) error {
		rev, err := tx.Bump()
		if err != nil {
			return err
		}
		for _, o := range objs {
			if err := o.Validate(); err != nil {
				return err
			}
			if err := tx.PutObject(o, rev, time.Now()); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	web := m.open(m.svidIn("default", "web", "web-1"), hello("web", ""))
	web.registered(t)
	apiP := m.open(m.svidIn("default", "api", "api-1"), hello("api", ""))
	apiP.registered(t)
	shop := m.open(m.svidIn("shop", "web", "shop-web-1"), hello("web", ""))
	shop.registered(t)
	for _, tc := range []struct {
		who  string
		c    *client
		want []string
	}{
		{"default/web (allowed by name)", web, []string{"default/everyone", "default/partner"}},
		{"default/api (only the empty list)", apiP, []string{"default/everyone"}},
		{"shop/web (the same service name, another namespace)", shop, []string{"shop/shop-partner"}},
	} {
		var got []string
		tc.c.snapshotWith(t, tc.who, func(s *meshv1.Snapshot) bool {
			got = externalNames(s)
			return slices.Equal(got, tc.want)
		})
	}
}
