package h1

import (
	"net"
	"sync"
)

var watchers sync.Map // the client's address -> chan string

func init() {
	watchHook = func(c net.Conn, event string) {
		if ch, ok := watchers.Load(c.RemoteAddr().String()); ok {
			select {
			case ch.(chan string) <- event:
			default:
			}
		}
	}
}

// WatchEvents returns the watch events of the connection whose client end
// is at client ("start", "byte", "gone", "stopped"; 16 buffered, more are
// dropped).
func WatchEvents(client net.Addr) <-chan string {
	ch := make(chan string, 16)
	watchers.Store(client.String(), ch)
	return ch
}
