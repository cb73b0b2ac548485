// Package h1proto is a bench-only module (its own go.mod, so that
// valyala/fasthttp never enters minimesh's): issue 22's prototype of a
// well-kept library beside our own HTTP/1.1 loop. BenchmarkServers serves
// the same fixed 100-byte answer over TLS 1.3 (ECDSA P-256) behind the
// proxy's edge (edge.NewTLSListener, edge.Strict) with net/http's server,
// dataplane/h1's, and fasthttp's (also through fasthttpadaptor, serving
// the same http.Handler), each in a child process of its own, to
// 64 keep-alive connections, and prints a table of the servers' CPU,
// allocations and context switches per request. Run it with
//
//	cd bench/h1proto && H1PROTO_ROUNDS=5 go test -run '^$' -bench . -benchtime 50000x
package h1proto
