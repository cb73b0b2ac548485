// Package accesslog writes a service's access log at the inbound proxy:
// one JSON object per line per request, with the fields its AccessLog
// resource chooses (api.AccessLogFields), switched on, off and changed
// live, sampled, and switched off by itself when the resource's TTL ends.
//
// Lines are encoded by hand into pooled buffers (no reflection, no
// allocation per line). Every string is escaped so that a value can never
// forge a line or reach a terminal raw: '"', '\', all C0 and C1 control
// characters and DEL, U+2028 and U+2029 are escaped and invalid UTF-8
// becomes U+FFFD; a path holding "\n" or ESC stays on its line as \n or
// \u001b. String fields are cut at MaxFieldBytes.
//
// Usage:
//
//	f, err := accesslog.OpenFile("/var/log/mesh/access.log") // append, 0600; or os.Stdout
//	...
//	al := accesslog.New(accesslog.Config{Output: f, Logger: log})
//	...
//	err = al.Apply(accessLogOrNil) // on every config push; nil switches it off
//	...
//	if al.Enabled() {
//		al.Log(&accesslog.Entry{Time: start, SourceIdentity: peer, Method: r.Method, Path: p,
//			Status: status, BytesReceived: in, BytesSent: out, Duration: time.Since(start),
//			Upstream: app, Route: route, RequestID: id})
//	}
//
// A line looks like:
//
//	{"time":"2030-01-02T03:04:05.006Z","source_identity":"spiffe://minimesh.local/ns/prod/sa/web","method":"GET","path":"/orders/42","route":"10-orders","status":200,"bytes_received":0,"bytes_sent":512,"duration_ms":1.204}
package accesslog
