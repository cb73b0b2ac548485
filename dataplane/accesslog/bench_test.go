package accesslog

import (
	"io"
	"testing"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

func BenchmarkLog(b *testing.B) {
	for _, bc := range []struct {
		name   string
		fields []string
	}{
		{"default-fields", nil},
		{"all-fields", api.AccessLogFields()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := New(Config{Output: io.Discard})
			if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: bc.fields})); err != nil {
				b.Fatal(err)
			}
			e := fullEntry()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l.Log(e)
				}
			})
		})
	}
	b.Run("off", func(b *testing.B) {
		l := New(Config{Output: io.Discard})
		e := fullEntry()
		b.ReportAllocs()
		for b.Loop() {
			l.Log(e)
		}
	})
}
