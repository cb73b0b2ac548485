package ratelimit

import (
	"strconv"
	"testing"

	"minimesh/api"
)

func BenchmarkAllow(b *testing.B) {
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = "spiffe://minimesh.local/ns/prod/sa/s" + strconv.Itoa(i)
	}
	for _, bc := range []struct {
		name   string
		limits []*api.RateLimit
	}{
		{"shared", []*api.RateLimit{limit("total", "", 1e6, 1_000_000, false)}},
		{"per-source", []*api.RateLimit{limit("each", "", 1e6, 1_000_000, true)}},
		{"shared+override", []*api.RateLimit{limit("total", "", 1e6, 1_000_000, false, ov("spiffe://minimesh.local/ns/prod/sa/s1*", 1e6, 1_000_000))}},
		{"route+service", []*api.RateLimit{limit("r", "r", 1e6, 1_000_000, true), limit("all", "", 1e6, 1_000_000, false)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l, err := Compile(Config{}, bc.limits)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					l.Allow("r", ids[i%len(ids)])
					i++
				}
			})
		})
	}
}
