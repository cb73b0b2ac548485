package redirect_test

import (
	"fmt"

	"minimesh/dataplane/redirect"
)

// The rules for an app on port 8080 whose outbound traffic is captured
// too, as iptables-restore input (what --dry-run prints).
func Example() {
	r, err := redirect.New(redirect.Config{
		ProxyUID:             1337,
		CapturePorts:         []int{8080},
		ExcludeInboundPorts:  []int{15020},
		OutboundPort:         15001,
		ExcludeOutboundPorts: []int{15010},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(r.Script())
	// Output:
	// *nat
	// :MESH_INBOUND - [0:0]
	// :MESH_IN_REDIRECT - [0:0]
	// :MESH_OUTPUT - [0:0]
	// :MESH_REDIRECT - [0:0]
	// -A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
	// -A MESH_INBOUND -p tcp --dport 8080 -j MESH_IN_REDIRECT
	// -A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001
	// -A MESH_OUTPUT -o lo -j RETURN
	// -A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN
	// -A MESH_OUTPUT -p tcp --dport 15010 -j RETURN
	// -A MESH_OUTPUT -j MESH_REDIRECT
	// -A PREROUTING -p tcp -j MESH_INBOUND
	// -A OUTPUT -p tcp -j MESH_OUTPUT
	// COMMIT
}
