// Package push owns the stream between meshd and each proxy: registration
// now, configuration snapshots with ACK/NACK later.
//
// A proxy opens ConfigService.Stream with its SVID as client certificate and
// sends a Hello (instance ID, service, advertised address, version) first.
// The identity comes from the certificate, never from the message; meshd
// checks that the identity may serve the service, records the instance as
// connected, and marks it disconnected when the stream ends.
package push
