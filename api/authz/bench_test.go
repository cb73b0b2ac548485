package authz

import "testing"

func BenchmarkCheck(b *testing.B) {
	e, err := Compile(benchPolicies())
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		req  Request
	}{
		{"allow-last-rule", Request{Peer: web, Method: "GET", Path: "/api/v1/users"}},
		{"deny-first-rule", Request{Peer: web, Method: "GET", Path: "/Admin/users"}},
		{"default-deny", Request{Peer: batch, Method: "DELETE", Path: "/api/v1/users"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Check(bc.req)
			}
		})
	}
}
