package api

// The capture's defaults, agreed between `meshctl inject`, which writes
// them into a pod (the proxy container's inbound listener and user, the
// redirect init container's flags), and `mesh-proxy redirect`
// (dataplane/redirect), which takes them when its flags are not given. If
// they disagreed, captured connections would reach a port nothing listens
// on, or the proxy's own traffic would be captured and loop.
const (
	// ProxyInboundPort receives the pod's captured inbound connections,
	// and mTLS from other proxies.
	ProxyInboundPort = 15006
	// ProxyUID is the user (and group) mesh-proxy runs as; its traffic is
	// never captured.
	ProxyUID = 1337
)
