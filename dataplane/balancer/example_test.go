package balancer_test

import (
	"fmt"

	"minimesh/dataplane/balancer"
)

func Example() {
	b, err := balancer.New(balancer.Config{ConsecutiveFailures: 2})
	if err != nil {
		panic(err)
	}
	b.SetTargets([]balancer.Target{
		{Addr: "10.0.0.1:15006", Identity: "spiffe://minimesh.local/ns/prod/sa/api"},
		{Addr: "10.0.0.2:15006", Identity: "spiffe://minimesh.local/ns/prod/sa/api"},
	})
	// 10.0.0.1 fails twice in a row and is ejected.
	for range 2 {
		for {
			e, _ := b.Pick()
			if e.Addr == "10.0.0.1:15006" {
				b.Done(e, false)
				break
			}
			b.Done(e, true)
		}
	}
	for _, s := range b.Status() {
		fmt.Println(s.Addr, "ejected:", s.Ejected)
	}
	e, _ := b.Pick()
	fmt.Println("picked", e.Addr)
	b.Done(e, true)
	// Output:
	// 10.0.0.1:15006 ejected: true
	// 10.0.0.2:15006 ejected: false
	// picked 10.0.0.2:15006
}
