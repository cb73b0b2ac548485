// Package logrecord is the contract between the proxy's producers of log
// records (the access log, the log adapter) and their consumers (stdout or
// the access-log destination, the log shipper).
//
// A record is one JSON object, without a trailing newline. Producers own
// their buffers: a Sink that keeps a record past Offer copies it.
package logrecord

// Sink takes records. Offer never blocks the caller (the data path and the
// adapter's readers call it): a Sink that cannot take a record now drops
// it, counts the drop, and returns false.
type Sink interface {
	Offer(rec []byte) bool
}

// Sinks offers each record to every sink in turn; Offer reports whether
// all of them took it.
type Sinks []Sink

// Offer implements Sink.
func (s Sinks) Offer(rec []byte) bool {
	ok := true
	for _, k := range s {
		if !k.Offer(rec) {
			ok = false
		}
	}
	return ok
}
