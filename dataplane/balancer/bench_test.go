package balancer

import (
	"strconv"
	"testing"
)

func BenchmarkPickDone(b *testing.B) {
	for _, n := range []int{2, 16, 256} {
		b.Run(strconv.Itoa(n)+"-endpoints", func(b *testing.B) {
			bal, err := New(Config{})
			if err != nil {
				b.Fatal(err)
			}
			bal.SetTargets(targets(n))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					e, _ := bal.Pick()
					bal.Done(e, true)
				}
			})
		})
	}
}
