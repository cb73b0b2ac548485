package applink

import (
	"net/http"
	"net/textproto"
	"strings"
	"testing"
)

// ListedIn names a field exactly when ReverseProxy's removal of the fields
// Connection names (each name trimmed by textproto.TrimString, then
// http.Header.Del) removes it: ASCII case folding of tokens only, no
// Unicode folding or trimming, a non-token matched as it is.
func TestListedInIsHeaderDel(t *testing.T) {
	keys := []string{"X-Key", "X-Hop", "Te", "X-Forwarded-For", "X_mesh_peer_id", "X-A-B", "Key", "X-Nbsp", "Upgrade", "x y"}
	for _, conn := range []string{
		"X-\u212aey",      // KELVIN SIGN: strings.EqualFold's "k"
		"x-key",           // ASCII folding
		"X-KEY , x-hop\t", // spaces and a tab trimmed
		"X-Nbsp\u00a0",    // a no-break space is not trimmed
		"\u00a0X-Hop",
		"x_MESH_PEER_ID", // canonical form keeps "_" words lowercase
		"X_mesh_peer_id", // the key as the server canonicalizes it
		"x-a-b,,  ,",     // empty names
		"te, upgrade",
		"x y",                   // a non-token, as it is
		"X Y",                   // a non-token is not folded
		"\u212aey, ſ, \u017fey", // LONG S
		"X-\vHop",               // a vertical tab is not trimmed either
	} {
		for _, k := range keys {
			h := http.Header{k: {"1"}}
			for _, name := range strings.Split(conn, ",") {
				if name = textproto.TrimString(name); name != "" {
					h.Del(name)
				}
			}
			_, kept := h[k]
			if got := ListedIn([]string{conn}, k); got == kept {
				t.Errorf("Connection %q: ListedIn(%q) %v, http.Header.Del removes it: %v", conn, k, got, !kept)
			}
		}
	}
}

// A caller's Connection cannot remove the forwarding headers where they
// pass (the inbound: Rewrite puts them back), nor matter at the public
// port, where they go (the proxy sets its own); it removes other fields.
func TestDropFieldForwardingHeaders(t *testing.T) {
	conn := []string{"X-Forwarded-For, forwarded, X-Forwarded-Host, x-forwarded-proto, X-Other"}
	for _, k := range ForwardingHeaders {
		if DropField(k, conn, false) {
			t.Errorf("inbound: Connection removed %s", k)
		}
		if !DropField(k, nil, true) {
			t.Errorf("public: the caller's %s passed", k)
		}
	}
	if !DropField("X-Other", conn, false) || !DropField("X-Other", conn, true) || DropField("X-Other", nil, false) {
		t.Error("X-Other: want dropped only when Connection names it")
	}
}
