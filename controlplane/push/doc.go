// Package push owns the stream between meshd and each proxy: registration
// now, configuration snapshots with ACK/NACK later.
//
// A proxy opens ConfigService.Stream with its SVID as client certificate and
// sends a Hello (service, advertised address, version) first. The identity
// and the instance come from the certificate, never from the message: the
// instance is the one bound into the SVID's Subject at Bootstrap (or, for
// an SVID issued before that, the one meshd recorded for its serial); a
// Hello naming another is refused. meshd refuses a denied identity, a
// revoked instance and a revoked serial, checks that the identity may serve
// the service, and records the instance as connected.
//
// When the stream ends, a proxy that sent Drain leaves the endpoints at
// once; any other (meshd stopped or died, the network broke) stays an
// endpoint for Config.EndpointGrace or until it reconnects, and a meshd
// that starts holds the endpoints the last one knew as long. A timer at the
// earliest end of a grace triggers the recompute that drops it.
package push
