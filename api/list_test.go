package api_test

import (
	"strings"
	"testing"

	"minimesh/api"
)

// A List document (what meshctl get prints for several objects) decodes
// into its items; its metadata and each item's status are the server's
// and are ignored.
func TestDecodeList(t *testing.T) {
	in := `apiVersion: minimesh.io/v1alpha1
kind: List
metadata: {revision: 7}
items:
- apiVersion: minimesh.io/v1alpha1
  kind: Service
  metadata: {name: web, namespace: prod, revision: 3, updateTime: "2024-01-02T03:04:05Z"}
  spec: {ports: [{port: 80, protocol: http}], servingIdentities: ["spiffe://minimesh.local/ns/prod/sa/web"]}
  status: {anything: [1, 2]}
- apiVersion: minimesh.io/v1alpha1
  kind: Route
  metadata: {name: r}
  spec: {service: web, backends: [{service: web}], timeout: 2s}
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: r2}
spec: {service: web, backends: [{service: web}]}
`
	docs := decodeString(t, in)
	if len(docs) != 3 {
		t.Fatalf("%d documents, want 3", len(docs))
	}
	for i, want := range []struct {
		key   string
		index int
		item  int
	}{{`Service "prod/web"`, 1, 1}, {`Route "default/r"`, 1, 2}, {`Route "default/r2"`, 2, 0}} {
		if got := api.KeyOf(docs[i].Object).String(); got != want.key || docs[i].Index != want.index || docs[i].Item != want.item {
			t.Errorf("document %d: %s index %d item %d, want %s index %d item %d", i, got, docs[i].Index, docs[i].Item, want.key, want.index, want.item)
		}
	}
	if docs[0].Object.Meta().Revision != 3 {
		t.Errorf("revision = %d, want 3 (read, for meshctl to drop)", docs[0].Object.Meta().Revision)
	}
	// An empty List is no objects, not an error.
	if docs := decodeString(t, "apiVersion: v1\nkind: List\nitems: []\n"); len(docs) != 0 {
		t.Errorf("empty List: %d documents", len(docs))
	}
}

func TestDecodeListErrorsNameTheItem(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"apiVersion: v1\nkind: List\nitems:\n- {apiVersion: minimesh.io/v1alpha1, kind: Route, metadata: {name: r}, spec: {service: web, backends: [{service: web}], timeout: soon}}\n",
			`document 1 (line 1): Route "default/r": items[0].spec.timeout: "soon" is not a duration`},
		{"apiVersion: v1\nkind: List\nitems: {a: 1}\n", "items: must be a list of objects"},
		{"apiVersion: v2\nkind: List\nitems: []\n", `apiVersion: a List's must be "minimesh.io/v1alpha1" or "v1", not "v2"`},
		{"apiVersion: v1\nkind: List\nitems: []\nspec: {}\n", "spec: unknown field; a List has only apiVersion, kind, metadata, items"},
		{"apiVersion: v1\nkind: List\nitems: [3]\n", "items[0]: a document must be a mapping"},
	} {
		_, err := api.Decode("l.yaml", strings.NewReader(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Decode(%q) = %v, want %q", c.in, err, c.want)
		}
	}
	// The items count toward MaxDocuments.
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: List\nitems:\n")
	for range api.MaxDocuments + 1 {
		b.WriteString("- {apiVersion: minimesh.io/v1alpha1, kind: Route, metadata: {name: r}, spec: {service: web, backends: [{service: web}]}}\n")
	}
	if _, err := api.Decode("big.yaml", strings.NewReader(b.String())); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("a List of %d items: %v", api.MaxDocuments+1, err)
	}
}
