package h1

import (
	"net"
	"testing"
	"time"
)

// BenchmarkWatchArmStop: what the watch costs a request shorter than
// WatchAfter (its timer reset and stopped, two uncontended locks), beside
// a bare timer's Reset and Stop.
func BenchmarkWatchArmStop(b *testing.B) {
	a, z := net.Pipe()
	defer a.Close()
	defer z.Close()
	b.Run("watch", func(b *testing.B) {
		c := &conn{rwc: a, watchAfter: time.Second}
		b.ReportAllocs()
		for b.Loop() {
			c.armWatch(true)
			c.stopWatch()
		}
	})
	b.Run("timer", func(b *testing.B) {
		t := time.AfterFunc(time.Hour, func() {})
		b.ReportAllocs()
		for b.Loop() {
			t.Reset(time.Second)
			t.Stop()
		}
	})
}
