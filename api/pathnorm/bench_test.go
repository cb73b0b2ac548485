package pathnorm

import "testing"

func BenchmarkNormalize(b *testing.B) {
	for _, bc := range []struct{ name, path string }{
		{"canonical", "/api/v1/users/42/orders"},
		{"canonical-encoded", "/api/caf%C3%A9/orders"},
		{"dots", "/api/v1/../v2/./users//42"},
		{"decode", "/api/%76%31/users"},
		{"refused", "/api/v1%2F..%2Fadmin"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = Normalize(bc.path)
			}
		})
	}
}
