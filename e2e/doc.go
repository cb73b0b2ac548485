// Package e2e holds end-to-end tests of the whole mesh in one process:
// a real meshd, real mesh-proxies (the same sidecar package cmd/mesh-proxy
// runs) and real HTTP apps, all on loopback.
package e2e
